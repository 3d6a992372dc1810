//! Streaming reads of Hub files: the layer reads a file's bytes as they arrive from the
//! network, not after the whole file is on disk.
//!
//! The stream is given every file in the order the layer will open them. Worker tasks
//! fetch *windows* ahead of the reader (`window` bytes, one Range request each),
//! earliest first: the first `jobs` files that still have bytes to fetch, at most
//! `connections` windows per file, and never more than `buffer` bytes fetched but not
//! yet read, so memory is bounded whatever the file sizes. Windows are assigned in
//! reading order, and the file being read may always have one window in flight even
//! with a full buffer, so the reader never waits behind bytes it will read later.
//!
//! Every byte is hashed as it is read. A file's last bytes are handed out only after its
//! size and sha256 (LFS) or git blob id matched the listing; otherwise the read fails
//! with an `InvalidData` error wrapping [`HubError::Integrity`], the path is recorded
//! ([`StreamStats::failures`]) and opening it again fetches it afresh. So a layer that
//! completes holds only verified files. The one exception is asked for: with
//! `reader_checks_sha256` (and no cache) an LFS file's sha256 is left to the reader,
//! which digests every byte for its own index anyway; the stream checks the size.
//!
//! With `cache`, the bytes are also appended, in order, to `blobs/{etag}.incomplete`,
//! which is renamed to `blobs/{etag}` and linked from the snapshot once verified (one
//! copy of the model, shared with Python tools). What is on disk is always a valid
//! prefix, so a later run reads it back and fetches only the rest; files complete in the
//! cache are read from it. The `.incomplete` file is read and written only while the
//! job holds the blob's lock, taken (without waiting) when the file's first window is
//! assigned or it is opened, and released once the blob is in place or the job ends; a
//! file whose lock another build holds is fetched without writing anything (waiting
//! could deadlock two builds each reading two files). Without `cache`, nothing touches
//! the disk. Every window is retried with capped backoff, honouring `Retry-After`
//! (`http.rs`), and checked against the pinned commit; a dropped connection resumes its
//! own window from the last byte received. No file is ever asked for whole (the Hub's
//! CDN refuses a GET without `Range` of a file above 50 GB).

use super::api::{explain, resolve_url, Check, RemoteFile};
use super::cache::{BlobLock, RepoCache};
use super::check::{what, Hasher};
use super::config::HubConfig;
use super::error::{self, HubError};
use super::http::{describe, Attempt, Http};
use crate::layer::Contents;
use crate::names::{CommitSha, ModelName};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Told about transfers as they happen (progress bars, log lines).
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

/// How a [`HubStream`] fetches.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// Parallel Range requests per file.
    pub connections: usize,
    /// Bytes per Range request.
    pub window: u64,
    /// Bytes fetched ahead of the reader, at most (plus one window for the file being
    /// read).
    pub buffer: u64,
    /// Tee into the Hub cache (and read what is complete there); otherwise nothing is
    /// written to disk.
    pub cache: bool,
    /// The reader checks every LFS file's sha256 against the listing itself (the
    /// layer's digest of each file, `BuildRequest::expected_digests`), so the stream
    /// need not hash those bytes a second time; it still checks their size, and hashes
    /// git-blob-checked files. Ignored with `cache`: a file is verified before it is put
    /// in the cache.
    pub reader_checks_sha256: bool,
}

pub const DEFAULT_WINDOW: u64 = 8 << 20;
pub const DEFAULT_BUFFER: u64 = 64 << 20;

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            connections: 4,
            window: DEFAULT_WINDOW,
            buffer: DEFAULT_BUFFER,
            cache: true,
            reader_checks_sha256: false,
        }
    }
}

/// What a stream did so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Bytes received from the network (windows delivered).
    pub downloaded_bytes: u64,
    /// Bytes read back from the cache (complete blobs and resumed prefixes).
    pub cached_bytes: u64,
    /// Paths whose bytes did not match the listing, in the order they were caught.
    pub failures: Vec<String>,
    /// Files verified and handed out in full.
    pub verified_files: u64,
}

