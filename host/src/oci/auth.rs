//! Registry credentials, found as Docker and Podman find them: `$REGISTRY_AUTH_FILE`, else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. For a registry: its
//! credential helper (`credHelpers`), else the config's store (`credsStore`), else its
//! `auths` entry (base64 `user:password`, or an identity token); anonymous when nothing
//! names it. In a cluster the operator gets the file from a `kubernetes.io/dockerconfigjson`
//! Secret mounted with `DOCKER_CONFIG` pointing at it (see docs/operating.md).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use oci_client::secrets::RegistryAuth;
use serde_json::Value;

/// The credentials for `registry` (`host[:port]`), or why they could not be had.
pub fn for_registry(registry: &str) -> Result<RegistryAuth, String> {
    let Some(path) = config_path() else {
        return Ok(RegistryAuth::Anonymous);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
    };
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a registry auth file: {e}", path.display()))?;
    let helper = config["credHelpers"]
        .as_object()
        .and_then(|helpers| helpers.iter().find(|(key, _)| names(key, registry)))
        .and_then(|(_, helper)| helper.as_str())
        .or_else(|| config["credsStore"].as_str());
    if let Some(helper) = helper.filter(|h| !h.is_empty()) {
        return from_helper(helper, registry);
    }
    let entry = config["auths"]
        .as_object()
        .and_then(|auths| auths.iter().find(|(key, _)| names(key, registry)))
        .map(|(_, entry)| entry);
    let Some(entry) = entry else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(token) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        return Ok(RegistryAuth::Bearer(token.to_owned()));
    }
    let (user, password) = match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(user), Some(password)) => (user.to_owned(), password.to_owned()),
        _ => {
            let encoded = entry["auth"].as_str().unwrap_or_default();
            let decoded = base64_decode(encoded).ok_or_else(|| {
                format!("{}: auths.{registry}.auth is not base64", path.display())
            })?;
            let text = String::from_utf8(decoded)
                .map_err(|_| format!("{}: auths.{registry}.auth is not text", path.display()))?;
            let (user, password) = text.split_once(':').ok_or_else(|| {
                format!(
                    "{}: auths.{registry}.auth is not user:password",
                    path.display()
                )
            })?;
            (user.to_owned(), password.to_owned())
        }
    };
    Ok(RegistryAuth::Basic(user, password))
}

/// The auth file to read, if any names one or the default exists.
fn config_path() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(file));
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// Whether an `auths`/`credHelpers` key names `registry`: `host[:port]`, with or without a
/// scheme and path (`https://index.docker.io/v1/` names Docker Hub).
fn names(key: &str, registry: &str) -> bool {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    host == registry || (hub(host) && hub(registry))
}

/// Asks `docker-credential-<helper> get` (the credential-helper protocol: the registry on
/// stdin, `{"Username", "Secret"}` on stdout; `<token>` as user means an identity token).
fn from_helper(helper: &str, registry: &str) -> Result<RegistryAuth, String> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("credential helper {program}: cannot run it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_bytes())
            .map_err(|e| format!("credential helper {program}: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("credential helper {program}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // The protocol's "no credentials": anonymous, as Docker does.
        if stdout.contains("credentials not found") {
            return Ok(RegistryAuth::Anonymous);
        }
        return Err(format!(
            "credential helper {program} failed for {registry}: {}{}",
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let answer: Value = serde_json::from_str(&stdout)
        .map_err(|e| format!("credential helper {program}: not JSON: {e}"))?;
    let (user, secret) = (
        answer["Username"].as_str().unwrap_or_default(),
        answer["Secret"].as_str().unwrap_or_default(),
    );
    Ok(match user {
        "<token>" => RegistryAuth::Bearer(secret.to_owned()),
        _ => RegistryAuth::Basic(user.to_owned(), secret.to_owned()),
    })
}

/// Standard base64, padded or not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_registries_with_or_without_scheme_and_hub_aliases() {
        assert!(names("https://index.docker.io/v1/", "docker.io"));
        assert!(names("ghcr.io", "ghcr.io"));
        assert!(names("http://127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!names("ghcr.io", "quay.io"));
    }

    #[test]
    fn base64_decodes_user_and_password() {
        assert_eq!(
            base64_decode("dXNlcjpwYXNz").as_deref(),
            Some(&b"user:pass"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("not base64!"), None);
    }
}
