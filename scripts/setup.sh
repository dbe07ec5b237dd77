#!/usr/bin/env bash
# Installs everything moeserve needs to build and test on Debian 12, then creates the project's
# Python virtualenv (.venv) for the model generator.  Idempotent: a second run changes nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

apt_pkgs=(build-essential meson ninja-build pkg-config libuv1-dev libcjson-dev liburing-dev check
          node-llhttp python3 python3-venv prometheus)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$root/tools/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python3" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: creating Python virtualenv in .venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$root/tools/requirements.txt"
    echo "$want" > "$stamp"
fi

# Real tokenizer vocabularies for tests/integration/tokenizer_crosscheck.py (data, not code):
# llama.cpp's models/ggml-vocab-*.gguf with their .inp/.out reference tokenizations, vendored in
# the llama-cpp-python source distribution, and Mistral's SentencePiece models in mistral-common's.
# Pinned, fetched once into .venv/tokenizer-data (git-ignored), only the files the test reads.
tok_pkgs=(llama-cpp-python==0.3.36 mistral-common==1.13.1)
tokdata="$venv/tokenizer-data"
tok_vocabs="gpt-2 llama-bpe qwen2 qwen35 deepseek-llm mpt llama-spm"
tok_stamp="$tokdata/.fetched-$(echo "${tok_pkgs[*]} $tok_vocabs" | sha256sum | cut -c1-16)"
if [ ! -f "$tok_stamp" ]; then
    echo "setup: fetching tokenizer vocabularies (${tok_pkgs[*]} source distributions)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" "${tok_pkgs[@]}"
    rm -rf "$tokdata"
    mkdir -p "$tokdata/llama.cpp-models" "$tokdata/mistral-common"
    tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp" --wildcards '*/vendor/llama.cpp/models/ggml-vocab-*'
    for v in $tok_vocabs; do
        cp "$tmp"/llama_cpp_python-*/vendor/llama.cpp/models/ggml-vocab-$v.gguf* "$tokdata/llama.cpp-models/"
    done
    tar -xzf "$tmp"/mistral_common-*.tar.gz -C "$tmp" --wildcards '*/mistral_common/data/*.model*'
    cp "$tmp"/mistral_common-*/src/mistral_common/data/{tokenizer.model.v1,mistral_instruct_tokenizer_240323.model.v3} \
        "$tokdata/mistral-common/"
    touch "$tok_stamp"
fi
