//! The network suite: one attachment per network; NetworkAttachmentDefinitions created
//! only for networks with a config and removed on finalize; a NAD the spec names is
//! referenced, never touched; stable names and the same outcome for the same input.

use serde_json::{Value, json};

use super::Check;
use super::harness::{self, CheckResult, Harness, LATER, NAMESPACE, Sim, applied, check, wukong};
use crate::plugin::types::NetworkAttachment;
use crate::plugin::{Outcome, StepStatus};

const NAD_KIND: &str = "NetworkAttachmentDefinition";

/// The pod network, one to create, one naming a NAD here, one naming a NAD elsewhere.
fn networks() -> Value {
    json!([
        {"name": "default", "type": "pod"},
        {"name": "lan", "config": {"vlan": 42}},
        {"name": "san", "nadName": "storage-net"},
        {"name": "far", "nadName": "elsewhere/shared-net"},
    ])
}

fn manifest(networks: Value) -> Value {
    wukong(json!({"cpu": 2, "memory": "4Gi", "networks": networks}))
}

/// The NAD `san` names, made by someone else.
fn existing_nad() -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": NAD_KIND,
        "metadata": {"name": "storage-net", "namespace": NAMESPACE},
        "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"type\":\"bridge\",\"bridge\":\"br-san\"}"}})
}

fn attachments(outcome: &Outcome) -> Result<&[NetworkAttachment], String> {
    match &outcome.status {
        StepStatus::Networks(networks) => Ok(networks),
        other => Err(format!("reconcile reports {other:?}, not networks")),
    }
}

struct Setup {
    wukong: Value,
    empty: Sim,
    fresh: Result<Outcome, String>,
    converged: Result<(Sim, Outcome), String>,
}

pub fn run(h: &Harness<'_>) -> Vec<Check> {
    let wukong = manifest(networks());
    let empty = Sim::new([existing_nad()]);
    let fresh = h.reconcile(&wukong, None, &empty);
    let converged = (|| {
        let (mut sim, mut w) = (empty.clone(), wukong.clone());
        let outcome = h.converge(&mut w, None, &mut sim)?;
        Ok((sim, outcome))
    })();
    let s = Setup {
        wukong,
        empty,
        fresh,
        converged,
    };
    vec![
        check("one attachment per network", one_per_network(h, &s)),
        check(
            "NAD created only for config-defined networks",
            nad_only_for_config(&s),
        ),
        check(
            "existing NAD referenced untouched",
            existing_untouched(h, &s),
        ),
        check("stable names across calls", stable_names(h, &s)),
        check("idempotent and converges", idempotent(h, &s)),
        check(
            "finalize removes the NADs it created, nothing else",
            finalize(h, &s),
        ),
        check(
            "Wukongs whose names read alike get distinct NADs",
            alike_wukongs(h, &s),
        ),
    ]
}

/// `web` + network `db-data` and `web-db` + network `data`: one NAD each.
fn alike_wukongs(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let spec = |network: &str| json!({"cpu": 2, "memory": "4Gi", "networks": [{"name": network, "config": {"vlan": 42}}]});
    let created = |outcome: &Outcome| -> Result<Vec<String>, String> {
        Ok(attachments(outcome)?
            .iter()
            .filter(|a| a.created)
            .map(|a| a.network_name.clone())
            .collect())
    };
    harness::alike_wukongs_get_distinct_objects(h, &s.empty, &spec, &created)
}

fn names(attachments: &[NetworkAttachment]) -> Vec<&str> {
    attachments.iter().map(|a| a.name.as_str()).collect()
}

fn one_per_network(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let want = ["default", "lan", "san", "far"];
    let fresh = s.fresh.clone()?;
    let got = names(attachments(&fresh)?);
    if got != want {
        return Err(format!("networks {want:?} gave attachments {got:?}"));
    }
    let (_, converged) = s.converged.clone()?;
    let got = names(attachments(&converged)?);
    if got != want {
        return Err(format!(
            "once converged, networks {want:?} gave attachments {got:?}"
        ));
    }
    let none = h.reconcile(&manifest(json!([])), None, &s.empty)?;
    let got = names(attachments(&none)?);
    if !got.is_empty() {
        return Err(format!(
            "a Wukong without networks gave attachments {got:?}"
        ));
    }
    Ok(())
}

fn nad_only_for_config(s: &Setup) -> CheckResult {
    let fresh = s.fresh.clone()?;
    let nads: Vec<&str> = applied(&fresh, NAD_KIND)
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    let list = attachments(&fresh)?;
    let lan = list.iter().find(|a| a.name == "lan");
    let expected = lan.map(|a| a.network_name.clone()).unwrap_or_default();
    match nads.as_slice() {
        [one] if format!("{NAMESPACE}/{one}") == expected => {}
        _ => {
            return Err(format!(
                "one network has a config, but the NADs applied are {nads:?} (and network lan is attached to {expected:?})"
            ));
        }
    }
    for attachment in list {
        let created = attachment.name == "lan";
        if attachment.created != created {
            return Err(format!(
                "attachment {} says created={}, but {}",
                attachment.name,
                attachment.created,
                if created {
                    "its NAD was created from its config"
                } else {
                    "its network has no config"
                }
            ));
        }
    }
    Ok(())
}

