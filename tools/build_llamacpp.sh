#!/usr/bin/env bash
# Builds llama.cpp's llama-bench (and llama-cli) from the llama-cpp-python source distribution
# on PyPI — the same pinned version scripts/setup.sh takes its tokenizer vocabularies from — into
# .venv/llama.cpp, for tools/bench_vs_llamacpp.sh.  A reference to compare against, never linked
# into moeserve.  About 5 minutes on 2 cores; a second run does nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
version=0.3.36
dest=$root/.venv/llama.cpp
if [ -x "$dest/build/bin/llama-bench" ]; then
    echo "llama-bench already built: $dest/build/bin/llama-bench"
    exit 0
fi
command -v cmake >/dev/null || { echo "cmake is needed: apt-get install cmake g++" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$root/.venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" \
    "llama-cpp-python==$version"
tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
rm -rf "$dest"
mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$dest"
cmake -S "$dest" -B "$dest/build" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DGGML_OPENMP=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$dest/build" -j "$(nproc)" --target llama-bench llama-cli >/dev/null
echo "built $dest/build/bin/llama-bench"
