//! Plugin signatures as cosign makes them, so `cosign sign --key` and `cosign verify
//! --key` interoperate with `wukong plugin sign` and `verify`: next to the artifact, the
//! tag `sha256-<hex>.sig` holds a manifest whose layers (media type
//! [`SIGNATURE_MEDIA_TYPE`]) are "simple signing" payloads naming the artifact's manifest
//! digest, each with an ECDSA P-256 / SHA-256 signature (DER, base64) in the annotation
//! [`SIGNATURE_ANNOTATION`]. Keys are PEM: a public key (SPKI, as `cosign public-key`
//! prints it) to verify, an unencrypted PKCS#8 private key to sign.

use std::path::Path;

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde_json::{Value, json};

/// The layer media type of a cosign signature.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The tag cosign stores the signatures of `manifest_digest` under.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("{}.sig", manifest_digest.replacen(':', "-", 1))
}

/// The simple-signing payload for the artifact `repository` at `manifest_digest`.
pub fn payload(repository: &str, manifest_digest: &str) -> Vec<u8> {
    json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// The base64 DER signature of `payload`.
pub fn sign(payload: &[u8], key: &SigningKey) -> String {
    let signature: Signature = key.sign(payload);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

/// Checks one signature layer: the signature is `key`'s over `payload`, and the payload
/// names `manifest_digest`.
pub fn check(
    payload: &[u8],
    signature_b64: &str,
    key: &VerifyingKey,
    manifest_digest: &str,
) -> Result<(), String> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|e| format!("the signature is not base64: {e}"))?;
    let signature = DerSignature::try_from(der.as_slice())
        .map_err(|e| format!("the signature is not a DER ECDSA signature: {e}"))?;
    key.verify(payload, &signature)
        .map_err(|_| "the signature is not the key's".to_owned())?;
    let payload: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("the signed payload is not JSON: {e}"))?;
    let signed = payload["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or_default();
    if signed != manifest_digest {
        return Err(format!(
            "the signature is for {signed}, not {manifest_digest}"
        ));
    }
    Ok(())
}

/// A PEM public key (SPKI, `-----BEGIN PUBLIC KEY-----`).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    VerifyingKey::from_public_key_pem(&text)
        .map_err(|e| format!("{}: not a P-256 public key in PEM: {e}", path.display()))
}

/// A PEM private key (unencrypted PKCS#8, `-----BEGIN PRIVATE KEY-----`).
pub fn read_private_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        format!(
            "{}: not an unencrypted P-256 PKCS#8 private key in PEM: {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_with_its_key_and_digest_only() {
        let key = SigningKey::from_slice(&[7u8; 32]).expect("key");
        let other = SigningKey::from_slice(&[9u8; 32]).expect("key");
        let digest = "sha256:abc";
        let payload = payload("registry.example.com/wukong/acme", digest);
        let signature = sign(&payload, &key);
        assert_eq!(
            check(&payload, &signature, key.verifying_key(), digest),
            Ok(())
        );
        assert!(check(&payload, &signature, other.verifying_key(), digest).is_err());
        assert!(check(&payload, &signature, key.verifying_key(), "sha256:def").is_err());
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
    }
}
