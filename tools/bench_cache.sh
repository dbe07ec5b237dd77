#!/usr/bin/env bash
# The expert cache out of core: for each model, the disk's own O_DIRECT read bandwidth at the
# expert size (fio, random reads at the cache's queue depth) — the floor for misses — then
# `moeserve bench` decoding with the expert cache at 100%, 50%, 25% of all experts and at the
# minimum (one token's experts of one layer), reads with O_DIRECT so that the page cache never
# holds the file.  Models are generated (seeded) in a scratch directory and deleted afterwards.
#
#   tools/bench_cache.sh [--keep] [--dir DIR] [--threads N] [--gen G] [--budgets "all 50% 25% min"]
#                        [--predictor none|pregate|affinity] PRESET:TYPE ...
#   e.g. tools/bench_cache.sh olmoe-slice:q4_k_m mixtral-slice:q4_k_m
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${TMPDIR:-/tmp}/moeserve-bench
threads=2
gen=32
budgets="all 50% 25% min"
predictor=none
keep=0
models=()
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) keep=1 ;;
        --dir) dir=$2; shift ;;
        --threads) threads=$2; shift ;;
        --gen) gen=$2; shift ;;
        --budgets) budgets=$2; shift ;;
        --predictor) predictor=$2; shift ;;
        *) models+=("$1") ;;
    esac
    shift
done
[ ${#models[@]} -gt 0 ] || { sed -n 2,9p "$0"; exit 2; }
bin="$root/build-release/cli/moeserve"
[ -x "$bin" ] || { echo "build first: meson setup build-release && ninja -C build-release" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio measures the disk floor: apt-get install fio" >&2; exit 1; }
mkdir -p "$dir"
for spec in "${models[@]}"; do
    preset=${spec%%:*}
    type=${spec##*:}
    file="$dir/$preset-$type.gguf"
    if [ ! -f "$file" ]; then
        "$root/.venv/bin/python3" "$root/tools/gen_model.py" --preset "$preset" --type "$type" --seed 1 -o "$file.tmp" >&2
        mv "$file.tmp" "$file"
    fi
    # Slot-sized random reads over the file, O_DIRECT, 32 in flight (the cache's default).
    expert=$("$bin" inspect "$file" --summary 2>/dev/null | sed -n 's/.*expert cache *\([0-9]*\) bytes per expert.*/\1/p' | head -1)
    bs=$(( (${expert:-4194304} + 4095) / 4096 * 4096 ))
    [ $bs -le 67108864 ] || bs=67108864
    floor=$(fio --name=floor --filename="$file" --readonly --rw=randread --direct=1 --ioengine=io_uring \
                --iodepth=32 --bs=$bs --size=$(stat -c %s "$file") --runtime=10 --time_based \
                --output-format=terse --terse-version=3 2>/dev/null | awk -F';' '{printf "%.0f", $7 * 1024 / 1e6}')
    echo "### $preset $type: disk O_DIRECT random read at $bs-byte blocks, queue depth 32: $floor MB/s"
    echo
    for b in $budgets; do
        echo "budget $b:"
        "$bin" bench --model "$file" --threads "$threads" --gen "$gen" --prompt 16 --expert-cache "$b" --direct on --predictor "$predictor" 2>/dev/null
        echo
    done
    [ $keep -eq 1 ] || rm -f "$file"
done
