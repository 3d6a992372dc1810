//! A model in a local directory.
//!
//! What goes into the image:
//! - regular files, byte for byte; mode 0755 if any execute bit is set, else 0644;
//! - directories, empty ones included, mode 0755;
//! - symlinks stay symlinks when their target, resolved from the link's directory,
//!   stays inside the tree; a symlink that is absolute or climbs out of the tree is an
//!   error, and no symlink is ever followed while reading;
//! - hard links are stored as independent regular files (the image must not depend on
//!   which checkout shares inodes);
//! - sockets, FIFOs and device files are an error.
//!
//! Files are checked for changes while they are read: size, mtime and inode must still
//! match what the scan saw.

use crate::layer::{Contents, Entry, EntryKind};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("model directory {0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("model directory {0} has no files")]
    Empty(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} has a name that is not valid UTF-8; rename it")]
    NonUtf8(PathBuf),
    #[error("symlink {path} points outside the model directory ({target}); copy the file in or remove the link")]
    SymlinkEscapes { path: PathBuf, target: String },
    #[error(
        "{path} is a {kind}; only regular files, directories and symlinks can go into an image"
    )]
    Special { path: PathBuf, kind: &'static str },
}

#[derive(Clone, Debug)]
struct Seen {
    len: u64,
    mtime: Option<SystemTime>,
    ino: u64,
    dev: u64,
}

impl Seen {
    fn of(m: &Metadata) -> Seen {
        Seen {
            len: m.len(),
            mtime: m.modified().ok(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// A scanned directory: its entries, and the metadata each file had when scanned.
pub struct DirSource {
    root: PathBuf,
    entries: Vec<Entry>,
    seen: std::collections::HashMap<String, Seen>,
}

impl DirSource {
    pub fn scan(root: &Path) -> Result<DirSource, DirError> {
        let meta = match fs::metadata(root) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DirError::Missing(root.to_path_buf()))
            }
            Err(source) => {
                return Err(DirError::Io {
                    path: root.to_path_buf(),
                    source,
                })
            }
        };
        if !meta.is_dir() {
            return Err(DirError::NotADirectory(root.to_path_buf()));
        }
        let mut entries = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for item in walkdir::WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
        {
            let item = item.map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                DirError::Io {
                    path,
                    source: e.into(),
                }
            })?;
            let full = item.path();
            let rel = full
                .strip_prefix(root)
                .expect("walkdir yields paths under its root");
            let rel = rel
                .to_str()
                .ok_or_else(|| DirError::NonUtf8(full.to_path_buf()))?
                .to_string();
            let m = item.metadata().map_err(|e| DirError::Io {
                path: full.to_path_buf(),
                source: e.into(),
            })?;
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                EntryKind::Directory
            } else if ft.is_file() {
                seen.insert(rel.clone(), Seen::of(&m));
                EntryKind::File {
                    size: m.len(),
                    executable: m.permissions().mode() & 0o111 != 0,
                }
            } else if ft.is_symlink() {
                let target = fs::read_link(full).map_err(|source| DirError::Io {
                    path: full.to_path_buf(),
                    source,
                })?;
                let target = target
                    .to_str()
                    .ok_or_else(|| DirError::NonUtf8(full.to_path_buf()))?
                    .to_string();
                if !stays_inside(&rel, &target) {
                    return Err(DirError::SymlinkEscapes {
                        path: full.to_path_buf(),
                        target,
                    });
                }
                EntryKind::Symlink { target }
            } else {
                use std::os::unix::fs::FileTypeExt;
                let kind = if ft.is_fifo() {
                    "FIFO"
                } else if ft.is_socket() {
                    "socket"
                } else if ft.is_block_device() || ft.is_char_device() {
                    "device file"
                } else {
                    "special file"
                };
                return Err(DirError::Special {
                    path: full.to_path_buf(),
                    kind,
                });
            };
            entries.push(Entry { path: rel, kind });
        }
        if !entries
            .iter()
            .any(|e| !matches!(e.kind, EntryKind::Directory))
        {
            return Err(DirError::Empty(root.to_path_buf()));
        }
        Ok(DirSource {
            root: root.to_path_buf(),
            entries,
            seen,
        })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn into_entries(self) -> (Vec<Entry>, DirContents) {
        (
            self.entries,
            DirContents {
                root: self.root,
                seen: self.seen,
            },
        )
    }
}

/// Reads file contents of a scanned directory, refusing files that changed since.
pub struct DirContents {
    root: PathBuf,
    seen: std::collections::HashMap<String, Seen>,
}

fn changed(path: &str) -> io::Error {
    io::Error::other(format!(
        "{path} changed while it was read; rebuild when the files are stable"
    ))
}

impl Contents for DirContents {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>> {
        let seen = self
            .seen
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not a scanned file"))?;
        let file = File::open(self.root.join(path))?;
        // fstat the opened file: a file swapped for another (or a symlink) is caught here.
        let now = Seen::of(&file.metadata()?);
        if now.ino != seen.ino
            || now.dev != seen.dev
            || now.len != seen.len
            || now.mtime != seen.mtime
        {
            return Err(changed(path));
        }
        Ok(Box::new(CheckedFile {
            file,
            path: path.to_string(),
            seen: seen.clone(),
        }))
    }
}

struct CheckedFile {
    file: File,
    path: String,
    seen: Seen,
}

impl Read for CheckedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 || buf.is_empty() {
            let now = Seen::of(&self.file.metadata()?);
            if now.len != self.seen.len || now.mtime != self.seen.mtime {
                return Err(changed(&self.path));
            }
        }
        Ok(n)
    }
}

/// Whether `target`, read relative to the directory of the link at `link`, stays inside
/// the tree (checked lexically: we never look at what the target currently is).
fn stays_inside(link: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') {
        return false;
    }
    let mut depth: Vec<&str> = link.split('/').collect();
    depth.pop();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            s => depth.push(s),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_are_checked_lexically_against_the_tree() {
        assert!(stays_inside("a/link", "file"));
        assert!(stays_inside("a/link", "../b/file"));
        assert!(stays_inside("a/b/link", "../../top"));
        assert!(!stays_inside("link", "../outside"));
        assert!(!stays_inside("a/link", "../../outside"));
        assert!(!stays_inside("a/link", "/etc/passwd"));
        assert!(!stays_inside("a/link", ""));
    }
}
