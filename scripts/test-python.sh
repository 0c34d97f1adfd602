#!/usr/bin/env bash
# Build and install the Python package (python/) into a fresh virtual environment outside the
# repository, then run its tests against the CLI (target/release/ctxsteer, which `cargo build
# --release` or `cargo test --release` builds) on the default model (`ctxsteer fetch-model`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CTXSTEER_VENV:-$(mktemp -d)/venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet ./python pytest
cargo build --release --quiet
"$venv/bin/python" -m pytest -q python/tests
