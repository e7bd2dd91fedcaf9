#!/usr/bin/env bash
# The Wukong demo: a real kube-apiserver + etcd with the simulated KubeVirt, the operator
# with the bundled plugins, and the example Wukongs going through their lifecycle.
# Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/wukong-demo.XXXXXX)
pids=()
cleanup() {
  echo; echo "== cleaning up"
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

say "provisioning (etcd, kube-apiserver, wasm32-wasip2)"
assets=$(bash tests/testenv/provision.sh)
export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$assets}"

say "building the operator, the test environment and the bundled plugins"
cargo build --quiet -p wukong -p wukong-testenv
bash tests/build-plugins.sh 2>/dev/null

say "starting the control plane and the KubeVirt simulator"
export KUBECONFIG="$work/kubeconfig"
target/debug/wukong-testenv up --fast --nodes 3 --kubeconfig-out "$KUBECONFIG" >"$work/testenv.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do [ -s "$KUBECONFIG" ] && kubectl get nodes >/dev/null 2>&1 && break; sleep 0.5; done
kubectl get nodes

say "starting the operator with the bundled plugins (examples/wukong.toml)"
metrics=127.0.0.1:18080
target/debug/wukong run --config examples/wukong.toml --metrics-addr "$metrics" >"$work/operator.log" 2>&1 &
operator=$!
pids+=($operator)
sleep 2
if ! kill -0 "$operator" 2>/dev/null; then
  echo "the operator stopped:"; cat "$work/operator.log"; exit 1
fi

say "applying examples/wukongs/"
kubectl apply -f examples/wukongs/
names=$(kubectl get wukong -o jsonpath='{.items[*].metadata.name}')

say "waiting for every Wukong to be Running"
for _ in $(seq 1 120); do
  phases=$(kubectl get wukong -o jsonpath='{.items[*].status.phase}')
  [ "$(echo "$phases" | tr ' ' '\n' | grep -c '^Running$')" = "$(echo "$names" | wc -w)" ] && break
  sleep 0.5
done
kubectl get wukong
if [ "$(kubectl get wukong -o jsonpath='{.items[*].status.phase}' | tr ' ' '\n' | grep -c '^Running$')" != "$(echo "$names" | wc -w)" ]; then
  echo "not every Wukong reached Running:"; kubectl get wukong -o yaml | grep -A3 'type: StepFailed' || true
  tail -20 "$work/operator.log"; exit 1
fi
kubectl get vm,vmi,datavolumes,pvc,network-attachment-definitions
say "events"
kubectl get events --sort-by=.lastTimestamp | tail -20

say "operator metrics (http://$metrics/metrics): Wukongs by phase, reconciles, plugin calls"
curl -fsS "http://$metrics/metrics" | grep -E '^wukong_(wukongs\{|reconciles_total|plugin_call_duration_seconds_count)' | grep -v ' 0$' || true

say "deleting the Wukongs"
kubectl delete wukong --all --wait=true --timeout=60s
kubectl get vm,datavolumes,pvc
say "operator log (last lines)"
tail -15 "$work/operator.log"
