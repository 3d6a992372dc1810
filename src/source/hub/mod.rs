//! A model on the Hugging Face Hub at a pinned commit.
//!
//! Why not the `hf-hub` crate: none of its versions verifies sizes or hashes, resumes
//! safely (a 200 answer to a Range request corrupts the file), honours `Retry-After`,
//! drops the token on cross-origin redirects in every transport, checks that the served
//! commit is the pinned one, or rejects traversal names from the listing
//! (`shared/docs/hf-hub-api.md` §1). So this is a thin client on reqwest that keeps the
//! Hub's wire conventions and the Python cache layout.

mod api;
mod cache;
mod config;
mod download;
mod error;
mod http;
mod stream;

pub use api::{expected_sha256, parse_tree_page, Check, RemoteFile};
pub use cache::RepoCache;
pub use config::HubConfig;
pub use download::{FetchProgress, Silent};
pub use error::HubError;
pub use stream::{HubStream, StreamOptions, StreamStats, DEFAULT_BUFFER, DEFAULT_WINDOW};

use crate::layer::{Contents, Entry, EntryKind};
use crate::names::{CommitSha, ModelName};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

/// Which files of the repository go into the image.
#[derive(Clone, Debug, Default)]
pub struct FileFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

fn globset(patterns: &[String]) -> Result<Option<GlobSet>, HubError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        // As in huggingface_hub's fnmatch: `*` also matches `/`.
        let g = GlobBuilder::new(p)
            .literal_separator(false)
            .build()
            .map_err(|e| HubError::Glob {
                pattern: p.clone(),
                msg: e.to_string(),
            })?;
        b.add(g);
    }
    b.build().map(Some).map_err(|e| HubError::Glob {
        pattern: patterns.join(" "),
        msg: e.to_string(),
    })
}

impl FileFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<FileFilter, HubError> {
        Ok(FileFilter {
            include: globset(include)?,
            exclude: globset(exclude)?,
        })
    }

    /// `.gitattributes` is left out, as in depot.ai's images, unless an `--include`
    /// pattern asks for it.
    pub fn wants(&self, path: &str) -> bool {
        let included = match &self.include {
            Some(g) => g.is_match(path),
            None => path != ".gitattributes",
        };
        included && !self.exclude.as_ref().is_some_and(|g| g.is_match(path))
    }
}

/// What a fetch produced: files in the cache, ready to be read.
#[derive(Debug)]
pub struct Fetched {
    pub files: Vec<CachedFile>,
    pub cache: RepoCache,
}

#[derive(Clone, Debug)]
pub struct CachedFile {
    pub path: String,
    pub size: u64,
    pub blob: PathBuf,
    pub check: Check,
    /// Downloaded by this run (not found in the cache).
    pub downloaded: bool,
}

impl Fetched {
    pub fn downloaded_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.downloaded)
            .map(|f| f.size)
            .sum()
    }

    /// The image's entries and a reader of their contents.
    pub fn entries(&self) -> (Vec<Entry>, HubContents) {
        let entries = self
            .files
            .iter()
            .map(|f| Entry {
                path: f.path.clone(),
                kind: EntryKind::File {
                    size: f.size,
                    executable: false,
                },
            })
            .collect();
        let blobs = self
            .files
            .iter()
            .map(|f| (f.path.clone(), f.blob.clone()))
            .collect();
        (entries, HubContents { blobs })
    }

    /// sha256 the Hub publishes for each LFS file: the layer digests every byte it
    /// reads, so cached LFS blobs are verified for free.
    pub fn expected_sha256(&self) -> BTreeMap<String, String> {
        api::expected_sha256(self.files.iter().map(|f| (f.path.as_str(), &f.check)))
    }

    /// Deletes the cached blob of `path` (after it proved corrupt).
    pub fn evict(&self, path: &str) {
        if let Some(f) = self.files.iter().find(|f| f.path == path) {
            let _ = std::fs::remove_file(&f.blob);
        }
    }

    /// Removes what this run downloaded (blobs and their snapshot links), for CI
    /// machines with small disks. Files that were already cached stay.
    pub fn remove_downloads(&self, sha: &CommitSha) -> io::Result<u64> {
        let mut freed = 0;
        for f in self.files.iter().filter(|f| f.downloaded) {
            let link = self.cache.snapshot_file(sha, &f.path);
            let _ = std::fs::remove_file(&link);
            match std::fs::remove_file(&f.blob) {
                Ok(()) => freed += f.size,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // Drop directories left empty, deepest first.
        let snap = self.cache.snapshot_dir(sha);
        let mut dirs: Vec<PathBuf> = walkdir::WalkDir::new(&snap)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.into_path())
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
        Ok(freed)
    }
}

