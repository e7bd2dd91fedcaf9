//! Talking to a registry with oci-client: pulling a plugin artifact (verified) and pushing
//! one.

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderValue;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;

use super::{
    Artifact, OciError, OciSettings, PluginReference, WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE, sha256_digest, verify_digest, wasm_layer,
};

/// A dead registry fails fast rather than holding up the operator's start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No progress for this long on a pull or push is a failure.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a pull failed: the registry was not there, or it answered and the answer is refused.
pub(super) enum PullError {
    /// Connection refused, timed out, or a 5xx: a cached copy may stand in.
    Unreachable(String),
    /// Anything else (not found, digest mismatch, not a plugin): never papered over.
    Refused(OciError),
}

impl From<OciError> for PullError {
    fn from(error: OciError) -> Self {
        Self::Refused(error)
    }
}

/// Pulls the manifest and the component, verifying the pinned manifest digest (if any) and
/// the layer digest.
pub(super) async fn pull(
    reference: &PluginReference,
    settings: &OciSettings,
) -> Result<Artifact, PullError> {
    let client = client(reference, settings)?;
    let manifest = pull_manifest(&client, reference).await?;
    let layer = wasm_layer(reference, &manifest)?;
    let mut wasm = Vec::with_capacity(usize::try_from(layer.size).unwrap_or_default());
    client
        .pull_blob(reference.inner(), &layer, &mut wasm)
        .await
        .map_err(|e| classify(reference, "layer", e))?;
    verify_digest(reference, "layer", &layer.digest, &wasm)?;
    Ok(Artifact {
        manifest_digest: sha256_digest(&manifest),
        manifest: manifest.to_vec(),
        layer_digest: layer.digest,
        wasm,
    })
}

/// Publishes a component under `reference` (which must have a tag and no digest); returns
/// the manifest digest. The manifest is the same bytes for the same component and
/// annotations, so pushing a file twice gives the same digest.
pub async fn push(
    reference: &PluginReference,
    wasm: Vec<u8>,
    annotations: BTreeMap<String, String>,
    settings: &OciSettings,
) -> Result<String, OciError> {
    let failed = |cause: String| OciError::Registry {
        reference: reference.to_string(),
        cause,
    };
    if reference.tag().is_none() || reference.digest().is_some() {
        return Err(OciError::InvalidReference {
            reference: reference.to_string(),
            reason: "push to a tag (oci://registry/repository:tag), without a digest".into(),
        });
    }
    let layer_digest = sha256_digest(&wasm);
    // The CNCF Wasm OCI artifact config. `created` comes from SOURCE_DATE_EPOCH (else the
    // epoch), so the same file pushes to the same digest.
    let config = serde_json::to_vec(&serde_json::json!({
        "created": created(),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
        "component": component_summary(&wasm),
    }))
    .map_err(|e| failed(e.to_string()))?;
    let config_descriptor = descriptor(WASM_CONFIG_MEDIA_TYPE, &config);
    let config_digest = config_descriptor.digest.clone();
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config: config_descriptor,
        layers: vec![descriptor(WASM_LAYER_MEDIA_TYPE, &wasm)],
        subject: None,
        artifact_type: None,
        annotations: (!annotations.is_empty()).then_some(annotations),
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|e| failed(e.to_string()))?;
    let manifest_digest = sha256_digest(&manifest);

    upload(
        reference,
        settings,
        [(wasm, layer_digest), (config, config_digest)],
        manifest,
    )
    .await?;
    Ok(manifest_digest)
}

