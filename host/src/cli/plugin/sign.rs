//! `wukong plugin sign oci://REF --key KEY` and `wukong plugin verify oci://REF --key PUB`:
//! cosign-compatible signatures of a plugin in a registry (see `crate::oci::signature`);
//! `cosign verify --key PUB` accepts what `sign` makes, and `verify` what cosign makes.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::oci::{self, signature};

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The plugin: `oci://REGISTRY/REPOSITORY:TAG` or `...@sha256:DIGEST`.
    pub reference: String,
    /// An unencrypted PKCS#8 P-256 private key in PEM (`sign`) or its public key (`verify`).
    #[arg(long)]
    pub key: PathBuf,
    /// Speak plain HTTP to this registry although it is not on loopback (loopback always is).
    #[arg(long)]
    pub plain_http: bool,
}

pub fn sign(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let reference = super::pull::reference(&args.reference)?;
    let key = signature::read_private_key(&args.key).map_err(anyhow::Error::msg)?;
    let settings = super::pull::settings(&reference, args.plain_http);
    let (digest, target) = oci::blocking(&reference, oci::sign(&reference, &key, &settings))?;
    eprintln!("{reference}: {digest} signed; the signature is {target}");
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let reference = super::pull::reference(&args.reference)?;
    let key = signature::read_public_key(&args.key).map_err(anyhow::Error::msg)?;
    let settings = super::pull::settings(&reference, args.plain_http);
    let (artifact, _) = oci::fetch_blocking(&reference, &settings)?;
    let digest = artifact.manifest_digest;
    oci::blocking(
        &reference,
        oci::verify(&reference, &digest, &key, &settings),
    )?;
    eprintln!("{reference}: {digest} is signed by {}", args.key.display());
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}