/// One file to read: where its bytes come from and what has been fetched of it.
struct Job {
    file: RemoteFile,
    url: String,
    /// The URL the Hub redirected an earlier window to (the LFS CDN): later windows go
    /// there directly, so a big file costs one `resolve` request, not one per window.
    direct: Option<String>,
    /// Bytes already on disk (`path`, `len`): a complete cached blob or the prefix of an
    /// interrupted download. Windows start after it.
    prefix: Option<(PathBuf, u64)>,
    /// Append what is fetched to `blobs/{etag}.incomplete`.
    tee: bool,
    /// `prefix` and `tee` are still to be decided under the blob's lock ([`Shared::claim`]).
    claim: bool,
    /// The blob's lock while this job may write its `.incomplete` file.
    lock: Option<BlobLock>,
    /// Next byte without a window.
    next: u64,
    in_flight: usize,
    /// Fetched windows by offset, not yet read.
    ready: BTreeMap<u64, Vec<u8>>,
    /// The first window that failed for good.
    error: Option<HubError>,
    opened: bool,
    /// Shares its blob with an earlier job that tees it into the cache: fetched only
    /// when opened, and then from the cache if the earlier one completed it.
    deferred: bool,
    begun: bool,
}

struct State {
    jobs: BTreeMap<u64, Job>,
    /// Jobs with windows left to assign, in reading order.
    order: VecDeque<u64>,
    next_id: u64,
    /// Bytes in flight or fetched and not yet read.
    buffered: u64,
    closed: bool,
    stats: StreamStats,
}

struct Shared {
    state: Mutex<State>,
    /// Readers wait here for their next window.
    arrived: Condvar,
    /// Workers wait here for something to fetch.
    work: tokio::sync::Notify,
    http: Http,
    model: ModelName,
    sha: CommitSha,
    cache: RepoCache,
    opts: StreamOptions,
    jobs: usize,
    /// Every file of the stream by path, for a second open (a re-fetch).
    files: BTreeMap<String, RemoteFile>,
    progress: Arc<dyn FetchProgress>,
    cancel: Option<Arc<AtomicBool>>,
}

/// A window to fetch.
struct Task {
    id: u64,
    offset: u64,
    len: u64,
    file: RemoteFile,
    url: String,
    direct: Option<String>,
}

/// Hub files read as they arrive; see the module documentation.
pub struct HubStream {
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl HubStream {
    /// Starts fetching `files` (the order the layer will open them; empty files are
    /// never opened and never fetched, only checked) of `model` at `sha`.
    pub fn start(
        model: &ModelName,
        sha: &CommitSha,
        cfg: &HubConfig,
        files: Vec<RemoteFile>,
        opts: StreamOptions,
        progress: Arc<dyn FetchProgress>,
    ) -> Result<HubStream, HubError> {
        let opts = StreamOptions {
            connections: opts.connections.max(1),
            window: opts.window.max(1),
            ..opts
        };
        let cache = RepoCache::new(&cfg.cache_dir, model);
        // Empty files are never fetched (their bytes are known), but checked against the
        // listing all the same and, with the cache, put there as a download would.
        for f in files.iter().filter(|f| f.size == 0) {
            let got = Hasher::new(&f.check, 0).finish();
            if got != f.check.etag() {
                return Err(HubError::Integrity {
                    path: f.path.clone(),
                    what: what(&f.check),
                    expected: f.check.etag().to_string(),
                    got,
                });
            }
            if opts.cache {
                cache
                    .put_empty(sha, &f.path, &got)
                    .map_err(error::io(cache.blob(&got)))?;
            }
        }
        let http = Http::new(cfg)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hub-stream")
            .enable_all()
            .build()
            .map_err(|e| HubError::Io {
                path: cfg.cache_dir.clone(),
                source: e,
            })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: BTreeMap::new(),
                order: VecDeque::new(),
                next_id: 0,
                buffered: 0,
                closed: false,
                stats: StreamStats::default(),
            }),
            arrived: Condvar::new(),
            work: tokio::sync::Notify::new(),
            http,
            model: model.clone(),
            sha: sha.clone(),
            cache,
            jobs: cfg.jobs.max(1),
            files: files.iter().map(|f| (f.path.clone(), f.clone())).collect(),
            opts,
            progress,
            cancel: cfg.cancel.clone(),
        });
        {
            let mut st = shared.lock();
            let mut teed: std::collections::BTreeSet<String> = Default::default();
            for f in files.into_iter().filter(|f| f.size > 0) {
                let deferred = shared.opts.cache && teed.contains(f.check.etag());
                let job = shared.job(f, deferred);
                // A job to be claimed will tee if it gets the lock.
                if job.claim {
                    teed.insert(job.file.check.etag().to_string());
                }
                st.add(job, false);
            }
        }
        let workers = (shared.jobs * shared.opts.connections).clamp(1, 64);
        for _ in 0..workers {
            rt.spawn(worker(shared.clone()));
        }
        Ok(HubStream {
            shared,
            rt: Some(rt),
        })
    }

    /// What the stream did so far.
    pub fn stats(&self) -> StreamStats {
        self.shared.lock().stats.clone()
    }
}

