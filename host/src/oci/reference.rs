//! `oci://` plugin references and the rules they must meet: an explicit registry host, and
//! a tag or a sha256 digest (or both: the digest wins, the tag documents).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use oci_client::Reference;

use super::{OciError, is_sha256_digest};

/// The scheme that marks a config's `plugin` value as an OCI reference, not a file path.
pub const SCHEME: &str = "oci://";

/// A validated `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginReference(Reference);

impl PluginReference {
    /// `Some` when a config's `plugin` value names an OCI artifact rather than a file.
    pub fn from_config_value(value: &Path) -> Option<Result<Self, OciError>> {
        let text = value.to_str()?;
        text.starts_with(SCHEME).then(|| text.parse())
    }

    /// The registry as `host[:port]`.
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The pinned manifest digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    pub fn tag(&self) -> Option<&str> {
        self.0.tag()
    }

    /// The reference as oci-client takes it.
    pub(crate) fn inner(&self) -> &Reference {
        &self.0
    }

    /// This reference pinned to `digest` (keeping the tag, for the reader).
    #[must_use]
    pub fn pinned(&self, digest: &str) -> Self {
        let (registry, repository) = (self.0.registry().to_owned(), self.0.repository().to_owned());
        Self(match self.0.tag() {
            Some(tag) => Reference::with_tag_and_digest(
                registry,
                repository,
                tag.to_owned(),
                digest.to_owned(),
            ),
            None => Reference::with_digest(registry, repository, digest.to_owned()),
        })
    }

    /// `registry/repository`, as a signature's `docker-reference` names it.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.0.registry(), self.0.repository())
    }

    /// The same repository at `tag` (e.g. a cosign signature's `sha256-<hex>.sig`).
    #[must_use]
    pub fn with_tag(&self, tag: &str) -> Self {
        Self(Reference::with_tag(
            self.0.registry().to_owned(),
            self.0.repository().to_owned(),
            tag.to_owned(),
        ))
    }

    /// Whether the registry is on this machine: `localhost` or `127.0.0.0/8`. (The
    /// reference grammar has no IPv6 literals.)
    pub fn is_loopback(&self) -> bool {
        let host = self.registry().split(':').next().unwrap_or_default();
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl FromStr for PluginReference {
    type Err = OciError;

    fn from_str(text: &str) -> Result<Self, OciError> {
        let invalid = |reason: &str| OciError::InvalidReference {
            reference: text.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("must start with oci://"))?;
        // NB: without an explicit host, the reference grammar silently means Docker Hub;
        // a plugin source must say where it comes from.
        let host = rest.split('/').next().unwrap_or_default();
        if !rest.contains('/') || !(host.contains('.') || host.contains(':') || host == "localhost")
        {
            return Err(invalid(
                "name the registry host first (oci://registry.example.com/wukong/plugin:1.0)",
            ));
        }
        let last = rest.rsplit('/').next().unwrap_or_default();
        if !last.contains(':') && !last.contains('@') {
            return Err(invalid(
                "name a tag (:0.1.0) or a digest (@sha256:...); there is no implicit latest",
            ));
        }
        let reference = Reference::from_str(rest).map_err(|e| invalid(&e.to_string()))?;
        if let Some(digest) = reference.digest()
            && !is_sha256_digest(digest)
        {
            return Err(invalid(
                "the digest must be sha256:<64 lowercase hex digits>",
            ));
        }
        Ok(Self(reference))
    }
}

impl fmt::Display for PluginReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.0.whole())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn tags_and_digests_parse_and_print_back() {
        let tagged: PluginReference = "oci://127.0.0.1:5000/wukong/cdi-storage:0.1.0"
            .parse()
            .unwrap();
        assert_eq!(tagged.registry(), "127.0.0.1:5000");
        assert_eq!(tagged.tag(), Some("0.1.0"));
        assert_eq!(tagged.digest(), None);
        assert_eq!(
            tagged.to_string(),
            "oci://127.0.0.1:5000/wukong/cdi-storage:0.1.0"
        );
        let pinned: PluginReference = format!("oci://ghcr.io/acme/ceph@{DIGEST}").parse().unwrap();
        assert_eq!(pinned.digest(), Some(DIGEST));
        assert_eq!(
            pinned.to_string(),
            format!("oci://ghcr.io/acme/ceph@{DIGEST}")
        );
        assert_eq!(
            tagged.pinned(DIGEST).to_string(),
            format!("oci://127.0.0.1:5000/wukong/cdi-storage:0.1.0@{DIGEST}")
        );
    }

    #[test]
    fn ambiguous_references_are_refused_with_the_reason() {
        for (text, reason) in [
            ("127.0.0.1:5000/wukong/cdi:1", "must start with oci://"),
            ("oci://wukong/cdi:1", "registry host"),
            ("oci://cdi:1", "registry host"),
            ("oci://ghcr.io/acme/cdi", "no implicit latest"),
            (
                "oci://ghcr.io/acme/cdi@sha256:abc",
                "not a plugin reference",
            ),
            ("oci://ghcr.io/acme/cdi@sha512:00", "not a plugin reference"),
        ] {
            let error = text.parse::<PluginReference>().unwrap_err().to_string();
            assert!(error.starts_with(text), "{error}");
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn only_this_machine_is_loopback() {
        for (text, loopback) in [
            ("oci://127.0.0.1:5000/a/b:1", true),
            ("oci://127.8.0.1/a/b:1", true),
            ("oci://localhost:5000/a/b:1", true),
            ("oci://10.0.0.1:5000/a/b:1", false),
            ("oci://localhost.evil.example/a/b:1", false),
            ("oci://ghcr.io/a/b:1", false),
        ] {
            let reference: PluginReference = text.parse().unwrap();
            assert_eq!(reference.is_loopback(), loopback, "{text}");
        }
    }

    #[test]
    fn only_oci_values_are_references() {
        assert!(PluginReference::from_config_value(Path::new("cdi_storage.wasm")).is_none());
        assert!(PluginReference::from_config_value(Path::new("/opt/oci/x.wasm")).is_none());
        assert!(
            PluginReference::from_config_value(Path::new("oci://ghcr.io/a/b:1"))
                .unwrap()
                .is_ok()
        );
    }
}
