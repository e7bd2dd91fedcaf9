#!/usr/bin/env bash
# The Wukong demo: a real kube-apiserver + etcd with the simulated KubeVirt, the operator
# with the bundled plugins, and what it does with VMs, stage by stage:
#   1 provisioning and builds               6 a node drain: the operator evacuates a VM
#   2 control plane, simulator, operator    7 a backend swapped without a restart
#   3 the example Wukongs to Running        8 deletion keeps a retained disk
#   4 lifecycle with kubectl-wukong         9 a summary with each stage's time
#   5 a live migration to a named node
# Usage: examples/demo.sh [--fast]
#   --fast  no pauses, the shortest grace periods (what tests/run-all.sh runs)
# Every wait is bounded; on a timeout or any error it prints what it waited for, the
# objects concerned and the operator's log, and exits non-zero. Everything it starts is
# stopped on exit.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
root=$PWD

fast=false
case "${1:-}" in
  "") ;;
  --fast) fast=true ;;
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: examples/demo.sh [--fast]" >&2; exit 2 ;;
esac
if $fast; then
  pause=0 grace=1 wait_s=60
else
  pause=2 grace=5 wait_s=120
fi

kw=target/debug/kubectl-wukong
work=$(mktemp -d /tmp/wukong-demo.XXXXXX)
declare -A procs=()   # what the demo started: name -> pid
reported=false
current="starting"

now_ms() { date +%s%3N; }
secs() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }
strip() { sed 's/\x1b\[[0-9;]*m//g'; }
# Prints a command (quoting what needs it), then runs it.
show() {
  local arg line="$"
  for arg in "$@"; do
    if [[ $arg =~ ^[][A-Za-z0-9_./:=,@%+{}-]+$ ]]; then line+=" $arg"; else line+=" '${arg//\'/\'\\\'\'}'"; fi
  done
  printf '%s\n' "$line"
}
run() {
  local rc=0
  show "$@"
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then fail "\`$*\` exited $rc"; fi
}
# A JSONPath of an object, empty when it cannot be read (used while polling).
jp() { kubectl get "$1" -o "jsonpath=$2" 2>/dev/null || true; }

log_tail() {
  if [ -s "$work/operator.log" ]; then
    printf -- '-- operator log (last 30 lines)\n'
    strip <"$work/operator.log" | tail -n 30
  fi
  if [ -s "$work/testenv.log" ]; then
    printf -- '-- control plane + KubeVirt simulator log (last 10 lines)\n'
    strip <"$work/testenv.log" | tail -n 10
  fi
}