impl Drop for HubStream {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_waiters();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Contents for HubStream {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>> {
        let sh = &self.shared;
        let mut st = sh.lock();
        let found = st
            .jobs
            .iter()
            .find(|(_, j)| j.file.path == path && !j.opened)
            .map(|(id, _)| *id);
        let id = match found {
            Some(id) => {
                let job = st.jobs.get_mut(&id).expect("found above");
                if job.deferred {
                    // The blob's first path has been read by now: use what it left.
                    job.deferred = false;
                    match sh.complete_blob(&job.file) {
                        Some(blob) => job.prefix = Some((blob, job.file.size)),
                        None => job.next = 0,
                    }
                }
                id
            }
            None => {
                // A second read of the same path: fetch it afresh (after a mismatch).
                let f = sh.files.get(path).cloned().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("{path} is not listed"))
                })?;
                let job = sh.job(f, false);
                st.add(job, true)
            }
        };
        let job = st.jobs.get_mut(&id).expect("added above");
        sh.claim(job);
        job.opened = true;
        if job.next < job.file.size && !st.order.contains(&id) {
            st.order.push_front(id);
        }
        let job = &st.jobs[&id];
        let (file, prefix, tee) = (job.file.clone(), job.prefix.clone(), job.tee);
        drop(st);
        sh.work.notify_waiters();
        let left_to_reader = sh.opts.reader_checks_sha256
            && !sh.opts.cache
            && matches!(file.check, Check::Sha256(_));
        let mut reader = StreamReader {
            shared: sh.clone(),
            id,
            hasher: (!left_to_reader).then(|| Hasher::new(&file.check, file.size)),
            file,
            pos: 0,
            prefix: None,
            read_blob: None,
            tee: None,
            tee_from: 0,
            cur: Vec::new(),
            cur_at: 0,
            finished: false,
        };
        if let Some((p, len)) = prefix {
            reader.prefix = Some((std::fs::File::open(&p)?, len));
            reader.tee_from = len;
            if len == reader.file.size {
                reader.read_blob = Some(p);
            }
        }
        if tee {
            let partial = sh.cache.incomplete(reader.file.check.etag());
            if let Some(dir) = partial.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&partial)?;
            // Keep exactly the prefix the job was planned with.
            f.set_len(reader.tee_from)?;
            reader.tee = Some((f, partial));
        }
        Ok(Box::new(reader))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Decides, once, where a file to be cached starts: read from its blob if another
    /// build completed it, else from its `.incomplete` prefix and teed into it if this
    /// job gets the blob's lock, else fetched whole without writing.
    fn claim(&self, job: &mut Job) {
        if !std::mem::take(&mut job.claim) {
            return;
        }
        let complete = |job: &mut Job| match self.complete_blob(&job.file) {
            Some(blob) => {
                job.prefix = Some((blob, job.file.size));
                job.next = job.file.size;
                true
            }
            None => false,
        };
        if complete(job) {
            return;
        }
        let etag = job.file.check.etag().to_string();
        let Ok(Some(lock)) = self.cache.try_lock(&etag) else {
            return;
        };
        // Another build may have finished it before letting go of the lock.
        if complete(job) {
            return;
        }
        job.lock = Some(lock);
        job.tee = true;
        let partial = self.cache.incomplete(&etag);
        match std::fs::metadata(&partial) {
            Ok(m) if m.is_file() && m.len() > 0 && m.len() < job.file.size => {
                job.next = m.len();
                job.prefix = Some((partial, m.len()));
            }
            _ => {}
        }
    }

    /// The cache's blob of `f` if it is there with the listed size (its hash is checked
    /// as it is read).
    fn complete_blob(&self, f: &RemoteFile) -> Option<PathBuf> {
        if !self.opts.cache {
            return None;
        }
        let blob = self.cache.blob(f.check.etag());
        let meta = std::fs::metadata(&blob).ok()?;
        (meta.is_file() && meta.len() == f.size).then_some(blob)
    }

    fn job(&self, file: RemoteFile, deferred: bool) -> Job {
        let url = resolve_url(self.http.endpoint(), &self.model, &self.sha, &file.path);
        let mut job = Job {
            url,
            direct: None,
            prefix: None,
            tee: false,
            claim: false,
            lock: None,
            next: 0,
            in_flight: 0,
            ready: BTreeMap::new(),
            error: None,
            opened: false,
            deferred,
            begun: false,
            file,
        };
        if deferred {
            job.next = job.file.size;
            return job;
        }
        if let Some(blob) = self.complete_blob(&job.file) {
            job.next = job.file.size;
            job.prefix = Some((blob, job.file.size));
        } else if self.opts.cache {
            job.claim = true;
        }
        job
    }

    /// Takes the window the reader of `id` needs at `pos`, waiting for it.
    fn take_window(&self, id: u64, pos: u64) -> io::Result<Vec<u8>> {
        let mut st = self.lock();
        loop {
            if self.cancelled() {
                // Not `ErrorKind::Interrupted`: `read_to_end` and `read_exact` retry
                // that kind, and a cancelled stream would answer it forever.
                return Err(io::Error::other(HubError::Interrupted));
            }
            let job = st
                .jobs
                .get_mut(&id)
                .ok_or_else(|| io::Error::other("the stream was closed"))?;
            if let Some(w) = job.ready.remove(&pos) {
                st.buffered -= w.len() as u64;
                drop(st);
                self.work.notify_waiters();
                return Ok(w);
            }
            if let Some(e) = job.error.take() {
                st.remove(id);
                drop(st);
                self.work.notify_waiters();
                return Err(io::Error::other(e));
            }
            st = self
                .arrived
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn deliver(&self, t: &Task, result: Result<(Vec<u8>, Option<String>), HubError>) {
        let mut st = self.lock();
        let st = &mut *st;
        match st.jobs.get_mut(&t.id) {
            Some(job) => {
                job.in_flight -= 1;
                match result {
                    Ok((bytes, final_url)) => {
                        st.stats.downloaded_bytes += bytes.len() as u64;
                        if job.direct.is_none() && final_url.as_deref() != Some(&job.url) {
                            job.direct = final_url;
                        }
                        job.ready.insert(t.offset, bytes);
                    }
                    Err(e) => {
                        st.buffered -= t.len;
                        job.error.get_or_insert(e);
                    }
                }
            }
            None => st.buffered -= t.len,
        }
        self.arrived.notify_all();
        self.work.notify_waiters();
    }
}

impl State {
    fn add(&mut self, job: Job, front: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let pending = job.next < job.file.size && !job.deferred;
        self.jobs.insert(id, job);
        if pending {
            if front {
                self.order.push_front(id);
            } else {
                self.order.push_back(id);
            }
        }
        id
    }

    /// Forgets a job whose reader is done: what it had fetched is no longer buffered.
    fn remove(&mut self, id: u64) {
        if let Some(job) = self.jobs.remove(&id) {
            self.buffered -= job.ready.values().map(|w| w.len() as u64).sum::<u64>();
        }
        self.order.retain(|&o| o != id);
    }

    /// The next window to fetch: first for a file being read, then for the first
    /// `jobs` files with bytes left, within the buffer.
    fn assign(&mut self, sh: &Shared) -> Option<Task> {
        self.order.retain(|id| {
            self.jobs
                .get(id)
                .is_some_and(|j| j.next < j.file.size && !j.deferred)
        });
        let pick = |st: &State, id: u64| -> Option<u64> {
            let job = &st.jobs[&id];
            if job.error.is_some()
                || job.in_flight >= sh.opts.connections
                || job.next >= job.file.size
            {
                return None;
            }
            let len = sh.opts.window.min(job.file.size - job.next);
            let waited_for = job.opened && job.in_flight == 0 && job.ready.is_empty();
            (st.buffered + len <= sh.opts.buffer || waited_for).then_some(len)
        };
        let opened = self.order.iter().copied().filter(|id| self.jobs[id].opened);
        let ahead = self.order.iter().copied().take(sh.jobs);
        let candidates: Vec<u64> = opened.chain(ahead).collect();
        for id in candidates {
            sh.claim(self.jobs.get_mut(&id).expect("in order"));
            let Some(len) = pick(self, id) else { continue };
            let job = self.jobs.get_mut(&id).expect("in order");
            let t = Task {
                id,
                offset: job.next,
                len,
                file: job.file.clone(),
                url: job.url.clone(),
                direct: job.direct.clone(),
            };
            if !job.begun {
                job.begun = true;
                sh.progress.begin(&job.file.path, job.file.size, job.next);
            }
            job.next += len;
            job.in_flight += 1;
            self.buffered += len;
            return Some(t);
        }
        None
    }
}

async fn worker(sh: Arc<Shared>) {
    loop {
        let notified = sh.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let task = {
            let mut st = sh.lock();
            if st.closed || sh.cancelled() {
                st.closed = true;
                drop(st);
                sh.arrived.notify_all();
                return;
            }
            st.assign(&sh)
        };
        match task {
            Some(t) => {
                let r = fetch_window(&sh, &t).await;
                sh.deliver(&t, r);
            }
            None => {
                // The timeout only bounds how late a cancel is seen.
                let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
            }
        }
    }
}

struct Window {
    buf: Vec<u8>,
    direct: Option<String>,
    final_url: Option<String>,
}

/// Parses `bytes a-b/total` into (a, total); `total` is `None` for `*`.
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes ")?;
    let (range, total) = v.split_once('/')?;
    let first = range.split('-').next()?.trim().parse().ok()?;
    Some((first, total.trim().parse().ok()))
}

