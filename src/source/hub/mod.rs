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
mod check;
mod config;
mod error;
mod http;
mod stream;

pub use api::{expected_sha256, parse_tree_page, Check, RemoteFile};
pub use cache::RepoCache;
pub use config::HubConfig;
pub use error::{HubError, HubRefusal};
pub use stream::{
    FetchProgress, HubStream, Silent, StreamOptions, StreamStats, DEFAULT_BUFFER, DEFAULT_WINDOW,
};

use crate::layer::Contents;
use crate::limits;
use crate::names::{CommitSha, ModelName};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;

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

/// The files of a build found in the cache (offline), ready to be read.
#[derive(Debug)]
pub struct Cached {
    pub files: Vec<CachedFile>,
}

#[derive(Clone, Debug)]
pub struct CachedFile {
    pub file: RemoteFile,
    /// Where the cache holds it: its blob, or a regular file in the snapshot.
    pub blob: PathBuf,
}

impl Cached {
    /// A reader of the files' contents, by path.
    pub fn contents(&self) -> HubContents {
        let blobs = self
            .files
            .iter()
            .map(|f| (f.file.path.clone(), f.blob.clone()))
            .collect();
        HubContents { blobs }
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
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not a cached file"))?;
        Ok(Box::new(std::fs::File::open(blob)?))
    }
}

/// Lists `model` at `sha` and keeps the files `filter` wants, downloading nothing: the
/// file list a [`HubStream`] reads, and what a build checks its layer plan against
/// before the first byte moves. With `keep_listing` the whole listing is also kept in
/// the cache, for offline builds (builds that use the cache keep it; `--no-cache` and
/// `verify` write nothing there).
pub fn list(
    model: &ModelName,
    sha: &CommitSha,
    cfg: &HubConfig,
    filter: &FileFilter,
    keep_listing: bool,
) -> Result<Vec<RemoteFile>, HubError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(error::io(&cfg.cache_dir))?;
    let http = http::Http::new(cfg)?;
    let cache = keep_listing.then(|| RepoCache::new(&cfg.cache_dir, model));
    let listed = rt.block_on(async {
        tokio::select! {
            listed = list_keeping(&http, model, sha, cache.as_ref()) => listed,
            () = cancelled(cfg) => Err(HubError::Interrupted),
        }
    })?;
    select(listed, filter, model)
}

/// The check before a rebuild (`verify`): one request, no retry, says that the Hub at
/// `cfg.endpoint` answers, has `model` at `sha`, and takes the token; else
/// [`HubError::Unavailable`], naming the endpoint, the cause and the fix.
pub fn check(model: &ModelName, sha: &CommitSha, cfg: &HubConfig) -> Result<(), HubError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(error::io(&cfg.cache_dir))?;
    let http = http::Http::new(cfg)?;
    rt.block_on(async {
        tokio::select! {
            checked = api::check(&http, model, sha) => checked.map_err(|cause| HubError::Unavailable {
                endpoint: http.endpoint().to_string(),
                cause,
            }),
            () = cancelled(cfg) => Err(HubError::Interrupted),
        }
    })
}

/// The listing at `sha`, kept in `cache` (if given) before anything is downloaded, so
/// an offline build after an interrupted or partial one knows what is missing.
async fn list_keeping(
    http: &http::Http,
    model: &ModelName,
    sha: &CommitSha,
    cache: Option<&RepoCache>,
) -> Result<Vec<RemoteFile>, HubError> {
    let listed = api::list_files(http, model, sha).await?;
    if let Some(cache) = cache {
        // Not fatal: a cache that cannot take it (read-only, full) costs only offline
        // builds, which then refuse and say the listing is missing.
        let _ = cache.keep_listing(sha, &listed);
    }
    Ok(listed)
}

/// The files of `listed` that `filter` wants; none is an error.
fn select(
    listed: Vec<RemoteFile>,
    filter: &FileFilter,
    model: &ModelName,
) -> Result<Vec<RemoteFile>, HubError> {
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

/// Resolves once `cfg.cancel` is set (never without one).
pub async fn cancelled(cfg: &HubConfig) {
    let Some(flag) = &cfg.cancel else {
        return std::future::pending().await;
    };
    crate::cancel::wait(flag).await
}

/// `HF_HUB_OFFLINE=1`: the listing kept by an online build says which files the
/// settings select, and every one of them must be in the cache, or nothing is built.
pub fn cached(
    model: &ModelName,
    sha: &CommitSha,
    cfg: &HubConfig,
    filter: &FileFilter,
) -> Result<Cached, HubError> {
    let cache = &RepoCache::new(&cfg.cache_dir, model);
    let Some(listed) = cache.kept_listing(model, sha)? else {
        if !cache.snapshot_dir(sha).is_dir() {
            return Err(HubError::NotCached {
                repo: model.to_string(),
                rev: sha.to_string(),
                dir: cache.root().to_path_buf(),
            });
        }
        return Err(HubError::NoListing {
            repo: model.to_string(),
            rev: sha.to_string(),
            file: cache.listing_file(sha),
        });
    };
    let wanted = select(listed, filter, model)?;
    let mut files = Vec::with_capacity(wanted.len());
    let mut missing = Vec::new();
    for f in wanted {
        match cached_copy(cache, sha, &f)? {
            Some(blob) => files.push(CachedFile { file: f, blob }),
            None => missing.push(f.path),
        }
    }
    if let Some(first) = missing.first() {
        return Err(HubError::NotCachedFile {
            repo: model.to_string(),
            rev: sha.to_string(),
            path: limits::shown(first),
            more: missing.len() - 1,
            dir: cache.root().to_path_buf(),
        });
    }
    Ok(Cached { files })
}

/// Where the cache holds `f`, checked against the listing (size, and git blob id; an
/// LFS file's sha256 is checked by the layer as it reads): its blob, else its snapshot
/// entry if that is a regular file (as `huggingface_hub` writes where symlinks are not
/// available). `None` if it is not there; an entry that is there but wrong is an error
/// naming it, never skipped.
fn cached_copy(
    cache: &RepoCache,
    sha: &CommitSha,
    f: &RemoteFile,
) -> Result<Option<PathBuf>, HubError> {
    let blob = cache.blob(f.check.etag());
    let mismatch = |path: PathBuf| HubError::CacheEntry {
        path,
        why: format!(
            "does not match the listing of {} ({} bytes, {} {})",
            limits::shown(&f.path),
            f.size,
            check::what(&f.check),
            f.check.etag()
        ),
    };
    if blob.exists() {
        return if verify_blocking(&blob, f)? {
            Ok(Some(blob))
        } else {
            Err(mismatch(blob))
        };
    }
    let entry = cache.snapshot_file(sha, &f.path);
    let meta = match std::fs::symlink_metadata(&entry) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error::io(entry)(e)),
    };
    if meta.file_type().is_symlink() {
        // A link to another blob, or to nothing: not this file.
        return match std::fs::canonicalize(&entry) {
            Err(_) => Ok(None),
            Ok(target) => Err(HubError::CacheEntry {
                path: entry,
                why: format!(
                    "links to {}, not to the listed blob {}",
                    target.display(),
                    f.check.etag()
                ),
            }),
        };
    }
    if meta.is_file() && verify_blocking(&entry, f)? {
        return Ok(Some(entry));
    }
    Err(mismatch(entry))
}

/// Offline builds have no runtime running; checking a blob needs a small one.
fn verify_blocking(blob: &std::path::Path, f: &RemoteFile) -> Result<bool, HubError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(error::io(blob))?;
    rt.block_on(check::verify_cached(blob, f))
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
