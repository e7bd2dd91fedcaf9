//! `get`, `describe` and `-o`: a Wukong as a line, as a page, or as the object itself.

use std::process::ExitCode;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use crate::Output;

/// Prints the object in `output` form.
pub fn print(object: &DynamicObject, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Name => println!("wukong.vm.novasphere.dev/{}", name(object)),
        Output::Json => println!("{}", serde_json::to_string_pretty(object)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(object)?),
    }
    Ok(())
}

pub async fn get(
    api: &Api<DynamicObject>,
    name: Option<&str>,
    output: Option<Output>,
    namespace: &str,
) -> anyhow::Result<ExitCode> {
    let wukongs = match name {
        Some(name) => vec![
            api.get_opt(name)
                .await
                .context("reading the wukong")?
                .with_context(|| format!("wukong {name:?} not found in namespace {namespace:?}"))?,
        ],
        None => {
            api.list(&ListParams::default())
                .await
                .context("listing wukongs")?
                .items
        }
    };
    match output {
        Some(Output::Name) => wukongs
            .iter()
            .for_each(|w| println!("wukong.vm.novasphere.dev/{}", self::name(w))),
        Some(format) if name.is_some() => print(&wukongs[0], format)?,
        Some(format) => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": wukongs});
            match format {
                Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                _ => print!("{}", serde_yaml::to_string(&list)?),
            }
        }
        None if wukongs.is_empty() => eprintln!("No wukongs found in namespace {namespace}."),
        None => {
            let mut rows = vec![
                [
                    "NAMESPACE",
                    "NAME",
                    "PHASE",
                    "STATE",
                    "NODE",
                    "IP",
                    "LAST ACTION",
                    "AGE",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for w in &wukongs {
                let status = &w.data["status"];
                let state = &status["lifecycleState"];
                rows.push(vec![
                    w.metadata.namespace.clone().unwrap_or_default(),
                    self::name(w).to_owned(),
                    text(&status["phase"]),
                    text(&state["state"]),
                    text(&status["nodeName"]),
                    status["ipAddresses"][0].as_str().unwrap_or("-").to_owned(),
                    last_action(state),
                    age(w),
                ]);
            }
            let all_namespaces = wukongs
                .iter()
                .any(|w| w.metadata.namespace.as_deref() != Some(namespace));
            if !all_namespaces {
                rows.iter_mut().for_each(|r| {
                    r.remove(0);
                });
            }
            print!("{}", table(&rows));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn describe(api: &Api<DynamicObject>, name: &str) -> anyhow::Result<ExitCode> {
    let wukong = api
        .get_opt(name)
        .await
        .context("reading the wukong")?
        .with_context(|| format!("wukong {name:?} not found"))?;
    print!("{}", page(&wukong));
    Ok(ExitCode::SUCCESS)
}

/// The `describe` page of a Wukong.
pub fn page(wukong: &DynamicObject) -> String {
    let spec = &wukong.data["spec"];
    let status = &wukong.data["status"];
    let state = &status["lifecycleState"];
    let mut out = String::new();
    let mut line = |key: &str, value: String| out.push_str(&format!("{key:<14}{value}\n"));
    line("Name:", name(wukong).to_owned());
    line(
        "Namespace:",
        wukong.metadata.namespace.clone().unwrap_or_default(),
    );
    line(
        "Spec:",
        format!(
            "{} CPU, {} memory, run strategy {}",
            text(&spec["cpu"]),
            text(&spec["memory"]),
            spec["runStrategy"].as_str().unwrap_or("Always")
        ),
    );
    line(
        "Phase:",
        format!(
            "{} (generation {}, observed {})",
            text(&status["phase"]),
            wukong.metadata.generation.unwrap_or_default(),
            text(&status["observedGeneration"])
        ),
    );
    line(
        "VM:",
        format!(
            "{} on node {}, IPs {}",
            text(&status["vmName"]),
            text(&status["nodeName"]),
            list_text(&status["ipAddresses"])
        ),
    );
    let mut flags = Vec::new();
    if state["ready"] == true {
        flags.push("ready");
    }
    if state["liveMigratable"] == true {
        flags.push("live-migratable");
    }
    line(
        "State:",
        format!(
            "{} ({}){}",
            text(&state["state"]),
            if flags.is_empty() {
                "not ready".to_owned()
            } else {
                flags.join(", ")
            },
            state["message"]
                .as_str()
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
    );
    section(
        &mut out,
        "Steps:",
        &["STEP", "BACKEND", "PLUGIN", "DIGEST"],
        &status["plugins"],
        |p| {
            vec![
                text(&p["step"]),
                text(&p["backend"]),
                format!("{}@{}", text(&p["name"]), text(&p["version"])),
                p["digest"]
                    .as_str()
                    .map(|d| d.chars().take(12).collect())
                    .unwrap_or_default(),
            ]
        },
    );
    section(
        &mut out,
        "Conditions:",
        &["TYPE", "STATUS", "REASON", "MESSAGE"],
        &status["conditions"],
        |c| {
            vec![
                text(&c["type"]),
                text(&c["status"]),
                text(&c["reason"]),
                text(&c["message"]),
            ]
        },
    );
    section(
        &mut out,
        "Disks:",
        &[
            "NAME",
            "CLAIM",
            "PHASE",
            "BOUND",
            "REQUESTED",
            "CAPACITY",
            "CLASS",
            "RETAIN",
        ],
        &status["volumes"],
        |v| {
            vec![
                text(&v["name"]),
                text(&v["claimName"]),
                format!(
                    "{}{}",
                    text(&v["phase"]),
                    v["progress"]
                        .as_str()
                        .map(|p| format!(" {p}"))
                        .unwrap_or_default()
                ),
                text(&v["bound"]),
                text(&v["requested"]),
                text(&v["capacity"]),
                text(&v["storageClass"]),
                text(&v["retain"]),
            ]
        },
    );
    section(
        &mut out,
        "Networks:",
        &["NAME", "NETWORK", "BINDING", "MAC", "READY"],
        &status["networks"],
        |n| {
            vec![
                text(&n["name"]),
                text(&n["networkName"]),
                text(&n["binding"]),
                text(&n["macAddress"]),
                text(&n["ready"]),
            ]
        },
    );
    let mut actions: Vec<Value> = state["currentAction"]
        .as_object()
        .map(|_| state["currentAction"].clone())
        .into_iter()
        .collect();
    actions.extend(state["history"].as_array().cloned().unwrap_or_default());
    section(
        &mut out,
        "Actions (newest first):",
        &[
            "REQUEST", "ACTION", "OUTCOME", "STARTED", "FINISHED", "MESSAGE",
        ],
        &Value::Array(actions),
        |a| {
            vec![
                text(&a["requestId"]),
                text(&a["action"]),
                match a["stage"].as_str() {
                    Some(stage) if !stage.is_empty() && a["outcome"] == "InProgress" => {
                        format!("InProgress ({stage})")
                    }
                    _ => text(&a["outcome"]),
                },
                text(&a["startedAt"]),
                text(&a["finishedAt"]),
                text(&a["message"]),
            ]
        },
    );
    let migration = &status["migrationStatus"];
    if migration.is_object() {
        out.push_str(&format!(
            "Migration:    {} {} -> {} ({}{}){}\n",
            text(&migration["phase"]),
            text(&migration["sourceNode"]),
            text(&migration["targetNode"]),
            text(&migration["requestId"]),
            if migration["automatic"] == true {
                ", automatic"
            } else {
                ""
            },
            migration["failureReason"]
                .as_str()
                .or(migration["message"].as_str())
                .filter(|m| !m.is_empty())
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    out
}

/// A titled table of `items`, or nothing when there are none.
fn section(
    out: &mut String,
    title: &str,
    header: &[&str],
    items: &Value,
    row: impl Fn(&Value) -> Vec<String>,
) {
    let Some(items) = items.as_array().filter(|i| !i.is_empty()) else {
        return;
    };
    out.push_str(title);
    out.push('\n');
    let mut rows = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
    rows.extend(items.iter().map(row));
    for line in table(&rows).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

/// Columns padded to their widest cell, kubectl-style; the last is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| match c + 1 == row.len() {
                true => cell.clone(),
                false => format!("{cell:<width$}", width = widths[c]),
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn name(object: &DynamicObject) -> &str {
    object.metadata.name.as_deref().unwrap_or_default()
}

/// A scalar as text; `-` when absent.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list_text(value: &Value) -> String {
    match value.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(text).collect::<Vec<_>>().join(", "),
        _ => "-".into(),
    }
}

/// The newest finished action, as `action outcome`.
fn last_action(state: &Value) -> String {
    if let Some(current) = state["currentAction"].as_object() {
        return format!("{} (in progress)", text(&current["action"]));
    }
    match state["history"].get(0) {
        Some(done) => format!("{} {}", text(&done["action"]), text(&done["outcome"])),
        None => "-".into(),
    }
}

/// kubectl's short age (`45s`, `12m`, `3h`, `5d`).
fn age(object: &DynamicObject) -> String {
    let Some(created) = &object.metadata.creation_timestamp else {
        return "-".into();
    };
    let seconds = k8s_openapi::jiff::Timestamp::now()
        .duration_since(created.0)
        .as_secs()
        .max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7_200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wukong(status: Value) -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "vm.novasphere.dev/v1alpha1", "kind": "Wukong",
            "metadata": {"name": "box", "namespace": "ns", "generation": 2},
            "spec": {"cpu": 2, "memory": "4Gi"}, "status": status}),
        )
        .expect("object")
    }

    #[test]
    fn describe_shows_steps_actions_and_the_migration() {
        let page = page(&wukong(
            json!({"phase": "Running", "observedGeneration": 2, "nodeName": "n1",
            "plugins": [{"step": "storage", "backend": "longhorn", "name": "longhorn-storage", "version": "0.1.0", "digest": "abcdef0123456789"}],
            "lifecycleState": {"state": "Running", "ready": true,
                "history": [{"requestId": "r1", "action": "stop", "outcome": "Refused", "startedAt": "t0", "message": "VM is not running"}]},
            "migrationStatus": {"phase": "Succeeded", "sourceNode": "n0", "targetNode": "n1", "requestId": "m1"}}),
        ));
        assert!(
            page.contains("Phase:        Running (generation 2, observed 2)"),
            "{page}"
        );
        assert!(
            page.contains("longhorn-storage@0.1.0   abcdef012345"),
            "{page}"
        );
        assert!(page.contains("r1        stop     Refused"), "{page}");
        assert!(
            page.contains("Migration:    Succeeded n0 -> n1 (m1)"),
            "{page}"
        );
        assert!(!page.contains("Disks:"), "no empty sections: {page}");
    }

    #[test]
    fn the_table_pads_every_column_but_the_last() {
        let rows = vec![
            vec!["A".into(), "BB".into(), "C".into()],
            vec!["long".into(), "x".into(), "tail".into()],
        ];
        assert_eq!(table(&rows), "A      BB   C\nlong   x    tail\n");
    }
}
