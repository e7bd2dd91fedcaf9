//! Host configuration (`wukong.toml`, also read from a ConfigMap): the plugin for each
//! backend, the default backend per step, each plugin's config, runtime limits.
//!
//! ```toml
//! [runtime]
//! deadlineMs = 1000
//!
//! [plugins]
//! dir = "/opt/wukong/plugins"      # relative plugin paths resolve here
//! watch = true                     # swap changed plugins and config in (the default)
//!
//! [storage]
//! default = "longhorn"
//! [storage.longhorn]
//! plugin = "longhorn_storage.wasm"
//! config = { numberOfReplicas = 3 }
//!
//! [storage.ceph]                   # or from an OCI registry (see `crate::oci`):
//! plugin = "oci://registry.example.com/wukong/ceph-rbd-storage:0.1.0@sha256:<64 hex>"
//!
//! [oci]
//! cacheDir = "/var/cache/wukong/oci"                   # default: $WUKONG_CACHE/oci
//! verifyKey = "cosign.pub"          # oci:// plugins must be signed by it (cosign format)
//! plainHttpRegistries = ["registry.wukong-system.svc:5000"]   # loopback is always plain
//!
//! [controller]
//! maxConcurrentAutomaticMigrations = 2
//! ```
//!
//! A `plugin` value that starts with `oci://` is an OCI reference,
//! `oci://REGISTRY/REPOSITORY:TAG`, `...@sha256:DIGEST` or `...:TAG@sha256:DIGEST` (the
//! digest wins); anything else is a file path.

mod backends;
pub mod budget;
pub mod grants;
pub mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use backends::{Backend, Backends};
pub use grants::Grants;

use crate::oci::PluginReference;
use crate::plugin::RuntimeLimits;
use crate::plugin::types::StepKind;

/// The ConfigMap key that holds the config (`wukong run --config-map`).
pub const CONFIG_MAP_KEY: &str = "wukong.toml";

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default)]
    pub runtime: RuntimeLimits,
    #[serde(default)]
    pub plugins: PluginsSection,
    #[serde(default)]
    pub network: StepSection,
    #[serde(default)]
    pub storage: StepSection,
    #[serde(default)]
    pub lifecycle: StepSection,
    #[serde(default)]
    pub migration: StepSection,
    #[serde(default)]
    pub controller: ControllerSection,
    #[serde(default)]
    pub oci: OciSection,
}

/// Plugins pulled from OCI registries.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OciSection {
    /// Pulled artifacts; `$WUKONG_CACHE/oci` when absent.
    pub cache_dir: Option<PathBuf>,
    /// Registries (`host:port`) spoken to over plain HTTP although not on loopback, e.g. an
    /// in-cluster registry without TLS. Loopback registries always are.
    pub plain_http_registries: Vec<String>,
    /// A PEM public key (P-256, as `cosign public-key` prints it): every `oci://` plugin
    /// must carry a cosign signature by it (a backend's own `verifyKey` overrides it).
    /// A relative path resolves as plugin paths do.
    pub verify_key: Option<PathBuf>,
}

/// At 1,000 Wukongs 20 ms gave 19 reconciles and 9.5 status writes per Wukong, 250 ms 8 to
/// 11 and 6 to 8 (`cargo bench -p wukong --bench operator_scale`).
const DEFAULT_DEBOUNCE_MS: u64 = 250;
/// A gather past this holds every answer too long to be a debounce.
const MAX_DEBOUNCE_MS: u64 = 10_000;

/// The reconcile loop's own settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerSection {
    /// Automatic (policy-driven) migrations in flight at once across the whole cluster;
    /// a node drain must not move every VM at the same time. 0 turns them off.
    pub max_concurrent_automatic_migrations: usize,
    /// Wukongs reconciled at once, each running at most one plugin call. Read at start.
    pub concurrency: u16,
    /// How long a Wukong's triggers are gathered before its reconcile, ms: KubeVirt and CDI
    /// move an object through several states in quick succession, each a watch event;
    /// gathered, they cost one reconcile and one status write. Longer gathers more under
    /// load and answers each change that much later. Read at start.
    pub debounce_ms: u64,
    /// The memory the operator may use, bytes; the cgroup's limit when absent (none when
    /// it has none). A config whose worst case exceeds it is refused (see `budget`).
    pub memory_limit_bytes: Option<u64>,
}

