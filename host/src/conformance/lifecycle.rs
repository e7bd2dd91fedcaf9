//! The lifecycle suite: exactly one VirtualMachine, named after the Wukong, built from
//! the upstream volumes and attachments with the runStrategy asked for; status that
//! follows the VM and its instance; no action nobody asked for; a sane finalize.

use serde_json::{Value, json};

use super::Check;
use super::generate::upstream_for;
use super::harness::{self, CheckResult, Harness, NAME, NAMESPACE, Sim, applied, check, wukong};
use crate::plugin::types::{LifecyclePhase, LifecycleStatus, NetworkAttachment, Upstream, Volume};
use crate::plugin::{Outcome, StepStatus};
use crate::runner::DEFAULT_UID;

const KUBEVIRT: &str = "kubevirt.io/v1";

fn manifest(run_strategy: &str) -> Value {
    wukong(
        json!({"cpu": 2, "memory": "4Gi", "runStrategy": run_strategy,
        "disks": [{"name": "root", "size": "20Gi", "image": "docker://quay.io/containerdisks/fedora:40", "bootOrder": 1},
                  {"name": "data", "size": "10Gi", "bus": "sata"}],
        "networks": [{"name": "default", "type": "pod"},
                     {"name": "lan", "config": {"vlan": 42}, "macAddress": "02:00:00:00:00:01"}]}),
    )
}

/// What the network and storage steps report for [`manifest`]: all bound and attached.
fn upstream() -> Value {
    let mut upstream = upstream_for(&manifest("Always"));
    upstream["lifecycle"] = Value::Null;
    upstream
}

/// The Wukong's VM as the host made it: the Wukong its controller owner.
fn vm(run_strategy: &str, printable: &str) -> Value {
    json!({"apiVersion": KUBEVIRT, "kind": "VirtualMachine",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "vm-uid",
            "ownerReferences": [{"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
                "name": NAME, "uid": DEFAULT_UID, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"runStrategy": run_strategy}, "status": {"printableStatus": printable}})
}

/// The VM's instance, controlled by it as KubeVirt makes it.
fn vmi(phase: &str, conditions: Value) -> Value {
    json!({"apiVersion": KUBEVIRT, "kind": "VirtualMachineInstance",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
            "ownerReferences": [{"apiVersion": KUBEVIRT, "kind": "VirtualMachine", "name": NAME,
                "uid": "vm-uid", "controller": true, "blockOwnerDeletion": true}]},
        "status": {"phase": phase, "nodeName": "node-1", "conditions": conditions,
            "interfaces": [{"name": "default", "ipAddress": "10.244.1.7"}]}})
}

fn status(outcome: &Outcome) -> Result<&LifecycleStatus, String> {
    match &outcome.status {
        StepStatus::Lifecycle(status) => Ok(status),
        other => Err(format!(
            "reconcile reports {other:?}, not a lifecycle status"
        )),
    }
}

/// One fixture state and what the status must say about it.
struct Scenario {
    what: &'static str,
    run_strategy: &'static str,
    cluster: Vec<Value>,
    expect: fn(&LifecycleStatus) -> bool,
    wanted: &'static str,
}

fn scenarios() -> Vec<Scenario> {
    let ready =
        json!([{"type": "Ready", "status": "True"}, {"type": "LiveMigratable", "status": "True"}]);
    vec![
        Scenario {
            what: "a Running, Ready VMI on node-1",
            run_strategy: "Always",
            cluster: vec![vm("Always", "Running"), vmi("Running", ready)],
            expect: |s| {
                s.phase == LifecyclePhase::Running
                    && s.ready
                    && s.vmi_phase.as_deref() == Some("Running")
                    && s.node_name.as_deref() == Some("node-1")
            },
            wanted: "phase Running, ready, vmi_phase Running, node_name node-1",
        },
        Scenario {
            what: "a Scheduling VMI",
            run_strategy: "Always",
            cluster: vec![vm("Always", "Starting"), vmi("Scheduling", json!([]))],
            expect: |s| {
                matches!(s.phase, LifecyclePhase::Pending | LifecyclePhase::Starting)
                    && !s.ready
                    && s.vmi_phase.as_deref() == Some("Scheduling")
            },
            wanted: "phase Pending or Starting, not ready, vmi_phase Scheduling",
        },
        Scenario {
            what: "a Failed VMI",
            run_strategy: "Always",
            cluster: vec![vm("Always", "CrashLoopBackOff"), vmi("Failed", json!([]))],
            expect: |s| s.phase == LifecyclePhase::Failed && !s.ready,
            wanted: "phase Failed, not ready",
        },
        Scenario {
            what: "runStrategy Halted, a Stopped VM and no VMI",
            run_strategy: "Halted",
            cluster: vec![vm("Halted", "Stopped")],
            expect: |s| s.phase == LifecyclePhase::Stopped && !s.ready && s.vmi_phase.is_none(),
            wanted: "phase Stopped, not ready, no vmi_phase",
        },
        Scenario {
            what: "a paused VMI",
            run_strategy: "Always",
            cluster: vec![
                vm("Always", "Paused"),
                vmi("Running", json!([{"type": "Paused", "status": "True"}])),
            ],
            expect: |s| s.phase == LifecyclePhase::Suspended,
            wanted: "phase Suspended",
        },
    ]
}

