#!/usr/bin/env bash
# Builds moeserve, generates the default model (a seeded `small` Qwen3-MoE-shaped model, F16,
# ~100 MB, in models/) the first time, and runs a one-shot generation on it, printing tokens/s.
# Extra arguments go to `moeserve generate` (e.g. -n 128 --threads 1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
if [ ! -f build-release/build.ninja ]; then
    meson setup build-release -Dbuildtype=release >/dev/null
fi
ninja -C build-release >/dev/null
model=models/default.gguf
if [ ! -f "$model" ]; then
    mkdir -p models
    echo "generating the default model ($model)"
    .venv/bin/python3 tools/gen_model.py --arch qwen3moe --preset small --type f16 --seed 1 -o "$model.tmp"
    mv "$model.tmp" "$model"
fi
exec build-release/cli/moeserve generate --model "$model" -n 64 "$@"
