//! A model in a local directory.
//!
//! What goes into the image:
//! - regular files, byte for byte; mode 0755 if any execute bit is set, else 0644;
//! - directories, empty ones included, mode 0755;
//! - symlinks stay symlinks when their target, resolved from the link's directory
//!   through the links actually on disk (as a reader of the unpacked image resolves
//!   it), stays inside the tree; a symlink that is absolute, climbs out of the tree at
//!   any step, or does not resolve within 40 links is an error, and no symlink is
//!   followed while reading;
//! - hard links are stored as independent regular files (the image must not depend on
//!   which checkout shares inodes);
//! - sockets, FIFOs and device files are an error;
//! - names every reader accepts ([`names::check_path`]), and at most
//!   [`limits::MAX_TOC_ENTRIES`] entries: the walk stops there, before it holds more;
//! - the build's own output, when it lies inside the tree (`build --from-dir .` with the
//!   default `out/<name>`), is left out with its staging siblings and the directories
//!   that hold nothing else, so a rebuild never packs the previous image.
//!
//! Files are checked for changes while they are read: size, mtime and inode must still
//! match what the scan saw.

use crate::layer::{Contents, Entry, EntryKind};
use crate::limits;
use crate::names::{self, PathRule};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A path for a one-line message: control characters (which a name may hold until it is
/// checked) escaped.
fn shown(p: &Path) -> String {
    limits::one_line(&p.to_string_lossy(), 4096)
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("model directory {} does not exist", shown(.0))]
    Missing(PathBuf),
    #[error("{} is not a directory", shown(.0))]
    NotADirectory(PathBuf),
    #[error("model directory {} has no files", shown(.0))]
    Empty(PathBuf),
    #[error("cannot read {}: {source}", shown(path))]
    Io { path: PathBuf, source: io::Error },
    #[error("{} has a name that is not valid UTF-8; rename it", shown(.0))]
    NonUtf8(PathBuf),
    #[error("{} has a name no image may hold ({rule}); rename it", shown(path))]
    UnsafeName { path: PathBuf, rule: PathRule },
    #[error(
        "symlink {} points outside the model directory ({}); copy the file in or remove the link",
        shown(path),
        limits::one_line(target, 4096)
    )]
    SymlinkEscapes { path: PathBuf, target: String },
    #[error("symlink {} does not resolve within {MAX_LINK_HOPS} links (a loop?); remove the link", shown(.0))]
    SymlinkLoop(PathBuf),
    #[error(
        "symlink {} has a target no image may hold ({rule}); remove the link",
        shown(path)
    )]
    UnsafeTarget { path: PathBuf, rule: PathRule },
    #[error(
        "{} holds more than {} files, directories and links, the most one layer's TOC holds (readers refuse more); leave files out or split the model",
        shown(.0),
        limits::MAX_TOC_ENTRIES
    )]
    TooManyEntries(PathBuf),
    #[error(
        "{} is a {kind}; only regular files, directories and symlinks can go into an image",
        shown(path)
    )]
    Special { path: PathBuf, kind: &'static str },
}

