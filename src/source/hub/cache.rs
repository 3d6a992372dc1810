//! The cache, laid out as Python's `huggingface_hub` lays it out, so either tool reuses
//! the other's downloads, and locked as it locks it, so either tool (or two depotai
//! builds) can fill it at the same time:
//!
//! ```text
//! {cache}/models--{org}--{name}/
//!   blobs/{etag}                  verified content (etag = sha256 for LFS files, git blob sha1 otherwise)
//!   blobs/{etag}.incomplete       a partial download, resumed with a Range request;
//!                                 written only by the holder of the blob's lock
//!   snapshots/{commit}/{path}     relative symlink to ../../blobs/{etag}
//!   .depotai/listings/{commit}.json
//!                                 depotai's copy of the commit's file listing (the Hub's
//!                                 tree entries), so an offline build knows every file it
//!                                 must find; `huggingface_hub` reads only `blobs/`,
//!                                 `refs/` and `snapshots/` and leaves it alone
//! {cache}/.locks/models--{org}--{name}/{etag}.lock
//!                                 an flock(2) on this file while `blobs/{etag}` is being
//!                                 made (what `huggingface_hub`'s `filelock` takes)
//! ```
//!
//! A blob appears only by a rename of a verified file, and a snapshot link only by a
//! rename of a link made under a temporary name, so a reader never sees half of either.

use super::api::{self, RemoteFile};
use super::error::{io, HubError};
use crate::limits;
use crate::names::{CommitSha, ModelName};
use std::io::Read as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug)]
pub struct RepoCache {
    root: PathBuf,
    /// `{cache}/.locks/models--{org}--{name}`.
    locks: PathBuf,
}

