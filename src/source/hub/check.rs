//! Checking bytes against the Hub's listing: an LFS file by its sha256, any other by
//! its git blob id (`sha1("blob {size}\0" + bytes)`), and a file already in the cache.

use super::api::{Check, RemoteFile};
use super::error::{io, HubError};
use sha1::Digest as _;
use std::path::Path;
use tokio::io::AsyncReadExt;

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
pub(super) async fn verify_cached(blob: &Path, f: &RemoteFile) -> Result<bool, HubError> {
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