/// Links followed in a row while resolving one symlink (Linux's `MAXSYMLINKS`).
const MAX_LINK_HOPS: usize = 40;

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
    /// Scans `root`: every entry, checked, in sorted order.
    pub fn scan(root: &Path) -> Result<DirSource, DirError> {
        Self::scan_leaving_out(root, None)
    }

    /// [`DirSource::scan`], leaving out `output` (the image being built) if it lies
    /// inside `root`, with its `.NAME.partial-*` / `.NAME.old-*` siblings and the
    /// directories that hold nothing else.
    pub fn scan_leaving_out(root: &Path, output: Option<&Path>) -> Result<DirSource, DirError> {
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
        let left_out = output.and_then(|o| LeftOut::of(root, o));
        let mut entries = Vec::new();
        let mut seen = std::collections::HashMap::new();
        let walk = walkdir::WalkDir::new(root)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let rel = e.path().strip_prefix(root).unwrap_or(e.path());
                !left_out.as_ref().is_some_and(|l| l.skips(rel))
            });
        for item in walk {
            let item = item.map_err(|e| {
                let path = e.path().unwrap_or(root).to_path_buf();
                DirError::Io {
                    path,
                    source: e.into(),
                }
            })?;
            let full = item.path();
            if entries.len() >= limits::MAX_TOC_ENTRIES {
                // Stop before holding more than any layer can carry.
                return Err(DirError::TooManyEntries(root.to_path_buf()));
            }
            let rel = full
                .strip_prefix(root)
                .expect("walkdir yields paths under its root");
            let rel = rel
                .to_str()
                .ok_or_else(|| DirError::NonUtf8(full.to_path_buf()))?
                .to_string();
            names::check_path(&rel).map_err(|rule| DirError::UnsafeName {
                path: full.to_path_buf(),
                rule,
            })?;
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
                names::check_link_target(&target).map_err(|rule| DirError::UnsafeTarget {
                    path: full.to_path_buf(),
                    rule,
                })?;
                match resolve_link(&rel, &target, |p| link_at(root, p)) {
                    Resolved::Inside => {}
                    Resolved::Outside => {
                        return Err(DirError::SymlinkEscapes {
                            path: full.to_path_buf(),
                            target,
                        })
                    }
                    Resolved::TooManyLinks => {
                        return Err(DirError::SymlinkLoop(full.to_path_buf()))
                    }
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
        if let Some(l) = &left_out {
            l.drop_emptied_parents(&mut entries);
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

/// Where a symlink leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Inside the tree (or to a name that does not exist there).
    Inside,
    /// Above the tree's root at some step, or to an absolute path.
    Outside,
    /// More than [`MAX_LINK_HOPS`] links in a row.
    TooManyLinks,
}

/// The target of the symlink at `rel` (relative to the root), if it is one.
fn link_at(root: &Path, rel: &str) -> Option<String> {
    let p = root.join(rel);
    let m = fs::symlink_metadata(&p).ok()?;
    if !m.file_type().is_symlink() {
        return None;
    }
    fs::read_link(&p).ok()?.to_str().map(str::to_string)
}

/// Resolves `target`, the target of the link at `link`, component by component as the
/// kernel would inside the unpacked tree: `..` climbs (never above the root), and a
/// component that is itself a link (`link_at` tells) is replaced by its target. What
/// does not exist is taken as it reads. So `s -> .` with `t -> s/s/../../x` climbs out,
/// whatever the text of `t` suggests.
pub fn resolve_link(
    link: &str,
    target: &str,
    link_at: impl Fn(&str) -> Option<String>,
) -> Resolved {
    let mut at: Vec<String> = link.split('/').map(str::to_string).collect();
    at.pop();
    let mut todo: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut hops = 0;
    let mut next = Some(target.to_string());
    while let Some(t) = next.take() {
        if t.starts_with('/') {
            return Resolved::Outside;
        }
        // The rest of the path continues after this target's components.
        for c in t.split('/').rev() {
            todo.push_front(c.to_string());
        }
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => {}
                ".." => {
                    if at.pop().is_none() {
                        return Resolved::Outside;
                    }
                }
                _ => {
                    at.push(c);
                    if let Some(t) = link_at(&at.join("/")) {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return Resolved::TooManyLinks;
                        }
                        at.pop();
                        next = Some(t);
                        break;
                    }
                }
            }
        }
    }
    Resolved::Inside
}

/// The build's output inside the scanned tree, as paths relative to its root.
struct LeftOut {
    /// The output directory, e.g. `out/acme/m`.
    rel: PathBuf,
    /// Its staging siblings start with `.m.partial-` or `.m.old-`.
    partial: String,
    old: String,
}