# fail MESSAGE [OBJECT...]: says what failed, shows the objects and the logs, exits 1.
fail() {
  local message=$1 object
  shift
  trap - ERR
  reported=true
  {
    printf '\n!! FAILED (stage %s): %s\n' "$current" "$message"
    if [ -s "${KUBECONFIG:-/nonexistent}" ]; then
      for object in "$@"; do
        printf -- '-- kubectl get %s -o yaml\n' "$object"
        kubectl get "$object" -o yaml 2>&1 | head -n 150 || true
      done
      printf -- '-- kubectl get wukong\n'
      kubectl get wukong 2>&1 || true
    fi
    log_tail
  } >&2
  exit 1
}
on_error() {
  # Only the script itself reports; a failing command substitution is reported by the
  # command that used it.
  [ "$BASH_SUBSHELL" -eq 0 ] || return 0
  fail "line $2: \`$3\` exited $1"
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

# Fails when something the demo started has stopped.
alive() {
  local name
  for name in "${!procs[@]}"; do
    kill -0 "${procs[$name]}" 2>/dev/null || fail "the $name stopped"
  done
}

# wait_until SECONDS WHAT "OBJECT..." COMMAND...: polls COMMAND until it succeeds, for at
# most SECONDS; on timeout fails, showing the OBJECTs.
wait_until() {
  local limit=$1 what=$2 objects=$3 deadline
  shift 3
  deadline=$(($(date +%s) + limit))
  until "$@"; do
    alive
    if [ "$(date +%s)" -ge "$deadline" ]; then
      # shellcheck disable=SC2086 # a list of objects
      fail "timed out after ${limit}s waiting for $what" $objects
    fi
    sleep 0.25
  done
}

# ctl VERB NAME ARGS...: kubectl-wukong, shown, and reported when it does not succeed.
ctl() {
  local rc=0
  show "$kw" "$@"
  "$kw" "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    fail "$kw $* exited $rc (3: the request ended without success; 4: --wait ran out of time)" "wukong/$2"
  fi
}

cleanup() {
  local rc=$? i pid
  trap - ERR
  if [ "$rc" -ne 0 ] && ! $reported; then
    printf '\n!! FAILED (stage %s): exit status %s\n' "$current" "$rc" >&2
    log_tail >&2
  fi
  echo
  echo "== cleaning up"
  # The operator first, then the control plane; each gets 30 s before it is killed.
  for name in operator simulator; do
    pid=${procs[$name]:-}
    [ -n "$pid" ] || continue
    kill -INT "$pid" 2>/dev/null || true
    for i in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "the $name did not stop on SIGINT; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -eq 0 ]; then
    rm -rf "$work"
  else
    echo "logs kept in $work"
  fi
  exit "$rc"
}
trap cleanup EXIT
for tool in kubectl python3; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH (README.md, Prerequisites)"
done

# stage N TITLE SUMMARY: closes the previous stage's clock, pauses (not with --fast), and
# prints the one line saying what this stage shows.
summaries=() times=()
started=0
close_stage() {
  if [ "$started" -gt 0 ]; then times+=($(($(now_ms) - started))); fi
}
stage() {
  close_stage
  if [ "$started" -gt 0 ] && [ "$pause" -gt 0 ]; then sleep "$pause"; fi
  current=$1
  summaries+=("$3")
  started=$(now_ms)
  printf '\n== [%s/9] %s\n' "$1" "$2"
}
demo_started=$(now_ms)

# --------------------------------------------------------------------------------------
stage 1 "Provisioning (etcd, kube-apiserver, wasm32-wasip2) and building wukong, wukong-testenv, kubectl-wukong and the plugins; the first run takes minutes" \
  "provisioned; built wukong, wukong-testenv, kubectl-wukong (target/debug) and the plugin components"
show bash tests/testenv/provision.sh
assets=$(bash tests/testenv/provision.sh)
export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$assets}"
run cargo build -p wukong -p wukong-testenv -p kubectl-wukong
run bash tests/build-plugins.sh

# --------------------------------------------------------------------------------------
stage 2 "Starting a real kube-apiserver + etcd with the simulated KubeVirt (3 nodes), then the operator with the bundled plugins, on a copy of examples/wukong.toml" \
  "control plane + simulated KubeVirt on 3 nodes; the operator loaded its 6 bundled plugins from a copy of examples/wukong.toml"
export KUBECONFIG="$work/kubeconfig"
target/debug/wukong-testenv up --fast --nodes 3 --kubeconfig-out "$KUBECONFIG" >"$work/testenv.log" 2>&1 &
procs[simulator]=$!
echo "started wukong-testenv up --fast --nodes 3 (log: $work/testenv.log)"
testenv_up() { grep -q '^nodes: ' "$work/testenv.log" && kubectl get nodes >/dev/null 2>&1; }
wait_until 180 "the control plane and the simulator to start" "" testenv_up
run kubectl get nodes -L type
# Apiservers from 1.22 label every namespace with its name by themselves (this one is
# 1.20); the MigrationPolicy Wukong writes for a VM selects its namespace by that label.
kubectl label namespace default kubernetes.io/metadata.name=default --overwrite >/dev/null

# The operator's own copy of the config, which stage 7 edits under it: the plugin folder
# made absolute (the example names it relative to examples/). The drain in stage 6 is seen
# at once: the operator watches Nodes and wakes the Wukongs on a cordoned one.
config="$work/wukong.toml"
sed -e "s#^dir = \"\.\./target/wasm32-wasip2/plugin\"#dir = \"$root/target/wasm32-wasip2/plugin\"#" \
  examples/wukong.toml >"$config"
grep -q "^dir = \"$root/" "$config" &&
  [ "$(grep -c '^default = "cdi"$' "$config")" = 1 ] ||
  fail "examples/wukong.toml no longer has the lines the demo edits ([plugins] dir, [storage] default = \"cdi\")"
