//! `wukong plugin new NAME --kind K [--lang rust|python] [--dir DIR] [--sdk PATH]`: a new
//! plugin from the template in `examples/plugin-template`, renamed and ready to build.
//!
//! The template's files are compiled into the binary, so the command works anywhere. A
//! Rust plugin depends on the SDK by git (the release of this binary) unless `--sdk` names
//! a local checkout's `plugins/sdk`; a Python plugin carries its own copy of the contract.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::ValueEnum;

/// The step a new plugin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Storage,
    Network,
    Lifecycle,
    Migration,
}

/// The language a new plugin is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits and '-' (`nfs-storage`). It is also the
    /// crate's name and, with '_' for '-', the `.wasm` file's.
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: Kind,
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Where to write it (created; must be empty if it exists). `./NAME` when absent.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The SDK's folder (`plugins/sdk` of a Wukong checkout), depended on by path. When
    /// absent: `$WUKONG_SDK`, else the checkout this binary was built in, else the git
    /// dependency on this release (which needs the network).
    #[arg(long, value_name = "PATH", env = "WUKONG_SDK")]
    pub sdk: Option<PathBuf>,
}

/// Where the SDK comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// The Wukong repository at this binary's release tag.
    Git,
    /// A local folder holding the SDK's `Cargo.toml`.
    Path(PathBuf),
}

/// One file of a new plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the plugin's folder.
    pub path: PathBuf,
    pub contents: String,
    pub executable: bool,
}

const REPOSITORY: &str = "https://github.com/novasphere/wukong";
/// The names the template's files use, replaced by the new plugin's.
const TEMPLATE_NAME: &str = "example-storage";

macro_rules! template {
    ($path:literal) => {
        include_str!(concat!("../../../../examples/plugin-template/", $path))
    };
}

const CARGO_TOML: &str = template!("Cargo.toml");
const CARGO_LOCK: &str = template!("Cargo.lock");
const GITIGNORE: &str = template!(".gitignore");
const STORAGE_README: &str = template!("README.md");
const STORAGE_LIB: &str = template!("src/lib.rs");
/// Every case of the template; a unit test keeps this list equal to the folder.
const STORAGE_CASES: &[(&str, &str)] = &[
    (
        "01-creates-class.yaml",
        template!("cases/01-creates-class.yaml"),
    ),
    (
        "02-existing-class.yaml",
        template!("cases/02-existing-class.yaml"),
    ),
    (
        "03-missing-class.yaml",
        template!("cases/03-missing-class.yaml"),
    ),
    (
        "04-class-differs.yaml",
        template!("cases/04-class-differs.yaml"),
    ),
    ("05-bound.yaml", template!("cases/05-bound.yaml")),
    ("06-bad-config.yaml", template!("cases/06-bad-config.yaml")),
    ("07-finalize.yaml", template!("cases/07-finalize.yaml")),
    (
        "08-provisioner-needs-class.yaml",
        template!("cases/08-provisioner-needs-class.yaml"),
    ),
];
const KIND_README: &str = template!("kinds/README.md");
const NETWORK_LIB: &str = template!("kinds/network.rs");
const NETWORK_CASE: &str = template!("kinds/network.yaml");
const LIFECYCLE_LIB: &str = template!("kinds/lifecycle.rs");
const LIFECYCLE_CASE: &str = template!("kinds/lifecycle.yaml");
const MIGRATION_LIB: &str = template!("kinds/migration.rs");
const MIGRATION_CASE: &str = template!("kinds/migration.yaml");
const PYTHON_APP: &str = template!("python/app.py");
const PYTHON_BUILD: &str = template!("python/build.sh");
const PYTHON_README: &str = template!("python/README.md");
const PYTHON_CASE: &str = template!("python/case.yaml");
const WIT_TYPES: &str = include_str!("../../../../wit/types.wit");
const WIT_STEPS: &str = include_str!("../../../../wit/steps.wit");