impl Default for ControllerSection {
    fn default() -> Self {
        Self {
            max_concurrent_automatic_migrations: 2,
            concurrency: 16,
            debounce_ms: DEFAULT_DEBOUNCE_MS,
            memory_limit_bytes: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    /// Where relative plugin paths resolve; the config file's folder when absent. A
    /// relative folder is relative to the config file.
    pub dir: Option<PathBuf>,
    /// Compiled-code cache; `$WUKONG_CACHE/compiled` when absent.
    pub cache_dir: Option<PathBuf>,
    /// Follow changes to the config and the plugin files and swap them in without a
    /// restart (see `crate::reload`). Read at start; a reloaded `false` stops following.
    #[serde(default = "following")]
    pub watch: bool,
}

fn following() -> bool {
    true
}

impl Default for PluginsSection {
    fn default() -> Self {
        Self {
            dir: None,
            cache_dir: None,
            watch: following(),
        }
    }
}

/// One step: its default backend and the backends by name.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct StepSection {
    /// The backend used when a disk or network names none; the only one when absent and
    /// there is exactly one.
    pub default: Option<String>,
    #[serde(flatten)]
    pub backends: BTreeMap<String, BackendConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// A `.wasm` component file, or an `oci://` reference (see `crate::oci`).
    pub plugin: PathBuf,
    /// The plugin's config, checked against the schema in its manifest.
    #[serde(default)]
    pub config: Option<toml::Value>,
    /// What the plugin may read, write and call (see [`grants`]); nothing when absent.
    #[serde(default)]
    pub grants: Grants,
    /// For an `oci://` plugin: the PEM public key its cosign signature must be by, instead
    /// of `[oci] verifyKey`. A relative path resolves as plugin paths do.
    #[serde(default, rename = "verifyKey")]
    pub verify_key: Option<PathBuf>,
}

/// Why a config was refused. Every message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

impl HostConfig {
    /// Parses TOML; `origin` (a path or `configmap ns/name`) names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim().to_owned(),
        })?;
        let invalid = |key: String, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            message,
        };
        config
            .runtime
            .validate()
            .map_err(|message| invalid("runtime".into(), message))?;
        if config.controller.concurrency == 0 {
            return Err(invalid(
                "controller.concurrency".into(),
                "must be at least 1".into(),
            ));
        }
        if config.controller.debounce_ms > MAX_DEBOUNCE_MS {
            return Err(invalid(
                "controller.debounceMs".into(),
                format!("must be at most {MAX_DEBOUNCE_MS} (ms)"),
            ));
        }
        for (step, section) in config.sections() {
            for (name, backend) in &section.backends {
                if let Some(Err(e)) = PluginReference::from_config_value(&backend.plugin) {
                    return Err(invalid(format!("{step}.{name}.plugin"), e.to_string()));
                }
                backend
                    .grants
                    .validate()
                    .map_err(|message| invalid(format!("{step}.{name}.grants"), message))?;
            }
            if let Some(default) = &section.default {
                if !section.backends.contains_key(default) {
                    return Err(invalid(
                        format!("{step}.default"),
                        format!("no backend {default:?} in [{step}]"),
                    ));
                }
            } else if section.backends.len() > 1 {
                return Err(invalid(
                    format!("{step}.default"),
                    "several backends and no default: name one".into(),
                ));
            }
        }
        Ok(config)
    }

    /// Reads and parses a file; relative plugin paths resolve next to it.
    /// Parses the config held by a ConfigMap (key [`CONFIG_MAP_KEY`]). Nothing places a
    /// ConfigMap on disk, so relative plugin paths resolve in `plugin_dir` unless the
    /// config names its own `[plugins] dir`.
    pub fn parse_config_map(
        text: &str,
        origin: &str,
        plugin_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let mut config = Self::parse(text, origin)?;
        if config.plugins.dir.is_none() {
            config.plugins.dir = plugin_dir.map(Path::to_path_buf);
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        // Relative plugin paths resolve next to the config file, wherever it is run from.
        let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.plugins.dir = Some(match config.plugins.dir.take() {
            Some(dir) if dir.is_relative() => folder.join(dir),
            Some(dir) => dir,
            None => folder,
        });
        Ok(config)
    }

    /// The plugin files the config names, resolved as [`Backends::load`] resolves them.
    pub fn plugin_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .sections()
            .iter()
            .flat_map(|(_, section)| section.backends.values())
            // An `oci://` reference is pulled, not a file to follow.
            .filter(|backend| {
                !backend
                    .plugin
                    .to_str()
                    .is_some_and(|p| p.starts_with("oci://"))
            })
            .map(|backend| match &self.plugins.dir {
                Some(dir) if backend.plugin.is_relative() => dir.join(&backend.plugin),
                _ => backend.plugin.clone(),
            })
            .collect();
        files.sort();
        files.dedup();
        files
    }

    /// The four step sections with their names.
    pub fn sections(&self) -> [(StepKind, &StepSection); 4] {
        [
            (StepKind::Network, &self.network),
            (StepKind::Storage, &self.storage),
            (StepKind::Lifecycle, &self.lifecycle),
            (StepKind::Migration, &self.migration),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backends_and_defaults() {
        let config = HostConfig::parse(
            r#"
            [runtime]
            deadlineMs = 500
            [storage]
            default = "longhorn"
            [storage.longhorn]
            plugin = "longhorn_storage.wasm"
            config = { numberOfReplicas = 3 }
            [storage.cdi]
            plugin = "cdi_storage.wasm"
            "#,
            "test.toml",
        )
        .unwrap();
        assert_eq!(config.runtime.deadline_ms, 500);
        assert_eq!(config.storage.backends.len(), 2);
        assert_eq!(config.storage.default.as_deref(), Some("longhorn"));
        assert_eq!(config.controller.max_concurrent_automatic_migrations, 2);
        assert!(config.plugins.watch, "hot swap is on unless turned off");
        assert!(HostConfig::default().plugins.watch);
        let fixed = HostConfig::parse("[plugins]\nwatch = false\n", "test.toml").unwrap();
        assert!(!fixed.plugins.watch);
        let limited = HostConfig::parse(
            "[controller]\nmaxConcurrentAutomaticMigrations = 1\n",
            "test.toml",
        )
        .unwrap();
        assert_eq!(limited.controller.max_concurrent_automatic_migrations, 1);
    }

    #[test]
    fn the_example_config_parses() {
        let example = include_str!("../../examples/wukong.toml");
        let config = HostConfig::parse(example, "examples/wukong.toml").unwrap();
        assert!(config.migration.backends.contains_key("kubevirt"));
        assert_eq!(config.controller.max_concurrent_automatic_migrations, 2);
    }

    #[test]
    fn errors_name_the_key() {
        let unknown_default = HostConfig::parse(
            "[storage]\ndefault = \"x\"\n[storage.cdi]\nplugin = \"a.wasm\"\n",
            "w.toml",
        )
        .unwrap_err();
        assert_eq!(
            unknown_default.to_string(),
            "w.toml: storage.default: no backend \"x\" in [storage]"
        );
        let long_debounce =
            HostConfig::parse("[controller]\ndebounceMs = 60000\n", "w.toml").unwrap_err();
        assert_eq!(
            long_debounce.to_string(),
            "w.toml: controller.debounceMs: must be at most 10000 (ms)"
        );
        let bad_limit = HostConfig::parse("[runtime]\ndeadlineMs = 0\n", "w.toml").unwrap_err();
        assert!(
            bad_limit.to_string().contains("runtime.deadlineMs"),
            "{bad_limit}"
        );
        let typo = HostConfig::parse("[runtime]\ndeadline = 5\n", "w.toml").unwrap_err();
        assert!(typo.to_string().contains("deadline"), "{typo}");
        let untagged = HostConfig::parse(
            "[storage.cdi]\nplugin = \"oci://ghcr.io/acme/cdi\"\n",
            "w.toml",
        )
        .unwrap_err();
        assert!(
            untagged
                .to_string()
                .starts_with("w.toml: storage.cdi.plugin: oci://ghcr.io/acme/cdi: "),
            "{untagged}"
        );
        let missing_plugin =
            HostConfig::parse("[storage.cdi]\nconfig = {}\n", "w.toml").unwrap_err();
        assert!(
            missing_plugin.to_string().contains("plugin"),
            "{missing_plugin}"
        );
    }
}
