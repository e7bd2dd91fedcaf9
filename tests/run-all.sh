#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: provisions what the tests need
# (wasm32-wasip2, etcd, kube-apiserver; see tests/testenv/provision.sh), builds the plugin
# components, then runs the whole workspace's tests, lints included.
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-shot build gains nothing from incremental state, which takes tens of GB.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi

assets=$(bash tests/testenv/provision.sh)
export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$assets}"
echo "[run-all] control-plane binaries: $KUBEBUILDER_ASSETS" >&2

echo "[run-all] checking formatting" >&2
cargo fmt --all -- --check
# The plugin template is its own workspace (it builds the same once copied out).
cargo fmt --manifest-path examples/plugin-template/Cargo.toml -- --check

echo "[run-all] clippy" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "[run-all] building plugin components" >&2
bash tests/build-plugins.sh

echo "[run-all] cargo test --workspace" >&2
cargo test --workspace --no-fail-fast "$@"

echo "[run-all] the demo, fast" >&2; bash examples/demo.sh --fast

echo "[run-all] bundled plugins against their isolation-runner cases" >&2
for cases in plugins/*/cases; do
  [ -d "$cases" ] || continue
  name=$(basename "$(dirname "$cases")")
  cargo run --quiet -p wukong -- plugin test "target/wasm32-wasip2/plugin/${name//-/_}.wasm" "$cases"
done

echo "[run-all] bundled plugins against the conformance suite of their kind" >&2
for dir in plugins/*/; do
  name=$(basename "$dir")
  [ "$name" = sdk ] && continue
  cargo run --quiet -p wukong -- plugin conformance "target/wasm32-wasip2/plugin/${name//-/_}.wasm"
done
echo "[run-all] all tests passed" >&2
