//! Noticing that the config file or a plugin file changed, by polling file metadata.
//!
//! Why polling and not inotify (`notify`): a mounted ConfigMap changes by swapping its
//! `..data` symlink, an editor renames a temporary file over the original, `cp` rewrites in
//! place, a volume may be a network or overlay filesystem — each needs its own inotify
//! handling (watch the folder, follow renames, re-arm after the watched inode goes), and a
//! missed event means a change never applied. A `stat` of a handful of files a few times a
//! second costs next to nothing and sees every one of those the same way: `stat` follows
//! symlinks, and a file's identity (device, inode), size and change time move on any
//! replacement or write. The contents are read only when a load is attempted.
//!
//! A change is acted on once it has settled — the same stamps on two polls in a row — so a
//! file caught half-written is not loaded (and refused) before the writer is done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One version of a file, told apart from another without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stamp {
    Missing,
    Present {
        len: u64,
        modified: Option<SystemTime>,
        /// Device, inode and change time (ctime, which no `touch -d` or `cp -p` can set
        /// back): a replaced or rewritten file always moves one of them.
        #[cfg(unix)]
        identity: (u64, u64, i64, i64),
    },
}

impl Stamp {
    fn of(path: &Path) -> Self {
        // NB: `metadata` follows symlinks, which is what sees a ConfigMap's `..data` swap.
        let Ok(metadata) = std::fs::metadata(path) else {
            return Self::Missing;
        };
        #[cfg(unix)]
        let identity = {
            use std::os::unix::fs::MetadataExt;
            (
                metadata.dev(),
                metadata.ino(),
                metadata.ctime(),
                metadata.ctime_nsec(),
            )
        };
        Self::Present {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            #[cfg(unix)]
            identity,
        }
    }
}

type Stamps = BTreeMap<PathBuf, Stamp>;

fn stamp_all<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Stamps {
    paths
        .into_iter()
        .map(|path| (path.clone(), Stamp::of(path)))
        .collect()
}

/// A set of files and how they looked when last loaded.
#[derive(Debug, Default)]
pub struct FileWatch {
    /// As of the last load attempt (successful or not: a refused file is not retried
    /// until it changes again).
    loaded: Stamps,
    /// A change seen on the last poll, waiting to settle.
    pending: Option<Stamps>,
}

impl FileWatch {
    /// Watches `paths` as they are now.
    pub fn new(paths: &[PathBuf]) -> Self {
        Self {
            loaded: stamp_all(paths),
            pending: None,
        }
    }

    /// The watched files.
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.loaded.keys()
    }

    /// Call every poll interval. Returns the changed files once a change has settled
    /// (looked the same on two polls in a row); the caller then loads and calls
    /// [`FileWatch::rebase`].
    pub fn poll(&mut self) -> Option<Vec<PathBuf>> {
        let now = stamp_all(self.loaded.keys());
        if now == self.loaded {
            self.pending = None;
            return None;
        }
        if self.pending.as_ref() != Some(&now) {
            self.pending = Some(now);
            return None;
        }
        let changed = now
            .iter()
            .filter(|(path, stamp)| self.loaded.get(*path) != Some(stamp))
            .map(|(path, _)| path.clone())
            .collect();
        Some(changed)
    }

    /// Call before reading the files for a load: from now on, watch `paths`. Files that
    /// were watched keep the stamps of the settled change (so a write after it, even one
    /// racing the load, is seen on the next poll); new files are stamped now, before the
    /// load reads them.
    pub fn rebase(&mut self, paths: &[PathBuf]) {
        let settled = self.pending.take().unwrap_or_else(|| self.loaded.clone());
        self.loaded = paths
            .iter()
            .map(|path| {
                let stamp = settled
                    .get(path)
                    .cloned()
                    .unwrap_or_else(|| Stamp::of(path));
                (path.clone(), stamp)
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_reported_once_settled_and_once_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.wasm");
        std::fs::write(&file, b"one").unwrap();
        let mut watch = FileWatch::new(std::slice::from_ref(&file));
        assert_eq!(watch.poll(), None, "nothing changed");

        std::fs::write(&file, b"two!").unwrap();
        assert_eq!(watch.poll(), None, "not settled yet");
        assert_eq!(watch.poll(), Some(vec![file.clone()]));
        watch.rebase(std::slice::from_ref(&file));
        assert_eq!(watch.poll(), None, "loaded: no longer a change");
    }

    #[test]
    fn a_symlink_swap_and_a_removal_are_changes() {
        // A mounted ConfigMap: `key -> ..data/key`, `..data -> ..2024_01`; an update makes
        // a new timestamped folder and swaps `..data`.
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("..v1");
        let second = dir.path().join("..v2");
        std::fs::create_dir(&first).unwrap();
        std::fs::create_dir(&second).unwrap();
        std::fs::write(first.join("wukong.toml"), b"same").unwrap();
        std::fs::write(second.join("wukong.toml"), b"same").unwrap();
        let data = dir.path().join("..data");
        std::os::unix::fs::symlink(&first, &data).unwrap();
        let key = dir.path().join("wukong.toml");
        std::os::unix::fs::symlink(data.join("wukong.toml"), &key).unwrap();
        let mut watch = FileWatch::new(std::slice::from_ref(&key));

        let swap = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&second, &swap).unwrap();
        std::fs::rename(&swap, &data).unwrap();
        watch.poll();
        assert_eq!(
            watch.poll(),
            Some(vec![key.clone()]),
            "same size and content, another file"
        );
        watch.rebase(std::slice::from_ref(&key));

        std::fs::remove_dir_all(&second).unwrap();
        watch.poll();
        assert_eq!(watch.poll(), Some(vec![key]));
    }

    #[test]
    fn a_write_racing_the_load_is_seen_and_new_files_are_watched() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("wukong.toml");
        let plugin = dir.path().join("new.wasm");
        std::fs::write(&config, b"v1").unwrap();
        let mut watch = FileWatch::new(std::slice::from_ref(&config));
        std::fs::write(&config, b"v2").unwrap();
        watch.poll();
        assert!(watch.poll().is_some());
        // The new config names a plugin; a write lands while the load runs.
        std::fs::write(&plugin, b"p1").unwrap();
        watch.rebase(&[config.clone(), plugin.clone()]);
        std::fs::write(&config, b"v3 longer").unwrap();
        watch.poll();
        assert_eq!(watch.poll(), Some(vec![config.clone()]));
        watch.rebase(&[config.clone(), plugin.clone()]);
        std::fs::write(&plugin, b"p2 longer").unwrap();
        watch.poll();
        assert_eq!(watch.poll(), Some(vec![plugin]));
    }
}
