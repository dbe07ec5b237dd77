#!/usr/bin/env bash
# Generates benchmark models (seeded, in a scratch directory), runs `moeserve bench` on each at
# the given thread counts, prints one markdown table, and deletes the models afterwards.
#
#   tools/bench_models.sh [--keep] [--dir DIR] [--threads "1 2"] [--batch "1"] [--prompt "64"] PRESET:TYPE ...
#   e.g. tools/bench_models.sh olmoe-slice:f16 olmoe-slice:bf16 qwen3moe-slice:f16
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${TMPDIR:-/tmp}/moeserve-bench
threads="1 2"
batches="1"
prompts="64"
keep=0
models=()
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) keep=1 ;;
        --dir) dir=$2; shift ;;
        --threads) threads=$2; shift ;;
        --batch) batches=$2; shift ;;
        --prompt) prompts=$2; shift ;;
        *) models+=("$1") ;;
    esac
    shift
done
[ ${#models[@]} -gt 0 ] || { sed -n 2,6p "$0"; exit 2; }
bin="$root/build-release/cli/moeserve"
[ -x "$bin" ] || { echo "build first: ./scripts/test.sh or meson setup build-release && ninja -C build-release" >&2; exit 1; }
mkdir -p "$dir"
header=1
for spec in "${models[@]}"; do
    preset=${spec%%:*}
    type=${spec##*:}
    file="$dir/$preset-$type.gguf"
    if [ ! -f "$file" ]; then
        "$root/.venv/bin/python3" "$root/tools/gen_model.py" --preset "$preset" --type "$type" --seed 1 -o "$file.tmp" >&2
        mv "$file.tmp" "$file"
    fi
    for p in $prompts; do
        for b in $batches; do
            for t in $threads; do
                flags=()
                [ $header -eq 1 ] || flags+=(--no-header)
                header=0
                "$bin" bench --model "$file" --threads "$t" --batch "$b" --prompt "$p" "${flags[@]}" 2>/dev/null
            done
        done
    done
    [ $keep -eq 1 ] || rm -f "$file"
done
