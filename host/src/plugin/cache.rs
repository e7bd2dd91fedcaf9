//! Compiled plugins on disk, keyed by the plugin's digest and the engine's configuration,
//! so a restart with a warm cache does not recompile.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeSource {
    Compiled,
    Cache,
}

/// A folder of precompiled components.
#[derive(Debug, Clone)]
pub struct CodeCache {
    dir: PathBuf,
}

impl CodeCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default folder: `$WUKONG_CACHE/compiled`, else `~/.cache/wukong/compiled`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("WUKONG_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/wukong")))
            .unwrap_or_else(|| std::env::temp_dir().join("wukong"))
            .join("compiled")
    }

    fn entry(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
    }

    /// Loads the compiled component for `digest`, or compiles `bytes` and stores it.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CodeSource)> {
        let entry = self.entry(engine, digest);
        if entry.is_file() {
            // SAFETY: the file is one this host wrote (atomically, by rename) into its own
            // cache folder for this exact digest and engine configuration.
            #[allow(
                unsafe_code,
                reason = "deserializing precompiled code is unsafe by nature"
            )]
            match unsafe { Component::deserialize_file(engine, &entry) } {
                Ok(component) => return Ok((component, CodeSource::Cache)),
                Err(e) => {
                    tracing::warn!(path = %entry.display(), error = %e, "compiled-code cache entry unusable; recompiling")
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(e) = self.store(&entry, &compiled) {
            tracing::warn!(path = %entry.display(), error = %e, "cannot write the compiled-code cache");
        }
        // SAFETY: `compiled` was produced by this engine just now.
        #[allow(
            unsafe_code,
            reason = "deserializing precompiled code is unsafe by nature"
        )]
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CodeSource::Compiled))
    }

    fn store(&self, entry: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let temporary = entry.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temporary, compiled)?;
        std::fs::rename(&temporary, entry)
    }
}