echo "\$ diff -u examples/wukong.toml $config"
diff -u examples/wukong.toml "$config" | tail -n +3 | grep '^[-+]' || true
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics=127.0.0.1:$metrics_port
target/debug/wukong run --config "$config" --metrics-addr "$metrics" >"$work/operator.log" 2>&1 &
procs[operator]=$!
echo "started wukong run --config $config --metrics-addr $metrics (log: $work/operator.log)"
operator_ready() { grep -q 'following the config and plugin files' "$work/operator.log"; }
wait_until 60 "the operator to load its plugins and start its controller" "" operator_ready
strip <"$work/operator.log" | grep -E 'backend loaded|following the config' | sed -E 's/^[^ ]+ +INFO [^ ]+ //; s/ digest=([0-9a-f]{12})[0-9a-f]*/ digest=\1…/'

# --------------------------------------------------------------------------------------
stage 3 "Applying examples/wukongs/ and following each Wukong to Running (CDI, Longhorn and Ceph RBD disks, Multus networks)" \
  "the 5 example Wukongs went to Running: VMs, DataVolumes, claims and NADs made by the plugins"
run kubectl apply -f examples/wukongs/
expected=$(find examples/wukongs -name '*.yaml' -exec grep -h '^kind: Wukong$' {} + | wc -l)
phases_shown=""
stage3_started=$(now_ms)
all_running() {
  local phases
  phases=$(jp wukong '{range .items[*]}{.metadata.name}={.status.phase}{" "}{end}' | sed 's/= /=- /g')
  if [ "$phases" != "$phases_shown" ]; then
    printf '  %5ss  %s\n' "$(secs $(($(now_ms) - stage3_started)))" "$phases"
    phases_shown=$phases
  fi
  [ "$(grep -o '=Running ' <<<"$phases" | wc -l)" -eq "$expected" ]
}
wait_until "$wait_s" "all $expected Wukongs to be Running" "wukong" all_running
run kubectl get wukong
run kubectl get vm,vmi,datavolumes,pvc,network-attachment-definitions

# --------------------------------------------------------------------------------------
stage 4 "Lifecycle of the Wukong web through kubectl-wukong: stop, start, a restart whose guest ignores ACPI (forced after its ${grace}s grace period), pause, unpause, then its action history" \
  "kubectl-wukong on web: stop, start, restart forced after ${grace}s (ForcedAfterTimeout), pause, unpause; describe shows the history"
ctl stop web --grace-period "$grace" --wait --timeout "${wait_s}s"
ctl start web --wait --timeout "${wait_s}s"
echo "# the simulated guest now ignores ACPI: a graceful stop never ends by itself"
run kubectl annotate vmi web sim.wukong.io/ignore-acpi=hang
ctl restart web --grace-period "$grace" --wait --timeout "${wait_s}s"
outcome=$(jp wukong/web '{.status.lifecycleState.history[0].action}/{.status.lifecycleState.history[0].outcome}')
[ "$outcome" = "restart/ForcedAfterTimeout" ] ||
  fail "the restart ended $outcome, not restart/ForcedAfterTimeout" wukong/web vmi/web
ctl pause web --wait --timeout "${wait_s}s"
ctl unpause web --wait --timeout "${wait_s}s"
ctl describe web

# --------------------------------------------------------------------------------------
stage 5 "A live migration of db-longhorn (its disks are ReadWriteMany Longhorn volumes) to a node named with kubectl-wukong migrate --to" \
  "db-longhorn live-migrated to a named node"
echo "\$ kubectl get wukong db-longhorn -o jsonpath=... (its disks)"
jp wukong/db-longhorn '{range .status.volumes[*]}  {.name}: {.claimName} {.accessModes} {.volumeMode} on {.storageClass}{"\n"}{end}'
from=$(jp wukong/db-longhorn '{.status.nodeName}')
to=""
for node in $(jp nodes '{.items[*].metadata.name}'); do
  if [ "$node" != "$from" ]; then to=$node; break; fi
