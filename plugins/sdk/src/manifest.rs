//! The manifest a plugin declares: who it is and what it may touch.

use crate::{Capabilities, KindRef};

/// Built by [`crate::Plugin::manifest`]; the SDK adds the step kind and the config schema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: Capabilities,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            reads: Vec::new(),
            writes: Vec::new(),
            actions: Vec::new(),
        }
    }
}

impl Manifest {
    /// `name` is unique among plugins (`longhorn-storage`); `version` is semver.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// May `get`/`list` objects of this kind.
    #[must_use]
    pub fn reads(mut self, api_version: &str, kind: &str) -> Self {
        self.capabilities.reads.push(kind_ref(api_version, kind));
        self
    }

    /// May apply and delete objects of this kind (and read them).
    #[must_use]
    pub fn writes(mut self, api_version: &str, kind: &str) -> Self {
        let kind = kind_ref(api_version, kind);
        if !self.capabilities.reads.contains(&kind) {
            self.capabilities.reads.push(kind.clone());
        }
        self.capabilities.writes.push(kind);
        self
    }

    /// May call this subresource, as `resource/subresource` (`virtualmachineinstances/pause`).
    #[must_use]
    pub fn action(mut self, action: &str) -> Self {
        self.capabilities.actions.push(action.to_owned());
        self
    }
}

fn kind_ref(api_version: &str, kind: &str) -> KindRef {
    KindRef {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    }
}
