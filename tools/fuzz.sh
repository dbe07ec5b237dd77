#!/usr/bin/env bash
# Runs moeserve's libFuzzer targets (tests/fuzz/, docs/fuzzing.md).
#
#   tools/fuzz.sh TARGET SECONDS     one target for SECONDS
#   tools/fuzz.sh all SECONDS        every target in turn, SECONDS each
#   tools/fuzz.sh list               the target names
#   tools/fuzz.sh build              configure and build build-fuzz only
#
# Builds build-fuzz (CC=clang, -Dfuzz=true, ASan + UBSan) when needed.  Each run starts from the
# committed seeds (tests/fuzz/corpus/TARGET) and regressions (tests/fuzz/regressions/TARGET) and
# grows its own corpus in build-fuzz/fuzz/corpus/TARGET, kept between runs; crashes, leaks,
# timeouts and out-of-memory inputs are written to build-fuzz/fuzz/findings/TARGET/ (all of
# build-fuzz is git-ignored), libFuzzer's output to build-fuzz/fuzz/TARGET.log.  Exit status 0
# when no target found anything; each target prints one line with its executions.
# FUZZ_JOBS=N runs N processes per target (libFuzzer -fork); the default is one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=build-fuzz
out=$build/fuzz
targets=(gguf gguf_header http api template tokenizer config json_schema toolcall)

# Inputs longer than these are not generated: a few times the largest seed, so that a mutation
# can still grow a seed, while short inputs keep the executions per second high.
max_len() {
    case $1 in
        gguf | gguf_header) echo 65536 ;;
        template) echo 24576 ;;
        http) echo 16384 ;;
        *) echo 8192 ;;
    esac
}

usage() {
    echo "usage: tools/fuzz.sh TARGET|all SECONDS | list | build   (targets: ${targets[*]})" >&2
    exit 2
}

build_targets() {
    if ! command -v clang >/dev/null 2>&1; then
        echo "fuzz: clang not found: run scripts/setup.sh (it installs clang and libclang-rt-dev)" >&2
        return 1
    fi
    if [ ! -f "$build/build.ninja" ]; then
        CC=clang meson setup "$build" --werror -Dfuzz=true -Dtests=false -Dcuda=disabled \
            -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
    fi
    # Only the fuzz targets and what they link: the rest of the tree is not built with clang here.
    ninja -C "$build" fuzz >"$build/fuzz-ninja.log" 2>&1 || {
        cat "$build/fuzz-ninja.log"
        echo "fuzz: build failed" >&2
        return 1
    }
}

run_target() { # name, seconds
    local name=$1 secs=$2
    local bin=$build/tests/fuzz/fuzz_$name
    local corpus=$out/corpus/$name findings=$out/findings/$name log=$out/$name.log
    mkdir -p "$corpus" "$findings"
    local dirs=("$corpus" "tests/fuzz/corpus/$name")
    [ -d "tests/fuzz/regressions/$name" ] && dirs+=("tests/fuzz/regressions/$name")
    local opts=(-max_total_time="$secs" -max_len="$(max_len "$name")" -timeout=10 -rss_limit_mb=2048
                -print_final_stats=1 -artifact_prefix="$findings/")
    local dict=tests/fuzz/${name%_header}.dict # gguf_header shares gguf.dict
    [ -f "$dict" ] && opts+=(-dict="$dict")
    if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then opts+=(-fork="$FUZZ_JOBS" -ignore_crashes=0); fi
    local before
    before=$(ls "$findings" | wc -l)
    set +e
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "$bin" "${opts[@]}" "${dirs[@]}" >"$log" 2>&1
    local rc=$?
    set -e
    local execs rate
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    local new
    new=$(ls "$findings" | wc -l)
    if [ $rc -eq 0 ] && [ "$new" -eq "$before" ]; then
        echo "fuzz $name: ok, $execs executions in ${secs} s ($rate/s), corpus $(ls "$corpus" | wc -l) files"
        return 0
    fi
    echo "fuzz $name: FAILED (exit $rc) after $execs executions; libFuzzer's log: $log"
    grep -E 'ERROR: |SUMMARY: |fuzz check failed|runtime error' "$log" | head -5 | sed 's/^/    /'
    local f
    for f in $(ls -t "$findings" | head -5); do
        echo "    reproducer: $findings/$f"
        echo "    replay it:  $bin $findings/$f"
    done
    return 1
}

[ $# -ge 1 ] || usage
case $1 in
    list)
        printf '%s\n' "${targets[@]}"
        exit 0
        ;;
    build)
        build_targets
        exit
        ;;
esac
[ $# -eq 2 ] && [[ $2 =~ ^[0-9]+$ ]] || usage
secs=$2
if [ "$1" = all ]; then
    run=("${targets[@]}")
else
    [[ " ${targets[*]} " == *" $1 "* ]] || usage
    run=("$1")
fi
build_targets
passed=0 failed=0
for t in "${run[@]}"; do
    if run_target "$t" "$secs"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
[ ${#run[@]} -eq 1 ] || echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
