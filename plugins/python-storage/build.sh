#!/usr/bin/env bash
# Builds the python-storage component with componentize-py into
# $CARGO_TARGET_DIR/wasm32-wasip2/plugin/python_storage.wasm (target/ by default), beside
# the Rust plugins. componentize-py comes from tests/testenv/provision.sh (a venv under
# $WUKONG_CACHE, default ~/.cache/wukong), or from PATH.
#
# The build takes ~10 s (CPython is snapshotted into the component), so it is skipped when
# the sources, the WIT contract and componentize-py's version are unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${WUKONG_CACHE:-$HOME/.cache/wukong}"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
out="$target/wasm32-wasip2/plugin/python_storage.wasm"
say() { printf '[python-storage] %s\n' "$*" >&2; }

componentize_py="$cache/componentize-py/bin/componentize-py"
[ -x "$componentize_py" ] || componentize_py="$(command -v componentize-py || true)"
if [ -z "$componentize_py" ]; then
  say "componentize-py not found: run tests/testenv/provision.sh (installs componentize-py==0.25.1)"
  exit 1
fi

# Inputs: every source file, the contract, and the tool's version.
stamp="$( {
  "$componentize_py" --version
  cd "$root" && find plugins/python-storage/src wit -type f \( -name '*.py' -o -name '*.wit' \) \
    -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum
} | sha256sum | cut -d' ' -f1)"
stamp_file="$out.inputs"
if [ -f "$out" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
  say "up to date: $out"
  exit 0
fi

mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Bindings for editors and type checkers (gitignored); componentize generates its own.
# NB: `bindings` refuses a folder that exists (os error 17), so it is made afresh.
rm -rf "$here/bindings"
"$componentize_py" -d "$root/wit" -w storage-plugin bindings "$here/bindings" >/dev/null
# NB: no VIRTUAL_ENV: componentize-py would add that venv's site-packages to the app's path.
(cd "$here" && env -u VIRTUAL_ENV "$componentize_py" -d "$root/wit" -w storage-plugin \
  componentize -p src app -o "$work/python_storage.wasm" >&2)
mv "$work/python_storage.wasm" "$out"
printf '%s\n' "$stamp" >"$stamp_file"
say "built $out ($(du -h "$out" | cut -f1))"