pub fn run(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let sdk = match args.sdk.clone().or_else(checkout_sdk) {
        None => SdkSource::Git,
        Some(path) => {
            let path = std::fs::canonicalize(&path)
                .with_context(|| format!("--sdk {}: cannot read it", path.display()))?;
            if !path.join("Cargo.toml").is_file() {
                bail!(
                    "--sdk {}: no Cargo.toml there; give the SDK's folder (plugins/sdk in a Wukong checkout)",
                    path.display()
                );
            }
            SdkSource::Path(path)
        }
    };
    let files = scaffold(&args.name, args.kind, args.lang, &sdk)?;
    refuse_non_empty(&dir)?;
    for file in &files {
        write(&dir, file)?;
    }
    let wasm = format!("{}.wasm", args.name.replace('-', "_"));
    let (build, wasm) = match args.lang {
        Lang::Rust => (
            "cargo build --target wasm32-wasip2 --profile plugin",
            format!("target/wasm32-wasip2/plugin/{wasm}"),
        ),
        Lang::Python => ("./build.sh", format!("build/{wasm}")),
    };
    let source = match (&sdk, args.lang) {
        (_, Lang::Python) => String::new(),
        (SdkSource::Path(path), Lang::Rust) => format!("\nthe SDK: {} (by path)", path.display()),
        (SdkSource::Git, Lang::Rust) => format!(
            "\nthe SDK: {REPOSITORY} at v{} (git; the first build needs the network).\n\
             Offline, point Cargo.toml's wukong-plugin-sdk at a Wukong checkout's plugins/sdk,\n\
             or make it again with --sdk PATH (or WUKONG_SDK=PATH).",
            env!("CARGO_PKG_VERSION")
        ),
    };
    println!(
        "created {} ({:?} plugin, {:?}) in {}{source}\nnext:\n  cd {}\n  {build}\n  wukong plugin test {wasm} cases\n  wukong plugin conformance {wasm}\nthe guide: docs/plugin-authoring.md",
        args.name,
        args.kind,
        args.lang,
        dir.display(),
        dir.display(),
    );
    Ok(ExitCode::SUCCESS)
}

/// The SDK of the Wukong checkout this binary was built in (`target/<profile>/wukong` two
/// or three folders below it), if it is still there.
fn checkout_sdk() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).take(4).find_map(|dir| {
        let sdk = dir.join("plugins/sdk");
        let manifest = std::fs::read_to_string(sdk.join("Cargo.toml")).ok()?;
        manifest
            .contains("name = \"wukong-plugin-sdk\"")
            .then_some(sdk)
    })
}

/// The files of a new plugin called `name`.
pub fn scaffold(name: &str, kind: Kind, lang: Lang, sdk: &SdkSource) -> anyhow::Result<Vec<File>> {
    validate_name(name)?;
    let names = Names::new(name);
    let file = |path: &str, contents: String| File {
        path: PathBuf::from(path),
        contents,
        executable: false,
    };
    let storage = |text: &str| names.rename(text, TEMPLATE_NAME);
    if lang == Lang::Python {
        if kind != Kind::Storage {
            bail!(
                "--lang python scaffolds storage plugins only; for a {} plugin start from one and export the `{}-plugin` world of wit/steps.wit",
                kind_name(kind),
                kind_name(kind)
            );
        }
        return Ok(vec![
            file("app.py", storage(PYTHON_APP)),
            File {
                executable: true,
                ..file("build.sh", storage(PYTHON_BUILD))
            },
            file("README.md", storage(PYTHON_README)),
            file("cases/01-blank-disk.yaml", PYTHON_CASE.to_owned()),
            file("wit/types.wit", WIT_TYPES.to_owned()),
            file("wit/steps.wit", WIT_STEPS.to_owned()),
            file(
                ".gitignore",
                "build/\n*.wasm\n__pycache__/\nbindings/\n".to_owned(),
            ),
        ]);
    }
    let mut files = vec![
        file("Cargo.toml", cargo_toml(&names, kind, sdk)),
        file("Cargo.lock", storage(CARGO_LOCK)),
        file(".gitignore", GITIGNORE.to_owned()),
    ];
    let own = format!("example-{}", kind_name(kind));
    let (lib, case) = match kind {
        Kind::Storage => {
            files.push(file("README.md", storage(STORAGE_README)));
            files.push(file("src/lib.rs", storage(STORAGE_LIB)));
            for (case, text) in STORAGE_CASES {
                files.push(file(&format!("cases/{case}"), storage(text)));
            }
            return Ok(files);
        }
        Kind::Network => (NETWORK_LIB, NETWORK_CASE),
        Kind::Lifecycle => (LIFECYCLE_LIB, LIFECYCLE_CASE),
        Kind::Migration => (MIGRATION_LIB, MIGRATION_CASE),
    };
    let readme = KIND_README
        .replace("{name}", name)
        .replace("{kind}", kind_name(kind))
        .replace("{wasm}", &names.snake);
    files.extend([
        file("README.md", readme),
        file("src/lib.rs", names.rename(lib, &own)),
        file(
            &format!("cases/01-{}.yaml", kind_name(kind)),
            case.to_owned(),
        ),
    ]);
    Ok(files)
}