/// Reads file contents straight from the cache's blobs: no second copy.
pub struct HubContents {
    blobs: BTreeMap<String, PathBuf>,
}

impl Contents for HubContents {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>> {
        let blob = self
            .blobs
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not a fetched file"))?;
        Ok(Box::new(std::fs::File::open(blob)?))
    }
}

/// Lists `model` at `sha` and keeps the files `filter` wants, downloading nothing: the
/// file list a [`HubStream`] reads, and what a build checks its layer plan against
/// before the first byte moves.
pub fn list(
    model: &ModelName,
    sha: &CommitSha,
    cfg: &HubConfig,
    filter: &FileFilter,
) -> Result<Vec<RemoteFile>, HubError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(error::io(&cfg.cache_dir))?;
    let http = http::Http::new(cfg)?;
    let listed = rt.block_on(async {
        tokio::select! {
            listed = api::list_files(&http, model, sha) => listed,
            () = cancelled(cfg) => Err(HubError::Interrupted),
        }
    })?;
    let wanted: Vec<RemoteFile> = listed
        .into_iter()
        .filter(|f| filter.wants(&f.path))
        .collect();
    if wanted.is_empty() {
        return Err(HubError::NoFiles {
            repo: model.to_string(),
        });
    }
    Ok(wanted)
}

/// Lists, filters and downloads `model` at `sha` into the cache.
pub fn fetch(
    model: &ModelName,
    sha: &CommitSha,
    cfg: &HubConfig,
    filter: &FileFilter,
    progress: Arc<dyn FetchProgress>,
) -> Result<Fetched, HubError> {
    let cache = RepoCache::new(&cfg.cache_dir, model);
    if cfg
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    {
        return Err(HubError::Interrupted);
    }
    if cfg.offline {
        return from_cache(model, sha, &cache, filter);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| HubError::Io {
            path: cfg.cache_dir.clone(),
            source: e,
        })?;
    rt.block_on(fetch_online(model, sha, cfg, filter, &cache, progress))
}

async fn fetch_online(
    model: &ModelName,
    sha: &CommitSha,
    cfg: &HubConfig,
    filter: &FileFilter,
    cache: &RepoCache,
    progress: Arc<dyn FetchProgress>,
) -> Result<Fetched, HubError> {
    let http = Arc::new(http::Http::new(cfg)?);
    let listed = tokio::select! {
        listed = api::list_files(&http, model, sha) => listed?,
        () = cancelled(cfg) => return Err(HubError::Interrupted),
    };
    let wanted: Vec<RemoteFile> = listed
        .into_iter()
        .filter(|f| filter.wants(&f.path))
        .collect();
    if wanted.is_empty() {
        return Err(HubError::NoFiles {
            repo: model.to_string(),
        });
    }
    // One download per blob: paths sharing content share it in the cache.
    let mut by_etag: BTreeMap<String, RemoteFile> = BTreeMap::new();
    for f in &wanted {
        by_etag
            .entry(f.check.etag().to_string())
            .or_insert_with(|| f.clone());
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (etag, f) in by_etag {
        let (http, cache, model, sha, progress, permits) = (
            http.clone(),
            cache.clone(),
            model.clone(),
            sha.clone(),
            progress.clone(),
            permits.clone(),
        );
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore stays open");
            let downloaded =
                download::fetch_file(&http, &cache, &model, &sha, &f, &*progress).await?;
            Ok::<_, HubError>((etag, downloaded))
        });
    }
    let mut downloaded: BTreeMap<String, bool> = BTreeMap::new();
    loop {
        // Aborted tasks stop at their next await: a file being written stays
        // `.incomplete` and is resumed by the next run; nothing unverified is renamed.
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            () = cancelled(cfg) => {
                tasks.abort_all();
                return Err(HubError::Interrupted);
            }
        };
        let Some(joined) = joined else { break };
        match joined {
            Ok(Ok((etag, d))) => {
                downloaded.insert(etag, d);
            }
            Ok(Err(e)) => {
                tasks.abort_all();
                return Err(e);
            }
            Err(e) => {
                tasks.abort_all();
                return Err(HubError::Network {
                    url: model.to_string(),
                    msg: format!("download task failed: {e}"),
                });
            }
        }
    }
    let mut files = Vec::with_capacity(wanted.len());
    for f in wanted {
        let etag = f.check.etag().to_string();
        cache
            .link(sha, &f.path, &etag)
            .map_err(error::io(cache.snapshot_file(sha, &f.path)))?;
        files.push(CachedFile {
            blob: cache.blob(&etag),
            downloaded: downloaded.get(&etag).copied().unwrap_or(false),
            path: f.path,
            size: f.size,
            check: f.check,
        });
    }
    Ok(Fetched {
        files,
        cache: cache.clone(),
    })
}