pub fn run(h: &Harness<'_>) -> Vec<Check> {
    let upstream = upstream();
    let empty = Sim::default();
    let fresh = h.reconcile(&manifest("Always"), Some(&upstream), &empty);
    let observed: Vec<(&'static str, Result<Outcome, String>)> = scenarios()
        .into_iter()
        .map(|s| {
            let outcome = h.reconcile(
                &manifest(s.run_strategy),
                Some(&upstream),
                &Sim::new(s.cluster),
            );
            (s.what, outcome)
        })
        .collect();
    vec![
        check(
            "builds exactly one VirtualMachine named after the Wukong",
            one_vm(&fresh, &observed),
        ),
        check(
            "the VM has the disks and networks of the upstream outputs",
            vm_matches_upstream(&fresh, &upstream),
        ),
        check("runStrategy honoured", run_strategy(h, &upstream)),
        check(
            "status follows the fixture VM and VMI",
            status_follows(&observed),
        ),
        check("no action without a request", no_action(&fresh, &observed)),
        check("idempotent and converges", idempotent(h, &upstream)),
        check(
            "finalize deletes only what it created",
            finalize(h, &upstream),
        ),
    ]
}

fn vms(outcome: &Outcome) -> Vec<&Value> {
    applied(outcome, "VirtualMachine").collect()
}

fn one_vm(
    fresh: &Result<Outcome, String>,
    observed: &[(&str, Result<Outcome, String>)],
) -> CheckResult {
    let fresh = fresh.clone()?;
    match vms(&fresh).as_slice() {
        [vm] if vm["metadata"]["name"] == NAME && vm["apiVersion"] == KUBEVIRT => {}
        other => {
            return Err(format!(
                "with every volume bound and network attached, it applies {} VirtualMachine(s) named {:?}, not one {KUBEVIRT} VirtualMachine {NAME}",
                other.len(),
                other
                    .iter()
                    .map(|v| v["metadata"]["name"].clone())
                    .collect::<Vec<_>>()
            ));
        }
    }
    for (what, outcome) in observed {
        let outcome = outcome.clone().map_err(|e| format!("with {what}: {e}"))?;
        let vms = vms(&outcome);
        if vms.len() > 1 || vms.iter().any(|vm| vm["metadata"]["name"] != NAME) {
            return Err(format!(
                "with {what}, it applies VirtualMachines {:?}",
                vms.iter()
                    .map(|v| v["metadata"]["name"].clone())
                    .collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn names_at(list: &Value) -> Vec<String> {
    sorted(
        list.as_array()
            .into_iter()
            .flatten()
            .map(|v| v["name"].as_str().unwrap_or("?").to_owned())
            .collect(),
    )
}

fn vm_matches_upstream(fresh: &Result<Outcome, String>, upstream: &Value) -> CheckResult {
    let fresh = fresh.clone()?;
    let vm = vms(&fresh)
        .first()
        .copied()
        .cloned()
        .ok_or("no VirtualMachine is applied")?;
    let upstream: Upstream =
        serde_json::from_value(upstream.clone()).map_err(|e| format!("kit upstream: {e}"))?;
    let spec = &vm["spec"]["template"]["spec"];
    let volume_names = sorted(upstream.volumes.iter().map(|v| v.name.clone()).collect());
    for (what, at) in [
        ("volumes", &spec["volumes"]),
        ("disks", &spec["domain"]["devices"]["disks"]),
    ] {
        let got = names_at(at);
        if got != volume_names {
            return Err(format!(
                "the VM's {what} are {got:?}, the upstream volumes {volume_names:?}"
            ));
        }
    }
    for volume in &upstream.volumes {
        check_volume(spec, volume)?;
    }
    let network_names = sorted(upstream.networks.iter().map(|n| n.name.clone()).collect());
    for (what, at) in [
        ("networks", &spec["networks"]),
        ("interfaces", &spec["domain"]["devices"]["interfaces"]),
    ] {
        let got = names_at(at);
        if got != network_names {
            return Err(format!(
                "the VM's {what} are {got:?}, the upstream attachments {network_names:?}"
            ));
        }
    }
    for attachment in &upstream.networks {
        check_network(spec, attachment)?;
    }
    Ok(())
}

fn named<'v>(list: &'v Value, name: &str) -> &'v Value {
    list.as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == name))
        .unwrap_or(&Value::Null)
}

fn check_volume(spec: &Value, volume: &Volume) -> CheckResult {
    let entry = named(&spec["volumes"], &volume.name);
    let claim = match volume.data_volume {
        true => &entry["dataVolume"]["name"],
        false => &entry["persistentVolumeClaim"]["claimName"],
    };
    if claim != volume.claim_name.as_str() {
        return Err(format!(
            "VM volume {} is {entry}, not the {} {}",
            volume.name,
            if volume.data_volume {
                "dataVolume"
            } else {
                "persistentVolumeClaim"
            },
            volume.claim_name
        ));
    }
    Ok(())
}

fn check_network(spec: &Value, attachment: &NetworkAttachment) -> CheckResult {
    let network = named(&spec["networks"], &attachment.name);
    let ok = match attachment.network_name.as_str() {
        "pod" => network["pod"].is_object(),
        nad => network["multus"]["networkName"] == nad,
    };
    if !ok {
        return Err(format!(
            "VM network {} is {network}, not attached to {}",
            attachment.name, attachment.network_name
        ));
    }
    let interface = named(&spec["domain"]["devices"]["interfaces"], &attachment.name);
    if interface[attachment.binding.as_str()].is_null() {
        return Err(format!(
            "VM interface {} is {interface}, without its binding {}",
            attachment.name, attachment.binding
        ));
    }
    if let Some(mac) = &attachment.mac_address
        && interface["macAddress"] != mac.as_str()
    {
        return Err(format!(
            "VM interface {} is {interface}, without its MAC address {mac}",
            attachment.name
        ));
    }
    Ok(())
}

fn run_strategy(h: &Harness<'_>, upstream: &Value) -> CheckResult {
    for strategy in ["Always", "Halted", "Manual", "RerunOnFailure", "Once"] {
        let outcome = h.reconcile(&manifest(strategy), Some(upstream), &Sim::default())?;
        let vm = vms(&outcome)
            .first()
            .copied()
            .cloned()
            .unwrap_or(Value::Null);
        if vm["spec"]["runStrategy"] != strategy || vm["spec"]["running"].is_boolean() {
            return Err(format!(
                "runStrategy {strategy} gives a VM with runStrategy {} and running {}",
                vm["spec"]["runStrategy"], vm["spec"]["running"]
            ));
        }
    }
    Ok(())
}

fn status_follows(observed: &[(&str, Result<Outcome, String>)]) -> CheckResult {
    for (scenario, (what, outcome)) in scenarios().iter().zip(observed) {
        let outcome = outcome.clone().map_err(|e| format!("with {what}: {e}"))?;
        let status = status(&outcome)?;
        if status.vm_name != NAME || !(scenario.expect)(status) {
            return Err(format!(
                "with {what}, the status is phase {:?}, ready {}, vmi_phase {:?}, node_name {:?}, vm_name {:?}; expected {} and vm_name {NAME}",
                status.phase,
                status.ready,
                status.vmi_phase,
                status.node_name,
                status.vm_name,
                scenario.wanted
            ));
        }
    }
    Ok(())
}

fn no_action(
    fresh: &Result<Outcome, String>,
    observed: &[(&str, Result<Outcome, String>)],
) -> CheckResult {
    let all = std::iter::once(("no VM yet", fresh)).chain(observed.iter().map(|(w, o)| (*w, o)));
    for (what, outcome) in all {
        let outcome = outcome.clone().map_err(|e| format!("with {what}: {e}"))?;
        if !outcome.actions.is_empty() {
            return Err(format!(
                "with {what} and no lifecycleAction, it asks for {:?}",
                outcome.actions
            ));
        }
    }
    Ok(())
}

fn idempotent(h: &Harness<'_>, upstream: &Value) -> CheckResult {
    let wukong = manifest("Always");
    harness::same_outcome(h, &wukong, Some(upstream), &Sim::default())?;
    let mut sim = Sim::default();
    h.converge(&mut wukong.clone(), Some(upstream), &mut sim)?;
    let running = Sim::new(scenarios().swap_remove(0).cluster);
    harness::same_outcome(h, &wukong, Some(upstream), &running)
}

fn finalize(h: &Harness<'_>, upstream: &Value) -> CheckResult {
    let wukong = manifest("Always");
    let empty = Sim::default();
    let nothing = h.finalize(&wukong, Some(upstream), &empty)?;
    harness::check_finalize(&nothing, &empty, &|_| false)
        .map_err(|e| format!("on a cluster holding nothing of the Wukong: {e}"))?;
    let mut sim = Sim::default();
    h.converge(&mut wukong.clone(), Some(upstream), &mut sim)?;
    let outcome = h.finalize(&wukong, Some(upstream), &sim)?;
    harness::check_finalize(&outcome, &sim, &|_| false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::harness::tests::outcome;

    fn built(volumes: Value, networks: Value, interfaces: Value) -> Result<Outcome, String> {
        let vm = json!({"apiVersion": KUBEVIRT, "kind": "VirtualMachine", "metadata": {"name": NAME},
            "spec": {"runStrategy": "Always", "template": {"spec": {
                "domain": {"devices": {"disks": [{"name": "root"}, {"name": "data"}], "interfaces": interfaces}},
                "networks": networks, "volumes": volumes}}}});
        let status =
            crate::conformance::generate::upstream_for(&manifest("Always"))["lifecycle"].clone();
        let status = serde_json::from_value(status).expect("a lifecycle status");
        Ok(outcome(vec![vm], vec![], StepStatus::Lifecycle(status)))
    }

    #[test]
    fn a_vm_must_carry_every_upstream_volume_and_network_as_reported() {
        let volumes = json!([{"name": "root", "dataVolume": {"name": "vm1-root"}},
                             {"name": "data", "persistentVolumeClaim": {"claimName": "vm1-data"}}]);
        let networks = json!([{"name": "default", "pod": {}}, {"name": "lan", "multus": {"networkName": "tenant-a/vm1-lan"}}]);
        let interfaces = json!([{"name": "default", "masquerade": {}}, {"name": "lan", "bridge": {}, "macAddress": "02:00:00:00:00:01"}]);
        let upstream = upstream();
        assert_eq!(
            vm_matches_upstream(
                &built(volumes.clone(), networks.clone(), interfaces.clone()),
                &upstream
            ),
            Ok(())
        );
        let wrong_claim = json!([{"name": "root", "dataVolume": {"name": "vm1-root"}},
                                 {"name": "data", "persistentVolumeClaim": {"claimName": "other"}}]);
        let error = vm_matches_upstream(
            &built(wrong_claim, networks.clone(), interfaces.clone()),
            &upstream,
        )
        .expect_err("wrong claim");
        assert!(error.starts_with("VM volume data is"), "{error}");
        let no_mac = json!([{"name": "default", "masquerade": {}}, {"name": "lan", "bridge": {}}]);
        let error = vm_matches_upstream(&built(volumes.clone(), networks, no_mac), &upstream)
            .expect_err("no MAC");
        assert!(error.contains("without its MAC address"), "{error}");
        let error = vm_matches_upstream(&built(volumes, json!([]), interfaces), &upstream)
            .expect_err("no networks");
        assert!(error.starts_with("the VM's networks are []"), "{error}");
    }
}
