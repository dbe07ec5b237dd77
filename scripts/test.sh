#!/usr/bin/env bash
# Runs moeserve's whole test suite the way CI does: installs what is missing (scripts/setup.sh),
# then builds and tests twice — a release build with the CUDA backend compiled (when nvcc is
# installed) and an ASan + UBSan build — with warnings as errors in both, then runs each fuzz
# target for MOE_FUZZ_SECONDS (default 25) seconds.  Ends with a "tests: N passed, N failed"
# line counting every Check test case, Python check and fuzz target.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh

cuda=auto
if [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi
if command -v nvcc >/dev/null 2>&1; then cuda=enabled; fi

configure() { # dir, options...
    local dir=$1; shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}

total_pass=0
total_fail=0
status=0
run_build() { # name, dir, options...
    local name=$1 dir=$2; shift 2
    echo "=== $name build ($dir: $*)"
    configure "$dir" --werror "$@"
    ninja -C "$dir" >"$dir/moe-ninja.log" 2>&1 || { cat "$dir/moe-ninja.log"; echo "build failed: $name"; status=1; total_fail=$((total_fail + 1)); return; }
    set +e
    meson test -C "$dir" --print-errorlogs --num-processes 2 --no-rebuild
    local rc=$?
    set -e
    [ $rc -eq 0 ] || status=1
    # Count test cases, not test programs: Check's summaries and the Python checks' lines.
    local log="$dir/meson-logs/testlog.txt" p f
    p=$(grep -hoE 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | awk -F'[:,] *' '{p+=$2-$4-$6} END{print p+0}')
    f=$(grep -hoE 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | awk -F'[:,] *' '{f+=$4+$6} END{print f+0}')
    p=$((p + $(grep -hoE '^[0-9]+ passed, [0-9]+ failed' "$log" | awk '{s+=$1} END{print s+0}')))
    f=$((f + $(grep -hoE '^[0-9]+ passed, [0-9]+ failed' "$log" | awk '{s+=$3} END{print s+0}')))
    # A test program that crashed or timed out before printing a summary still counts as failed.
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    echo "$name: $p passed, $f failed"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
}

# Third stage: the libFuzzer targets (tests/fuzz, built with clang in build-fuzz by tools/fuzz.sh),
# each run for a bounded time from the committed seeds and regressions; each target is one check.
# (The two builds above already replayed those inputs once through every target.)
run_fuzz() { # seconds per target
    local secs=$1 p=0 f=0 t
    echo "=== fuzz targets (build-fuzz: clang, libFuzzer, ASan + UBSan; ${secs} s each)"
    if ! tools/fuzz.sh build; then
        echo "build failed: fuzz"
        status=1
        total_fail=$((total_fail + 1))
        return
    fi
    for t in $(tools/fuzz.sh list); do
        if tools/fuzz.sh "$t" "$secs"; then p=$((p + 1)); else f=$((f + 1)); fi
    done
    [ "$f" -eq 0 ] || status=1
    echo "fuzz: $p passed, $f failed"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
}

run_build release build-release -Dbuildtype=release -Dcuda=$cuda
run_build sanitize build-asan -Dbuildtype=debugoptimized -Dcuda=disabled \
    -Db_sanitize=address,undefined -Db_lundef=false
run_fuzz "${MOE_FUZZ_SECONDS:-25}"

echo "tests: $total_pass passed, $total_fail failed"
[ "$status" -eq 0 ] && [ "$total_fail" -eq 0 ]
