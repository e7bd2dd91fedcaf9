//! Loading plugins: read, identify the contract and world before compiling, compile or
//! take the cached code, pre-link, read and validate the manifest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::v0_1_0::imports;
use super::sandbox::{self, CallState};
use super::types::{KindRef, PluginManifest, StepKind};
use super::world::{self, StepWorld};
use super::{CodeCache, CodeSource, ContractInfo, LoadError, RuntimeLimits, contract, engine};

/// The engine, the linker and the limits, shared by every plugin.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) limits: Arc<RuntimeLimits>,
    cache: Option<CodeCache>,
}

/// A loaded, validated plugin, ready to call.
pub struct Plugin {
    /// `name@version`, used in every message about this plugin.
    pub id: Arc<str>,
    pub path: PathBuf,
    /// sha256 of the file, hex.
    pub digest: String,
    pub contract: ContractInfo,
    pub manifest: PluginManifest,
    /// Whether the code was compiled now or taken from the cache.
    pub code_source: CodeSource,
    /// Bytes of compiled code the host keeps in memory for it.
    pub code_bytes: usize,
    pub(crate) reads: Arc<[KindRef]>,
    /// Pre-linked as its world: instantiating it is a cheap copy.
    pub(crate) pre: Box<dyn StepWorld>,
    pub(crate) engine: Engine,
    pub(crate) limits: Arc<RuntimeLimits>,
    config_schema: serde_json::Value,
}

impl Runtime {
    /// A runtime with these limits; `cache` keeps compiled code across restarts.
    pub fn new(limits: RuntimeLimits, cache: Option<CodeCache>) -> anyhow::Result<Self> {
        limits.validate().map_err(anyhow::Error::msg)?;
        let engine = engine::build(&limits)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        imports::wukong::plugin::cluster::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        imports::wukong::plugin::log::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        Ok(Self {
            engine,
            linker,
            limits: Arc::new(limits),
            cache,
        })
    }

    pub fn limits(&self) -> &RuntimeLimits {
        &self.limits
    }

    /// Bytes each idle sandbox slot keeps resident between calls.
    pub fn kept_resident_bytes(&self) -> usize {
        engine::kept_resident_bytes(&self.limits)
    }

    /// Loads a plugin file.
    pub fn load(&self, path: &Path) -> Result<Plugin, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_bytes(path, &bytes)
    }

    /// Loads a plugin from bytes; `path` names it in messages.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Plugin, LoadError> {
        let info = contract::inspect(path, bytes)?;
        let digest = hex::encode(Sha256::digest(bytes));
        let compile_error = |e: wasmtime::Error| LoadError::Compile {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let (component, code_source) = match &self.cache {
            Some(cache) => cache
                .load_or_compile(&self.engine, &digest, bytes)
                .map_err(compile_error)?,
            None => (
                Component::new(&self.engine, bytes).map_err(compile_error)?,
                CodeSource::Compiled,
            ),
        };
        let code_bytes = {
            let range = component.image_range();
            (range.end as usize).saturating_sub(range.start as usize)
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(compile_error)?;
        let pre = world::prepare(info.step, instance_pre).map_err(compile_error)?;
        let manifest = self
            .describe(pre.as_ref())
            .map_err(|e| LoadError::InvalidManifest {
                path: path.to_owned(),
                reason: format!("describe failed: {e:#}"),
            })?;
        let config_schema =
            validate_manifest(&manifest, &info).map_err(|reason| LoadError::InvalidManifest {
                path: path.to_owned(),
                reason,
            })?;
        let id: Arc<str> = format!("{}@{}", manifest.name, manifest.version).into();
        tracing::debug!(plugin = %id, path = %path.display(), ?code_source, "plugin loaded");
        Ok(Plugin {
            id,
            path: path.to_owned(),
            digest,
            contract: info,
            reads: manifest.capabilities.reads.clone().into(),
            manifest,
            code_source,
            code_bytes,
            pre,
            engine: self.engine.clone(),
            limits: Arc::clone(&self.limits),
            config_schema,
        })
    }

    fn describe(&self, pre: &dyn StepWorld) -> wasmtime::Result<PluginManifest> {
        let mut store = sandbox::new_store(
            &self.engine,
            &self.limits,
            "loading".into(),
            Arc::from([]),
            String::new(),
            Arc::new(NoCluster),
        )?;
        let manifest = pre.describe(&mut store)?;
        store.data().flush_output();
        manifest
    }
}