done
[ -n "$from" ] && [ -n "$to" ] || fail "no node to migrate db-longhorn to (it is on '${from}')" wukong/db-longhorn nodes
echo "db-longhorn runs on $from; moving it to $to"
ctl migrate db-longhorn --to "$to" --wait --timeout "${wait_s}s"
node=$(jp wukong/db-longhorn '{.status.nodeName}')
[ "$node" = "$to" ] || fail "db-longhorn is on '$node' after its migration to $to" wukong/db-longhorn vmi/db-longhorn
run kubectl get wukong db-longhorn
run kubectl get virtualmachineinstancemigrations

# --------------------------------------------------------------------------------------
stage 6 "A node drain: the Wukong migratable (spec.migrationPolicy, trigger nodeMaintenance) is live-migrated off its node by the operator, unasked" \
  "draining migratable's node moved it to another node by itself (trigger nodeMaintenance)"
echo "\$ kubectl get wukong migratable -o jsonpath='{.spec.migrationPolicy}'"
jp wukong/migratable '{.spec.migrationPolicy}'
echo
drained=$(jp wukong/migratable '{.status.nodeName}')
[ -n "$drained" ] || fail "migratable has no node" wukong/migratable
echo "migratable runs on $drained"
run kubectl drain "$drained" --ignore-daemonsets --delete-emptydir-data --timeout=60s
shown=""
drain_started=$(now_ms)
evacuated() {
  local state
  state=$(jp wukong/migratable '{.status.nodeName} {.status.migrationStatus.phase} {.status.migrationStatus.automatic}')
  if [ "$state" != "$shown" ]; then
    printf '  %5ss  node %s\n' "$(secs $(($(now_ms) - drain_started)))" \
      "$(awk '{printf "%s%s", $1, ($2 == "" ? "" : ", migration " $2 ($3 == "true" ? " (automatic)" : ""))}' <<<"$state")"
    shown=$state
  fi
  read -r node phase automatic <<<"$state"
  [ -n "${node:-}" ] && [ "$node" != "$drained" ] && [ "${phase:-}" = Succeeded ] && [ "${automatic:-}" = true ]
}
wait_until "$wait_s" "migratable to move off the drained node $drained" "wukong/migratable node/$drained" evacuated
jp wukong/migratable '  trigger {.status.migrationStatus.trigger}: {.status.migrationStatus.sourceNode} -> {.status.migrationStatus.targetNode}, {.status.migrationStatus.message}{"\n"}'
run kubectl get wukong
stayed=$(jp wukong '{range .items[*]}{.metadata.name} {.status.nodeName}{"\n"}{end}' | awk -v n="$drained" '$2 == n {printf "%s%s", s, $1; s=", "}')
if [ -n "$stayed" ]; then
  echo "# still on $drained: $stayed (no migrationPolicy; the simulator runs no pods, so the"
  echo "# drain itself evicted nothing: the move above is the operator's)"
fi
run kubectl uncordon "$drained"

# --------------------------------------------------------------------------------------
stage 7 "A hot backend swap: the operator's config switches [storage] default from cdi to longhorn while it runs; a new Wukong gets the new plugin" \
  "[storage] default swapped from cdi to longhorn without a restart; after-swap's storage step ran longhorn-storage"
echo "# The default applies to every disk that names no backend, existing ones included"
echo "# (docs/operating.md): those of the running Wukongs are pinned to cdi first."
while read -r name backends; do
  [ -n "$name" ] || continue
  ops="" i=0
  IFS=, read -ra disk_backends <<<"$backends"
  for backend in "${disk_backends[@]}"; do
    if [ -z "$backend" ]; then
      ops+="${ops:+,}{\"op\":\"add\",\"path\":\"/spec/disks/$i/backend\",\"value\":\"cdi\"}"
    fi
    i=$((i + 1))
  done
  if [ -n "$ops" ]; then run kubectl patch wukong "$name" --type=json -p "[$ops]"; fi
