//! `wukong plugin push FILE REF`: check that FILE is a loadable Wukong plugin, publish it
//! to an OCI registry as a Wasm artifact (see `crate::oci`), print the manifest digest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::oci::{self, OciSettings, PluginReference};

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The plugin (`.wasm` component).
    pub file: PathBuf,
    /// Where to publish: `oci://REGISTRY/REPOSITORY:TAG` (the `oci://` may be left out).
    pub reference: String,
    /// Speak plain HTTP to this registry although it is not on loopback (loopback always is).
    #[arg(long)]
    pub plain_http: bool,
}

pub fn run(args: &PushArgs) -> anyhow::Result<ExitCode> {
    let text = if args.reference.starts_with(oci::SCHEME) {
        args.reference.clone()
    } else {
        format!("{}{}", oci::SCHEME, args.reference)
    };
    let reference: PluginReference = text.parse()?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("{}: cannot read", args.file.display()))?;
    // Only what the host would load gets published.
    let plugin = super::load(&args.file)?;
    anyhow::ensure!(
        oci::sha256_digest(&bytes).trim_start_matches("sha256:") == plugin.digest,
        "{}: the file changed while it was checked; push again",
        args.file.display()
    );
    let manifest = &plugin.manifest;
    let annotations = BTreeMap::from([
        (
            "org.opencontainers.image.title".into(),
            manifest.name.clone(),
        ),
        (
            "org.opencontainers.image.version".into(),
            manifest.version.clone(),
        ),
        (
            "org.opencontainers.image.description".into(),
            manifest.description.clone(),
        ),
        (
            "dev.novasphere.wukong.step".into(),
            plugin.step().as_str().into(),
        ),
        (
            "dev.novasphere.wukong.contract".into(),
            plugin.contract.version.clone(),
        ),
    ]);
    let settings = OciSettings {
        cache_dir: None,
        plain_http_registries: if args.plain_http {
            vec![reference.registry().to_owned()]
        } else {
            Vec::new()
        },
    };
    let digest = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(oci::push(&reference, bytes, annotations, &settings))?;
    tracing::info!(plugin = %plugin.id, pinned = %reference.pinned(&digest), "pushed");
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}