/// Checks a manifest and returns its parsed config schema.
fn validate_manifest(
    manifest: &PluginManifest,
    info: &ContractInfo,
) -> Result<serde_json::Value, String> {
    if manifest.name.is_empty()
        || !manifest
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "name {:?} must be non-empty lowercase letters, digits and '-'",
            manifest.name
        ));
    }
    if !is_semver(&manifest.version) {
        return Err(format!(
            "version {:?} is not semver (MAJOR.MINOR.PATCH)",
            manifest.version
        ));
    }
    if manifest.step != info.step {
        return Err(format!(
            "declares step {} but the component exports the {} world",
            manifest.step, info.step
        ));
    }
    for action in &manifest.capabilities.actions {
        if action.split('/').count() != 2 || action.split('/').any(str::is_empty) {
            return Err(format!("action {action:?} must be `resource/subresource`"));
        }
    }
    let schema: serde_json::Value = serde_json::from_str(&manifest.config_schema)
        .map_err(|e| format!("config-schema is not JSON: {e}"))?;
    jsonschema::validator_for(&schema)
        .map_err(|e| format!("config-schema is not a valid JSON Schema: {e}"))?;
    Ok(schema)
}

fn is_semver(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("digest", &self.digest)
            .field("contract", &self.contract)
            .field("code_source", &self.code_source)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Checks a config against the manifest's schema, naming each problem's location.
    pub fn validate_config(&self, config: &serde_json::Value) -> Result<(), LoadError> {
        let invalid = |reason: String| LoadError::InvalidConfig {
            path: self.path.clone(),
            plugin: self.id.to_string(),
            reason,
        };
        let validator =
            jsonschema::validator_for(&self.config_schema).map_err(|e| invalid(e.to_string()))?;
        let problems: Vec<String> = validator
            .iter_errors(config)
            .map(|e| {
                let at = e.instance_path.to_string();
                format!(
                    "{}: {e}",
                    if at.is_empty() {
                        "(root)".to_owned()
                    } else {
                        at
                    }
                )
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(invalid(problems.join("; ")))
        }
    }

    pub fn step(&self) -> StepKind {
        self.contract.step
    }
}

/// The cluster while loading: a manifest needs no reads.
pub(crate) struct NoCluster;

impl super::ClusterReader for NoCluster {
    fn get(&self, _: &super::types::ObjectRef, _: &str) -> Result<Option<String>, String> {
        Err("no cluster reads while loading".into())
    }
    fn list(&self, _: &KindRef, _: &str, _: Option<&str>) -> Result<Vec<String>, String> {
        Err("no cluster reads while loading".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::Capabilities;

    fn manifest(name: &str, version: &str, step: StepKind, schema: &str) -> PluginManifest {
        PluginManifest {
            name: name.into(),
            version: version.into(),
            step,
            description: String::new(),
            capabilities: Capabilities {
                reads: Vec::new(),
                writes: Vec::new(),
                actions: vec!["virtualmachines/stop".into()],
            },
            config_schema: schema.into(),
        }
    }

    #[test]
    fn invalid_manifests_are_refused_with_the_reason() {
        let info = ContractInfo {
            version: "0.1.0".into(),
            step: StepKind::Storage,
        };
        assert!(
            validate_manifest(
                &manifest("good-one", "1.2.3", StepKind::Storage, "{}"),
                &info
            )
            .is_ok()
        );
        let reason = |m| validate_manifest(&m, &info).unwrap_err();
        assert!(reason(manifest("Bad Name", "1.0.0", StepKind::Storage, "{}")).contains("name"));
        assert!(reason(manifest("ok", "1.0", StepKind::Storage, "{}")).contains("semver"));
        assert!(
            reason(manifest("ok", "1.0.0", StepKind::Network, "{}"))
                .contains("exports the storage world")
        );
        assert!(
            reason(manifest("ok", "1.0.0", StepKind::Storage, "not json")).contains("not JSON")
        );
        assert!(
            reason(manifest("ok", "1.0.0", StepKind::Storage, r#"{"type": 7}"#))
                .contains("JSON Schema")
        );
    }
}