/// Fetches one window, resuming it after a dropped connection.
async fn fetch_window(sh: &Shared, t: &Task) -> Result<(Vec<u8>, Option<String>), HubError> {
    let (http, f) = (&sh.http, &t.file);
    let last = t.offset + t.len - 1;
    let state = tokio::sync::Mutex::new(Window {
        buf: Vec::with_capacity(t.len as usize),
        direct: t.direct.clone(),
        final_url: None,
    });
    http.retrying(&t.url, || async {
        let mut guard = state.lock().await;
        let w = &mut *guard;
        let have = w.buf.len() as u64;
        if have == t.len {
            return (Attempt::Done(()), false);
        }
        let from = t.offset + have;
        let url = w.direct.clone().unwrap_or_else(|| t.url.clone());
        let fetched = match http.get_range(&url, from, last).await {
            Attempt::Done(x) => x,
            Attempt::Retry { why, after } => {
                sh.progress.retry(&f.path, &why);
                return (Attempt::Retry { why, after }, false);
            }
            Attempt::Fail(e) => {
                if w.direct.take().is_some() {
                    // A signed CDN URL may have expired: ask the Hub again.
                    let why = format!("{e}; resolving {} again", f.path);
                    return (Attempt::Retry { why, after: None }, false);
                }
                let e = explain(e, http, &sh.model, &sh.sha, Some(&f.path));
                return (Attempt::Fail(e), false);
            }
        };
        if let Some(c) = &fetched.repo_commit {
            if c != sh.sha.as_str() {
                let e = HubError::CommitMismatch {
                    repo: sh.model.to_string(),
                    expected: sh.sha.to_string(),
                    got: c.clone(),
                };
                return (Attempt::Fail(e), false);
            }
        }
        if let (Some(linked), Check::Sha256(want)) = (&fetched.linked_etag, &f.check) {
            let linked = linked.trim_start_matches("W/").trim_matches('"');
            if !linked.eq_ignore_ascii_case(want) {
                let e = HubError::BadResponse {
                    url: url.clone(),
                    msg: format!("X-Linked-Etag {linked} differs from the listing's sha256 {want}"),
                };
                return (Attempt::Fail(e), false);
            }
        }
        let mut resp = fetched.response;
        let status = resp.status().as_u16();
        let too_long = |got: u64| HubError::Integrity {
            path: f.path.clone(),
            what: "size",
            expected: f.size.to_string(),
            got: got.to_string(),
        };
        // Bytes of the body before `from` (a server that ignored the Range).
        let mut skip = 0u64;
        match status {
            206 => {
                let cr = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range);
                match cr {
                    Some((first, _)) if first != from => {
                        let e = HubError::BadResponse {
                            url,
                            msg: format!("asked for bytes from {from}, got them from {first}"),
                        };
                        return (Attempt::Fail(e), false);
                    }
                    Some((_, Some(total))) if total > f.size => {
                        return (Attempt::Fail(too_long(total)), false)
                    }
                    Some((_, Some(total))) if total < f.size => {
                        let why = format!("the server has {total} bytes of a {} byte file", f.size);
                        sh.progress.retry(&f.path, &why);
                        return (Attempt::Retry { why, after: None }, false);
                    }
                    Some(_) => {}
                    None => {
                        let e = HubError::BadResponse {
                            url,
                            msg: "a partial answer without a valid Content-Range".into(),
                        };
                        return (Attempt::Fail(e), false);
                    }
                }
            }
            200 => {
                match resp.content_length() {
                    Some(n) if n > f.size => return (Attempt::Fail(too_long(n)), false),
                    Some(n) if n < f.size => {
                        let why = format!("the server sent {n} bytes of a {} byte file", f.size);
                        sh.progress.retry(&f.path, &why);
                        return (Attempt::Retry { why, after: None }, false);
                    }
                    _ => {}
                }
                skip = from;
            }
            _ => {
                let e = HubError::Status {
                    url,
                    status,
                    code: String::new(),
                    msg: format!("unexpected answer to a request for bytes {from}-{last}"),
                };
                return (Attempt::Fail(e), false);
            }
        }
        w.final_url = Some(resp.url().to_string());
        let start = have;
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    let mut b = &bytes[..];
                    let k = skip.min(b.len() as u64) as usize;
                    b = &b[k..];
                    skip -= k as u64;
                    let room = (t.len - w.buf.len() as u64) as usize;
                    if b.len() > room {
                        if status == 206 {
                            let e = HubError::BadResponse {
                                url,
                                msg: format!("more than the {} bytes asked for", t.len),
                            };
                            return (Attempt::Fail(e), true);
                        }
                        b = &b[..room];
                    }
                    w.buf.extend_from_slice(b);
                    sh.progress.advance(&f.path, b.len() as u64);
                    if w.buf.len() as u64 == t.len && status == 200 {
                        break; // the rest of a whole-file answer is other windows'
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let why = describe(&e);
                    sh.progress.retry(&f.path, &why);
                    let moved = w.buf.len() as u64 > start;
                    return (Attempt::Retry { why, after: None }, moved);
                }
            }
        }
        if (w.buf.len() as u64) < t.len {
            let why = format!(
                "connection ended at byte {} of {}",
                t.offset + w.buf.len() as u64,
                f.size
            );
            sh.progress.retry(&f.path, &why);
            let moved = w.buf.len() as u64 > start;
            return (Attempt::Retry { why, after: None }, moved);
        }
        (Attempt::Done(()), true)
    })
    .await?;
    let w = state.into_inner();
    Ok((w.buf, w.final_url))
}

