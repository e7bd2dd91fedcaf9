//! The loaded backends: for each step, each backend's plugin and its validated config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::budget::{self, MemoryBudget};
use super::{ConfigError, Grants, HostConfig};
use crate::oci::{self, OciSettings, PluginReference};
use crate::plugin::types::StepKind;
use crate::plugin::{CodeCache, Plugin, Runtime};

/// One backend, ready to call.
pub struct Backend {
    /// The backend's name in the config (`longhorn`).
    pub name: String,
    pub plugin: Arc<Plugin>,
    /// The plugin's config as JSON, validated against its schema.
    pub config_json: String,
}

/// One step's default backend name and its backends by name.
type StepBackends = (Option<String>, BTreeMap<String, Arc<Backend>>);

/// Every configured backend, loaded and validated.
pub struct Backends {
    pub runtime: Arc<Runtime>,
    /// The `[controller]` section, swapped with the backends on a reload.
    pub controller: super::ControllerSection,
    steps: BTreeMap<String, StepBackends>,
}

impl Backends {
    /// Loads every plugin the config names, checks it serves its step and that its config
    /// passes its schema. Any problem stops here, naming the key.
    pub fn load(config: &HostConfig, origin: &str) -> Result<Self, ConfigError> {
        let cache = CodeCache::new(
            config
                .plugins
                .cache_dir
                .clone()
                .unwrap_or_else(CodeCache::default_dir),
        );
        let runtime = Runtime::new(config.runtime.clone(), Some(cache)).map_err(|e| {
            ConfigError::Invalid {
                origin: origin.to_owned(),
                key: "runtime".into(),
                message: format!("{e:#}"),
            }
        })?;
        Self::load_with(config, origin, Arc::new(runtime))
    }

    /// As [`Backends::load`], with an existing runtime (hot reloads keep the engine).
    pub fn load_with(
        config: &HostConfig,
        origin: &str,
        runtime: Arc<Runtime>,
    ) -> Result<Self, ConfigError> {
        let mut steps = BTreeMap::new();
        for (step, section) in config.sections() {
            let mut backends = BTreeMap::new();
            for (name, backend) in &section.backends {
                let key = format!("{}.{name}", step.as_str());
                let invalid = |key: String, message: String| ConfigError::Invalid {
                    origin: origin.to_owned(),
                    key,
                    message,
                };
                let plugin = load_plugin(config, &runtime, backend)
                    .map_err(|message| invalid(format!("{key}.plugin"), message))?;
                if plugin.step() != step {
                    return Err(invalid(
                        format!("{key}.plugin"),
                        format!(
                            "{} is a {} plugin, not a {} plugin",
                            plugin.path.display(),
                            plugin.step(),
                            step
                        ),
                    ));
                }
                let asked = Grants::asked_by(&plugin.manifest.capabilities);
                let missing = backend.grants.missing_from(&asked);
                if !missing.is_empty() {
                    return Err(invalid(
                        format!("{key}.grants"),
                        format!(
                            "{} ({}) asks for more than this backend is granted: {}. \
                             To grant what it asks, set under [{key}]: {}",
                            plugin.path.display(),
                            plugin.id,
                            missing.describe(),
                            asked.to_toml()
                        ),
                    ));
                }
                let config_json = match &backend.config {
                    Some(value) => serde_json::to_value(value)
                        .map_err(|e| invalid(format!("{key}.config"), e.to_string()))?,
                    None => serde_json::json!({}),
                };
                plugin
                    .validate_config(&config_json)
                    .map_err(|e| invalid(format!("{key}.config"), e.to_string()))?;
                tracing::info!(backend = %key, plugin = %plugin.id, digest = %plugin.digest, code = ?plugin.code_source, "backend loaded");
                backends.insert(
                    name.clone(),
                    Arc::new(Backend {
                        name: name.clone(),
                        plugin: Arc::new(plugin),
                        config_json: config_json.to_string(),
                    }),
                );
            }
            let default = section
                .default
                .clone()
                .or_else(|| backends.keys().next().cloned());
            steps.insert(step.as_str().to_owned(), (default, backends));
        }
        check_memory_budget(config, origin, &runtime, &steps)?;
        Ok(Self {
            runtime,
            controller: config.controller.clone(),
            steps,
        })
    }

