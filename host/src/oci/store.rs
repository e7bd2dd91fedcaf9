//! The on-disk OCI cache: blobs by digest (`blobs/sha256/<hex>`), and per reference a small
//! file naming its manifest digest (`refs/<sha256 of the reference>.json`). Everything read
//! back is verified again, so a corrupted cache is a miss, never a wrong plugin.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    Artifact, PluginReference, is_sha256_digest, sha256_digest, verify_digest, wasm_layer,
};
use crate::plugin::CodeCache;

/// A folder of pulled plugin artifacts.
#[derive(Debug, Clone)]
pub struct OciStore {
    dir: PathBuf,
}

/// What a reference resolved to when it was last pulled.
#[derive(Debug, Serialize, Deserialize)]
struct RefEntry {
    reference: String,
    manifest_digest: String,
}

impl OciStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$WUKONG_CACHE/oci`, else `~/.cache/wukong/oci`: beside the compiled-code cache.
    pub fn default_dir() -> PathBuf {
        CodeCache::default_dir().with_file_name("oci")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        // Only well-formed digests become paths (the manifest comes from the network).
        is_sha256_digest(digest).then(|| {
            self.dir
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
        })
    }

    fn ref_path(&self, reference: &PluginReference) -> PathBuf {
        let key = sha256_digest(reference.to_string().as_bytes());
        self.dir
            .join("refs")
            .join(format!("{}.json", key.trim_start_matches("sha256:")))
    }

    /// Stores an artifact (already verified) under its digests and its reference.
    pub fn save(&self, reference: &PluginReference, artifact: &Artifact) -> io::Result<()> {
        let not_a_digest = || io::Error::new(io::ErrorKind::InvalidInput, "not a sha256 digest");
        let manifest = self
            .blob_path(&artifact.manifest_digest)
            .ok_or_else(not_a_digest)?;
        let layer = self
            .blob_path(&artifact.layer_digest)
            .ok_or_else(not_a_digest)?;
        write_atomically(&layer, &artifact.wasm)?;
        write_atomically(&manifest, &artifact.manifest)?;
        let entry = RefEntry {
            reference: reference.to_string(),
            manifest_digest: artifact.manifest_digest.clone(),
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(io::Error::other)?;
        // The reference last, so it never names blobs that are not there.
        write_atomically(&self.ref_path(reference), &json)
    }

    /// The cached artifact of `reference`, verified end to end; `None` when absent or
    /// unusable (logged).
    pub fn load(&self, reference: &PluginReference) -> Option<Artifact> {
        match self.try_load(reference) {
            Ok(found) => found,
            Err(reason) => {
                tracing::warn!(%reference, dir = %self.dir.display(), %reason, "cached OCI artifact unusable; ignoring it");
                None
            }
        }
    }

    fn try_load(&self, reference: &PluginReference) -> Result<Option<Artifact>, String> {
        let entry = match std::fs::read(self.ref_path(reference)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let entry: RefEntry = serde_json::from_slice(&entry).map_err(|e| e.to_string())?;
        if entry.reference != reference.to_string() {
            return Err(format!("entry names {}", entry.reference));
        }
        if let Some(pinned) = reference.digest()
            && pinned != entry.manifest_digest
        {
            return Err(format!("entry names manifest {}", entry.manifest_digest));
        }
        let read = |digest: &str| {
            let path = self
                .blob_path(digest)
                .ok_or_else(|| format!("{digest:?} is not a sha256 digest"))?;
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let manifest = read(&entry.manifest_digest)?;
        verify_digest(
            reference,
            "cached manifest",
            &entry.manifest_digest,
            &manifest,
        )
        .map_err(|e| e.to_string())?;
        let layer = wasm_layer(reference, &manifest).map_err(|e| e.to_string())?;
        let wasm = read(&layer.digest)?;
        verify_digest(reference, "cached layer", &layer.digest, &wasm)
            .map_err(|e| e.to_string())?;
        Ok(Some(Artifact {
            manifest_digest: entry.manifest_digest,
            manifest,
            layer_digest: layer.digest,
            wasm,
        }))
    }
}

/// Writes by rename, so a reader never sees half a file (several hosts may share a cache).
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(wasm: &[u8]) -> Artifact {
        let layer_digest = sha256_digest(wasm);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": super::super::WASM_CONFIG_MEDIA_TYPE, "digest": sha256_digest(b"{}"), "size": 2},
            "layers": [{"mediaType": "application/wasm", "digest": layer_digest, "size": wasm.len()}],
        }))
        .unwrap();
        Artifact {
            manifest_digest: sha256_digest(&manifest),
            manifest,
            layer_digest,
            wasm: wasm.to_vec(),
        }
    }

    #[test]
    fn a_saved_artifact_loads_back_by_reference_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = OciStore::new(dir.path());
        let tagged: PluginReference = "oci://localhost:5000/w/cdi:1".parse().unwrap();
        let other: PluginReference = "oci://localhost:5000/w/cdi:2".parse().unwrap();
        let saved = artifact(b"\0asm component");
        store.save(&tagged, &saved).unwrap();
        let loaded = store.load(&tagged).unwrap();
        assert_eq!(loaded.wasm, saved.wasm);
        assert_eq!(loaded.manifest_digest, saved.manifest_digest);
        assert!(store.load(&other).is_none());
    }

    #[test]
    fn a_corrupted_layer_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = OciStore::new(dir.path());
        let tagged: PluginReference = "oci://localhost:5000/w/cdi:1".parse().unwrap();
        let saved = artifact(b"\0asm component");
        store.save(&tagged, &saved).unwrap();
        let layer = store.blob_path(&saved.layer_digest).unwrap();
        std::fs::write(layer, b"\0asm tampered!").unwrap();
        assert!(store.load(&tagged).is_none());
    }
}
