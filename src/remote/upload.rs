//! Uploading blobs to a registry as they are produced, and documents from memory.
//!
//! A [`BlobSink`] is a `Write` for the layer writer: bytes are cut into chunks of
//! `chunk_size` and handed (through a queue of one chunk) to an upload task that sends
//! each as a `PATCH` of the upload session while the next chunk is being produced; the
//! closing `PUT ?digest=` carries the digest, known only once the last byte is written
//! (computed by the task, or given by a writer that digests its bytes anyway, as a layer
//! does). Memory is about three chunks whatever the blob's size.
//!
//! A `PATCH` that fails is not blindly resent: the registry is asked how much it holds
//! (`GET` on the upload URL, `Range: 0-N`) and the upload goes on from there, as
//! `push` does. With a state directory and a key (what the blob is made of: the bytes
//! are reproducible, so the same key gives the same bytes), the upload URL, the offset
//! acknowledged and a CRC-32 of the bytes up to it are remembered after every chunk. A
//! rerun of a killed push regenerates the blob, sends nothing the registry already holds
//! for that upload, and checks the regenerated prefix against the remembered CRC; the
//! registry checks the whole by the final digest. If either check fails the blob is
//! started over ([`UploadError::Stale`]: the caller produces it again). A finished blob's
//! digest is remembered too, so a later run can skip producing it ([`Uploader::known`]).
//!
//! [`Uploader::publish`] puts configs, then the platform manifests by digest, then the
//! index under the tag, last: a tag never points at an incomplete image.

use super::client::{header, Client};
use super::push::{upload_offset, with_digest};
use super::RegistryError;
use crate::digest::{Digest, Hasher};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode, Url};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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

/// Uploads to one repository of a registry.
#[derive(Clone)]
pub struct Uploader {
    client: Arc<Client>,
    handle: Handle,
    chunk_size: usize,
    state_dir: Option<PathBuf>,
}

/// What is remembered of an unfinished upload.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    location: String,
    offset: u64,
    /// CRC-32 of the blob's first `offset` bytes: an early check that a rerun makes the
    /// same bytes (the registry checks the whole blob's sha256 at the end anyway).
    prefix_crc32: u32,
}

