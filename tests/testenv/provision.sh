#!/usr/bin/env bash
# Provision what Wukong's tests and demo need on a Debian bookworm machine:
#   - the wasm32-wasip2 Rust target (plugins are WebAssembly components),
#   - etcd (Debian's etcd-server) and iproute2 (network namespaces for the aggregated API),
#   - an OCI registry (Debian's docker-registry) for the plugin-distribution tests,
#   - kubectl (Debian's kubernetes-client) when none is on PATH, for the demo,
#   - kube-apiserver, built from Debian's `kubernetes` source package into a cache
#     outside the work tree ($WUKONG_CACHE, default ~/.cache/wukong) and rebuilt only when missing.
# If KUBEBUILDER_ASSETS names a folder holding kube-apiserver and etcd, those are used instead.
# Idempotent: every step checks first and says what it does. Prints the assets folder last.
set -euo pipefail

cache="${WUKONG_CACHE:-$HOME/.cache/wukong}"
assets="$cache/assets"
say() { printf '[provision] %s\n' "$*" >&2; }
die() { printf '[provision] FAILED: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    as_root apt-get update -qq >&2 || die "apt-get update"
    apt_updated=1
  fi
  say "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]}"
}

# 1. Rust target for the plugins.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  say "rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2 >&2 || die "rustup target add wasm32-wasip2"
fi

# 2. Network namespaces (the simulator serves KubeVirt's aggregated API from one).
command -v ip >/dev/null || apt_install iproute2

# 2b. kubectl, which the demo drives the cluster with (and a testenv test runs): Debian's
#     kubernetes-client when none is on PATH.
command -v kubectl >/dev/null || apt_install kubernetes-client

# 2c. An OCI registry (distribution 2.8) for host/tests/oci.rs. Each test runs its own
#     `docker-registry serve` on a free loopback port; the package's service is not used.
apt_install docker-registry

# 2b. componentize-py builds the Python plugin (plugins/python-storage), in its own venv
#     under the cache so the system Python stays untouched. Quiet: stdout is the assets path.
componentize_py_venv="$cache/componentize-py"
if ! "$componentize_py_venv/bin/componentize-py" --version 2>/dev/null | grep -qx 'componentize-py 0.25.1'; then
  say "installing componentize-py 0.25.1 into $componentize_py_venv"
  python3 -m venv "$componentize_py_venv" >&2 2>/dev/null || { apt_install python3-venv; python3 -m venv "$componentize_py_venv" >&2; } \
    || die "python3 -m venv $componentize_py_venv"
  "$componentize_py_venv/bin/pip" install --quiet --disable-pip-version-check 'componentize-py==0.25.1' >&2 \
    || die "pip install componentize-py==0.25.1"
fi

# 3. Control-plane binaries.
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ] \
    || die "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS must hold executable kube-apiserver and etcd"
  say "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

mkdir -p "$assets"
apt_install etcd-server
ln -sf /usr/bin/etcd "$assets/etcd"

if [ -x "$assets/kube-apiserver" ] && "$assets/kube-apiserver" --version >/dev/null 2>&1; then
  say "kube-apiserver cached: $assets/kube-apiserver ($("$assets/kube-apiserver" --version))"
else
  apt_install golang-go rsync jq dpkg-dev golang-github-modern-go-reflect2-dev
  if ! ls /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | xargs grep -qs 'deb-src'; then
    say "adding a deb-src entry for bookworm main"
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | as_root tee /etc/apt/sources.list.d/wukong-deb-src.sources >/dev/null
    as_root apt-get update -qq >&2 || die "apt-get update (deb-src)"
  fi
  build="$cache/build"
  rm -rf "$build"; mkdir -p "$build"
  say "downloading Debian's kubernetes source package into $build"
  (cd "$build" && apt-get source --download-only kubernetes >&2) || die "apt-get source kubernetes"
  (cd "$build" && dpkg-source -x --no-check ./kubernetes_*.dsc src >&2) || die "unpacking kubernetes source"
  src="$build/src"
  # NB: vendored reflect2 v1.0.1 segfaults under Go >= 1.18 on the first custom-resource create.
  say "replacing vendored modern-go/reflect2 with Debian's v1.0.2"
  rm -rf "$src/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
  say "building kube-apiserver (about 4 minutes on 2 cores)"
  mkdir -p "$src/.go/src/k8s.io"
  ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  (cd "$src/.go/src/k8s.io/kubernetes" && GOPATH="$src/.go" GO111MODULE=off GOFLAGS=-mod=vendor CGO_ENABLED=0 \
      make WHAT=cmd/kube-apiserver >&2) || die "building kube-apiserver (log above)"
  install -m 0755 "$src/_output/bin/kube-apiserver" "$assets/kube-apiserver" || die "installing kube-apiserver"
  rm -rf "$build"
  say "kube-apiserver built: $assets/kube-apiserver"
fi
echo "$assets"