/// Pushes the `blobs` (bytes, digest), then the manifest, to `target`, with the
/// registry's credentials.
async fn upload(
    target: &PluginReference,
    settings: &OciSettings,
    blobs: impl IntoIterator<Item = (Vec<u8>, String)>,
    manifest: Vec<u8>,
) -> Result<(), OciError> {
    let failed = |cause: String| OciError::Registry {
        reference: target.to_string(),
        cause,
    };
    let refused = |e: PullError| match e {
        PullError::Refused(e) => e,
        PullError::Unreachable(cause) => failed(cause),
    };
    let client = client(target, settings).map_err(refused)?;
    let auth = credentials(target).map_err(refused)?;
    let image = target.inner();
    client
        .store_auth_if_needed(image.resolve_registry(), &auth)
        .await;
    let cause = |e: OciDistributionError| failed(causes(&e));
    for (bytes, digest) in blobs {
        client
            .push_blob(image, bytes, &digest)
            .await
            .map_err(cause)?;
    }
    client
        .push_manifest_raw(
            image,
            manifest,
            HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE),
        )
        .await
        .map_err(cause)?;
    Ok(())
}

/// The manifest digest the registry holds for `reference` (its tag, or the pinned one).
pub(super) async fn resolve_digest(
    reference: &PluginReference,
    settings: &OciSettings,
) -> Result<String, PullError> {
    let client = client(reference, settings)?;
    Ok(sha256_digest(&pull_manifest(&client, reference).await?))
}

/// The manifest `reference` names, checked against its pinned digest (if any). NB:
/// oci-client checks it too; the host checks what it relies on itself.
async fn pull_manifest(
    client: &oci_client::Client,
    reference: &PluginReference,
) -> Result<Vec<u8>, PullError> {
    let auth = credentials(reference)?;
    let (manifest, _) = client
        .pull_manifest_raw(reference.inner(), &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| classify(reference, "manifest", e))?;
    if let Some(pinned) = reference.digest() {
        verify_digest(reference, "manifest", pinned, &manifest)?;
    }
    Ok(manifest.to_vec())
}

/// Pushes a cosign signature of `manifest_digest` (`payload` and its base64 signature) to
/// the signature tag of `reference`'s repository; returns that tag's reference.
pub(super) async fn push_signature(
    reference: &PluginReference,
    manifest_digest: &str,
    payload: Vec<u8>,
    signature: String,
    settings: &OciSettings,
) -> Result<PluginReference, OciError> {
    let target = reference.with_tag(&super::signature::signature_tag(manifest_digest));
    let failed = |cause: String| OciError::Registry {
        reference: target.to_string(),
        cause,
    };
    let config = b"{}".to_vec();
    let config_descriptor = descriptor("application/vnd.oci.image.config.v1+json", &config);
    let mut layer = descriptor(super::signature::SIGNATURE_MEDIA_TYPE, &payload);
    layer.annotations = Some(BTreeMap::from([(
        super::signature::SIGNATURE_ANNOTATION.to_owned(),
        signature,
    )]));
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
        config: config_descriptor.clone(),
        layers: vec![layer.clone()],
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    let manifest = serde_json::to_vec(&manifest).map_err(|e| failed(e.to_string()))?;
    let blobs = [
        (payload, layer.digest.clone()),
        (config, config_descriptor.digest.clone()),
    ];
    upload(&target, settings, blobs, manifest).await?;
    Ok(target)
}