/// Resolves once `cfg.cancel` is set (never without one).
async fn cancelled(cfg: &HubConfig) {
    let Some(flag) = &cfg.cancel else {
        return std::future::pending().await;
    };
    while !flag.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `HF_HUB_OFFLINE=1`: the snapshot directory is the listing; blob names are the hashes.
fn from_cache(
    model: &ModelName,
    sha: &CommitSha,
    cache: &RepoCache,
    filter: &FileFilter,
) -> Result<Fetched, HubError> {
    let snap = cache.snapshot_dir(sha);
    if !snap.is_dir() {
        return Err(HubError::NotCached {
            repo: model.to_string(),
            rev: sha.to_string(),
            dir: cache.root().to_path_buf(),
        });
    }
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(&snap)
        .min_depth(1)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| HubError::Io {
            path: snap.clone(),
            source: e.into(),
        })?;
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(&snap).expect("under the snapshot");
        let Some(rel) = rel.to_str().map(str::to_string) else {
            continue;
        };
        if !filter.wants(&rel) || crate::names::check_path(&rel).is_err() {
            continue;
        }
        // Resolve the link to its blob; anything pointing outside blobs/ is not ours.
        let blob = std::fs::canonicalize(e.path()).map_err(error::io(e.path()))?;
        let blobs_dir =
            std::fs::canonicalize(cache.root().join("blobs")).map_err(error::io(cache.root()))?;
        if blob.parent() != Some(blobs_dir.as_path()) {
            continue;
        }
        let etag = blob
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let check = match etag.len() {
            64 => Check::Sha256(etag),
            40 => Check::GitSha1(etag),
            _ => continue,
        };
        let size = std::fs::metadata(&blob).map_err(error::io(&blob))?.len();
        let f = RemoteFile {
            path: rel.clone(),
            size,
            check: check.clone(),
        };
        if !verify_blocking(&blob, &f)? {
            return Err(HubError::Integrity {
                path: rel,
                what: "git blob id",
                expected: f.check.etag().to_string(),
                got: "different content in the cache".into(),
            });
        }
        files.push(CachedFile {
            path: rel,
            size,
            blob,
            check,
            downloaded: false,
        });
    }
    if files.is_empty() {
        return Err(HubError::NoFiles {
            repo: model.to_string(),
        });
    }
    Ok(Fetched {
        files,
        cache: cache.clone(),
    })
}

/// Offline builds have no runtime running; checking a blob needs a small one.
fn verify_blocking(blob: &std::path::Path, f: &RemoteFile) -> Result<bool, HubError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(error::io(blob))?;
    rt.block_on(download::verify_cached(blob, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitattributes_is_left_out_unless_included() {
        let f = FileFilter::new(&[], &[]).unwrap();
        assert!(!f.wants(".gitattributes"));
        assert!(f.wants("config.json"));
        let f = FileFilter::new(
            &["*.json".into(), ".gitattributes".into()],
            &["tokenizer*".into()],
        )
        .unwrap();
        assert!(f.wants(".gitattributes"));
        assert!(
            f.wants("1_Pooling/config.json"),
            "* crosses / as in fnmatch"
        );
        assert!(!f.wants("tokenizer.json"));
        assert!(!f.wants("model.safetensors"));
    }

    #[test]
    fn bad_globs_are_reported() {
        assert!(matches!(
            FileFilter::new(&["[".into()], &[]),
            Err(HubError::Glob { .. })
        ));
    }
}