/// No apply or delete names the NAD the spec references.
fn untouched(outcome: &Outcome, when: &str) -> CheckResult {
    let named = |name: &str, namespace: Option<&str>| {
        name == "storage-net" && namespace.is_none_or(|ns| ns == NAMESPACE)
            || name == "shared-net" && namespace == Some("elsewhere")
    };
    let applies = outcome.apply.iter().filter(|o| {
        o["kind"] == NAD_KIND
            && named(
                o["metadata"]["name"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str(),
            )
    });
    let deletes = harness::deletes(outcome)
        .filter(|t| t.kind == NAD_KIND && named(&t.name, t.namespace.as_deref()));
    let touched = applies.count() + deletes.count();
    match touched {
        0 => Ok(()),
        _ => Err(format!(
            "{when}, it applies or deletes a NAD the spec only names"
        )),
    }
}

fn existing_untouched(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let fresh = s.fresh.clone()?;
    untouched(&fresh, "on the first call")?;
    for (name, want) in [
        ("san", format!("{NAMESPACE}/storage-net")),
        ("far", "elsewhere/shared-net".to_owned()),
    ] {
        let got = attachments(&fresh)?
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.network_name.clone());
        if got.as_deref() != Some(want.as_str()) {
            return Err(format!(
                "network {name} names NAD {want}, but is attached to {got:?}"
            ));
        }
    }
    let (sim, converged) = s.converged.clone()?;
    untouched(&converged, "once converged")?;
    untouched(&h.finalize(&s.wukong, None, &sim)?, "on finalize")
}

fn stable_names(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let fresh = s.fresh.clone()?;
    let (sim, converged) = s.converged.clone()?;
    let mut later = s.wukong.clone();
    later["metadata"]["generation"] = json!(2);
    let at_later = h.reconcile_at(LATER, &later, None, &s.empty)?;
    let mut reversed = networks();
    if let Some(list) = reversed.as_array_mut() {
        list.reverse();
    }
    let reversed = h.reconcile(&manifest(reversed), None, &sim)?;
    for (what, outcome) in [
        ("once its objects exist", &converged),
        ("at another time and generation", &at_later),
        ("with the networks in another order", &reversed),
    ] {
        let other = attachments(outcome)?;
        for attachment in attachments(&fresh)? {
            let again = other
                .iter()
                .find(|a| a.name == attachment.name)
                .map(|a| a.network_name.as_str());
            if again != Some(attachment.network_name.as_str()) {
                return Err(format!(
                    "network {} is attached to {:?}, but {what} to {again:?}",
                    attachment.name, attachment.network_name
                ));
            }
        }
    }
    harness::same_applied_names(&fresh, &at_later)
}

fn idempotent(h: &Harness<'_>, s: &Setup) -> CheckResult {
    harness::same_outcome(h, &s.wukong, None, &s.empty)?;
    let (sim, _) = s.converged.clone()?;
    harness::same_outcome(h, &s.wukong, None, &sim)
}

fn finalize(h: &Harness<'_>, s: &Setup) -> CheckResult {
    let nothing = h.finalize(&s.wukong, None, &s.empty)?;
    harness::check_finalize(&nothing, &s.empty, &|_| false)
        .map_err(|e| format!("on a cluster holding nothing of the Wukong: {e}"))?;
    let (sim, _) = s.converged.clone()?;
    let outcome = h.finalize(&s.wukong, None, &sim)?;
    harness::check_finalize(&outcome, &sim, &|created| {
        created.made_for_the_wukong() && created.key.kind == NAD_KIND
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::harness::tests::{outcome, target};

    #[test]
    fn touching_a_named_nad_or_creating_nads_for_named_networks_fails() {
        let mut delete = target(NAD_KIND, "storage-net");
        delete.api_version = "k8s.cni.cncf.io/v1".into();
        let touched = outcome(vec![], vec![delete], StepStatus::Networks(vec![]));
        assert!(untouched(&touched, "on finalize").is_err());
        let attachment = |name: &str, network: &str, created: bool| NetworkAttachment {
            name: name.into(),
            network_name: network.into(),
            binding: "bridge".into(),
            mac_address: None,
            created,
            ready: true,
            message: String::new(),
        };
        let nad = |name: &str| json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": NAD_KIND, "metadata": {"name": name}});
        let setup = |apply: Vec<Value>, san_created: bool| Setup {
            wukong: Value::Null,
            empty: Sim::default(),
            fresh: Ok(outcome(
                apply,
                vec![],
                StepStatus::Networks(vec![
                    attachment("lan", "tenant-a/vm1-lan", true),
                    attachment("san", "tenant-a/storage-net", san_created),
                ]),
            )),
            converged: Err("unused".into()),
        };
        assert_eq!(
            nad_only_for_config(&setup(vec![nad("vm1-lan")], false)),
            Ok(())
        );
        assert!(nad_only_for_config(&setup(vec![nad("vm1-lan"), nad("vm1-san")], false)).is_err());
        assert!(nad_only_for_config(&setup(vec![nad("vm1-lan")], true)).is_err());
    }
}
