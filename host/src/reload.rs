//! Hot swap: follows the host config (a file, or a ConfigMap through a kube watcher) and
//! the plugin files it names. On a change it loads and checks everything again with the
//! same entry point as at start ([`Backends::load`]: each plugin serves its step, each
//! config passes its plugin's schema) and swaps the result in whole; reconciles already
//! running finish on the snapshot they took. A refused config or plugin leaves the running
//! backends in place.
//!
//! Unchanged plugins are not recompiled: the runtime (engine) is kept when `[runtime]` and
//! the cache folder are unchanged, and its code cache is keyed by the plugin's digest.
//!
//! Where a reload is reported (a host-level change has no Wukong of its own):
//! - always in the log: the changed files, the changed keys, or the refusal naming the key,
//!   the file and the cause;
//! - as a Kubernetes event on the ConfigMap when the config comes from one (where the
//!   person who edited it looks: `kubectl describe configmap`);
//! - else on the operator's own Pod when it runs in a cluster (`POD_NAME` and
//!   `POD_NAMESPACE` from the downward API) — the config file is then a mounted ConfigMap
//!   or an image file, and the Pod is what `kubectl describe` shows for the operator;
//! - else (run from a shell) in the log only.
//!
//! Not on each Wukong: a refusal changes nothing for them (they keep running on the old
//! plugin), and a change to a default backend would need an event on every Wukong. Their
//! status records which plugin (name, version, digest) ran each step, so a swap shows
//! there once they are reconciled — which every swap triggers for all Wukongs, since a
//! new default or a newly added backend can concern any of them.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use crate::config::watch::FileWatch;
use crate::config::{Backends, CONFIG_MAP_KEY, ConfigError, HostConfig};
use crate::plugin::types::StepKind;

/// How often the files are looked at; a change is loaded once it looked the same twice
/// in a row, so it is picked up 250–500 ms after it was written.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Where the host config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file (relative plugin paths resolve next to it).
    File(PathBuf),
    /// Key `wukong.toml` of a ConfigMap; relative plugin paths resolve in `plugin_dir`
    /// when the config sets no `[plugins] dir`.
    ConfigMap {
        namespace: String,
        name: String,
        plugin_dir: Option<PathBuf>,
    },
}

impl ConfigSource {
    /// How messages name it: the path, or `configmap ns/name`.
    pub fn origin(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::ConfigMap {
                namespace, name, ..
            } => format!("configmap {namespace}/{name}"),
        }
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{origin}: no key {CONFIG_MAP_KEY}")]
    NoKey { origin: String },
    #[error("loading failed: {0}")]
    Internal(String),
}

/// Follows the config and the plugins and swaps the backends. Build with
/// [`Reloader::new`], then `tokio::spawn(reloader.run())`.
pub struct Reloader {
    source: ConfigSource,
    /// The config the running backends were loaded from.
    active: HostConfig,
    /// The config last parsed (the one whose plugin files are watched).
    attempted: HostConfig,
    backends: Arc<RwLock<Arc<Backends>>>,
    files: FileWatch,
    client: Client,
    recorder: Recorder,
    /// Where events go (see the module docs); `None`: the log only.
    event_target: Option<ObjectReference>,
    /// The ConfigMap's latest `wukong.toml` (`None` when the key is missing).
    config_map_text: Option<Option<String>>,
    on_swap: Box<dyn Fn() + Send + Sync>,
}

impl Reloader {
    /// `active` is the config `backends` was loaded from; `on_swap` runs after each swap
    /// (the operator passes "reconcile every Wukong").
    pub fn new(
        source: ConfigSource,
        active: HostConfig,
        backends: Arc<RwLock<Arc<Backends>>>,
        client: Client,
        recorder: Recorder,
        on_swap: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        let mut reloader = Self {
            source,
            attempted: active.clone(),
            active,
            backends,
            files: FileWatch::default(),
            client,
            recorder,
            event_target: None,
            config_map_text: None,
            on_swap: Box::new(on_swap),
        };
        reloader.files = FileWatch::new(&reloader.watched_files());
        reloader
    }

    /// Runs until a reloaded config sets `[plugins] watch = false`.
    pub async fn run(mut self) {
        self.event_target = self.pod_reference().await;
        let mut config_map = self.config_map_updates();
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(origin = %self.source.origin(), files = self.files.paths().count(), interval = ?POLL_INTERVAL, "following the config and plugin files for hot swap");
        loop {
            let cause = tokio::select! {
                _ = ticks.tick() => match self.files.poll() {
                    Some(changed) => format!("changed: {}", list(&changed)),
                    None => continue,
                },
                Some(event) = config_map.next() => match self.take_config_map_event(event) {
                    Some(cause) => cause,
                    None => continue,
                },
            };
            if !self.reload(&cause).await {
                tracing::info!(
                    "[plugins] watch = false: no longer following changes (a restart re-reads the config)"
                );
                return;
            }
        }
    }

