//! The one upload engine: every blob and document depotai puts into a registry goes
//! through an [`Uploader`], whether a layer of the streamed build as it is produced
//! ([`BlobSink`]), a blob of a layout that `push` sends ([`Uploader::upload_file`]) or a
//! document from memory ([`Uploader::publish`]).
//!
//! A [`BlobSink`] is a `Write` for the layer writer: bytes are cut into chunks of
//! `chunk_size` and handed (through a queue of one chunk) to an upload task that sends
//! each as a `PATCH` of the upload session while the next chunk is being produced; the
//! closing `PUT ?digest=` carries the digest, known only once the last byte is written
//! (computed by the task, or given by a writer that digests its bytes anyway, as a layer
//! does). Memory is about three chunks whatever the blob's size. A layout's file goes
//! through the same task in `PATCH`es of `chunk_size` whose bodies are read from the
//! file as they are sent, so a chunk of any size costs a few MiB of memory; a file of
//! at most one chunk goes in one `PUT` instead. Its digest is known, and the registry
//! checks the bytes against it at the closing `PUT`. A blob the registry has (`HEAD`)
//! is not sent, and with a mount source one it can mount
//! (`POST …/blobs/uploads/?mount=…&from=…`) is not either.
//!
//! A `PATCH` that fails is not blindly resent: the registry is asked how much it holds
//! (`GET` on the upload URL, `Range: 0-N`) and the upload goes on from there. With a
//! state directory and a key (what the blob is made of: the bytes are reproducible, so
//! the same key gives the same bytes; a layout's blob is keyed by its digest), the
//! upload URL, the offset acknowledged and a CRC-32 of the bytes up to it are remembered
//! after every chunk. A rerun of a killed push regenerates (or re-reads) the blob, sends
//! nothing the registry already holds for that upload, and checks a regenerated prefix
//! against the remembered CRC; the registry checks the whole by the final digest. If
//! either check fails the blob is started over ([`UploadError::Stale`]: a layer is
//! produced again, a file is simply sent again). A finished layer's digest is remembered
//! too, so a later run can skip producing it ([`Uploader::known`]).
//!
//! [`Uploader::publish`] puts configs, then the platform manifests by digest, then the
//! index under the tag, last: a tag never points at an incomplete image. Referrers
//! follow, listed under the fallback tag (`sha256-<hex>`) on registries without the
//! referrers API.

use super::client::{header, Client};
use super::{parse_manifest_document, RegistryError};
use crate::digest::{Digest, Hasher};
use crate::image::media::{OCI_INDEX, OCI_MANIFEST};
use crate::limits;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// Default PATCH size of a streamed blob: small enough that the queue (one chunk being
/// filled, one waiting, one being sent) stays at 24 MiB per layer, with two layers made
/// at once; 16 MiB chunks cost 50 MiB more peak memory and were no faster.
pub const DEFAULT_STREAM_CHUNK: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The upload left by an earlier run holds other bytes than the ones regenerated.
    #[error("the registry's unfinished upload of {key} holds other bytes than this build makes; it must be uploaded again from the start")]
    Stale { key: String },
    /// The producer stopped (or failed) before the blob was complete: nothing was
    /// committed.
    #[error("the blob was not finished")]
    Unfinished,
}

/// A blob in the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub digest: Digest,
    pub size: u64,
    /// Bytes sent in this run.
    pub sent: u64,
    /// Bytes not sent because the registry held them from an earlier run.
    pub resumed_from: u64,
}

/// How a blob got into the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BlobAction {
    /// The registry had it.
    Exists,
    /// Mounted from another repository of the registry.
    Mounted,
    Uploaded,
}

/// What an upload tells as it goes.
#[derive(Debug)]
pub enum UploadEvent<'a> {
    /// The registry took this many more bytes of the blob.
    Sent(u64),
    /// A transfer failed (`why`) and goes on from the registry's `offset`.
    Resumed { offset: u64, why: &'a str },
    /// An upload an earlier run left goes on at `offset`: those bytes are not sent.
    Continued { offset: u64 },
}

/// A referrer of an image as [`Uploader::publish`] put it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ReferrerReport {
    pub digest: String,
    pub artifact_type: String,
    /// What it refers to: the image index, or (on a registry that refused a referrer
    /// of an index, as ECR does with 405) one platform manifest: one report each.
    pub subject: String,
    /// `index` or `manifest`.
    pub subject_kind: &'static str,
    /// Its own tag, if it has one (the ModelPack twin's `<tag>-modelpack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The registry has the referrers API (it answered with `OCI-Subject`); otherwise
    /// the referrer is listed under the fallback tag.
    pub referrers_api: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_tag: Option<String>,
}