/// What is remembered of a finished blob.
#[derive(serde::Serialize, serde::Deserialize)]
struct Done {
    digest: String,
    size: u64,
}

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
        }
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

    fn save<T: serde::Serialize>(&self, key: &str, ext: &str, v: &T) {
        let Some(f) = self.state_file(key, ext) else {
            return;
        };
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = f.with_extension(format!("{ext}.tmp"));
        if std::fs::write(&tmp, serde_json::to_vec(v).unwrap_or_default()).is_ok() {
            let _ = std::fs::rename(&tmp, &f);
        }
    }

    fn load<T: serde::de::DeserializeOwned>(&self, key: &str, ext: &str) -> Option<T> {
        let f = self.state_file(key, ext)?;
        serde_json::from_slice(&std::fs::read(f).ok()?).ok()
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
            let r = up.stream(key.as_deref(), hashing, rx).await;
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

    /// Opens an upload session.
    async fn start(&self) -> Result<Url, RegistryError> {
        let c = &self.client;
        let url = c.url("blobs/uploads/");
        let resp = c
            .send(|| {
                c.request(Method::POST, url.clone())
                    .header(CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(c.status_error(resp).await);
        }
        let loc = header(resp.headers(), LOCATION)
            .ok_or_else(|| RegistryError::Protocol("upload session without a Location".into()))?;
        c.resolve(&loc)
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
        key: Option<&str>,
        hashing: bool,
        mut rx: mpsc::Receiver<Msg>,
    ) -> Result<Uploaded, UploadError> {
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
                        let check = (held == p.offset).then_some(p.prefix_crc32);
                        resumed = Some((held, check));
                        loc = Some(url);
                    }
                }
            }
        }
        let mut loc = match loc {
            Some(l) => l,
            None => {
                if let Some(k) = key {
                    self.forget(k);
                }
                self.start().await?
            }
        };
        let skip = resumed.as_ref().map_or(0, |r| r.0);
        let mut hasher = hashing.then(Hasher::new);
        let mut crc = libdeflater::Crc::new();
        let mut offset = 0u64; // bytes of the blob seen
        let mut sent = 0u64;
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
                        return Err(UploadError::Stale {
                            key: key.unwrap_or_default().to_string(),
                        });
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
            let n = body.len() as u64;
            loc = self.patch(loc, body, start + from as u64).await?;
            sent += n;
            if let Some(k) = key {
                self.save(
                    k,
                    "pending",
                    &Pending {
                        location: loc.to_string(),
                        offset,
                        prefix_crc32: crc.sum(),
                    },
                );
            }
        }
        let size = offset;
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
        if size < skip {
            return Err(UploadError::Stale {
                key: key.unwrap_or_default().to_string(),
            });
        }
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
                return Err(UploadError::Stale {
                    key: key.unwrap_or_default().to_string(),
                });
            }
            return Err(c.status_error(resp).await.into());
        }
        if let Some(k) = key {
            self.forget(k);
            self.save(
                k,
                "done",
                &Done {
                    digest: digest.to_string(),
                    size,
                },
            );
        }
        Ok(Uploaded {
            digest,
            size,
            sent,
            resumed_from: skip,
        })
    }

    /// Sends `data` (the blob's bytes from `at`), continuing from the registry's own
    /// offset when a transfer fails. Returns the upload's next URL.
    async fn patch(&self, mut loc: Url, data: bytes::Bytes, at: u64) -> Result<Url, UploadError> {
        let c = &self.client;
        let end = at + data.len() as u64;
        let mut from = at;
        let mut failures = 0u32;
        while from < end {
            let part = data.slice((from - at) as usize..);
            let range = format!("{from}-{}", end - 1);
            let sent = c
                .send_with(
                    || {
                        c.request(Method::PATCH, loc.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, range.clone())
                            .header(CONTENT_LENGTH, part.len())
                            .body(part.clone())
                    },
                    0,
                )
                .await;
            let why = match sent {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    if let Some(l) = header(resp.headers(), LOCATION) {
                        loc = c.resolve(&l)?;
                    }
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
            from = held;
        }
        Ok(loc)
    }

    /// Puts a small blob (a config) from memory, unless the registry has it.
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let d = Digest::of(bytes);
        if self.exists(&d).await? {
            return Ok(d);
        }
        let c = &self.client;
        let url = with_digest(self.start().await?, &d);
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = c
            .send(|| {
                c.request(Method::PUT, url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, body.len())
                    .body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(c.status_error(resp).await);
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
                    actual: got,
                });
            }
        }
        Ok((d, header(resp.headers(), "oci-subject")))
    }

    /// Lists a referrer of `subject` under the fallback tag (`sha256-<hex>`), for
    /// registries without the referrers API: the index there gains its descriptor.
    async fn add_to_fallback(
        &self,
        subject: &Digest,
        referrer: &[u8],
        artifact_type: &str,
    ) -> Result<(), RegistryError> {
        const INDEX: &str = "application/vnd.oci.image.index.v1+json";
        let tag = super::push::referrers_fallback_tag(subject);
        let url = self.client.url(&format!("manifests/{tag}"));
        let mut entries: Vec<serde_json::Value> =
            match self.client.get_bytes(&url, Some(INDEX), None).await {
                Ok((b, _)) => serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| {
                    RegistryError::Protocol(format!("referrers fallback index: {e}"))
                })?["manifests"]
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
            let annotations = serde_json::from_slice::<serde_json::Value>(referrer)
                .map(|v| v["annotations"].clone())
                .unwrap_or_default();
            let mut desc = serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
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
            "mediaType": INDEX,
            "manifests": entries,
        }));
        self.put_manifest(&tag, &index, INDEX).await?;
        Ok(())
    }

    /// Publishes an image whose layers are already in the registry: the configs, each
    /// platform manifest by digest, then the index under `tag`, last.
    pub async fn publish(
        &self,
        image: &ImageDocuments<'_>,
        tag: &str,
    ) -> Result<(), RegistryError> {
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
        for r in image.referrers {
            for b in &r.blobs {
                self.put_blob(b).await?;
            }
            let (_, subject) = self
                .put_manifest_subject(
                    &Digest::of(r.manifest).to_string(),
                    r.manifest,
                    "application/vnd.oci.image.manifest.v1+json",
                )
                .await?;
            if subject.as_deref() != Some(index.to_string().as_str()) {
                self.add_to_fallback(&index, r.manifest, r.artifact_type)
                    .await?;
            }
        }
        Ok(())
    }
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
    /// The blobs the manifest names (config and layers).
    pub blobs: Vec<&'a [u8]>,
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