    /// Loads the config and plugins again and swaps them in when they pass. Returns
    /// whether to keep following.
    async fn reload(&mut self, cause: &str) -> bool {
        let started = Instant::now();
        // The settled stamps become the loaded ones before anything is read.
        self.files.rebase(&self.watched_files());
        let config = match self.read_config() {
            Ok(config) => config,
            Err(refusal) => {
                self.refuse(cause, &refusal).await;
                return true;
            }
        };
        self.attempted = config.clone();
        self.files.rebase(&self.watched_files());
        let current = self.current();
        // A new engine only when its settings changed; otherwise the engine and its code
        // cache are kept, so unchanged plugins load from compiled code.
        let keep_engine = config.runtime == self.active.runtime
            && config.plugins.cache_dir == self.active.plugins.cache_dir;
        let origin = self.source.origin();
        let runtime = Arc::clone(&current.runtime);
        let to_load = config.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            if keep_engine {
                Backends::load_with(&to_load, &origin, runtime)
            } else {
                Backends::load(&to_load, &origin)
            }
        })
        .await;
        let fresh = match loaded {
            Ok(Ok(fresh)) => fresh,
            Ok(Err(e)) => {
                self.refuse(cause, &Refusal::Config(e)).await;
                return true;
            }
            Err(e) => {
                self.refuse(cause, &Refusal::Internal(e.to_string())).await;
                return true;
            }
        };
        let changes = changes(&summary(&current), &summary(&fresh));
        let keep_following = config.plugins.watch;
        self.active = config;
        if changes.is_empty() {
            tracing::debug!(cause, "reloaded: nothing that matters changed; no swap");
            return keep_following;
        }
        match self.backends.write() {
            Ok(mut slot) => *slot = Arc::new(fresh),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(fresh),
        }
        let load_ms = started.elapsed().as_millis();
        tracing::info!(cause, changes = %changes.join("; "), load_ms, "backends swapped");
        (self.on_swap)();
        self.publish(
            EventType::Normal,
            "ConfigReloaded",
            &format!("swapped in: {}", changes.join("; ")),
        )
        .await;
        keep_following
    }

    async fn refuse(&self, cause: &str, refusal: &Refusal) {
        tracing::error!(cause, error = %refusal, "reload refused; the running config and plugins stay in use");
        self.publish(
            EventType::Warning,
            "ConfigRejected",
            &format!("{refusal}; the running config and plugins stay in use"),
        )
        .await;
    }

    fn current(&self) -> Arc<Backends> {
        self.backends
            .read()
            .map(|b| Arc::clone(&b))
            .unwrap_or_else(|poisoned| Arc::clone(&poisoned.into_inner()))
    }

    /// The config file (when it is one) and the plugin files of the last parsed config.
    fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = self.attempted.plugin_files();
        if let ConfigSource::File(path) = &self.source {
            files.push(path.clone());
        }
        files
    }

    fn read_config(&self) -> Result<HostConfig, Refusal> {
        match &self.source {
            ConfigSource::File(path) => Ok(HostConfig::load(path)?),
            ConfigSource::ConfigMap { plugin_dir, .. } => {
                let origin = self.source.origin();
                let text = match &self.config_map_text {
                    Some(Some(text)) => text,
                    Some(None) => return Err(Refusal::NoKey { origin }),
                    // No word from the watcher yet: the map as it was at start.
                    None => return Ok(self.attempted.clone()),
                };
                Ok(HostConfig::parse_config_map(
                    text,
                    &origin,
                    plugin_dir.as_deref(),
                )?)
            }
        }
    }

    /// The ConfigMap's updates (nothing for a file source), retried with backoff.
    fn config_map_updates(&self) -> BoxStream<'static, watcher::Result<watcher::Event<ConfigMap>>> {
        match &self.source {
            ConfigSource::File(_) => futures::stream::pending().boxed(),
            ConfigSource::ConfigMap {
                namespace, name, ..
            } => {
                let api = Api::<ConfigMap>::namespaced(self.client.clone(), namespace);
                let only_this = watcher::Config::default().fields(&format!("metadata.name={name}"));
                watcher(api, only_this).default_backoff().boxed()
            }
        }
    }

    /// Takes one watcher event; returns the reload cause when the config text changed.
    fn take_config_map_event(
        &mut self,
        event: watcher::Result<watcher::Event<ConfigMap>>,
    ) -> Option<String> {
        let origin = self.source.origin();
        match event {
            Ok(watcher::Event::Apply(map) | watcher::Event::InitApply(map)) => {
                self.event_target = Some(map.object_ref(&()));
                let text = map.data.and_then(|mut d| d.remove(CONFIG_MAP_KEY));
                if self.config_map_text.as_ref() == Some(&text) {
                    return None;
                }
                self.config_map_text = Some(text);
                Some(format!("{origin} changed"))
            }
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!(%origin, "the config's ConfigMap was deleted; the running config stays in use");
                None
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => {
                tracing::warn!(%origin, error = %e, "watching the config's ConfigMap failed; retrying");
                None
            }
        }
    }

    /// The operator's Pod, when it runs in one (see the module docs).
    async fn pod_reference(&self) -> Option<ObjectReference> {
        if let ConfigSource::ConfigMap { .. } = self.source {
            return None;
        }
        let name = std::env::var("POD_NAME").ok()?;
        let namespace = std::env::var("POD_NAMESPACE").ok()?;
        // `kubectl describe pod` matches events by uid too; without the right to read the
        // Pod, the event still names it.
        match Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .get(&name)
            .await
        {
            Ok(pod) => Some(pod.object_ref(&())),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the operator's Pod; events name it without its uid");
                Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name),
                    namespace: Some(namespace),
                    ..ObjectReference::default()
                })
            }
        }
    }

    async fn publish(&self, type_: EventType, reason: &str, note: &str) {
        let Some(target) = &self.event_target else {
            return;
        };
        let mut hasher = DefaultHasher::new();
        note.hash(&mut hasher);
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            // NB: kube's recorder folds events with the same type, reason and action into
            // one series keeping the first note; each distinct note is its own event.
            action: format!("Reload-{:08x}", hasher.finish() & 0xffff_ffff),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, target).await {
            tracing::warn!(error = %e, reason, "cannot publish the reload event");
        }
    }
}

