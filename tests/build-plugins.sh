#!/usr/bin/env bash
# Builds every plugin component (bundled and test plugins) for wasm32-wasip2 into
# target/wasm32-wasip2/plugin/. Each plugin is built on its own: a component serves one
# step, so the SDK's step features must not unify across plugins.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
plugins=$(cargo metadata --no-deps --format-version 1 \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print(" ".join(p["name"] for p in d["packages"] if any("cdylib" in t["crate_types"] for t in p["targets"])))')
for plugin in $plugins; do
  echo "[build-plugins] $plugin" >&2
  cargo build --quiet --target wasm32-wasip2 --profile plugin -p "$plugin"
done
# The Python plugin is no cargo crate: componentize-py builds it (skipped when unchanged).
echo "[build-plugins] python-storage" >&2
bash plugins/python-storage/build.sh
# The plugin template is its own workspace, so it builds the same copied out of the repo;
# built here (into the same target folder) so it never rots.
echo "[build-plugins] examples/plugin-template" >&2
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" cargo build --quiet --target wasm32-wasip2 \
  --profile plugin --manifest-path examples/plugin-template/Cargo.toml
ls -l "${CARGO_TARGET_DIR:-target}"/wasm32-wasip2/plugin/*.wasm >&2
