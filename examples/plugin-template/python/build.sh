#!/usr/bin/env bash
# Builds build/example_storage.wasm with componentize-py (`pip install
# componentize-py==0.25.1`, or set COMPONENTIZE_PY to its path) from app.py and the
# contract in wit/. The sources stay as they are: the output goes to build/.
set -euo pipefail
cd "$(dirname "$0")"
componentize_py="${COMPONENTIZE_PY:-componentize-py}"
# NB: no VIRTUAL_ENV: componentize-py would add that venv's site-packages to the app.
mkdir -p build
env -u VIRTUAL_ENV "$componentize_py" -d wit -w storage-plugin componentize app -o build/example_storage.wasm
echo "built build/example_storage.wasm" >&2
