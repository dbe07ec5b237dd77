#!/usr/bin/env bash
# Builds moeserve, generates the default model (a seeded `small` Qwen3-MoE-shaped model, F16,
# ~100 MB, in models/) the first time, and serves it with the OpenAI-compatible API on
# http://127.0.0.1:8080 (Ctrl-C stops it).  Extra arguments go to `moeserve serve`
# (e.g. --port 9000, --set cache.host_bytes=50%, --config config/cpu-only.json).
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
echo "try: curl http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' -d '{\"model\":\"default\",\"prompt\":\"Hello\",\"max_tokens\":16}'"
exec build-release/cli/moeserve serve --model "$model" "$@"