/// One file's bytes, in order, verified before the last of them is handed out.
struct StreamReader {
    shared: Arc<Shared>,
    id: u64,
    file: RemoteFile,
    pos: u64,
    /// Bytes `0..len` come from this file on disk.
    prefix: Option<(std::fs::File, u64)>,
    /// The complete cached blob `prefix` is (removed if it proves corrupt).
    read_blob: Option<PathBuf>,
    /// `.incomplete` file the bytes from `tee_from` on are appended to.
    tee: Option<(std::fs::File, PathBuf)>,
    tee_from: u64,
    /// `None`: the reader checks the sha256 (`StreamOptions::reader_checks_sha256`).
    hasher: Option<Hasher>,
    cur: Vec<u8>,
    cur_at: usize,
    finished: bool,
}

const PREFIX_READ: u64 = 1 << 20;

impl StreamReader {
    fn refill(&mut self) -> io::Result<()> {
        self.cur_at = 0;
        if let Some((f, len)) = &mut self.prefix {
            if self.pos < *len {
                let n = PREFIX_READ.min(*len - self.pos) as usize;
                self.cur.resize(n, 0);
                f.read_exact(&mut self.cur)?;
                self.shared.lock().stats.cached_bytes += n as u64;
                return Ok(());
            }
        }
        self.cur = self.shared.take_window(self.id, self.pos)?;
        if self.cur.is_empty() {
            return Err(io::Error::other("an empty window"));
        }
        Ok(())
    }

