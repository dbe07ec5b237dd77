#!/usr/bin/env bash
# Builds moeserve and serves the default model — tests/data/trained-moe.gguf, a 16 MB
# OLMoE-shaped MoE trained on Python's standard library (tools/train_moe.py; docs/trained-moe.md)
# — with the OpenAI-compatible API on http://127.0.0.1:8080 (Ctrl-C stops it).  Extra arguments
# go to `moeserve serve` (e.g. --port 9000, --set cache.host_bytes=50%, --config
# config/cpu-only.json, or --model M.gguf for another model).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
./scripts/setup.sh
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
if [ ! -f build-release/build.ninja ]; then
    meson setup build-release -Dbuildtype=release >/dev/null
fi
ninja -C build-release >/dev/null
model=tests/data/trained-moe.gguf
echo "try: curl http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' -d '{\"model\":\"trained-moe\",\"prompt\":\"def read_config(path):\\n\",\"max_tokens\":64}'"
exec build-release/cli/moeserve serve --model "$model" "$@"