    /// The backend for a step: the named one, or the step's default. `None` when the
    /// step has no backend configured (the step is skipped) or the name is unknown.
    pub fn get(&self, step: StepKind, name: Option<&str>) -> Option<&Arc<Backend>> {
        let (default, backends) = self.steps.get(step.as_str())?;
        backends.get(name.or(default.as_deref())?)
    }

    /// Whether a step has any backend.
    pub fn has_step(&self, step: StepKind) -> bool {
        self.steps
            .get(step.as_str())
            .is_some_and(|(_, b)| !b.is_empty())
    }

    /// The names of a step's backends, for error messages.
    pub fn names(&self, step: StepKind) -> Vec<String> {
        self.steps
            .get(step.as_str())
            .map(|(_, b)| b.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Refuses a config whose worst-case memory exceeds what the operator may use: the
/// `[controller] memoryLimitBytes` setting, else the cgroup's limit.
fn check_memory_budget(
    config: &HostConfig,
    origin: &str,
    runtime: &Runtime,
    steps: &BTreeMap<String, StepBackends>,
) -> Result<(), ConfigError> {
    let (limit, source) = match config.controller.memory_limit_bytes {
        Some(limit) => (limit, "[controller] memoryLimitBytes"),
        None => match budget::cgroup_memory_limit() {
            Some(limit) => (limit, "the cgroup's memory limit"),
            None => return Ok(()),
        },
    };
    // A plugin serving several backends is compiled once.
    let mut code: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, backends) in steps.values() {
        for backend in backends.values() {
            code.insert(&backend.plugin.digest, backend.plugin.code_bytes);
        }
    }
    let worst = MemoryBudget::worst_case(
        runtime.limits(),
        u64::from(config.controller.concurrency),
        runtime.kept_resident_bytes() as u64,
        code.values().map(|&bytes| bytes as u64).sum(),
    );
    tracing::debug!(?worst, limit, source, "memory budget");
    worst
        .fits(limit, source)
        .map_err(|message| ConfigError::Invalid {
            origin: origin.to_owned(),
            key: "memory".into(),
            message,
        })
}

/// Loads a backend's plugin file, or pulls the plugin when the config names an `oci://`
/// reference (see `crate::oci`); its `path` is then the reference, so messages name it.
fn load_plugin(
    config: &HostConfig,
    runtime: &Runtime,
    backend: &crate::config::BackendConfig,
) -> Result<Plugin, String> {
    let plugin = &backend.plugin;
    let Some(reference) = PluginReference::from_config_value(plugin) else {
        return runtime
            .load(&resolve(config, plugin))
            .map_err(|e| e.to_string());
    };
    let reference = reference.map_err(|e| e.to_string())?;
    let settings = OciSettings {
        cache_dir: config.oci.cache_dir.clone(),
        plain_http_registries: config.oci.plain_http_registries.clone(),
    };
    let (artifact, origin) =
        oci::fetch_blocking(&reference, &settings).map_err(|e| e.to_string())?;
    if let Some(key) = backend
        .verify_key
        .as_ref()
        .or(config.oci.verify_key.as_ref())
    {
        let key = oci::signature::read_public_key(&resolve(config, key))?;
        let digest = &artifact.manifest_digest;
        oci::blocking(&reference, oci::verify(&reference, digest, &key, &settings))
            .map_err(|e| e.to_string())?;
        tracing::info!(%reference, manifest = %digest, "OCI plugin signature verified");
    }
    tracing::info!(%reference, manifest = %artifact.manifest_digest, ?origin, "OCI plugin fetched");
    runtime
        .load_bytes(Path::new(&reference.to_string()), &artifact.wasm)
        .map_err(|e| e.to_string())
}

fn resolve(config: &HostConfig, plugin: &std::path::Path) -> PathBuf {
    match &config.plugins.dir {
        Some(dir) if plugin.is_relative() => dir.join(plugin),
        _ => plugin.to_path_buf(),
    }
}
