//! Installs CustomResourceDefinitions: the structural CRDs of the external kinds Wukong
//! uses (embedded from `tests/testenv/crds/`) and every YAML file in the repository's `crds/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The external kinds' CRDs, as (file name, YAML).
pub const EXTERNAL: &[(&str, &str)] = &[
    ("kubevirt.yaml", include_str!("../../crds/kubevirt.yaml")),
    (
        "migrations.yaml",
        include_str!("../../crds/migrations.yaml"),
    ),
    ("cdi.yaml", include_str!("../../crds/cdi.yaml")),
    ("multus.yaml", include_str!("../../crds/multus.yaml")),
    ("snapshot.yaml", include_str!("../../crds/snapshot.yaml")),
    ("nmstate.yaml", include_str!("../../crds/nmstate.yaml")),
];

/// The repository's own `crds/` folder (`WUKONG_CRDS_DIR` overrides it).
pub fn project_crds_dir() -> PathBuf {
    std::env::var_os("WUKONG_CRDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds"))
}

/// Parses every CRD document in a YAML text (multi-document allowed; other kinds skipped).
pub fn parse(origin: &str, yaml: &str) -> Result<Vec<CustomResourceDefinition>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| Error::Crd {
            path: origin.into(),
            reason: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
            continue;
        }
        let crd: CustomResourceDefinition =
            serde_yaml::from_value(value).map_err(|e| Error::Crd {
                path: origin.into(),
                reason: e.to_string(),
            })?;
        out.push(crd);
    }
    Ok(out)
}

/// All CRDs to install: the external kinds plus the project's (a missing or empty folder
/// is fine).
pub fn all() -> Result<Vec<CustomResourceDefinition>> {
    let mut crds = Vec::new();
    for (name, yaml) in EXTERNAL {
        crds.extend(parse(name, yaml)?);
    }
    let dir = project_crds_dir();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        for file in files {
            let origin = file.display().to_string();
            let yaml = std::fs::read_to_string(&file).map_err(|e| Error::Crd {
                path: origin.clone(),
                reason: e.to_string(),
            })?;
            crds.extend(parse(&origin, &yaml)?);
        }
    }
    Ok(crds)
}

/// Server-side applies the CRDs and waits until each is Established.
pub async fn install(client: &kube::Client, crds: &[CustomResourceDefinition]) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("wukong-testenv").force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &pp, &Patch::Apply(crd))
            .await
            .map_err(|e| Error::Crd {
                path: format!(
                    "{name} (from {} or the external CRDs)",
                    project_crds_dir().display()
                ),
                reason: format!("the API server refused it: {e}"),
            })?;
    }
    let waits = crds.iter().map(|crd| {
        let name = crd.metadata.name.clone().unwrap_or_default();
        wait_established(&api, name)
    });
    futures::future::try_join_all(waits).await?;
    Ok(())
}

async fn wait_established(api: &Api<CustomResourceDefinition>, name: String) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let crd = api.get(&name).await?;
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Timeout(format!("CRD {name} to be Established")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
