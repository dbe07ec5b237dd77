#!/usr/bin/env bash
# Installs everything moeserve needs to build and test on Debian 12, then creates the project's
# Python virtualenv (.venv) for the model generator and the references the tests compare against
# (llama.cpp among them, built from source once).  Idempotent: a second run changes nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

apt_pkgs=(build-essential meson ninja-build pkg-config libuv1-dev libcjson-dev liburing-dev check
          node-llhttp python3 python3-venv prometheus cmake g++ chromium nginx
          clang libclang-rt-dev) # clang + its runtimes: the libFuzzer targets (tools/fuzz.sh)
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

# Source distributions fetched from PyPI (pinned), downloaded at most once per run and only when a
# step below needs them.
sdists=(llama-cpp-python==0.3.36 mistral-common==1.13.1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch_sdists() {
    [ -f "$tmp/.fetched" ] && return
    echo "setup: downloading source distributions (${sdists[*]})"
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" "${sdists[@]}"
    touch "$tmp/.fetched"
}

# Real tokenizer vocabularies for tests/integration/tokenizer_crosscheck.py (data, not code):
# llama.cpp's models/ggml-vocab-*.gguf with their .inp/.out reference tokenizations, vendored in
# the llama-cpp-python source distribution, and Mistral's SentencePiece models in mistral-common's.
# Fetched once into .venv/tokenizer-data (git-ignored), only the files the test reads.
tokdata="$venv/tokenizer-data"
tok_vocabs="gpt-2 llama-bpe qwen2 qwen35 deepseek-llm mpt llama-spm"
tok_stamp="$tokdata/.fetched-$(echo "${sdists[*]} $tok_vocabs" | sha256sum | cut -c1-16)"
if [ ! -f "$tok_stamp" ]; then
    fetch_sdists
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

# llama.cpp as an independent reference for tests/integration/test_llamacpp_agreement.py: the
# llama-cpp-python bindings, built by pip from the same source distribution: a CPU build for this
# machine of only the libraries the bindings load (libllama, libggml*): no mtmd, no curl, and not
# llama.cpp's `common` library, which the bindings never load but their CMakeLists forces on (a
# project include turns it off for the vendored llama.cpp: 2 minutes on 2 cores instead of 9).
# Once: the stamp names the version, the build options and this CPU's instruction set (a native
# build from another CPU might not run here), so a second run builds nothing.
llama_cmake_args="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF -DGGML_OPENMP=OFF -DGGML_CCACHE=OFF"
llama_deps=(diskcache==5.6.3) # its other dependencies (numpy, jinja2, typing-extensions) are above
llama_build_deps="scikit-build-core==1.1.2"
cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-16)
llama_key=$(echo "${sdists[0]} ${llama_deps[*]} $llama_build_deps $llama_cmake_args no-common $cpu_flags" |
    sha256sum | cut -c1-16)
llama_stamp="$venv/.llama-cpp-python-$llama_key"
if [ ! -f "$llama_stamp" ]; then
    fetch_sdists
    echo "setup: building llama-cpp-python (llama.cpp for the CPU) into .venv, once"
    start=$(date +%s)
    rm -f "$venv"/.llama-cpp-python-*
    echo 'set(LLAMA_BUILD_COMMON OFF)' > "$tmp/llama-no-common.cmake"
    echo "$llama_build_deps" > "$tmp/build-constraints.txt"
    PIP_CONSTRAINT="$tmp/build-constraints.txt" \
        CMAKE_ARGS="$llama_cmake_args -DCMAKE_PROJECT_llama.cpp_INCLUDE=$tmp/llama-no-common.cmake" \
        "$venv/bin/pip" install -q --disable-pip-version-check --no-cache-dir --no-deps --force-reinstall \
        "$tmp"/llama_cpp_python-*.tar.gz "${llama_deps[@]}"
    "$venv/bin/python3" -c 'import llama_cpp' # the libraries load
    echo "setup: llama-cpp-python built in $(($(date +%s) - start)) s"
    touch "$llama_stamp"
fi