done < <(jp wukong '{range .items[*]}{.metadata.name}{" "}{range .spec.disks[*]}{.backend}{","}{end}{"\n"}{end}')
swaps_before=$(grep -c 'backends swapped' "$work/operator.log" || true)
run sed -i 's/^default = "cdi"$/default = "longhorn"/' "$config"
swapped() { [ "$(grep -c 'backends swapped' "$work/operator.log" || true)" -gt "$swaps_before" ]; }
wait_until 30 "the operator to swap in the edited config (log line 'backends swapped')" "" swapped
strip <"$work/operator.log" | grep 'backends swapped' | tail -n 1 | sed -E 's/^[^ ]+ +INFO [^ ]+ /operator: /'
run kubectl apply -f examples/demo/after-swap.yaml
after_swap_running() { [ "$(jp wukong/after-swap '{.status.phase}')" = Running ]; }
wait_until "$wait_s" "after-swap to be Running" "wukong/after-swap" after_swap_running
echo "\$ kubectl get wukong after-swap -o jsonpath='{range .status.plugins[*]}...'"
jp wukong/after-swap '{range .status.plugins[*]}  {.step}: {.name}@{.version} (backend {.backend}, sha256 {.digest}){"\n"}{end}'
storage=$(jp wukong/after-swap '{.status.plugins[?(@.step=="storage")].name}')
[ "$storage" = longhorn-storage ] || fail "after-swap's storage step ran '$storage', not longhorn-storage" wukong/after-swap
echo "# and the running Wukongs kept their disks where they were:"
for name in $(jp wukong '{.items[*].metadata.name}'); do
  printf '  %-12s %-8s storage: %s\n' "$name" "$(jp "wukong/$name" '{.status.phase}')" \
    "$(jp "wukong/$name" '{.status.plugins[?(@.step=="storage")].name}')"
done
run kubectl get pvc

# --------------------------------------------------------------------------------------
stage 8 "Deletion: db-longhorn's data disk has retain: true, so its claim outlives the Wukong; every other claim goes with its Wukong" \
  "deleting every Wukong removed their claims except db-longhorn's retained data disk"
echo "\$ kubectl get wukong db-longhorn -o jsonpath=... (its disks)"
jp wukong/db-longhorn '{range .status.volumes[*]}  {.name}: {.claimName} retain={.retain}{"\n"}{end}'
retained=$(jp wukong/db-longhorn '{.status.volumes[?(@.retain==true)].claimName}')
dropped=$(jp wukong/db-longhorn '{.status.volumes[?(@.retain==false)].claimName}')
[ -n "$retained" ] && [ -n "$dropped" ] || fail "db-longhorn has no retained disk and one not retained" wukong/db-longhorn
run kubectl delete wukong db-longhorn --wait=true --timeout="${wait_s}s"
dropped_gone() { ! kubectl get pvc "$dropped" >/dev/null 2>&1; }
wait_until 60 "db-longhorn's claim $dropped (not retained) to be deleted" "pvc/$dropped" dropped_gone
kubectl get pvc "$retained" >/dev/null 2>&1 || fail "the retained claim $retained was deleted" pvc
echo "$dropped is gone; $retained stays, with no owner reference, marked by the Wukong's uid:"
jp "pvc/$retained" '  ownerReferences: [{.metadata.ownerReferences}]  annotations: {.metadata.annotations}{"\n"}'
run kubectl delete wukong --all --wait=true --timeout="${wait_s}s"
only_retained() { [ "$(jp pvc '{.items[*].metadata.name}')" = "$retained" ]; }
wait_until 60 "every claim but $retained to be deleted" "pvc" only_retained
run kubectl get wukong,vm,vmi,datavolumes,pvc

# --------------------------------------------------------------------------------------
stage 9 "Summary" ""
close_stage
if command -v curl >/dev/null; then
  echo "operator metrics (http://$metrics/metrics), non-zero:"
  curl -fsS "http://$metrics/metrics" |
    grep -E '^wukong_(reconciles_total|lifecycle_actions_total|migrations_total|plugin_failures_total)' | grep -v ' 0$' | sed 's/^/  /' || true
fi
echo "what was shown, and how long each stage took:"
for i in $(seq 0 $((${#summaries[@]} - 2))); do
  printf '  %d. %6ss  %s\n' $((i + 1)) "$(secs "${times[$i]}")" "${summaries[$i]}"
done
printf '  total %ss%s\n' "$(secs $(($(now_ms) - demo_started)))" "$($fast && echo ' (--fast)' || echo " (with ${pause}s pauses between stages)")"
current="cleanup"