/// The tag the OCI 1.1 distribution spec uses, on registries without the referrers
/// API, for the index of an image's referrers: `sha256-<hex>`.
pub fn referrers_fallback_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// Uploads to one repository of a registry.
#[derive(Clone)]
pub struct Uploader {
    client: Arc<Client>,
    handle: Handle,
    chunk_size: usize,
    state_dir: Option<PathBuf>,
    /// A repository of the same registry to mount blobs from.
    mount_from: Option<String>,
}

/// What is remembered of an unfinished upload.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    location: String,
    offset: u64,
    /// CRC-32 of the blob's first `offset` bytes: an early check that a rerun makes the
    /// same bytes (the registry checks the whole blob's sha256 at the end anyway). None
    /// for a file, whose bytes the upload never holds.
    #[serde(default)]
    prefix_crc32: Option<u32>,
}

/// What is remembered of a finished blob.
#[derive(serde::Serialize, serde::Deserialize)]
struct Done {
    digest: String,
    size: u64,
}

/// One blob for the upload task ([`Uploader::stream`]).
struct Spec<'a> {
    /// Names the upload across runs (`None`: no memory).
    key: Option<&'a str>,
    /// Remember the finished blob under `key` (a layer: its digest is not known before
    /// it is made; a blob named by its digest needs no such memory).
    remember_done: bool,
    /// Digest the bytes as they come (else the writer gives the digest).
    hashing: bool,
    /// An upload session already open (by a mount that did not take).
    session: Option<Url>,
}

/// Where the upload task gets the blob's bytes.
enum Feed {
    /// Chunks a writer hands over ([`BlobSink`]).
    Writer(mpsc::Receiver<Msg>),
    /// A layout's file of `size` bytes whose digest is known: sent in ranges read as
    /// they go out.
    File {
        file: Arc<File>,
        size: u64,
        digest: Digest,
    },
}

/// The bytes of one `PATCH`: a chunk in memory, or a file (read from where the
/// transfer starts, again after a failed one).
enum Part<'a> {
    Memory(bytes::Bytes),
    File(&'a Arc<File>),
}

