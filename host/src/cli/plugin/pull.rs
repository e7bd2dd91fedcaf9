//! `wukong plugin pull oci://REF [--out FILE]`: fetch a plugin from a registry (with the
//! credentials Docker would use; see `crate::oci`), check its digests and that it loads,
//! write it, print the manifest digest. Also what `inspect oci://REF` reads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::oci::{self, OciSettings, PluginReference};

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The plugin: `oci://REGISTRY/REPOSITORY:TAG` or `...@sha256:DIGEST` (the `oci://`
    /// may be left out).
    pub reference: String,
    /// Where to write it; `REPOSITORY.wasm` (its last path part) when absent.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Speak plain HTTP to this registry although it is not on loopback (loopback always is).
    #[arg(long)]
    pub plain_http: bool,
}

/// `text` as a plugin reference, `oci://` added when left out.
pub fn reference(text: &str) -> anyhow::Result<PluginReference> {
    let text = match text.starts_with(oci::SCHEME) {
        true => text.to_owned(),
        false => format!("{}{text}", oci::SCHEME),
    };
    Ok(text.parse()?)
}

/// Settings for a one-off command: the default cache, plain HTTP to the reference's
/// registry when asked.
pub fn settings(reference: &PluginReference, plain_http: bool) -> OciSettings {
    OciSettings {
        cache_dir: None,
        plain_http_registries: match plain_http {
            true => vec![reference.registry().to_owned()],
            false => Vec::new(),
        },
    }
}

/// Fetches the artifact and writes its component to `out`; returns the manifest digest.
pub fn fetch_to(
    reference: &PluginReference,
    plain_http: bool,
    out: &Path,
) -> anyhow::Result<String> {
    let (artifact, _) = oci::fetch_blocking(reference, &settings(reference, plain_http))?;
    std::fs::write(out, &artifact.wasm).with_context(|| format!("writing {}", out.display()))?;
    Ok(artifact.manifest_digest)
}

pub fn run(args: &PullArgs) -> anyhow::Result<ExitCode> {
    let reference = reference(&args.reference)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let repository = reference.inner().repository();
        let last = repository.rsplit('/').next().unwrap_or(repository);
        PathBuf::from(format!("{last}.wasm"))
    });
    let digest = fetch_to(&reference, args.plain_http, &out)?;
    // Only what the host would load is handed over.
    let plugin =
        super::load(&out).with_context(|| format!("{reference}: pulled, but it does not load"))?;
    eprintln!(
        "{}: {} ({}) written to {}",
        reference,
        plugin.id,
        digest,
        out.display()
    );
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}
