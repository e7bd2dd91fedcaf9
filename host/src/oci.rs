//! Plugins from OCI registries, the way Kubewarden ships policies: a config names a
//! plugin as `oci://REGISTRY/REPOSITORY:TAG` or `...@sha256:DIGEST` instead of a file, and
//! the host pulls it, verifies it, caches it on disk and loads the bytes like a file.
//!
//! # Artifact format
//! An OCI image manifest (`application/vnd.oci.image.manifest.v1+json`) with exactly one
//! layer of media type `application/wasm` (the component) and a config blob of media type
//! `application/vnd.wasm.config.v0+json` — the layout of the CNCF TAG Runtime "Wasm OCI
//! artifact" proposal that `wkg` and `oci-wasm` use. Pulls also accept Kubewarden's and
//! wasm-to-oci's layer type `application/vnd.wasm.content.layer.v1+wasm`.
//!
//! # Guarantees
//! - The layer's sha256 is checked against the manifest on every pull and on every read
//!   from the cache; a reference pinned by `@sha256:` must match the manifest's digest.
//!   A mismatch is refused, never loaded, and never answered from the cache.
//! - A pinned reference found in the cache is loaded without asking the registry: its
//!   content cannot change.
//! - A tag is asked of the registry on every load (tags move). When the registry cannot be
//!   reached (connection refused, timeout, 5xx) and the cache holds that reference, the
//!   cached copy is loaded with a warning; otherwise the load fails naming the reference.
//!
//! # Transport
//! HTTPS, except plain HTTP for loopback registries (`localhost`, `127.0.0.0/8`)
//! and for registries listed in `[oci] plainHttpRegistries`. Credentials as Docker finds
//! them (the `auth` module: the auth file, credential helpers), anonymous when none names
//! the registry.
//!
//! # Signatures
//! With a public key (`[oci] verifyKey`, or a backend's own `verifyKey`), a plugin loads
//! only if a cosign signature by that key names its manifest digest (see [`signature`]).
//! The registry is asked every time, a pinned and cached plugin too: a key that must
//! hold fails closed when the registry cannot answer.
//!
//! # Cache
//! `$WUKONG_CACHE/oci` (beside the compiled-code cache), or `[oci] cacheDir`:
//! content-addressed blobs plus one small file per reference naming its manifest digest.

mod auth;
mod reference;
mod registry;
pub mod signature;
mod store;

use std::path::PathBuf;

pub use reference::{PluginReference, SCHEME};
use registry::PullError;
pub use registry::push;
pub use store::OciStore;

/// The layer media type of a Wukong plugin (the CNCF Wasm OCI artifact layout).
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Layer media types pulls also accept (Kubewarden, wasm-to-oci).
pub const LEGACY_WASM_LAYER_MEDIA_TYPES: &[&str] = &["application/vnd.wasm.content.layer.v1+wasm"];
/// The config blob's media type.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The biggest component the host pulls: a componentized CPython is ~20 MB; this bounds
/// what a hostile manifest can make the host download into memory.
pub const MAX_PLUGIN_BYTES: u64 = 256 * 1024 * 1024;

/// Where artifacts are cached and which registries speak plain HTTP.
#[derive(Debug, Clone, Default)]
pub struct OciSettings {
    /// The cache folder; [`OciStore::default_dir`] when absent.
    pub cache_dir: Option<PathBuf>,
    /// Registries (`host:port`) reached over plain HTTP although not on loopback.
    pub plain_http_registries: Vec<String>,
}

impl OciSettings {
    fn store(&self) -> OciStore {
        OciStore::new(self.cache_dir.clone().unwrap_or_else(OciStore::default_dir))
    }
}

/// A verified plugin artifact: the manifest and the component it names.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// `sha256:…` of the manifest.
    pub manifest_digest: String,
    /// The manifest as the registry served it (its digest is `manifest_digest`).
    pub manifest: Vec<u8>,
    /// `sha256:…` of the component.
    pub layer_digest: String,
    /// The component.
    pub wasm: Vec<u8>,
}

/// Where a fetched artifact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOrigin {
    /// Pulled from the registry now.
    Registry,
    /// A pinned reference found in the cache; the registry was not asked.
    Cache,
    /// The registry could not be reached; the cached copy of the reference was used.
    CacheWhileUnreachable,
}

