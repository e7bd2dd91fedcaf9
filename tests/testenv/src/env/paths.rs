//! Where things live: the control-plane binaries, the data dir root, random tokens.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

pub(crate) fn data_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("WUKONG_TESTENV_DIR") {
        return PathBuf::from(dir);
    }
    // etcd fsyncs a lot: RAM-backed storage keeps start-up and writes fast.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// Where a control-plane binary is: `$KUBEBUILDER_ASSETS`, else `$WUKONG_CACHE/assets`,
/// else `~/.cache/wukong/assets` (etcd also from `/usr/bin`).
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
        dirs.push(PathBuf::from(assets));
    } else {
        let cache = std::env::var_os("WUKONG_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wukong")));
        if let Some(cache) = cache {
            dirs.push(cache.join("assets"));
        }
        if name == "etcd" {
            dirs.push(PathBuf::from("/usr/bin"));
        }
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingBinary {
            binary: name.into(),
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// `n` random bytes from the kernel, hex-encoded.
pub fn random_hex(n: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .ctx("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
