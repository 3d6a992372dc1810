//! What can go wrong talking to the Hub, one variant per thing a user must do differently.
//! Every URL and server text is shown through [`crate::redact::text`]: a signed CDN URL's
//! query or a user and password never reach a message.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("model {repo} not found on {}{hint}", redact(endpoint))]
    RepoNotFound {
        repo: String,
        endpoint: String,
        hint: &'static str,
    },
    #[error(
        "model {repo} is gated: accept its terms at {}/{repo}{hint}",
        redact(endpoint)
    )]
    Gated {
        repo: String,
        endpoint: String,
        hint: &'static str,
    },
    #[error("commit {rev} not found in {repo} (check --sha)")]
    RevisionNotFound { repo: String, rev: String },
    #[error("{path} not found in {repo} at {rev}")]
    EntryNotFound {
        repo: String,
        rev: String,
        path: String,
    },
    #[error(
        "the Hub rejected the token from HF_TOKEN or the token file ({}); fix or unset it",
        redact(msg)
    )]
    BadToken { msg: String },
    #[error(
        "{repo}: the Hub served commit {got}, not the pinned {expected}; refusing to mix revisions"
    )]
    CommitMismatch {
        repo: String,
        expected: String,
        got: String,
    },
    #[error("{repo} lists unsafe file names, refusing to download anything: {names}")]
    UnsafeNames { repo: String, names: String },
    /// `a` and `a/b` in one listing: no file system holds both.
    #[error("{repo} lists {file} both as a file and as the directory of {inside}; refusing to download anything")]
    FileAndDirectory {
        repo: String,
        file: String,
        inside: String,
    },
    #[error("{path}: {what} mismatch (expected {expected}, got {got}); the bad data was deleted")]
    Integrity {
        path: String,
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("{}: HTTP {status}{}{}", redact(url), if code.is_empty() { String::new() } else { format!(" [{code}]") }, if msg.is_empty() { String::new() } else { format!(": {}", redact(msg)) })]
    Status {
        url: String,
        status: u16,
        code: String,
        msg: String,
    },
    #[error("{}: {}", redact(url), redact(msg))]
    Network { url: String, msg: String },
    #[error("{}: too many redirects (more than {max})", redact(url))]
    TooManyRedirects { url: String, max: usize },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{repo} at {rev} is not in the cache {} and HF_HUB_OFFLINE is set; run once online", dir.display())]
    NotCached {
        repo: String,
        rev: String,
        dir: PathBuf,
    },
    #[error("{repo} at {rev} has no file listing in the cache ({}), so HF_HUB_OFFLINE cannot tell that every file is there; run once online (depotai keeps the listing)", file.display())]
    NoListing {
        repo: String,
        rev: String,
        file: PathBuf,
    },
    #[error("{path} of {repo} at {rev} is not in the cache {}{} and HF_HUB_OFFLINE is set; run once online to download {}", dir.display(), if *more == 0 { String::new() } else { format!(" (nor {more} more file{})", if *more == 1 { "" } else { "s" }) }, if *more == 0 { "it" } else { "them" })]
    NotCachedFile {
        repo: String,
        rev: String,
        /// The first missing file, in path order.
        path: String,
        more: usize,
        dir: PathBuf,
    },
    /// A cache entry that is there but is not the listed file.
    #[error("{}: {why}; HF_HUB_OFFLINE is set, so run once online to fetch the file again", path.display())]
    CacheEntry { path: PathBuf, why: String },
    #[error("{}: unreadable kept listing ({msg}); delete it and run once online", path.display())]
    KeptListing { path: PathBuf, msg: String },
    #[error("no files of {repo} match the --include/--exclude patterns")]
    NoFiles { repo: String },
    #[error("invalid glob {pattern:?}: {msg}")]
    Glob { pattern: String, msg: String },
    #[error("interrupted; partial downloads are kept and resumed by the next run")]
    Interrupted,
    /// The check before a rebuild ([`super::check`]) found the Hub unusable.
    #[error("cannot read from the Hub at {}: {cause}", redact(endpoint))]
    Unavailable { endpoint: String, cause: HubRefusal },
    #[error(
        "the Hub's answer for {} could not be read: {}",
        redact(url),
        redact(msg)
    )]
    BadResponse { url: String, msg: String },
}

/// Why the Hub cannot serve a rebuild ([`HubError::Unavailable`]), each with its fix.
#[derive(Debug, thiserror::Error)]
pub enum HubRefusal {
    #[error("connection refused (nothing listens there); start the Hub or correct HF_ENDPOINT")]
    ConnectionRefused,
    #[error(
        "the host name {} does not resolve (DNS); check HF_ENDPOINT",
        redact(host)
    )]
    Dns { host: String },
    #[error("the TLS handshake failed ({}); check HF_ENDPOINT (http:// for a plain-HTTP mirror) and the Hub's certificate", redact(detail))]
    Tls { detail: String },
    #[error(
        "no answer in time ({}); check HF_ENDPOINT and the network",
        redact(detail)
    )]
    Timeout { detail: String },
    #[error("{}; check HF_ENDPOINT and the network", redact(detail))]
    Transport { detail: String },
    #[error("{}; the Hub is failing, try again later", redact(why))]
    Unwell { why: String },
    #[error("the token from HF_TOKEN or the token file is refused (HTTP 401); fix or unset it")]
    BadToken,
    #[error("model {repo} not found (HTTP {status}){hint}")]
    NoRepo {
        repo: String,
        status: u16,
        hint: &'static str,
    },
    #[error("commit {rev} not found in {repo} (HTTP 404); check the image's revision or --sha")]
    NoCommit { repo: String, rev: String },
    #[error("asked for commit {expected} of {repo}, it answered for {got}; check HF_ENDPOINT")]
    OtherCommit {
        repo: String,
        expected: String,
        got: String,
    },
    /// Any other answer, as the Hub client explains it.
    #[error(transparent)]
    Answer(Box<HubError>),
}

fn redact(s: &str) -> String {
    crate::redact::text(s)
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HubError {
    let path = path.into();
    move |source| HubError::Io { path, source }
}