/// Why an OCI plugin could not be had. Every message names the reference.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference breaks the rules in [`PluginReference`].
    #[error("{reference}: not a plugin reference: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The registry could not be reached and the cache has no copy of the reference.
    #[error("{reference}: registry unreachable: {cause}; no cached copy in {}", cache.display())]
    Unreachable {
        reference: String,
        cause: String,
        cache: PathBuf,
    },
    /// The registry answered with an error (unknown manifest, unauthorized, ...).
    #[error("{reference}: the registry refused: {cause}")]
    Registry { reference: String, cause: String },
    /// Content that is not what its digest says: tampered with or corrupted.
    #[error("{reference}: {what} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        reference: String,
        what: &'static str,
        expected: String,
        actual: String,
    },
    /// The manifest is not one wasm layer of a sane size.
    #[error("{reference}: not a Wukong plugin artifact: {reason}")]
    NotAPlugin { reference: String, reason: String },
    /// A signature was required and none by the key names the artifact.
    #[error("{reference}: not signed by the verify key: {reason}")]
    Unsigned { reference: String, reason: String },
    /// This host could not do its part (start an I/O runtime, build the HTTP client).
    #[error("{reference}: {reason}")]
    Local { reference: String, reason: String },
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Fetches a plugin artifact: from the cache for a pinned reference it holds, else from the
/// registry (then cached), else — registry unreachable — from the cache with a warning.
pub async fn fetch(
    reference: &PluginReference,
    settings: &OciSettings,
) -> Result<(Artifact, FetchOrigin), OciError> {
    let store = settings.store();
    if reference.digest().is_some()
        && let Some(artifact) = store.load(reference)
    {
        return Ok((artifact, FetchOrigin::Cache));
    }
    match registry::pull(reference, settings).await {
        Ok(artifact) => {
            if let Err(e) = store.save(reference, &artifact) {
                tracing::warn!(%reference, error = %e, "cannot write the OCI cache; the next load without the registry will fail");
            }
            Ok((artifact, FetchOrigin::Registry))
        }
        Err(PullError::Unreachable(cause)) => match store.load(reference) {
            Some(artifact) => {
                tracing::warn!(%reference, %cause, digest = %artifact.manifest_digest, "OCI registry unreachable; using the cached copy");
                Ok((artifact, FetchOrigin::CacheWhileUnreachable))
            }
            None => Err(OciError::Unreachable {
                reference: reference.to_string(),
                cause,
                cache: store.dir().to_path_buf(),
            }),
        },
        Err(PullError::Refused(e)) => Err(e),
    }
}

/// Signs what `reference` names in its registry (its tag's manifest, or the pinned one)
/// with `key`, cosign's way; returns the manifest digest and the signature's reference.
pub async fn sign(
    reference: &PluginReference,
    key: &p256::ecdsa::SigningKey,
    settings: &OciSettings,
) -> Result<(String, PluginReference), OciError> {
    let digest = registry::resolve_digest(reference, settings)
        .await
        .map_err(|e| pull_error(reference, settings, e))?;
    let payload = signature::payload(&reference.repository_path(), &digest);
    let signed = signature::sign(&payload, key);
    let target = registry::push_signature(reference, &digest, payload, signed, settings).await?;
    Ok((digest, target))
}

/// Checks that a cosign signature by `key` names `manifest_digest` next to `reference`.
pub async fn verify(
    reference: &PluginReference,
    manifest_digest: &str,
    key: &p256::ecdsa::VerifyingKey,
    settings: &OciSettings,
) -> Result<(), OciError> {
    let signatures = registry::pull_signatures(reference, manifest_digest, settings)
        .await
        .map_err(|e| pull_error(reference, settings, e))?;
    if signatures.is_empty() {
        return Err(OciError::Unsigned {
            reference: reference.to_string(),
            reason: format!(
                "no signature of {manifest_digest} (tag {})",
                signature::signature_tag(manifest_digest)
            ),
        });
    }
    let mut reasons = Vec::new();
    for (payload, signed) in &signatures {
        match signature::check(payload, signed, key, manifest_digest) {
            Ok(()) => return Ok(()),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(OciError::Unsigned {
        reference: reference.to_string(),
        reason: format!(
            "{} signature(s) of {manifest_digest}, none by the key: {}",
            signatures.len(),
            reasons.join("; ")
        ),
    })
}

fn pull_error(reference: &PluginReference, settings: &OciSettings, error: PullError) -> OciError {
    match error {
        PullError::Refused(e) => e,
        PullError::Unreachable(cause) => OciError::Unreachable {
            reference: reference.to_string(),
            cause,
            cache: settings.store().dir().to_path_buf(),
        },
    }
}

/// [`fetch`] for synchronous callers (loading backends).
pub fn fetch_blocking(
    reference: &PluginReference,
    settings: &OciSettings,
) -> Result<(Artifact, FetchOrigin), OciError> {
    blocking(reference, fetch(reference, settings))
}

/// Runs an OCI call for a synchronous caller, on a thread of its own so it works both
/// inside and outside a tokio runtime.
pub fn blocking<T: Send>(
    reference: &PluginReference,
    call: impl std::future::Future<Output = Result<T, OciError>> + Send,
) -> Result<T, OciError> {
    let local = |reason: String| OciError::Local {
        reference: reference.to_string(),
        reason,
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| local(format!("cannot start an I/O runtime: {e}")))?
                    .block_on(call)
            })
            .join()
            .unwrap_or_else(|_| Err(local("the OCI thread panicked".into())))
    })
}

