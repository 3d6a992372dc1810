//! Downloading one file into the cache: resumable, verified, retried.
//!
//! The blob's lock (`.locks/…/{etag}.lock`, see `cache.rs`) is held from before the
//! cache is checked a second time until the blob is in place, so two builds (or
//! `huggingface_hub`) sharing a cache never write one `.incomplete` file at once: the
//! second waits, then finds the blob there.
//!
//! Bytes go to `blobs/{etag}.incomplete` and are hashed as they arrive. An interrupted
//! transfer continues with `Range: bytes=N-` (the bytes already on disk are hashed
//! first); a 200 answer to a Range request restarts from zero. Only a file whose size
//! and hash match the listing is renamed to `blobs/{etag}`. A hash mismatch deletes the
//! data and downloads once more before giving up.

use super::api::{explain, resolve_url, Check, RemoteFile};
use super::cache::RepoCache;
use super::error::{io, HubError};
use super::http::{describe, Attempt, Http};
use crate::names::{CommitSha, ModelName};
use sha1::Digest as _;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Told about downloads as they happen (progress bars, log lines).
pub trait FetchProgress: Send + Sync {
    fn begin(&self, path: &str, size: u64, resumed_from: u64);
    fn advance(&self, path: &str, bytes: u64);
    fn done(&self, path: &str);
    fn retry(&self, path: &str, why: &str);
}

/// No output at all.
pub struct Silent;

impl FetchProgress for Silent {
    fn begin(&self, _: &str, _: u64, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, _: &str) {}
    fn retry(&self, _: &str, _: &str) {}
}

pub(super) enum Hasher {
    Sha256(sha2::Sha256),
    GitSha1(sha1::Sha1),
}

impl Hasher {
    pub(super) fn new(check: &Check, size: u64) -> Hasher {
        match check {
            Check::Sha256(_) => Hasher::Sha256(sha2::Sha256::new()),
            Check::GitSha1(_) => {
                let mut h = sha1::Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                Hasher::GitSha1(h)
            }
        }
    }

    pub(super) fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::GitSha1(h) => h.update(b),
        }
    }

    pub(super) fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::GitSha1(h) => hex::encode(h.finalize()),
        }
    }
}

pub(super) fn what(check: &Check) -> &'static str {
    match check {
        Check::Sha256(_) => "sha256",
        Check::GitSha1(_) => "git blob id",
    }
}

/// Checks a file already in the cache. LFS blobs are checked by size here; their
/// sha256 is checked against the layer's own digest of every byte it reads.
pub async fn verify_cached(blob: &Path, f: &RemoteFile) -> Result<bool, HubError> {
    let meta = match tokio::fs::metadata(blob).await {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(blob)(e)),
    };
    if !meta.is_file() || meta.len() != f.size {
        return Ok(false);
    }
    if let Check::GitSha1(want) = &f.check {
        let mut h = Hasher::new(&f.check, f.size);
        let mut file = tokio::fs::File::open(blob).await.map_err(io(blob))?;
        hash_into(&mut file, &mut h).await.map_err(io(blob))?;
        return Ok(&h.finish() == want);
    }
    Ok(true)
}

/// Feeds the rest of `file` to `h`; returns the bytes read.
async fn hash_into(file: &mut tokio::fs::File, h: &mut Hasher) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

/// Downloads `f` into `blobs/{etag}` unless a verified copy is there already.
/// Returns true if bytes were downloaded.
pub async fn fetch_file(
    http: &Http,
    cache: &RepoCache,
    model: &ModelName,
    sha: &CommitSha,
    f: &RemoteFile,
    progress: &dyn FetchProgress,
) -> Result<bool, HubError> {
    let etag = f.check.etag();
    let blob = cache.blob(etag);
    if verify_cached(&blob, f).await? {
        return Ok(false);
    }
    let dir = blob.parent().expect("blob has a parent");
    tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    let _lock = cache.lock(etag).await?;
    // Another build may have put it there while this one waited for the lock.
    if verify_cached(&blob, f).await? {
        return Ok(false);
    }
    let partial = cache.incomplete(etag);
    let url = resolve_url(http.endpoint(), model, sha, &f.path);

    for round in 0..2 {
        let got = transfer(http, &url, &partial, f, sha, model, progress).await?;
        let want = f.check.etag();
        if got == want {
            tokio::fs::rename(&partial, &blob)
                .await
                .map_err(io(&blob))?;
            progress.done(&f.path);
            return Ok(true);
        }
        let _ = tokio::fs::remove_file(&partial).await;
        if round == 1 {
            return Err(HubError::Integrity {
                path: f.path.clone(),
                what: what(&f.check),
                expected: want.to_string(),
                got,
            });
        }
        progress.retry(
            &f.path,
            &format!("{} mismatch; downloading again", what(&f.check)),
        );
    }
    unreachable!("the loop returns")
}

