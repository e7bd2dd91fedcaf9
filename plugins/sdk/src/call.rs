//! One step call as a plugin sees it: the Wukong, the parsed config, upstream results and
//! the cluster, with helpers for the common reads.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::de::DeserializeOwned;

use crate::{Cluster, Context, KindRef, ObjectRef, StepError, Upstream, Wukong};

/// Everything a step gets.
pub struct Call<'a, C> {
    /// The Wukong being reconciled (typed essentials plus the whole object as JSON).
    pub wukong: &'a Wukong,
    /// The plugin's config, parsed.
    pub config: C,
    /// The backend name the host chose for this call (`longhorn`, `default`).
    pub backend: &'a str,
    /// The time of this call (RFC 3339), from the host: use it instead of a clock.
    pub now: &'a str,
    /// The results of the steps before this one.
    pub upstream: &'a Upstream,
    /// Read-only cluster access, scoped to the manifest's `reads`.
    pub cluster: &'a dyn Cluster,
    /// The plugin's manifest (set by the export glue; `None` when the call was built by
    /// hand, e.g. in a unit test), built only when a helper asks [`Call::may_read`]: a
    /// call that reads no optional kind pays nothing for it.
    pub manifest: Option<fn() -> crate::Manifest>,
}

impl<'a, C: DeserializeOwned> Call<'a, C> {
    /// Parses the config and builds the call. A config that does not parse is
    /// `StepError::InvalidConfig` (the host has already checked it against the schema).
    pub fn new(
        context: &'a Context,
        upstream: &'a Upstream,
        cluster: &'a dyn Cluster,
    ) -> Result<Self, StepError> {
        let raw = if context.config.trim().is_empty() {
            "{}"
        } else {
            context.config.as_str()
        };
        let config = serde_json::from_str(raw)
            .map_err(|e| StepError::InvalidConfig(format!("config: {e}")))?;
        Ok(Self {
            wukong: &context.wukong,
            config,
            backend: &context.backend,
            now: &context.now,
            upstream,
            cluster,
            manifest: None,
        })
    }
}

impl<C> Call<'_, C> {
    /// Whether the manifest declares reads of `kind` (true when unknown).
    pub fn may_read(&self, api_version: &str, kind: &str) -> bool {
        self.manifest.is_none_or(|manifest| {
            manifest()
                .capabilities
                .reads
                .iter()
                .any(|r| r.api_version == api_version && r.kind == kind)
        })
    }

    /// Reads one object of a namespaced built-in kind in the Wukong's namespace.
    pub fn get<K>(&self, name: &str) -> Result<Option<K>, StepError>
    where
        K: k8s_openapi::Resource<Scope = NamespaceResourceScope> + DeserializeOwned,
    {
        self.get_as(&self.object_ref(K::API_VERSION, K::KIND, name))
    }

    /// Reads one object of a cluster-scoped built-in kind (Node, StorageClass).
    pub fn get_cluster_scoped<K>(&self, name: &str) -> Result<Option<K>, StepError>
    where
        K: k8s_openapi::Resource<Scope = ClusterResourceScope> + DeserializeOwned,
    {
        self.get_as(&ObjectRef {
            api_version: K::API_VERSION.into(),
            kind: K::KIND.into(),
            namespace: None,
            name: name.into(),
        })
    }

    /// Reads one object of any kind (custom resources included) and parses it as `T`
    /// (`serde_json::Value` for untyped access).
    pub fn get_as<T: DeserializeOwned>(&self, object: &ObjectRef) -> Result<Option<T>, StepError> {
        let Some(json) = self.cluster.get(object).map_err(StepError::Cluster)? else {
            return Ok(None);
        };
        serde_json::from_str(&json).map(Some).map_err(|e| {
            StepError::Cluster(format!(
                "{} {}: unexpected object: {e}",
                object.kind, object.name
            ))
        })
    }

    /// Lists objects of a kind, parsed as `T`.
    pub fn list_as<T: DeserializeOwned>(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<T>, StepError> {
        let kind = KindRef {
            api_version: api_version.into(),
            kind: kind.into(),
        };
        self.cluster
            .list(&kind, namespace, label_selector)
            .map_err(StepError::Cluster)?
            .iter()
            .map(|json| {
                serde_json::from_str(json).map_err(|e| {
                    StepError::Cluster(format!("{}: unexpected object: {e}", kind.kind))
                })
            })
            .collect()
    }

    /// The labels the host puts on the Wukong's objects.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.wukong.labels.iter().cloned().collect()
    }

    /// Metadata for an object of this Wukong: name, the Wukong's namespace, its labels.
    pub fn metadata(&self, name: impl Into<String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.wukong.namespace.clone()),
            labels: Some(self.labels()),
            ..ObjectMeta::default()
        }
    }

    /// A reference to an object in the Wukong's namespace.
    pub fn object_ref(&self, api_version: &str, kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some(self.wukong.namespace.clone()),
            name: name.into(),
        }
    }

    /// The Wukong's whole object as JSON (for status or fields not typed in the contract).
    pub fn wukong_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.wukong.json).unwrap_or(serde_json::Value::Null)
    }
}
