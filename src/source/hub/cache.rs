//! The cache, laid out as Python's `huggingface_hub` lays it out, so either tool reuses
//! the other's downloads:
//!
//! ```text
//! {cache}/models--{org}--{name}/
//!   blobs/{etag}                  verified content (etag = sha256 for LFS files, git blob sha1 otherwise)
//!   blobs/{etag}.incomplete       a partial download, resumed with a Range request
//!   snapshots/{commit}/{path}     relative symlink to ../../blobs/{etag}
//! ```

use crate::names::{CommitSha, ModelName};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct RepoCache {
    root: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, model: &ModelName) -> RepoCache {
        let folder = format!("models--{}", model.as_str().replace('/', "--"));
        RepoCache {
            root: cache_dir.join(folder),
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

    pub fn snapshot_dir(&self, commit: &CommitSha) -> PathBuf {
        self.root.join("snapshots").join(commit.as_str())
    }

    /// `path` must already be validated (relative, no `..`).
    pub fn snapshot_file(&self, commit: &CommitSha, path: &str) -> PathBuf {
        self.snapshot_dir(commit).join(path)
    }

    /// Points `snapshots/{commit}/{path}` at `blobs/{etag}` with a relative symlink.
    pub fn link(&self, commit: &CommitSha, path: &str, etag: &str) -> io::Result<()> {
        let link = self.snapshot_file(commit, path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let depth = path.split('/').count() + 1; // snapshots/{commit}/ + dirs of path
        let target = format!("{}blobs/{etag}", "../".repeat(depth));
        match std::fs::read_link(&link) {
            Ok(existing) if existing == Path::new(&target) => return Ok(()),
            Ok(_) => std::fs::remove_file(&link)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => std::fs::remove_file(&link)?,
        }
        std::os::unix::fs::symlink(&target, &link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn snapshot_links_are_relative_and_resolve_to_the_blob() {
        let tmp = tempfile::tempdir().unwrap();
        let m: ModelName = "gpt2".parse().unwrap();
        let c = RepoCache::new(tmp.path(), &m);
        let sha: CommitSha = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        std::fs::create_dir_all(c.blob("x").parent().unwrap()).unwrap();
        std::fs::write(c.blob("abc"), b"data").unwrap();
        c.link(&sha, "1_Pooling/config.json", "abc").unwrap();
        let l = c.snapshot_file(&sha, "1_Pooling/config.json");
        assert_eq!(
            std::fs::read_link(&l).unwrap(),
            Path::new("../../../blobs/abc")
        );
        assert_eq!(std::fs::read(&l).unwrap(), b"data");
        c.link(&sha, "1_Pooling/config.json", "abc").unwrap(); // idempotent
    }
}