/// Events nobody listens to.
fn unheard(_: UploadEvent<'_>) {}

impl Uploader {
    /// `handle` runs the uploads; the sinks may be written from any other thread.
    pub fn new(
        client: Arc<Client>,
        handle: Handle,
        chunk_size: u64,
        state_dir: Option<PathBuf>,
    ) -> Uploader {
        Uploader {
            client,
            handle,
            chunk_size: chunk_size.clamp(1, 1 << 30) as usize,
            state_dir,
            mount_from: None,
        }
    }

    /// Mounts blobs of known digest from `repository` (of the same registry) instead of
    /// uploading them, when that repository has them.
    pub fn with_mount_from(mut self, repository: Option<String>) -> Uploader {
        if let Some(from) = &repository {
            self.client.add_scope(format!("repository:{from}:pull"));
        }
        self.mount_from = repository;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The runtime the uploads run on.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    fn state_file(&self, key: &str, ext: &str) -> Option<PathBuf> {
        let dir = self.state_dir.as_ref()?;
        let id = format!(
            "{}\n{}\nstream\n{key}",
            self.client.base_str(),
            self.client.repository
        );
        Some(dir.join(format!("{}.{ext}", Digest::of(id.as_bytes()).hex())))
    }

    /// Remembers `v` under `key`, replacing the file whole. An upload URL is as good as
    /// a credential (a registry's `_state` token, a storage host's signed URL), so the
    /// directories are made 0700 and the file 0600 from the start, never widened later.
    fn save<T: serde::Serialize>(&self, key: &str, ext: &str, v: &T) {
        use std::os::unix::fs::DirBuilderExt;
        let Some(f) = self.state_file(key, ext) else {
            return;
        };
        let Some(dir) = f.parent() else {
            return;
        };
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
        // A temporary file is created 0600 (O_EXCL, never through a link).
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
            return;
        };
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        if std::io::Write::write_all(&mut tmp, &bytes).is_ok() {
            let _ = tmp.persist(&f);
        }
    }

    fn load<T: serde::de::DeserializeOwned>(&self, key: &str, ext: &str) -> Option<T> {
        let f = self.state_file(key, ext)?;
        serde_json::from_slice(&std::fs::read(f).ok()?).ok()
    }

    /// Whether an earlier run left an unfinished upload of `key` (which a sink for
    /// `key` resumes, if the registry still has it).
    pub fn has_pending(&self, key: &str) -> bool {
        self.state_file(key, "pending").is_some_and(|f| f.is_file())
    }

    /// Forgets the unfinished upload of `key` (the next one starts from zero).
    pub fn forget(&self, key: &str) {
        if let Some(f) = self.state_file(key, "pending") {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Forgets the finished blob remembered for `key`.
    pub fn forget_done(&self, key: &str) {
        if let Some(f) = self.state_file(key, "done") {
            let _ = std::fs::remove_file(f);
        }
    }

    /// The blob an earlier run made for `key`, if the registry has it.
    pub async fn known(&self, key: &str) -> Result<Option<(Digest, u64)>, RegistryError> {
        let Some(done) = self.load::<Done>(key, "done") else {
            return Ok(None);
        };
        let Some(d) = Digest::parse(&done.digest) else {
            return Ok(None);
        };
        Ok(self.exists(&d).await?.then_some((d, done.size)))
    }

    /// Whether the registry has the blob `d`.
    pub async fn exists(&self, d: &Digest) -> Result<bool, RegistryError> {
        let c = &self.client;
        let url = c.url(&format!("blobs/{d}"));
        let resp = c.send(|| c.request(Method::HEAD, url.clone())).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(c.status_error(resp).await),
        }
    }

    /// A writer that uploads what is written to it; `key` names what the blob is made
    /// of, to resume it across runs (`None`: no memory). It digests the bytes itself;
    /// close it with [`BlobSink::finish`].
    pub fn sink(&self, key: Option<&str>) -> BlobSink {
        self.new_sink(key, true)
    }

    /// [`Uploader::sink`] for a producer that digests every byte it writes anyway (a
    /// layer): the bytes are not hashed a second time, and [`BlobSink::finish_as`] gives
    /// the digest, which the registry checks.
    pub fn sink_digested_by_writer(&self, key: Option<&str>) -> BlobSink {
        self.new_sink(key, false)
    }

    fn new_sink(&self, key: Option<&str>, hashing: bool) -> BlobSink {
        let (tx, rx) = mpsc::channel::<Msg>(1);
        let failed = Arc::new(Mutex::new(None));
        let up = self.clone();
        let key = key.map(str::to_string);
        let slot = failed.clone();
        let task = self.handle.spawn(async move {
            let spec = Spec {
                key: key.as_deref(),
                remember_done: true,
                hashing,
                session: None,
            };
            let r = up.stream(spec, Feed::Writer(rx), &unheard).await;
            if let Err(e) = &r {
                let stale = match e {
                    UploadError::Stale { key } => Some(key.clone()),
                    _ => None,
                };
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((e.to_string(), stale));
            }
            r
        });
        BlobSink {
            tx: Some(tx),
            buf: Vec::with_capacity(self.chunk_size),
            chunk: self.chunk_size,
            task: Some(task),
            handle: self.handle.clone(),
            failed,
        }
    }

    /// Opens an upload session; with `mount` and a mount source, asks the registry to
    /// mount that blob instead: `None` when it did.
    async fn open(&self, mount: Option<&Digest>) -> Result<Option<Url>, RegistryError> {
        let c = &self.client;
        let mut url = c.url("blobs/uploads/");
        let mount = mount.zip(self.mount_from.as_deref());
        if let Some((d, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", &d.to_string())
                .append_pair("from", from);
        }
        let resp = c
            .send(|| {
                c.request(Method::POST, url.clone())
                    .header(CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED if mount.is_some() => Ok(None),
            StatusCode::ACCEPTED => {
                let loc = header(resp.headers(), LOCATION).ok_or_else(|| {
                    RegistryError::Protocol("upload session without a Location".into())
                })?;
                Ok(Some(c.resolve(&loc)?))
            }
            _ => Err(c.status_error(resp).await),
        }
    }

    /// Opens an upload session (no mount).
    async fn start(&self) -> Result<Url, RegistryError> {
        self.open(None).await?.ok_or_else(|| {
            RegistryError::Protocol("the registry mounted a blob it was not asked to".into())
        })
    }

    /// How many bytes the registry holds for the upload at `loc` (and its current URL).
    async fn status(&self, loc: &Url) -> Result<(Url, u64), RegistryError> {
        let c = &self.client;
        let resp = c.send(|| c.request(Method::GET, loc.clone())).await?;
        if !resp.status().is_success() {
            return Err(c.status_error(resp).await);
        }
        let new_loc = match header(resp.headers(), LOCATION) {
            Some(l) => c.resolve(&l)?,
            None => loc.clone(),
        };
        Ok((
            new_loc,
            upload_offset(header(resp.headers(), RANGE)).unwrap_or(0),
        ))
    }

    /// The upload task: PATCH each chunk as it comes, then PUT with the digest.
    async fn stream(
        &self,
        spec: Spec<'_>,
        feed: Feed,
        events: &(dyn Fn(UploadEvent<'_>) + Sync),
    ) -> Result<Uploaded, UploadError> {
        let key = spec.key;
        // An earlier run's upload the registry still has: skip what it holds.
        let mut resumed: Option<(u64, Option<u32>)> = None;
        let mut loc = None;
        if let Some(p) = key.and_then(|k| self.load::<Pending>(k, "pending")) {
            if let Ok(url) = Url::parse(&p.location) {
                // An unknown session (expired, or cut mid-PATCH: the registry's size
                // no longer matches its state token) is started over.
                if let Ok((url, held)) = self.status(&url).await {
                    if held > 0 {
                        // Only a prefix we know the CRC of can be checked early.
                        let check = p.prefix_crc32.filter(|_| held == p.offset);
                        resumed = Some((held, check));
                        loc = Some(url);
                        events(UploadEvent::Continued { offset: held });
                    }
                }
            }
        }
        let mut loc = match (loc, spec.session) {
            (Some(l), _) => l,
            (None, session) => {
                if let Some(k) = key {
                    self.forget(k);
                }
                match session {
                    Some(s) => s,
                    None => self.start().await?,
                }
            }
        };
        let stale = || UploadError::Stale {
            key: key.unwrap_or_default().to_string(),
        };
        let remember = |loc: &Url, offset: u64, crc: Option<u32>| {
            if let Some(k) = key {
                let pending = Pending {
                    location: loc.to_string(),
                    offset,
                    prefix_crc32: crc,
                };
                self.save(k, "pending", &pending);
            }
        };
        let skip = resumed.as_ref().map_or(0, |r| r.0);
        let mut sent = 0u64;
        let (size, digest) = match feed {
            Feed::File { file, size, digest } => {
                if size < skip {
                    if let Some(k) = key {
                        self.forget(k);
                    }
                    return Err(stale());
                }
                let chunk = self.chunk_size as u64;
                let mut offset = skip;
                while offset < size {
                    let end = size.min(offset + chunk);
                    loc = self
                        .patch(loc, Part::File(&file), offset, end, events)
                        .await?;
                    sent += end - offset;
                    offset = end;
                    remember(&loc, offset, None);
                }
                (size, digest)
            }
            Feed::Writer(mut rx) => {
                let mut hasher = spec.hashing.then(Hasher::new);
                let mut crc = libdeflater::Crc::new();
                let mut offset = 0u64; // bytes of the blob seen
                let mut finished = None;
                while let Some(msg) = rx.recv().await {
                    let chunk = match msg {
                        Msg::Data(d) => d,
                        Msg::Finish(given) => {
                            finished = Some(given);
                            break;
                        }
                    };
                    let start = offset;
                    let end = start + chunk.len() as u64;
                    if let Some((held, Some(prefix))) = &resumed {
                        if start < *held && end >= *held {
                            let mut c = libdeflater::Crc::with_initial(crc.sum());
                            c.update(&chunk[..(*held - start) as usize]);
                            if c.sum() != *prefix {
                                if let Some(k) = key {
                                    self.forget(k);
                                }
                                return Err(stale());
                            }
                        }
                    }
                    if let Some(h) = &mut hasher {
                        h.update(&chunk);
                    }
                    crc.update(&chunk);
                    offset = end;
                    if end <= skip {
                        continue;
                    }
                    let from = skip.saturating_sub(start) as usize;
                    // The chunk becomes the request body as is: no copy per PATCH.
                    let body = bytes::Bytes::from(chunk).slice(from..);
                    let at = start + from as u64;
                    loc = self.patch(loc, Part::Memory(body), at, end, events).await?;
                    sent += end - at;
                    remember(&loc, offset, Some(crc.sum()));
                }
                let digest = match (finished, hasher.map(Hasher::finish)) {
                    // The producer gave up: no PUT, nothing committed.
                    (None, _) => return Err(UploadError::Unfinished),
                    (Some(Some(given)), Some(computed)) if computed != given => {
                        return Err(RegistryError::Protocol(format!(
                            "the blob was written as {given} but its bytes are {computed}"
                        ))
                        .into())
                    }
                    (Some(Some(given)), _) => given,
                    (Some(None), Some(computed)) => computed,
                    (Some(None), None) => {
                        return Err(RegistryError::Protocol(
                            "a blob the writer digests was finished without its digest".into(),
                        )
                        .into())
                    }
                };
                if offset < skip {
                    if let Some(k) = key {
                        self.forget(k);
                    }
                    return Err(stale());
                }
                (offset, digest)
            }
        };
        let c = &self.client;
        let url = with_digest(loc, &digest);
        let resp = c
            .send(|| {
                c.request(Method::PUT, url.clone())
                    .header(CONTENT_LENGTH, "0")
            })
            .await?;
        if !resp.status().is_success() {
            if let Some(k) = key {
                self.forget(k);
            }
            if resumed.is_some() && resp.status() == StatusCode::BAD_REQUEST {
                // DIGEST_INVALID: the registry's part was not these bytes.
                return Err(stale());
            }
            return Err(c.status_error(resp).await.into());
        }
        if let Some(k) = key {
            self.forget(k);
            if spec.remember_done {
                self.save(
                    k,
                    "done",
                    &Done {
                        digest: digest.to_string(),
                        size,
                    },
                );
            }
        }
        Ok(Uploaded {
            digest,
            size,
            sent,
            resumed_from: skip,
        })
    }

    /// Sends the blob's bytes `at..end` (`part`: those bytes in memory, or the file),
    /// continuing from the registry's own offset when a transfer fails. Returns the
    /// upload's next URL.
    async fn patch(
        &self,
        mut loc: Url,
        part: Part<'_>,
        at: u64,
        end: u64,
        events: &(dyn Fn(UploadEvent<'_>) + Sync),
    ) -> Result<Url, UploadError> {
        let c = &self.client;
        let mut from = at;
        let mut failures = 0u32;
        while from < end {
            let body = || match &part {
                Part::Memory(data) => reqwest::Body::from(data.slice((from - at) as usize..)),
                Part::File(file) => file_body(file, from, end - from),
            };
            let range = format!("{from}-{}", end - 1);
            let sent = c
                .send_with(
                    || {
                        c.request(Method::PATCH, loc.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, range.clone())
                            .header(CONTENT_LENGTH, end - from)
                            .body(body())
                    },
                    0,
                )
                .await;
            let why = match sent {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    if let Some(l) = header(resp.headers(), LOCATION) {
                        loc = c.resolve(&l)?;
                    }
                    events(UploadEvent::Sent(end - from));
                    from = end;
                    continue;
                }
                Ok(resp) if resp.status().is_server_error() => format!("HTTP {}", resp.status()),
                Ok(resp) => return Err(c.status_error(resp).await.into()),
                Err(RegistryError::Network { msg, .. }) => msg,
                Err(e) => return Err(e.into()),
            };
            failures += 1;
            if failures > c.retries() {
                return Err(RegistryError::Network {
                    url: loc.to_string(),
                    msg: format!("{why} (gave up after {failures} tries)"),
                }
                .into());
            }
            tokio::time::sleep(c.backoff(failures - 1)).await;
            let (new_loc, held) = self.status(&loc).await?;
            loc = new_loc;
            if held < at || held > end {
                // The registry lost bytes this chunk no longer has (or holds more).
                return Err(RegistryError::Protocol(format!(
                    "after a failed transfer the registry holds {held} bytes, outside the chunk {at}-{end} being sent"
                ))
                .into());
            }
            events(UploadEvent::Resumed {
                offset: held,
                why: &why,
            });
            from = held;
        }
        Ok(loc)
    }

    /// Puts the layout file `path` (`size` bytes, which must be `digest`) unless the
    /// registry has it or can mount it: in one `PUT` when it is at most a chunk, else in
    /// `PATCH`es as a layer is sent, continuing an upload an earlier run left (the
    /// digest is its key). The registry checks the bytes against `digest` at the
    /// closing `PUT`.
    pub async fn upload_file(
        &self,
        path: &Path,
        digest: &Digest,
        size: u64,
        events: &(dyn Fn(UploadEvent<'_>) + Sync),
    ) -> Result<(BlobAction, Uploaded), RegistryError> {
        let key = digest.to_string();
        let done = |sent, resumed_from| Uploaded {
            digest: *digest,
            size,
            sent,
            resumed_from,
        };
        if self.exists(digest).await? {
            self.forget(&key);
            return Ok((BlobAction::Exists, done(0, 0)));
        }
        let file = Arc::new(File::open(path).map_err(|e| RegistryError::io(path.display(), e))?);
        // An earlier run's upload is continued rather than mounted or started afresh.
        let mut pending = self.load::<Pending>(&key, "pending").is_some();
        loop {
            let session = if pending {
                None
            } else {
                match self.open(Some(digest)).await? {
                    None => return Ok((BlobAction::Mounted, done(0, 0))),
                    some => some,
                }
            };
            if let (Some(session), true) = (&session, size <= self.chunk_size as u64) {
                self.put_whole(session.clone(), digest, size, || file_body(&file, 0, size))
                    .await?;
                events(UploadEvent::Sent(size));
                return Ok((BlobAction::Uploaded, done(size, 0)));
            }
            let spec = Spec {
                key: Some(&key),
                remember_done: false,
                hashing: false,
                session,
            };
            let feed = Feed::File {
                file: file.clone(),
                size,
                digest: *digest,
            };
            return match self.stream(spec, feed, events).await {
                Ok(u) => Ok((BlobAction::Uploaded, u)),
                // The earlier run's part was other bytes: start afresh, once.
                Err(UploadError::Stale { .. }) if pending => {
                    pending = false;
                    continue;
                }
                Err(UploadError::Registry(e)) => Err(e),
                Err(e) => Err(RegistryError::Protocol(format!("{}: {e}", path.display()))),
            };
        }
    }

    /// Sends a whole blob of `size` bytes in the `PUT` that closes the session at
    /// `session`.
    async fn put_whole(
        &self,
        session: Url,
        d: &Digest,
        size: u64,
        body: impl Fn() -> reqwest::Body,
    ) -> Result<(), RegistryError> {
        let c = &self.client;
        let url = with_digest(session, d);
        let resp = c
            .send(|| {
                c.request(Method::PUT, url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size)
                    .body(body())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(c.status_error(resp).await);
        }
        Ok(())
    }

    /// Puts a small blob (a config) from memory, unless the registry has it (or can
    /// mount it).
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let d = Digest::of(bytes);
        if self.exists(&d).await? {
            return Ok(d);
        }
        if let Some(session) = self.open(Some(&d)).await? {
            let body = bytes::Bytes::copy_from_slice(bytes);
            self.put_whole(session, &d, body.len() as u64, || body.clone().into())
                .await?;
        }
        Ok(d)
    }

    /// Puts a manifest or index under `reference` (a tag or its digest) and checks the
    /// digest the registry reports.
    pub async fn put_manifest(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        Ok(self
            .put_manifest_subject(reference, bytes, media_type)
            .await?
            .0)
    }

    /// [`Uploader::put_manifest`], also returning the `OCI-Subject` header that
    /// registries with the referrers API send back for a manifest with a `subject`.
    async fn put_manifest_subject(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(Digest, Option<String>), RegistryError> {
        let c = &self.client;
        let d = Digest::of(bytes);
        let url = c.url(&format!("manifests/{reference}"));
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = c
            .send(|| {
                c.request(Method::PUT, url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(c.status_error(resp).await);
        }
        if let Some(got) = header(resp.headers(), "docker-content-digest") {
            if got != d.to_string() {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {reference} as stored by the registry"),
                    expected: d.to_string(),
                    actual: limits::one_line(&got, 100),
                });
            }
        }
        Ok((d, header(resp.headers(), "oci-subject")))
    }

    /// Lists a referrer of `subject` under the fallback tag (`sha256-<hex>`), for
    /// registries without the referrers API: the index there (read within the limits on
    /// any document from a registry) gains its descriptor unless it lists it already.
    /// Returns the tag.
    async fn add_to_fallback(
        &self,
        subject: &Digest,
        referrer: &[u8],
        artifact_type: &str,
    ) -> Result<String, RegistryError> {
        let tag = referrers_fallback_tag(subject);
        let url = self.client.url(&format!("manifests/{tag}"));
        let mut entries: Vec<serde_json::Value> =
            match self.client.get_bytes(&url, Some(OCI_INDEX), None).await {
                Ok((b, _)) => parse_manifest_document(&b, &tag)?["manifests"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                Err(RegistryError::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
        let d = Digest::of(referrer).to_string();
        if !entries
            .iter()
            .any(|e| e["digest"].as_str() == Some(d.as_str()))
        {
            let annotations = parse_manifest_document(referrer, &d)?["annotations"].clone();
            let mut desc = serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": d,
                "size": referrer.len(),
                "artifactType": artifact_type,
            });
            if annotations.is_object() {
                desc["annotations"] = annotations;
            }
            entries.push(desc);
        }
        let index = crate::image::canonical_json(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        }));
        // What we write must pass the limits we read with.
        if entries.len() > limits::MAX_DESCRIPTORS || index.len() as u64 > limits::MAX_DOCUMENT {
            return Err(RegistryError::Protocol(format!(
                "the referrers fallback index {tag} would list {} referrers in {} bytes, more than {} or {} bytes",
                entries.len(),
                index.len(),
                limits::MAX_DESCRIPTORS,
                limits::MAX_DOCUMENT
            )));
        }
        self.put_manifest(&tag, &index, OCI_INDEX).await?;
        Ok(tag)
    }

    /// Publishes an image whose layers are already in the registry: the configs, each
    /// platform manifest by digest, then the index under `tag`, last; then the
    /// referrers, with their blobs.
    pub async fn publish(
        &self,
        image: &ImageDocuments<'_>,
        tag: &str,
    ) -> Result<Vec<ReferrerReport>, RegistryError> {
        for config in image.configs {
            self.put_blob(config).await?;
        }
        for (bytes, media_type) in image.manifests {
            self.put_manifest(&Digest::of(bytes).to_string(), bytes, media_type)
                .await?;
        }
        let (bytes, media_type) = image.index;
        let index = self.put_manifest(tag, bytes, media_type).await?;
        // Referrers after the image they refer to, so the subject exists when they land.
        // The first one probes whether the registry takes a referrer of an index (ECR
        // answers 405); once refused, every referrer goes to each platform manifest
        // instead, without asking again.
        let mut index_refused = false;
        let mut reports = Vec::new();
        let tagged = Digest::parse(tag).is_none();
        for r in image.referrers {
            for b in &r.blobs {
                self.put_blob(b).await?;
            }
            let own_tag = r.tag_suffix.filter(|_| tagged).map(|s| format!("{tag}{s}"));
            if !index_refused {
                match self
                    .put_referrer(r.manifest, &index, own_tag.as_deref(), r.artifact_type)
                    .await
                {
                    Ok(mut report) => {
                        report.subject_kind = "index";
                        reports.push(report);
                        continue;
                    }
                    Err(RegistryError::Status { status: 405, .. }) => index_refused = true,
                    Err(e) => return Err(e),
                }
            }
            for (n, (m, m_type)) in image.manifests.iter().enumerate() {
                let moved = crate::image::with_subject(r.manifest, m, m_type).ok_or_else(|| {
                    RegistryError::Protocol("a referrer that is not a JSON object".into())
                })?;
                // The tag names the first platform's copy.
                let own = own_tag.as_deref().filter(|_| n == 0);
                let mut report = self
                    .put_referrer(&moved, &Digest::of(m), own, r.artifact_type)
                    .await?;
                report.subject_kind = "manifest";
                reports.push(report);
            }
        }
        Ok(reports)
    }

    /// Puts one referrer of `subject` (under `own_tag` if it has one, else its digest),
    /// and lists it under the fallback tag if the registry has no referrers API.
    async fn put_referrer(
        &self,
        manifest: &[u8],
        subject: &Digest,
        own_tag: Option<&str>,
        artifact_type: &str,
    ) -> Result<ReferrerReport, RegistryError> {
        let by_digest = Digest::of(manifest).to_string();
        let reference = own_tag.unwrap_or(&by_digest);
        let (digest, answered) = self
            .put_manifest_subject(reference, manifest, OCI_MANIFEST)
            .await?;
        let referrers_api = answered.as_deref() == Some(subject.to_string().as_str());
        let fallback_tag = if referrers_api {
            None
        } else {
            Some(
                self.add_to_fallback(subject, manifest, artifact_type)
                    .await?,
            )
        };
        Ok(ReferrerReport {
            digest: digest.to_string(),
            artifact_type: artifact_type.to_string(),
            subject: subject.to_string(),
            subject_kind: "index",
            tag: own_tag.map(str::to_string),
            referrers_api,
            fallback_tag,
        })
    }
}

/// Pieces a file body is read in.
const FILE_PIECE: u64 = 1 << 20;

/// A request body of `len` bytes of `file` from `offset`, read on a blocking thread as it
/// is sent (two pieces ahead at most): a `PATCH` of a layout's blob holds no chunk in
/// memory.
fn file_body(file: &Arc<File>, offset: u64, len: u64) -> reqwest::Body {
    let (tx, rx) = mpsc::channel(2);
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let mut piece = vec![0u8; FILE_PIECE.min(end - at) as usize];
            let read = file.read_exact_at(&mut piece, at).map(|()| piece.into());
            let failed = read.is_err();
            // The request is gone (sent or failed): stop reading.
            if tx.blocking_send(read).is_err() || failed {
                return;
            }
            at = end.min(at + FILE_PIECE);
        }
    });
    reqwest::Body::wrap(FileRange {
        rx: Mutex::new(rx),
        left: len,
    })
}

/// See [`file_body`].
struct FileRange {
    rx: Mutex<mpsc::Receiver<io::Result<bytes::Bytes>>>,
    left: u64,
}

impl http_body::Body for FileRange {
    type Data = bytes::Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, io::Error>>> {
        let next = self
            .rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .poll_recv(cx);
        match next {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(piece))) => {
                self.left = self.left.saturating_sub(piece.len() as u64);
                Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) if self.left > 0 => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before the blob",
            )))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// Parses `Range: 0-N` of an upload status: the registry has N+1 bytes.
fn upload_offset(range: Option<String>) -> Option<u64> {
    let r = range?;
    let r = r.trim().strip_prefix("bytes=").unwrap_or(r.trim());
    let (_, end) = r.split_once('-')?;
    let end: u64 = end.trim().parse().ok()?;
    // "0-0" is what the CNCF registry says for an empty upload.
    if end == 0 {
        Some(0)
    } else {
        end.checked_add(1)
    }
}

fn with_digest(mut url: Url, d: &Digest) -> Url {
    url.query_pairs_mut().append_pair("digest", &d.to_string());
    url
}

/// The documents of an image, in memory.
pub struct ImageDocuments<'a> {
    pub configs: &'a [&'a [u8]],
    /// (bytes, media type) of each platform manifest.
    pub manifests: &'a [(&'a [u8], &'a str)],
    /// (bytes, media type) of the index.
    pub index: (&'a [u8], &'a str),
    /// OCI 1.1 referrers of the index (its provenance), put after it.
    pub referrers: &'a [ReferrerDocument<'a>],
}

/// A referrer of the image: an artifact manifest whose `subject` is the index.
pub struct ReferrerDocument<'a> {
    pub manifest: &'a [u8],
    pub artifact_type: &'a str,
    /// The blobs the manifest names (config and layers) that are not in the registry
    /// already (the ModelPack twin's raw layers went up with the image's layers).
    pub blobs: Vec<&'a [u8]>,
    /// Also tagged: the image's tag plus this (the ModelPack twin's `-modelpack`).
    pub tag_suffix: Option<&'a str>,
}

/// Why an upload task ended early: its message, and the key if the remembered upload
/// was stale.
type Failure = (String, Option<String>);

/// What the writer hands the upload task.
enum Msg {
    Data(Vec<u8>),
    /// The blob is complete: close the upload with its digest (the writer's, or the
    /// one the task computed).
    Finish(Option<Digest>),
}

/// A blob being uploaded as it is written; see the module documentation.
pub struct BlobSink {
    tx: Option<mpsc::Sender<Msg>>,
    buf: Vec<u8>,
    chunk: usize,
    task: Option<tokio::task::JoinHandle<Result<Uploaded, UploadError>>>,
    handle: Handle,
    /// Why the upload task ended early, and the key if its remembered upload was stale.
    failed: Arc<Mutex<Option<Failure>>>,
}

impl BlobSink {
    fn send_buf(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("finished"))?;
        if tx.blocking_send(Msg::Data(data)).is_err() {
            let why = self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(match why {
                // Typed, so the caller can tell "make the blob again" from a failure.
                Some((_, Some(key))) => io::Error::other(UploadError::Stale { key }),
                Some((msg, None)) => io::Error::other(format!("uploading the blob failed: {msg}")),
                None => io::Error::other("uploading the blob failed: the upload stopped"),
            });
        }
        Ok(())
    }

    /// Sends the rest and closes the upload with the blob's digest. Call it from a
    /// thread that is not running the uploader's runtime.
    pub fn finish(self) -> Result<Uploaded, UploadError> {
        self.close(None)
    }

    /// [`BlobSink::finish`] with the digest the writer computed (for a sink from
    /// [`Uploader::sink_digested_by_writer`]).
    pub fn finish_as(self, digest: Digest) -> Result<Uploaded, UploadError> {
        self.close(Some(digest))
    }

    fn close(mut self, digest: Option<Digest>) -> Result<Uploaded, UploadError> {
        // A failed send means the task has ended: its result says why.
        let sent = self.buf.is_empty() || self.send_buf().is_ok();
        if let (true, Some(tx)) = (sent, self.tx.take()) {
            let _ = tx.blocking_send(Msg::Finish(digest));
        }
        let task = self.task.take().expect("finished once");
        match self.handle.block_on(task) {
            Ok(r) => r,
            Err(e) => Err(RegistryError::Protocol(format!("upload task: {e}")).into()),
        }
    }
}

impl Write for BlobSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() == self.chunk {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobSink {
    fn drop(&mut self) {
        // Not finished: stop the upload without the closing PUT, so nothing is
        // committed (the registry drops the session; a rerun may resume it).
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges_parse() {
        assert_eq!(upload_offset(Some("0-1023".into())), Some(1024));
        assert_eq!(upload_offset(Some("bytes=0-9".into())), Some(10));
        assert_eq!(upload_offset(Some("0-0".into())), Some(0));
        assert_eq!(upload_offset(None), None);
        // A registry cannot make the offset wrap around.
        assert_eq!(upload_offset(Some("0-18446744073709551615".into())), None);
    }
}