/// A name is a crate name, a Rust identifier once `-` is `_`, and a manifest name.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    // Rust keywords (a library name must not be one) and names Cargo or the host reserve.
    const RESERVED: &str = "abstract alloc as async await become box break const continue core crate do \
        dyn else enum extern false final fn for gen if impl in let loop macro match \
        mod move mut override priv proc_macro pub ref return self static std struct \
        super test trait true try type typeof unsafe unsized use virtual where while \
        yield wukong wukong-plugin-sdk";
    let well_formed = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !well_formed {
        bail!(
            "invalid plugin name {name:?}: use lowercase letters, digits and single '-' between them, starting with a letter, at most 63 characters (e.g. nfs-storage)"
        );
    }
    if RESERVED.split_whitespace().any(|word| word == name) {
        bail!(
            "invalid plugin name {name:?}: it is reserved by Rust or Cargo; pick another (e.g. {name}-storage)"
        );
    }
    Ok(())
}

/// The spellings of a plugin's name.
struct Names {
    /// `nfs-storage`: crate and manifest.
    kebab: String,
    /// `nfs_storage`: library and `.wasm` file.
    snake: String,
    /// `NfsStorage`: the plugin type.
    camel: String,
}

impl Names {
    fn new(name: &str) -> Self {
        let camel = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        Self {
            kebab: name.to_owned(),
            snake: name.replace('-', "_"),
            camel,
        }
    }

    /// Replaces every spelling of `template` (a kebab-case name) in `text` with ours.
    fn rename(&self, text: &str, template: &str) -> String {
        let theirs = Self::new(template);
        text.replace(&theirs.kebab, &self.kebab)
            .replace(&theirs.snake, &self.snake)
            .replace(&theirs.camel, &self.camel)
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Storage => "storage",
        Kind::Network => "network",
        Kind::Lifecycle => "lifecycle",
        Kind::Migration => "migration",
    }
}

/// The template's `Cargo.toml`, renamed, with the kind's SDK feature and the SDK from `sdk`
/// in place of the template's in-repository path.
fn cargo_toml(names: &Names, kind: Kind, sdk: &SdkSource) -> String {
    let source = match sdk {
        SdkSource::Git => format!(
            "git = \"{REPOSITORY}\", tag = \"v{}\"",
            env!("CARGO_PKG_VERSION")
        ),
        SdkSource::Path(path) => {
            format!("path = {}", toml::Value::String(path.display().to_string()))
        }
    };
    let mut lines: Vec<String> = Vec::new();
    for line in names.rename(CARGO_TOML, TEMPLATE_NAME).lines() {
        if line.starts_with("wukong-plugin-sdk") {
            // The template's comment is about the in-repository path: replace it too.
            while lines.last().is_some_and(|l| l.starts_with('#')) {
                lines.pop();
            }
            lines.push(format!(
                "# The SDK of the contract this plugin is built against (wukong:plugin@{}).",
                crate::plugin::SUPPORTED_CONTRACTS
                    .first()
                    .copied()
                    .unwrap_or_default()
            ));
            lines.push(format!(
                "wukong-plugin-sdk = {{ {source}, features = [\"{}\"] }}",
                kind_name(kind)
            ));
        } else if line.starts_with("description = ") && kind != Kind::Storage {
            lines.push(format!(
                "description = \"Wukong {} plugin\"",
                kind_name(kind)
            ));
        } else {
            lines.push(line.to_owned());
        }
    }
    lines.join("\n") + "\n"
}

