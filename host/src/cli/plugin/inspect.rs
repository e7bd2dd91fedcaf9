//! `wukong plugin inspect FILE`: what a plugin says about itself and what the host
//! found in it, as text for people or YAML/JSON for tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;

use crate::config::Grants;
use crate::plugin::{CodeSource, Plugin};

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The plugin: a `.wasm` component, or `oci://REGISTRY/REPOSITORY:TAG|@sha256:…` to
    /// inspect what the registry holds (pulled and verified first).
    pub file: PathBuf,
    /// With `oci://`: speak plain HTTP to that registry although it is not on loopback.
    #[arg(long)]
    pub plain_http: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Print only the ClusterRole whose rules let the operator do what the plugin asks
    /// (merge them into the operator's role before granting the plugin).
    #[arg(long)]
    pub rbac: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Yaml,
    Json,
}

/// A plugin as `inspect` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub name: String,
    pub version: String,
    pub description: String,
    /// `network`, `storage`, `lifecycle` or `migration`.
    pub step: &'static str,
    /// The WIT world the component targets, e.g. `wukong:plugin/storage-plugin@0.1.0`.
    pub world: String,
    /// The contract version it was built against.
    pub contract: String,
    pub file: PathBuf,
    /// `sha256:` and the hex digest of the file.
    pub digest: String,
    /// `compiled` now or taken from the `cache`.
    pub code_source: CodeSource,
    pub capabilities: Capabilities,
    /// The `grants = {...}` line a backend needs in `wukong.toml` to load this plugin.
    pub grants: String,
    /// The JSON Schema of the plugin's config.
    pub config_schema: Value,
}

/// Capabilities as `apiVersion/Kind` and `resource/subresource` strings.
#[derive(Debug, Serialize)]
pub struct Capabilities {
    pub reads: Vec<String>,
    pub writes: Vec<String>,
    pub actions: Vec<String>,
}

impl Inspection {
    pub fn of(plugin: &Plugin) -> Self {
        let manifest = &plugin.manifest;
        let asked = Grants::asked_by(&manifest.capabilities);
        let step = plugin.contract.step.as_str();
        Self {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            description: manifest.description.clone(),
            step,
            world: format!("wukong:plugin/{step}-plugin@{}", plugin.contract.version),
            contract: format!("wukong:plugin@{}", plugin.contract.version),
            file: plugin.path.clone(),
            digest: format!("sha256:{}", plugin.digest),
            code_source: plugin.code_source,
            grants: asked.to_toml(),
            capabilities: Capabilities {
                reads: asked.reads.into_iter().collect(),
                writes: asked.writes.into_iter().collect(),
                actions: asked.actions.into_iter().collect(),
            },
            // The loader refused the plugin if its schema were not JSON.
            config_schema: serde_json::from_str(&manifest.config_schema).unwrap_or(Value::Null),
        }
    }

    /// The text for people.
    pub fn to_text(&self) -> String {
        let list = |items: &[String]| {
            if items.is_empty() {
                "(none)".to_owned()
            } else {
                items.join(", ")
            }
        };
        let schema = serde_json::to_string_pretty(&self.config_schema).unwrap_or_default();
        let mut text = format!(
            "{name}@{version} — {description}\n\
             step:         {step}\n\
             world:        {world}\n\
             contract:     {contract}\n\
             file:         {file}\n\
             digest:       {digest}\n\
             code:         {code}\n\
             capabilities:\n  \
               reads:      {reads}\n  \
               writes:     {writes}\n  \
               actions:    {actions}\n\
             grants (paste under the backend in wukong.toml; `--rbac` for the ClusterRole):\n  \
               {grants}\n\
             config schema:\n",
            name = self.name,
            version = self.version,
            description = self.description,
            step = self.step,
            world = self.world,
            contract = self.contract,
            file = self.file.display(),
            digest = self.digest,
            code = match self.code_source {
                CodeSource::Compiled => "compiled now",
                CodeSource::Cache => "taken from the cache",
            },
            reads = list(&self.capabilities.reads),
            writes = list(&self.capabilities.writes),
            actions = list(&self.capabilities.actions),
            grants = self.grants,
        );
        for line in schema.lines() {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let text = args.file.to_string_lossy();
    let (file, pulled) = match text.strip_prefix(crate::oci::SCHEME) {
        Some(_) => {
            let reference = super::pull::reference(&text)?;
            let dir = std::env::temp_dir().join(format!("wukong-inspect-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let file = dir.join("plugin.wasm");
            super::pull::fetch_to(&reference, args.plain_http, &file)?;
            (file, Some(dir))
        }
        None => (args.file.clone(), None),
    };
    let plugin = super::load(&file);
    if let Some(dir) = pulled {
        let _ = std::fs::remove_dir_all(dir);
    }
    let mut plugin = plugin?;
    // Named as the user named it, registry reference included.
    plugin.path.clone_from(&args.file);
    if args.rbac {
        let grants = Grants::asked_by(&plugin.manifest.capabilities);
        print!(
            "{}",
            grants.cluster_role_yaml(&format!("wukong-plugin-{}", plugin.manifest.name))
        );
        return Ok(ExitCode::SUCCESS);
    }
    let inspection = Inspection::of(&plugin);
    match args.output {
        Format::Text => print!("{}", inspection.to_text()),
        Format::Yaml => print!("{}", serde_yaml::to_string(&inspection)?),
        Format::Json => println!("{}", serde_json::to_string_pretty(&inspection)?),
    }
    Ok(ExitCode::SUCCESS)
}
