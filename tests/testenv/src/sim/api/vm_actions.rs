//! The VM subresources (`start`, `stop`, `restart`, `migrate`) as upstream's
//! `pkg/virt-api/rest/lifecycle.go` answers them: refusals per run strategy, a spec patch
//! of the run strategy or a state-change request in the VM's status, 202 Accepted.

use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::replies::{self, Reply, VM};
use crate::sim::Ctx;
use crate::sim::util::{self, str_at};
use crate::sim::vm::{is_final, run_strategy};

/// What an action does to the VM once it is accepted.
enum Change {
    /// Set the run strategy (upstream `getRunningPatch`: `Always` or `Halted`).
    Strategy(&'static str),
    /// Add state-change requests (upstream `getChangeRequestJson`).
    Requests(Vec<Value>),
}

/// How many times a write that lost an optimistic-concurrency race is tried again.
const ATTEMPTS: usize = 5;

pub(super) async fn act(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    action: &str,
    body: &Value,
) -> crate::Result<Reply> {
    // As upstream's RestartVMRequestHandler: the body is judged before anything is read.
    let restart_grace = body.get("gracePeriodSeconds").and_then(Value::as_i64);
    if action == "restart" {
        match restart_grace {
            Some(g) if g > 0 => {
                return Ok(replies::bad_request(
                    "For force restart, only gracePeriod=0 is supported for now",
                ));
            }
            Some(g) if g < 0 => {
                return Ok(replies::bad_request(
                    "gracePeriod has to be greater or equal to 0",
                ));
            }
            _ => {}
        }
    }
    if !matches!(action, "start" | "stop" | "restart" | "migrate") {
        return Ok(replies::no_route(&format!("unknown action {action}")));
    }
    let vms = util::api(&ctx.client, &util::vm(), ns);
    let Some(vm) = vms.get_opt(name).await? else {
        return Ok(replies::not_found(VM, name));
    };
    let vmis = util::api(&ctx.client, &util::vmi(), ns);
    let vmi = vmis.get_opt(name).await?;
    if action == "migrate" {
        return migrate(ctx, ns, name, vmi.as_ref(), body).await;
    }
    // The VMI's grace period is patched once, before the VM is judged (as upstream: the
    // stop handler patches it even when it then refuses the stop).
    // A forced restart sets it to 1 once the strategy allows a restart, and puts it back
    // when the request is then refused.
    let forced = action == "restart"
        && restart_grace == Some(0)
        && !matches!(run_strategy(&vm).as_str(), "Halted" | "Once");
    let mut old_grace = None;
    if let Some(v) = vmi.as_ref() {
        let wanted = match action {
            "stop" if !is_final(v) => body.get("gracePeriod").and_then(Value::as_i64),
            "restart" if forced => Some(1),
            _ => None,
        };
        if let Some(g) = wanted {
            old_grace = Some(grace_of(v));
            set_grace(&vmis, name, g).await?;
        }
    }
    let reply = decide_and_write(&vms, vm, vmi.as_ref(), name, action, body, old_grace).await?;
    if forced
        && reply.0 != hyper::StatusCode::ACCEPTED
        && let Some(old) = old_grace
    {
        set_grace(&vmis, name, old).await?;
    }
    Ok(reply)
}

async fn set_grace(vmis: &Api<DynamicObject>, name: &str, grace: i64) -> crate::Result<()> {
    let patch = json!({"spec": {"terminationGracePeriodSeconds": grace}});
    vmis.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Judges the VM (read again after a lost race) and writes what the action changes.
async fn decide_and_write(
    vms: &Api<DynamicObject>,
    mut vm: DynamicObject,
    vmi: Option<&DynamicObject>,
    name: &str,
    action: &str,
    body: &Value,
    old_grace: Option<i64>,
) -> crate::Result<Reply> {
    for _ in 0..ATTEMPTS {
        let change = match action {
            "start" => start(&vm, vmi, name),
            "stop" => stop(&vm, vmi, name, body, old_grace),
            _ => restart(&vm, vmi, name),
        };
        let written = match change {
            Err(refusal) => return Ok(refusal),
            Ok(Change::Strategy(s)) => set_strategy(vms, &vm, s).await?,
            Ok(Change::Requests(changes)) => match merged_requests(&vm, changes) {
                Err(refusal) => return Ok(refusal),
                Ok(list) => {
                    let status = json!({"stateChangeRequests": list, "startFailure": null});
                    util::patch_status(vms, &vm, status).await?
                }
            },
        };
        if written {
            return Ok(replies::accepted());
        }
        match vms.get_opt(name).await? {
            Some(fresh) => vm = fresh,
            None => return Ok(replies::not_found(VM, name)),
        }
    }
    Ok(replies::conflict(
        VM,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    ))
}

/// The VMI's `terminationGracePeriodSeconds`, 0 when unset (as upstream's
/// `patchVMITerminationGracePeriod` reports it).
fn grace_of(vmi: &DynamicObject) -> i64 {
    vmi.data
        .pointer("/spec/terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn stop_request(vmi: &DynamicObject) -> Value {
    json!({"action": "Stop", "uid": vmi.uid()})
}

/// As upstream's StartVMRequestHandler.
fn start(vm: &DynamicObject, vmi: Option<&DynamicObject>, name: &str) -> Result<Change, Reply> {
    let phase = vmi
        .and_then(|v| str_at(&v.data, "/status/phase"))
        .unwrap_or("");
    if let Some(v) = vmi
        && !is_final(v)
        && !matches!(phase, "" | "Unknown")
    {
        return Err(replies::conflict(VM, name, "VM is already running"));
    }
    let strategy = run_strategy(vm);
    match strategy.as_str() {
        "Halted" => Ok(Change::Strategy("Always")),
        "RerunOnFailure" if phase == "Failed" => Err(replies::conflict(
            VM,
            name,
            "RerunOnFailure does not support starting VM from failed state",
        )),
        "RerunOnFailure" | "Manual" => {
            // A finished VMI is restarted: Stop it, then Start.
            let finished = vmi.filter(|v| match strategy.as_str() {
                "RerunOnFailure" => phase == "Succeeded",
                _ => is_final(v),
            });
            let mut changes: Vec<Value> = finished.map(stop_request).into_iter().collect();
            changes.push(json!({"action": "Start"}));
            Ok(Change::Requests(changes))
        }
        other => Err(replies::conflict(
            VM,
            name,
            &format!("{other} does not support manual start requests"),
        )),
    }
}

/// As upstream's StopVMRequestHandler. `old_grace` is the VMI's grace period before this
/// request patched it (`None`: the request carried none, or the VMI is not running).
fn stop(
    vm: &DynamicObject,
    vmi: Option<&DynamicObject>,
    name: &str,
    body: &Value,
    old_grace: Option<i64>,
) -> Result<Change, Reply> {
    let running = vmi.filter(|v| !is_final(v));
    match run_strategy(vm).as_str() {
        "Halted" => {
            let Some(v) = running else {
                return Err(replies::conflict(VM, name, "VM is not running"));
            };
            let had_grace = v
                .data
                .pointer("/spec/terminationGracePeriodSeconds")
                .is_some();
            let shorter = body
                .get("gracePeriod")
                .and_then(Value::as_i64)
                .is_some_and(|g| !(had_grace && g >= old_grace.unwrap_or(0)));
            if !shorter {
                return Err(replies::conflict(
                    VM,
                    name,
                    "Halted only supports manual stop requests with a shorter graceperiod",
                ));
            }
            Ok(Change::Requests(vec![stop_request(v)]))
        }
        "RerunOnFailure" | "Manual" => match running {
            // Upstream "passes the buck" to virt-controller: the strategy is kept.
            Some(v) => Ok(Change::Requests(vec![stop_request(v)])),
            None => Err(replies::conflict(VM, name, "VM is not running")),
        },
        // Always and Once, with or without a VMI.
        _ => Ok(Change::Strategy("Halted")),
    }
}

/// As upstream's RestartVMRequestHandler (the body was judged already).
fn restart(vm: &DynamicObject, vmi: Option<&DynamicObject>, name: &str) -> Result<Change, Reply> {
    let strategy = run_strategy(vm);
    if matches!(strategy.as_str(), "Halted" | "Once") {
        // NB: "RunStategy" is upstream's spelling.
        return Err(replies::conflict(
            VM,
            name,
            &format!("RunStategy {strategy} does not support manual restart requests"),
        ));
    }
    let Some(v) = vmi else {
        return Err(replies::conflict(VM, name, "VM is not running: Halted"));
    };
    Ok(Change::Requests(vec![
        stop_request(v),
        json!({"action": "Start"}),
    ]))
}

/// As upstream's `getChangeRequestJson`: the list is guarded by a JSON-patch `test`
/// (here: the resourceVersion precondition); requests are added only to an empty list,
/// a lone Stop replaces what is pending, anything else is "already underway" (500).
fn merged_requests(vm: &DynamicObject, changes: Vec<Value>) -> Result<Vec<Value>, Reply> {
    let pending = vm
        .data
        .pointer("/status/stateChangeRequests")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty());
    let lone_stop = changes.len() == 1 && str_at(&changes[0], "/action") == Some("Stop");
    match pending {
        None => Ok(changes),
        Some(_) if lone_stop => Ok(changes),
        Some(_) => Err(replies::internal(
            "unable to complete request: stop/start already underway",
        )),
    }
}

/// As upstream's `getRunningPatch`: `spec.runStrategy` when the VM uses it, else the
/// deprecated `spec.running` as a boolean. The resourceVersion guards it.
async fn set_strategy(
    api: &Api<DynamicObject>,
    vm: &DynamicObject,
    strategy: &str,
) -> crate::Result<bool> {
    let spec = if vm.data.pointer("/spec/runStrategy").is_some() {
        json!({"runStrategy": strategy})
    } else {
        json!({"running": strategy == "Always"})
    };
    util::patch_object(api, vm, json!({"spec": spec})).await
}

/// As upstream's MigrateVMRequestHandler: 404 without a VMI, 409 unless Running, then a
/// migration object named `kubevirt-migrate-vm-…`; a refused create is a 500.
async fn migrate(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    vmi: Option<&DynamicObject>,
    body: &Value,
) -> crate::Result<Reply> {
    let Some(vmi) = vmi else {
        return Ok(replies::not_found(replies::VMI, name));
    };
    if str_at(&vmi.data, "/status/phase") != Some("Running") {
        return Ok(replies::conflict(VM, name, "VM is not running"));
    }
    let mut spec = json!({"vmiName": name});
    if let Some(sel) = body.get("addedNodeSelector") {
        spec["addedNodeSelector"] = sel.clone();
    }
    let m: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"generateName": "kubevirt-migrate-vm-", "namespace": ns}, "spec": spec}))?;
    match util::api(&ctx.client, &util::vmim(), ns)
        .create(&PostParams::default(), &m)
        .await
    {
        Ok(_) => Ok(replies::accepted()),
        Err(kube::Error::Api(s)) => Ok(replies::internal(s.message)),
        Err(e) => Err(e.into()),
    }
}
