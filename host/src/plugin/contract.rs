//! Reading which contract version and world a component was built for, before compiling
//! it: from the names of its top-level exports (`wukong:plugin/storage@0.1.0`).

use std::path::Path;

use wasmparser::{Encoding, Parser, Payload};

use super::LoadError;
use super::types::StepKind;

/// Contract versions this host can run, newest first.
pub const SUPPORTED_CONTRACTS: &[&str] = &["0.1.0"];

/// What the component's exports say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractInfo {
    pub version: String,
    pub step: StepKind,
}

/// Reads the contract version and step kind of a component, without compiling it.
pub fn inspect(path: &Path, bytes: &[u8]) -> Result<ContractInfo, LoadError> {
    let exports = top_level_exports(path, bytes)?;
    let wrong_world = || LoadError::WrongWorld {
        path: path.to_owned(),
        exports: exports.clone(),
    };
    let mut manifest_version = None;
    let mut step = None;
    for export in &exports {
        let Some((interface, version)) = export
            .strip_prefix("wukong:plugin/")
            .and_then(|rest| rest.split_once('@'))
        else {
            continue;
        };
        let kind = match interface {
            "manifest" => {
                manifest_version = Some(version.to_owned());
                continue;
            }
            "network" => StepKind::Network,
            "storage" => StepKind::Storage,
            "lifecycle" => StepKind::Lifecycle,
            "migration" => StepKind::Migration,
            _ => continue,
        };
        if step.replace((kind, version.to_owned())).is_some() {
            return Err(wrong_world());
        }
    }
    let (Some(manifest_version), Some((step, version))) = (manifest_version, step) else {
        return Err(wrong_world());
    };
    if manifest_version != version {
        return Err(wrong_world());
    }
    if !SUPPORTED_CONTRACTS.contains(&version.as_str()) {
        return Err(LoadError::UnsupportedContract {
            path: path.to_owned(),
            found: version,
            supported: SUPPORTED_CONTRACTS.join(", "),
        });
    }
    Ok(ContractInfo { version, step })
}

fn top_level_exports(path: &Path, bytes: &[u8]) -> Result<Vec<String>, LoadError> {
    let not_component = |reason: String| LoadError::NotAComponent {
        path: path.to_owned(),
        reason,
    };
    let mut exports = Vec::new();
    // Every module or component, nested or not, opens with a Version payload and closes
    // with End: depth 1 is the outer component.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| not_component(e.to_string()))? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err(not_component(
                        "it is a core module; build with `--target wasm32-wasip2`".into(),
                    ));
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(
                        export
                            .map_err(|e| not_component(e.to_string()))?
                            .name
                            .name
                            .to_owned(),
                    );
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(not_component("truncated file".into()));
    }
    Ok(exports)
}