fn refuse_non_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => bail!(
                "{} exists and is not empty: choose another --dir or remove it",
                dir.display()
            ),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("{}: cannot use it", dir.display())),
    }
}

fn write(dir: &Path, file: &File) -> anyhow::Result<()> {
    let path = dir.join(&file.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, &file.contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if file.executable {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents<'a>(files: &'a [File], path: &str) -> &'a str {
        &files
            .iter()
            .find(|f| f.path == Path::new(path))
            .unwrap_or_else(|| panic!("{path} missing"))
            .contents
    }

    #[test]
    fn a_storage_plugin_is_the_template_renamed() {
        let files = scaffold("nfs-storage", Kind::Storage, Lang::Rust, &SdkSource::Git).unwrap();
        let lib = contents(&files, "src/lib.rs");
        assert!(lib.contains("pub struct NfsStorage;"), "{lib}");
        assert!(lib.contains("Manifest::new(\"nfs-storage\""));
        for leftover in ["example-storage", "example_storage", "ExampleStorage"] {
            assert!(
                !files.iter().any(|f| f.contents.contains(leftover)),
                "{leftover}"
            );
        }
        let cargo = contents(&files, "Cargo.toml");
        assert!(cargo.contains("name = \"nfs-storage\""));
        assert!(cargo.contains("plugin/nfs_storage.wasm"));
        assert!(
            cargo.contains(&format!("git = \"{REPOSITORY}\"")),
            "{cargo}"
        );
        assert!(!cargo.contains("../../plugins/sdk"), "{cargo}");
        assert!(cargo.parse::<toml::Table>().is_ok());
    }

    #[test]
    fn other_kinds_get_their_skeleton_feature_and_sdk_path() {
        let sdk = SdkSource::Path(PathBuf::from("/src/wukong/plugins/sdk"));
        let files = scaffold("sriov-net", Kind::Network, Lang::Rust, &sdk).unwrap();
        assert!(contents(&files, "src/lib.rs").contains("export_network_plugin!(SriovNet)"));
        let cargo: toml::Table = contents(&files, "Cargo.toml").parse().unwrap();
        let dependency = &cargo["dependencies"]["wukong-plugin-sdk"];
        assert_eq!(dependency["path"].as_str(), Some("/src/wukong/plugins/sdk"));
        assert_eq!(dependency["features"][0].as_str(), Some("network"));
        assert!(contents(&files, "README.md").contains("sriov_net.wasm"));
        assert!(
            files
                .iter()
                .any(|f| f.path == Path::new("cases/01-network.yaml"))
        );
    }

    #[test]
    fn a_python_plugin_carries_the_contract() {
        let files = scaffold("py-disks", Kind::Storage, Lang::Python, &SdkSource::Git).unwrap();
        assert!(contents(&files, "app.py").contains("\"py-disks\""));
        assert!(contents(&files, "build.sh").contains("py_disks.wasm"));
        assert!(contents(&files, "wit/types.wit").contains("package wukong:plugin@"));
        let error = scaffold("py-net", Kind::Network, Lang::Python, &SdkSource::Git).unwrap_err();
        assert!(
            error.to_string().contains("storage plugins only"),
            "{error}"
        );
    }

    #[test]
    fn bad_names_are_refused_saying_what_a_name_is() {
        for bad in [
            "",
            "Nfs",
            "nfs_storage",
            "-nfs",
            "nfs-",
            "a--b",
            "9lives",
            "nfs storage",
        ] {
            let error = validate_name(bad).unwrap_err().to_string();
            assert!(error.contains("lowercase letters"), "{bad:?}: {error}");
        }
        assert!(
            validate_name("self")
                .unwrap_err()
                .to_string()
                .contains("reserved")
        );
        assert!(validate_name(&"a".repeat(64)).is_err());
        validate_name("nfs-storage2").unwrap();
    }

    #[test]
    fn every_template_case_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/plugin-template/cases");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = STORAGE_CASES.iter().map(|(name, _)| *name).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn a_non_empty_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        refuse_non_empty(dir.path()).unwrap();
        refuse_non_empty(&dir.path().join("new")).unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let error = refuse_non_empty(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not empty"), "{error}");
    }
}