/// Fills `partial` up to `f.size` bytes (resuming what is there) and returns its hash.
async fn transfer(
    http: &Http,
    url: &str,
    partial: &Path,
    f: &RemoteFile,
    sha: &CommitSha,
    model: &ModelName,
    progress: &dyn FetchProgress,
) -> Result<String, HubError> {
    // Hash what an earlier run left, so the final check covers every byte.
    let mut hasher = Hasher::new(&f.check, f.size);
    let mut have = 0u64;
    if let Ok(mut existing) = tokio::fs::File::open(partial).await {
        let len = existing.metadata().await.map_err(io(partial))?.len();
        if len <= f.size {
            have = hash_into(&mut existing, &mut hasher)
                .await
                .map_err(io(partial))?;
        }
        if have != len {
            have = 0;
            hasher = Hasher::new(&f.check, f.size);
        }
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .await
        .map_err(io(partial))?;
    if have == 0 {
        file.set_len(0).await.map_err(io(partial))?;
    }
    progress.begin(&f.path, f.size, have);

    let state = tokio::sync::Mutex::new((file, hasher, have));
    http.retrying(url, || async {
        let mut guard = state.lock().await;
        let (file, hasher, have) = &mut *guard;
        if *have == f.size {
            return (Attempt::Done(()), false);
        }
        let fetched = match http.get(url, (*have > 0).then_some(*have)).await {
            Attempt::Done(x) => x,
            Attempt::Retry { why, after } => {
                progress.retry(&f.path, &why);
                return (Attempt::Retry { why, after }, false);
            }
            Attempt::Fail(e) => {
                return (
                    Attempt::Fail(explain(e, http, model, sha, Some(&f.path))),
                    false,
                )
            }
        };
        if let Some(c) = &fetched.repo_commit {
            if c != sha.as_str() {
                return (
                    Attempt::Fail(HubError::CommitMismatch {
                        repo: model.to_string(),
                        expected: sha.to_string(),
                        got: c.clone(),
                    }),
                    false,
                );
            }
        }
        if let (Some(linked), Check::Sha256(want)) = (&fetched.linked_etag, &f.check) {
            let linked = linked.trim_start_matches("W/").trim_matches('"');
            if !linked.eq_ignore_ascii_case(want) {
                return (
                    Attempt::Fail(HubError::BadResponse {
                        url: url.to_string(),
                        msg: format!(
                            "X-Linked-Etag {linked} differs from the listing's sha256 {want}"
                        ),
                    }),
                    false,
                );
            }
        }
        let mut resp = fetched.response;
        let status = resp.status().as_u16();
        if status == 416 {
            // Nothing left to send: only right if we already have it all.
            return (
                Attempt::Fail(HubError::Status {
                    url: url.to_string(),
                    status,
                    code: String::new(),
                    msg: format!("range from byte {have} refused for a {} byte file", f.size),
                }),
                false,
            );
        }
        if status == 200 && *have > 0 {
            // The server ignored the Range: start again from zero.
            *have = 0;
            *hasher = Hasher::new(&f.check, f.size);
            if let Err(e) = file.set_len(0).await {
                return (Attempt::Fail(io(partial)(e)), false);
            }
            progress.begin(&f.path, f.size, 0);
        } else if status == 206 {
            let from = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if from != Some(*have) {
                return (
                    Attempt::Fail(HubError::BadResponse {
                        url: url.to_string(),
                        msg: format!("asked for bytes from {have}, got Content-Range {from:?}"),
                    }),
                    false,
                );
            }
        }
        let start = *have;
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    if *have + bytes.len() as u64 > f.size {
                        drop(guard);
                        let _ = tokio::fs::remove_file(partial).await;
                        return (
                            Attempt::Fail(HubError::Integrity {
                                path: f.path.clone(),
                                what: "size",
                                expected: f.size.to_string(),
                                got: format!("more than {}", f.size),
                            }),
                            true,
                        );
                    }
                    if let Err(e) = file.write_all(&bytes).await {
                        return (Attempt::Fail(io(partial)(e)), true);
                    }
                    hasher.update(&bytes);
                    *have += bytes.len() as u64;
                    progress.advance(&f.path, bytes.len() as u64);
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = file.flush().await;
                    let why = describe(&e);
                    progress.retry(&f.path, &why);
                    return (Attempt::Retry { why, after: None }, *have > start);
                }
            }
        }
        if let Err(e) = file.flush().await {
            return (Attempt::Fail(io(partial)(e)), true);
        }
        if *have < f.size {
            let why = format!("connection ended at byte {have} of {}", f.size);
            progress.retry(&f.path, &why);
            return (Attempt::Retry { why, after: None }, *have > start);
        }
        (Attempt::Done(()), true)
    })
    .await?;
    let (file, hasher, _) = state.into_inner();
    file.sync_all().await.map_err(io(partial))?;
    Ok(hasher.finish())
}