/// Parses a manifest and returns its one wasm layer, checking what the host relies on.
fn wasm_layer(
    reference: &PluginReference,
    manifest: &[u8],
) -> Result<oci_client::manifest::OciDescriptor, OciError> {
    let not_a_plugin = |reason: String| OciError::NotAPlugin {
        reference: reference.to_string(),
        reason,
    };
    let parsed: oci_client::manifest::OciImageManifest = serde_json::from_slice(manifest)
        .map_err(|e| not_a_plugin(format!("manifest is not an OCI image manifest: {e}")))?;
    let [layer] = parsed.layers.as_slice() else {
        return Err(not_a_plugin(format!(
            "expected one {WASM_LAYER_MEDIA_TYPE} layer, found {} layers",
            parsed.layers.len()
        )));
    };
    if layer.media_type != WASM_LAYER_MEDIA_TYPE
        && !LEGACY_WASM_LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str())
    {
        return Err(not_a_plugin(format!(
            "layer media type is {:?}, expected {WASM_LAYER_MEDIA_TYPE}",
            layer.media_type
        )));
    }
    // NB: the digest names a cache file; only a well-formed sha256 may become a path.
    if !is_sha256_digest(&layer.digest) {
        return Err(not_a_plugin(format!(
            "layer digest {:?} is not sha256:<64 hex>",
            layer.digest
        )));
    }
    if u64::try_from(layer.size).map_or(true, |size| size > MAX_PLUGIN_BYTES) {
        return Err(not_a_plugin(format!(
            "layer size {} is out of range (at most {MAX_PLUGIN_BYTES} bytes)",
            layer.size
        )));
    }
    Ok(layer.clone())
}

/// Checks `bytes` against `expected`, naming `what` (manifest, layer) on a mismatch.
fn verify_digest(
    reference: &PluginReference,
    what: &'static str,
    expected: &str,
    bytes: &[u8],
) -> Result<(), OciError> {
    let actual = sha256_digest(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(OciError::DigestMismatch {
            reference: reference.to_string(),
            what,
            expected: expected.to_owned(),
            actual,
        })
    }
}

/// `sha256:` and 64 lowercase hex digits.
fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> PluginReference {
        "oci://127.0.0.1:5000/wukong/cdi:0.1.0".parse().unwrap()
    }

    fn manifest(layers: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": WASM_CONFIG_MEDIA_TYPE, "digest": sha256_digest(b"{}"), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn the_wasm_layer_is_the_only_one_and_well_formed() {
        let digest = sha256_digest(b"wasm");
        let good = manifest(
            serde_json::json!([{"mediaType": "application/wasm", "digest": digest, "size": 4}]),
        );
        assert_eq!(wasm_layer(&reference(), &good).unwrap().digest, digest);

        let two = manifest(serde_json::json!([
            {"mediaType": "application/wasm", "digest": digest, "size": 4},
            {"mediaType": "application/wasm", "digest": digest, "size": 4},
        ]));
        let error = wasm_layer(&reference(), &two).unwrap_err().to_string();
        assert!(error.contains("found 2 layers"), "{error}");

        let tar = manifest(serde_json::json!([
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": 4},
        ]));
        let error = wasm_layer(&reference(), &tar).unwrap_err().to_string();
        assert!(error.contains("layer media type"), "{error}");

        let traversal = manifest(serde_json::json!([
            {"mediaType": "application/wasm", "digest": "sha256:../../etc/passwd", "size": 4},
        ]));
        let error = wasm_layer(&reference(), &traversal)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not sha256:<64 hex>"), "{error}");

        let huge = manifest(serde_json::json!([
            {"mediaType": "application/wasm", "digest": digest, "size": MAX_PLUGIN_BYTES + 1},
        ]));
        assert!(wasm_layer(&reference(), &huge).is_err());
    }

    #[test]
    fn a_digest_mismatch_names_both_digests() {
        let error = verify_digest(&reference(), "layer", &sha256_digest(b"a"), b"b").unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("oci://127.0.0.1:5000/wukong/cdi:0.1.0: layer digest mismatch")
        );
        assert!(message.contains(&sha256_digest(b"a")) && message.contains(&sha256_digest(b"b")));
    }
}