    /// Checks the whole file against the listing; puts a verified download in place.
    fn finish(&mut self) -> io::Result<()> {
        self.finished = true;
        let sh = self.shared.clone();
        let f = &self.file;
        let want = f.check.etag();
        let got = self.hasher.take().map(Hasher::finish);
        if let Some(got) = got.filter(|got| got != want) {
            if let Some((file, partial)) = self.tee.take() {
                drop(file);
                let _ = std::fs::remove_file(partial);
            } else if let Some(blob) = self.read_blob.take() {
                // A corrupt cached copy: the next open downloads it. (Only the one read:
                // a blob another build completed meanwhile is not this reader's to judge.)
                let _ = std::fs::remove_file(blob);
            }
            let mut st = sh.lock();
            st.stats.failures.push(f.path.clone());
            st.remove(self.id);
            drop(st);
            sh.progress
                .retry(&f.path, &format!("{} mismatch", what(&f.check)));
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                HubError::Integrity {
                    path: f.path.clone(),
                    what: what(&f.check),
                    expected: want.to_string(),
                    got,
                },
            ));
        }
        if let Some((file, partial)) = self.tee.take() {
            file.sync_all()?;
            drop(file);
            std::fs::rename(&partial, sh.cache.blob(want))?;
        }
        // Not while another build is still writing the blob (this one fetched it
        // without): that build links it once it is there, and a link never dangles.
        if sh.complete_blob(f).is_some() {
            sh.cache.link(&sh.sha, &f.path, want)?;
        }
        let mut st = sh.lock();
        st.stats.verified_files += 1;
        st.remove(self.id);
        drop(st);
        sh.work.notify_waiters();
        sh.progress.done(&f.path);
        Ok(())
    }
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos == self.file.size {
            return Ok(0);
        }
        if self.finished {
            return Err(io::Error::other("read after a failed check"));
        }
        if self.cur_at == self.cur.len() {
            self.refill()?;
        }
        let n = out
            .len()
            .min(self.cur.len() - self.cur_at)
            .min((self.file.size - self.pos) as usize);
        let chunk = &self.cur[self.cur_at..self.cur_at + n];
        if let Some(h) = &mut self.hasher {
            h.update(chunk);
        }
        if let Some((file, _)) = &mut self.tee {
            // Prefix bytes are already in the file.
            let skip = self.tee_from.saturating_sub(self.pos).min(n as u64) as usize;
            file.write_all(&chunk[skip..])?;
        }
        out[..n].copy_from_slice(chunk);
        self.cur_at += n;
        if self.pos + n as u64 == self.file.size {
            self.finish()?;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        if !self.finished {
            let sh = &self.shared;
            sh.lock().remove(self.id);
            sh.work.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(content_range("bytes 0-9/10"), Some((0, Some(10))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("bytes */10"), None);
        assert_eq!(content_range("0-9/10"), None);
    }
}