/// The cosign signatures of `manifest_digest` next to `reference`: each layer's payload
/// and signature annotation. None (no signature tag) is an empty list.
pub(super) async fn pull_signatures(
    reference: &PluginReference,
    manifest_digest: &str,
    settings: &OciSettings,
) -> Result<Vec<(Vec<u8>, String)>, PullError> {
    let target = reference.with_tag(&super::signature::signature_tag(manifest_digest));
    let client = client(&target, settings)?;
    let auth = credentials(&target)?;
    let manifest = match client
        .pull_manifest_raw(target.inner(), &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
    {
        Ok((manifest, _)) => manifest,
        Err(OciDistributionError::ImageManifestNotFoundError(_)) => return Ok(Vec::new()),
        Err(OciDistributionError::RegistryError { envelope, .. })
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(classify(&target, "signature manifest", e)),
    };
    let manifest: OciImageManifest = serde_json::from_slice(&manifest).map_err(|e| {
        PullError::Refused(OciError::NotAPlugin {
            reference: target.to_string(),
            reason: format!("the signature manifest does not parse: {e}"),
        })
    })?;
    let mut signatures = Vec::new();
    for layer in manifest
        .layers
        .iter()
        .filter(|l| l.media_type == super::signature::SIGNATURE_MEDIA_TYPE)
    {
        let Some(signature) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::signature::SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        // A signature payload is a few hundred bytes; bound what a hostile one costs.
        if layer.size > 1 << 20 {
            continue;
        }
        let mut payload = Vec::new();
        client
            .pull_blob(target.inner(), layer, &mut payload)
            .await
            .map_err(|e| classify(&target, "signature", e))?;
        verify_digest(&target, "signature", &layer.digest, &payload)?;
        signatures.push((payload, signature.clone()));
    }
    Ok(signatures)
}

/// The credentials for the reference's registry (see [`super::auth`]).
fn credentials(reference: &PluginReference) -> Result<RegistryAuth, PullError> {
    super::auth::for_registry(reference.registry()).map_err(|reason| {
        PullError::Refused(OciError::Local {
            reference: reference.to_string(),
            reason,
        })
    })
}

/// `created` of the artifact config: `SOURCE_DATE_EPOCH` (reproducible builds), else the
/// epoch.
fn created() -> String {
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// The config's `component`: the outer component's imports and exports, by name.
fn component_summary(wasm: &[u8]) -> serde_json::Value {
    use wasmparser::Payload;
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Every module or component opens with Version and closes with End: depth 1 is the
    // outer component, whose sections are its world.
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(wasm).flatten() {
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                imports.extend(
                    section
                        .into_iter()
                        .flatten()
                        .map(|i| i.name.name.to_owned()),
                );
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                exports.extend(
                    section
                        .into_iter()
                        .flatten()
                        .map(|e| e.name.name.to_owned()),
                );
            }
            _ => {}
        }
    }
    serde_json::json!({"imports": imports, "exports": exports})
}

fn descriptor(media_type: &str, bytes: &[u8]) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_owned(),
        digest: sha256_digest(bytes),
        size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    }
}

/// A client for this reference's registry: plain HTTP on loopback and for the registries
/// the config lists, HTTPS elsewhere.
fn client(
    reference: &PluginReference,
    settings: &OciSettings,
) -> Result<oci_client::Client, PullError> {
    // NB: reqwest is built without a bundled crypto provider; use the process default (the
    // binary installs ring at start), installing ring when a library caller has not.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let plain_http = reference.is_loopback()
        || settings
            .plain_http_registries
            .iter()
            .any(|registry| registry == reference.registry());
    let config = ClientConfig {
        protocol: if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        // A plugin is one artifact, never a multi-platform index.
        platform_resolver: None,
        ..ClientConfig::default()
    };
    oci_client::Client::try_from(config).map_err(|e| {
        PullError::Refused(OciError::Local {
            reference: reference.to_string(),
            reason: format!("cannot build the OCI client: {}", causes(&e)),
        })
    })
}

/// Sorts a client error into "not there" (a cache may stand in) and "refused".
fn classify(
    reference: &PluginReference,
    what: &'static str,
    error: OciDistributionError,
) -> PullError {
    match error {
        OciDistributionError::RequestError(ref e) if !e.is_builder() => {
            PullError::Unreachable(causes(&error))
        }
        OciDistributionError::ServerError { code, .. } if code >= 500 => {
            PullError::Unreachable(causes(&error))
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            PullError::Refused(OciError::DigestMismatch {
                reference: reference.to_string(),
                what,
                expected,
                actual,
            })
        }
        other => PullError::Refused(OciError::Registry {
            reference: reference.to_string(),
            cause: format!("{what}: {}", causes(&other)),
        }),
    }
}

/// An error and its sources, `a: b: c`, skipping a source its parent already quotes.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