impl LeftOut {
    /// Where `output` lies relative to `root`, if inside it. Neither needs to exist
    /// yet: the nearest existing ancestor is resolved and the rest appended.
    fn of(root: &Path, output: &Path) -> Option<LeftOut> {
        let root = fs::canonicalize(root).ok()?;
        let absolute = std::path::absolute(output).ok()?;
        let mut existing = absolute.as_path();
        let mut rest = Vec::new();
        let base = loop {
            if let Ok(c) = fs::canonicalize(existing) {
                break c;
            }
            rest.push(existing.file_name()?);
            existing = existing.parent()?;
        };
        let full = rest.iter().rev().fold(base, |p, c| p.join(c));
        let rel = full.strip_prefix(&root).ok()?.to_path_buf();
        let name = rel.file_name()?.to_string_lossy().into_owned();
        Some(LeftOut {
            rel,
            partial: format!(".{name}.partial-"),
            old: format!(".{name}.old-"),
        })
    }

    /// Whether the walk skips `rel` (and what is below it).
    fn skips(&self, rel: &Path) -> bool {
        if rel == self.rel {
            return true;
        }
        let sibling = rel.parent() == self.rel.parent();
        let name = rel.file_name().map(|n| n.to_string_lossy());
        sibling && name.is_some_and(|n| n.starts_with(&self.partial) || n.starts_with(&self.old))
    }

    /// Drops the output's ancestors that hold nothing but it: whether an earlier build
    /// created `out/acme/` must not change the image.
    fn drop_emptied_parents(&self, entries: &mut Vec<Entry>) {
        let mut parent = self.rel.parent();
        while let Some(p) = parent.and_then(Path::to_str).filter(|p| !p.is_empty()) {
            let below = format!("{p}/");
            if entries.iter().any(|e| e.path.starts_with(&below)) {
                break;
            }
            entries.retain(|e| e.path != p);
            parent = Path::new(p).parent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of links for [`resolve_link`]: `(path, target)`.
    fn links<'a>(tree: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |p| {
            tree.iter()
                .find(|(l, _)| *l == p)
                .map(|(_, t)| t.to_string())
        }
    }

    #[test]
    fn symlink_targets_are_resolved_through_the_links_in_the_tree() {
        let none = links(&[]);
        assert_eq!(resolve_link("a/link", "file", &none), Resolved::Inside);
        assert_eq!(resolve_link("a/link", "../b/file", &none), Resolved::Inside);
        assert_eq!(
            resolve_link("a/b/link", "../../top", &none),
            Resolved::Inside
        );
        assert_eq!(resolve_link("link", "../outside", &none), Resolved::Outside);
        assert_eq!(
            resolve_link("a/link", "../../outside", &none),
            Resolved::Outside
        );
        assert_eq!(
            resolve_link("a/link", "/etc/passwd", &none),
            Resolved::Outside
        );
        // Climbing out and back in is out: the tree's parent is not in the image.
        assert_eq!(resolve_link("link", "../m/file", &none), Resolved::Outside);
        // s -> . makes s/s/s/.. climb from the root, not from three levels down.
        let tree = [("s", ".")];
        let t = "s/s/s/s/s/s/s/s/../../../../../../../../etc/passwd";
        assert_eq!(resolve_link("t", t, links(&tree)), Resolved::Outside);
        assert_eq!(
            resolve_link("t", "s/s/s/config.json", links(&tree)),
            Resolved::Inside
        );
        // A link to a link that climbs out is out; through a directory link too.
        let tree = [("up", ".."), ("d/deeper", "../up")];
        assert_eq!(resolve_link("x", "up", links(&tree)), Resolved::Outside);
        assert_eq!(
            resolve_link("x", "d/deeper/y", links(&tree)),
            Resolved::Outside
        );
        let tree = [("abs", "/etc")];
        assert_eq!(
            resolve_link("x", "abs/passwd", links(&tree)),
            Resolved::Outside
        );
        // Loops stop after 40 links.
        let tree = [("a", "b"), ("b", "a")];
        assert_eq!(resolve_link("x", "a", links(&tree)), Resolved::TooManyLinks);
        let tree = [("self", "self/x")];
        assert_eq!(
            resolve_link("x", "self", links(&tree)),
            Resolved::TooManyLinks
        );
        // A missing name is taken as it reads.
        assert_eq!(resolve_link("x", "missing/../a", &none), Resolved::Inside);
        assert_eq!(
            resolve_link("x", "missing/../../a", &none),
            Resolved::Outside
        );
    }
}
