#!/usr/bin/env bash
# moeserve and llama.cpp side by side on the same GGUF files: prefill-512 and decode tokens/s at
# each thread count, measured in one run, with the ratio moeserve / llama.cpp.
#
#   tools/bench_vs_llamacpp.sh [--threads "1 2"] [--llama-bench PATH] FILE.gguf ...
#
# llama.cpp: a `llama-bench` binary (--llama-bench, or $LLAMA_BENCH, or the one
# tools/build_llamacpp.sh builds from the llama-cpp-python source distribution that
# scripts/setup.sh already fetches).  Both tools run with the file in the page cache: prefill of
# a 512-token prompt, then 32 decode steps after it (llama-bench: `-p 512` and `-n 32 -d 512`, so
# that both decode over the same 512 cached positions; its plain tg32 decodes from an empty
# context); llama-bench reports its mean of 3 repetitions, moeserve the best of 3 runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
threads="1 $(nproc)"
llama_bench=${LLAMA_BENCH:-$root/.venv/llama.cpp/build/bin/llama-bench}
files=()
while [ $# -gt 0 ]; do
    case $1 in
    --threads) threads=$2; shift 2 ;;
    --llama-bench) llama_bench=$2; shift 2 ;;
    *) files+=("$1"); shift ;;
    esac
done
moeserve=$root/build-release/cli/moeserve
[ -x "$moeserve" ] || { echo "build moeserve first (./scripts/test.sh or meson + ninja)" >&2; exit 2; }
[ -x "$llama_bench" ] || { echo "no llama-bench at $llama_bench (tools/build_llamacpp.sh builds one)" >&2; exit 2; }
[ ${#files[@]} -gt 0 ] || { echo "usage: $0 [--threads \"1 2\"] FILE.gguf ..." >&2; exit 2; }

echo "| model | threads | llama.cpp prefill-512 | moeserve prefill-512 | ratio | llama.cpp decode @512 | moeserve decode @512 | ratio | moeserve floor/achieved |"
echo "|---|---|---|---|---|---|---|---|---|"
for f in "${files[@]}"; do
    cat "$f" >/dev/null # both read it from the page cache
    for t in $threads; do
        pp_json=$("$llama_bench" -m "$f" -p 512 -n 0 -t "$t" -r 3 -o json 2>/dev/null)
        tg_json=$("$llama_bench" -m "$f" -p 0 -n 32 -d 512 -t "$t" -r 3 -o json 2>/dev/null)
        read -r l_pp l_tg < <(python3 -c '
import json, sys
pp = json.loads(sys.argv[1])[0]["avg_ts"]
tg = json.loads(sys.argv[2])[0]["avg_ts"]
print(f"{pp:.1f} {tg:.2f}")' "$pp_json" "$tg_json")
        best_pp=0 best_tg=0 floor=""
        for _ in 1 2 3; do
            row=$("$moeserve" bench --model "$f" --threads "$t" --prompt 512 --gen 32 --no-header 2>/dev/null | grep '^| ' | head -1)
            pp=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $6); print $6}')
            tg=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $8); print $8}')
            if python3 -c "import sys; sys.exit(0 if float('$tg') > float('$best_tg') else 1)"; then
                best_tg=$tg
                floor=$(echo "$row" | awk -F'|' '{gsub(/ /, "", $15); print $15}')
            fi
            python3 -c "import sys; sys.exit(0 if float('$pp') > float('$best_pp') else 1)" && best_pp=$pp
        done
        python3 - "$(basename "$f")" "$t" "$l_pp" "$best_pp" "$l_tg" "$best_tg" "$floor" <<'PY'
import sys
name, t, lpp, mpp, ltg, mtg, floor = sys.argv[1:]
print(f"| {name} | {t} | {lpp} | {mpp} | {float(mpp) / float(lpp):.2f}x | {ltg} | {mtg} | "
      f"{float(mtg) / float(ltg):.2f}x | {floor} |")
PY
    done
done
