//! The traits a plugin implements: [`Plugin`] for what every plugin declares, and one
//! trait per step kind. Every method but `reconcile` has a default.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::{
    Call, Effects, LifecycleOutcome, Manifest, MigrationOutcome, NetworkOutcome, StepError,
    StorageOutcome,
};

/// What a step returns.
pub type StepResult<T> = Result<T, StepError>;

/// What every plugin declares.
pub trait Plugin {
    /// The plugin's config, parsed from the host config. Its JSON Schema (from
    /// `schemars`) is published in the manifest; the host checks the config against it
    /// before the plugin is used. Use `()`-like empty structs for no config.
    type Config: DeserializeOwned + JsonSchema;

    /// Name, version, description and capabilities.
    fn manifest() -> Manifest;
}

/// A network backend: turns the Wukong's networks into attachments.
pub trait NetworkPlugin: Plugin {
    fn reconcile(call: &Call<'_, Self::Config>) -> StepResult<NetworkOutcome>;
    /// Remove what this plugin created for the Wukong.
    fn finalize(_call: &Call<'_, Self::Config>) -> StepResult<Effects> {
        Ok(Effects::default())
    }
}

/// A storage backend: turns the Wukong's disks into claims.
pub trait StoragePlugin: Plugin {
    fn reconcile(call: &Call<'_, Self::Config>) -> StepResult<StorageOutcome>;
    /// Remove the claims of disks that are not retained.
    fn finalize(_call: &Call<'_, Self::Config>) -> StepResult<Effects> {
        Ok(Effects::default())
    }
}

/// The lifecycle step: builds and drives the VirtualMachine.
pub trait LifecyclePlugin: Plugin {
    fn reconcile(call: &Call<'_, Self::Config>) -> StepResult<LifecycleOutcome>;
    fn finalize(_call: &Call<'_, Self::Config>) -> StepResult<Effects> {
        Ok(Effects::default())
    }
}

/// The migration step: live migration and automatic evacuation.
pub trait MigrationPlugin: Plugin {
    fn reconcile(call: &Call<'_, Self::Config>) -> StepResult<MigrationOutcome>;
    fn finalize(_call: &Call<'_, Self::Config>) -> StepResult<Effects> {
        Ok(Effects::default())
    }
}
