//! `wukong manifest`: the single-file release manifest (`release/wukong.yaml`, applied with
//! `kubectl apply --server-side -f`), built from `deploy/` as `kubectl apply -k deploy/`
//! would build it: the kustomization's resources in order, its generated ConfigMap and its
//! image. Only the parts of kustomize `deploy/kustomization.yaml` uses are understood; any
//! other field is refused, so the two cannot drift apart silently.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    /// The kustomize folder.
    #[arg(long, default_value = "deploy")]
    pub deploy: PathBuf,
    /// Write the manifest here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &ManifestArgs) -> anyhow::Result<ExitCode> {
    let text = release_manifest(&args.deploy)?;
    match &args.out {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The manifest built from the kustomization in `deploy`.
pub fn release_manifest(deploy: &Path) -> anyhow::Result<String> {
    let path = deploy.join("kustomization.yaml");
    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    let known = [
        "apiVersion",
        "kind",
        "resources",
        "configMapGenerator",
        "images",
    ];
    if let Some(other) = kustomization
        .as_object()
        .and_then(|k| k.keys().find(|key| !known.contains(&key.as_str())))
    {
        bail!(
            "{}: `{other}` is not understood by `wukong manifest`",
            path.display()
        );
    }
    let mut objects = Vec::new();
    for file in strings(&kustomization["resources"]) {
        let file_path = deploy.join(file);
        let text = std::fs::read_to_string(&file_path)
            .with_context(|| format!("reading {}", file_path.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(document)
                .with_context(|| format!("parsing {}", file_path.display()))?;
            if !object.is_null() {
                objects.push(object);
            }
        }
    }
    for generator in kustomization["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
    {
        objects.push(config_map(deploy, generator)?);
    }
    for image in kustomization["images"].as_array().into_iter().flatten() {
        let (Some(name), Some(new_name)) = (image["name"].as_str(), image["newName"].as_str())
        else {
            bail!("{}: an image needs name and newName", path.display());
        };
        let reference = match image["newTag"].as_str() {
            Some(tag) => format!("{new_name}:{tag}"),
            None => new_name.to_owned(),
        };
        for object in &mut objects {
            set_image(object, name, &reference);
        }
    }
    let mut out = String::from(
        "# Wukong, every object in one file: `kubectl apply --server-side -f wukong.yaml`.\n\
         # Generated from deploy/ by `wukong manifest --out release/wukong.yaml`; do not edit.\n",
    );
    for object in &objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(object)?);
    }
    Ok(out)
}

fn strings(value: &Value) -> impl Iterator<Item = &str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// A `configMapGenerator` entry as kustomize makes it (only `files` and the options
/// `disableNameSuffixHash: true` and `labels` are understood).
fn config_map(deploy: &Path, generator: &Value) -> anyhow::Result<Value> {
    let name = generator["name"]
        .as_str()
        .context("a configMapGenerator without a name")?;
    if generator["options"]["disableNameSuffixHash"] != true {
        bail!("configMapGenerator {name}: only disableNameSuffixHash: true is understood");
    }
    let mut data = serde_json::Map::new();
    for file in strings(&generator["files"]) {
        let path = deploy.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let key = Path::new(file)
            .file_name()
            .map_or(file.into(), |n| n.to_string_lossy());
        data.insert(key.into_owned(), Value::String(text));
    }
    let mut metadata = json!({"name": name});
    if let Some(namespace) = generator["namespace"].as_str() {
        metadata["namespace"] = json!(namespace);
    }
    if generator["options"]["labels"].is_object() {
        metadata["labels"] = generator["options"]["labels"].clone();
    }
    Ok(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}))
}

/// Points every container of a pod template whose image is `name` at `reference`.
fn set_image(object: &mut Value, name: &str, reference: &str) {
    // NB: `pointer_mut`, not indexing: indexing a missing key would add it.
    let Some(spec) = object.pointer_mut("/spec/template/spec") else {
        return;
    };
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for container in containers {
                if container["image"] == name {
                    container["image"] = json!(reference);
                }
            }
        }
    }
}