/// An exclusive flock(2) on a blob's lock file, held until dropped (closing the file
/// releases it). flock locks belong to the open file, so two opens in one process
/// exclude each other as two processes do.
#[derive(Debug)]
pub struct BlobLock {
    _file: std::fs::File,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, model: &ModelName) -> RepoCache {
        let folder = format!("models--{}", model.as_str().replace('/', "--"));
        RepoCache {
            root: cache_dir.join(&folder),
            locks: cache_dir.join(".locks").join(folder),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub fn lock_file(&self, etag: &str) -> PathBuf {
        self.locks.join(format!("{etag}.lock"))
    }

    pub fn snapshot_dir(&self, commit: &CommitSha) -> PathBuf {
        self.root.join("snapshots").join(commit.as_str())
    }

    /// `path` must already be validated (relative, no `..`).
    pub fn snapshot_file(&self, commit: &CommitSha, path: &str) -> PathBuf {
        self.snapshot_dir(commit).join(path)
    }

    /// Where the listing of `commit` is kept.
    pub fn listing_file(&self, commit: &CommitSha) -> PathBuf {
        self.root
            .join(".depotai/listings")
            .join(format!("{}.json", commit.as_str()))
    }

    /// The lock of `blobs/{etag}` if no one else holds it.
    pub fn try_lock(&self, etag: &str) -> std::io::Result<Option<BlobLock>> {
        let path = self.lock_file(etag);
        std::fs::create_dir_all(&self.locks)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            return Ok(Some(BlobLock { _file: file }));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        }
    }

    /// Puts an empty file in the cache as a download would (its bytes need none): the
    /// blob, if it is not there, and the snapshot link.
    pub fn put_empty(&self, commit: &CommitSha, path: &str, etag: &str) -> std::io::Result<()> {
        let blob = self.blob(etag);
        if !blob.is_file() {
            write_atomically(&blob, b"")?;
        }
        self.link(commit, path, etag)
    }

    /// Points `snapshots/{commit}/{path}` at `blobs/{etag}` with a relative symlink,
    /// made under a temporary name and renamed over whatever was there.
    pub fn link(&self, commit: &CommitSha, path: &str, etag: &str) -> std::io::Result<()> {
        let link = self.snapshot_file(commit, path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let depth = path.split('/').count() + 1; // snapshots/{commit}/ + dirs of path
        let target = format!("{}blobs/{etag}", "../".repeat(depth));
        if std::fs::read_link(&link).is_ok_and(|existing| existing == Path::new(&target)) {
            return Ok(());
        }
        let tmp = temp_beside(&link);
        std::os::unix::fs::symlink(&target, &tmp)?;
        std::fs::rename(&tmp, &link).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Keeps `files` (the whole listing of `commit`, not just the files a build
    /// selects) for offline builds, replacing the copy there atomically unless it is
    /// already that. A listing larger than [`limits::MAX_KEPT_LISTING`] is not kept
    /// (offline builds then refuse).
    pub fn keep_listing(&self, commit: &CommitSha, files: &[RemoteFile]) -> Result<(), HubError> {
        let bytes = api::tree_json(files);
        if bytes.len() as u64 > limits::MAX_KEPT_LISTING {
            return Ok(());
        }
        let path = self.listing_file(commit);
        let same = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64)
            && std::fs::read(&path).is_ok_and(|b| b == bytes);
        if same {
            return Ok(());
        }
        write_atomically(&path, &bytes).map_err(io(path))
    }

    /// The listing kept for `commit`, checked as the Hub's is; `None` if none was kept.
    pub fn kept_listing(
        &self,
        model: &ModelName,
        commit: &CommitSha,
    ) -> Result<Option<Vec<RemoteFile>>, HubError> {
        let path = self.listing_file(commit);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(limits::MAX_KEPT_LISTING + 1)
            .read_to_end(&mut bytes)
            .map_err(io(&path))?;
        let bad = |msg: String| HubError::KeptListing {
            path: path.clone(),
            msg,
        };
        if bytes.len() as u64 > limits::MAX_KEPT_LISTING {
            return Err(bad(format!(
                "larger than {}",
                crate::units::human_bytes(limits::MAX_KEPT_LISTING)
            )));
        }
        let source = path.display().to_string();
        api::parse_listing(&bytes, model, &source)
            .map(Some)
            .map_err(|e| match e {
                HubError::BadResponse { msg, .. } => bad(msg),
                other => other,
            })
    }
}

/// A name beside `path` no other process or thread uses: pid and a counter. Short, so
/// it fits wherever `path`'s own name does.
fn temp_beside(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".depotai-{}-{n}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` by a rename of a complete temporary file.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_beside(path);
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::hub::Check;

    #[test]
    fn layout_matches_huggingface_hub() {
        let m: ModelName = "sentence-transformers/all-MiniLM-L6-v2".parse().unwrap();
        let c = RepoCache::new(Path::new("/c"), &m);
        assert_eq!(
            c.root(),
            Path::new("/c/models--sentence-transformers--all-MiniLM-L6-v2")
        );
        assert_eq!(
            c.incomplete("ab"),
            Path::new("/c/models--sentence-transformers--all-MiniLM-L6-v2/blobs/ab.incomplete")
        );
        assert_eq!(
            c.lock_file("ab"),
            Path::new("/c/.locks/models--sentence-transformers--all-MiniLM-L6-v2/ab.lock")
        );
    }

    #[test]
    fn snapshot_links_are_relative_and_resolve_to_the_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let m: ModelName = "gpt2".parse().unwrap();
        let c = RepoCache::new(tmp.path(), &m);
        let sha: CommitSha = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        std::fs::create_dir_all(c.blob("x").parent().unwrap()).unwrap();
        std::fs::write(c.blob("abc"), b"data").unwrap();
        std::fs::write(c.blob("def"), b"other").unwrap();
        c.link(&sha, "1_Pooling/config.json", "abc").unwrap();
        let l = c.snapshot_file(&sha, "1_Pooling/config.json");
        assert_eq!(
            std::fs::read_link(&l).unwrap(),
            Path::new("../../../blobs/abc")
        );
        assert_eq!(std::fs::read(&l).unwrap(), b"data");
        c.link(&sha, "1_Pooling/config.json", "abc").unwrap(); // idempotent
                                                               // A regular file there (huggingface_hub without symlinks) is replaced.
        std::fs::remove_file(&l).unwrap();
        std::fs::write(&l, b"copy").unwrap();
        c.link(&sha, "1_Pooling/config.json", "def").unwrap();
        assert_eq!(std::fs::read(&l).unwrap(), b"other");
        let names: Vec<_> = std::fs::read_dir(l.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.json"], "no temporary link is left");
    }

    #[test]
    fn a_held_blob_lock_excludes_a_second_holder_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let c = RepoCache::new(tmp.path(), &"acme/m".parse().unwrap());
        let held = c.try_lock("abc").unwrap().expect("free at first");
        assert!(c.try_lock("abc").unwrap().is_none(), "held: not granted");
        assert!(c.try_lock("def").unwrap().is_some(), "another blob's lock");
        drop(held);
        assert!(c.try_lock("abc").unwrap().is_some(), "released on drop");
        assert!(c.lock_file("abc").is_file());
    }

    #[test]
    fn a_kept_listing_reads_back_as_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let m: ModelName = "acme/m".parse().unwrap();
        let c = RepoCache::new(tmp.path(), &m);
        let sha: CommitSha = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        assert_eq!(c.kept_listing(&m, &sha).unwrap(), None);
        let files = vec![
            RemoteFile {
                path: "config.json".into(),
                size: 2,
                check: Check::GitSha1("9e26dfeeb6e641a33dae4961196235bdb965b21b".into()),
            },
            RemoteFile {
                path: "w/model.safetensors".into(),
                size: 1 << 33,
                check: Check::Sha256("ab".repeat(32)),
            },
        ];
        c.keep_listing(&sha, &files).unwrap();
        assert_eq!(c.kept_listing(&m, &sha).unwrap(), Some(files));
        std::fs::write(c.listing_file(&sha), b"[{\"type\":\"file\"").unwrap();
        let e = c.kept_listing(&m, &sha).unwrap_err().to_string();
        assert!(
            e.contains("listings/0123456789abcdef0123456789abcdef01234567.json: unreadable"),
            "{e}"
        );
    }
}