/// What a set of backends amounts to, by config key; two loads with the same summary
/// behave the same, so swapping one for the other is skipped.
fn summary(backends: &Backends) -> BTreeMap<String, String> {
    let mut summary = BTreeMap::from([
        (
            "runtime".to_owned(),
            format!("{:?}", backends.runtime.limits()),
        ),
        (
            "controller".to_owned(),
            format!("{:?}", backends.controller),
        ),
    ]);
    for step in [
        StepKind::Network,
        StepKind::Storage,
        StepKind::Lifecycle,
        StepKind::Migration,
    ] {
        let step_key = step.as_str();
        if let Some(default) = backends.get(step, None) {
            summary.insert(format!("{step_key}.default"), default.name.clone());
        }
        for name in backends.names(step) {
            if let Some(backend) = backends.get(step, Some(&name)) {
                let plugin = &backend.plugin;
                let digest = plugin.digest.get(..12).unwrap_or(&plugin.digest);
                summary.insert(
                    format!("{step_key}.{name}"),
                    format!(
                        "{} ({}, sha256:{digest}) config {}",
                        plugin.id,
                        plugin.path.display(),
                        backend.config_json
                    ),
                );
            }
        }
    }
    summary
}

/// `key: old -> new` for each key that differs.
fn changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| match (old.get(key), new.get(key)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(format!("{key}: {a} -> {b}")),
            (None, Some(b)) => Some(format!("{key}: added {b}")),
            (Some(_), None) => Some(format!("{key}: removed")),
            (None, None) => None,
        })
        .collect()
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_each_key_that_differs() {
        let old = BTreeMap::from([
            ("storage.default".to_owned(), "cdi".to_owned()),
            ("storage.cdi".to_owned(), "cdi-storage@0.1.0".to_owned()),
            ("network.multus".to_owned(), "multus@0.1.0".to_owned()),
        ]);
        let new = BTreeMap::from([
            ("storage.default".to_owned(), "longhorn".to_owned()),
            ("storage.cdi".to_owned(), "cdi-storage@0.1.0".to_owned()),
            ("storage.longhorn".to_owned(), "longhorn@0.1.0".to_owned()),
        ]);
        assert_eq!(
            changes(&old, &new),
            [
                "network.multus: removed",
                "storage.default: cdi -> longhorn",
                "storage.longhorn: added longhorn@0.1.0",
            ]
        );
        assert!(changes(&new, &new).is_empty());
    }
}
