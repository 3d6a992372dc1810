//! `push`: an OCI image layout to a registry, by the Distribution spec.
//!
//! For every blob (layer, configs): `HEAD` — present blobs are skipped; with
//! `mount_from`, a cross-repository mount (`POST …/blobs/uploads/?mount=…&from=…`) is
//! tried first; otherwise an upload session is opened and the blob is sent in one `PUT`
//! when it is at most `chunk_size`, or in `PATCH` chunks of `chunk_size` followed by the
//! closing `PUT`. A chunk whose transfer fails is not blindly resent: the upload's status
//! (`GET` on the upload URL) says how much the registry has (`Range: 0-N`) and the upload
//! continues from there. Then each platform manifest is put by digest and the index under
//! the tag.

use super::client::{header, Client};
use super::{Reference, RegistryError};
use crate::digest::Digest;
use crate::limits;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;

#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Blobs larger than this go in PATCH chunks of this size.
    pub chunk_size: u64,
    /// A repository on the same registry to mount missing blobs from.
    pub mount_from: Option<String>,
    /// Where to remember chunked uploads in progress, so that a later run resumes them
    /// (one small file per blob holding the upload URL). `None`: no memory across runs.
    pub state_dir: Option<PathBuf>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            mount_from: None,
            state_dir: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobAction {
    Exists,
    Mounted,
    Uploaded,
}

/// What `push` tells its caller as it goes.
#[derive(Debug)]
pub enum PushEvent<'a> {
    /// About to look at a blob.
    BlobStart { digest: &'a Digest, size: u64 },
    /// Bytes of a blob sent (cumulative within the blob).
    BlobProgress { digest: &'a Digest, sent: u64 },
    BlobDone {
        digest: &'a Digest,
        action: BlobAction,
    },
    /// A failed transfer being resumed at `offset`.
    Resume {
        digest: &'a Digest,
        offset: u64,
        why: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct BlobReport {
    pub digest: String,
    pub size: u64,
    pub action: BlobAction,
}

#[derive(Clone, Debug, Serialize)]
pub struct PushReport {
    pub reference: String,
    pub index_digest: String,
    pub manifests: Vec<String>,
    pub blobs: Vec<BlobReport>,
    pub uploaded_bytes: u64,
    /// Failed chunks continued from the registry's upload status within this run.
    pub resumed: u32,
    /// Bytes not sent again because an upload from an earlier run was continued.
    pub resumed_bytes: u64,
    pub requests: u64,
    /// Referrers of the index pushed after it (e.g. the provenance).
    pub referrers: Vec<ReferrerReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReferrerReport {
    pub digest: String,
    pub artifact_type: String,
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

/// A blob of the layout: digest, size, file.
struct LayoutBlob {
    digest: Digest,
    size: u64,
    path: PathBuf,
}

/// What a layout holds for one tag: the index, its manifests, their blobs.
pub struct LayoutImage {
    root: PathBuf,
    pub index: (Digest, Vec<u8>, String),
    pub manifests: Vec<(Digest, Vec<u8>, String)>,
    /// Artifact manifests in the layout whose `subject` is the index (e.g. its
    /// provenance): (digest, bytes, artifactType).
    pub referrers: Vec<(Digest, Vec<u8>, String)>,
    blobs: Vec<LayoutBlob>,
}

fn blob_path(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(d.hex())
}

/// Reads a document (index or manifest) of the layout, at most
/// [`limits::MAX_DOCUMENT`] bytes.
pub(crate) fn read_document(p: &Path) -> Result<Vec<u8>, RegistryError> {
    let f = std::fs::File::open(p).map_err(|e| RegistryError::io(p.display(), e))?;
    let mut b = Vec::new();
    f.take(limits::MAX_DOCUMENT + 1)
        .read_to_end(&mut b)
        .map_err(|e| RegistryError::io(p.display(), e))?;
    if b.len() as u64 > limits::MAX_DOCUMENT {
        return Err(RegistryError::Layout(format!(
            "{} is larger than {} bytes, too large for an index or manifest",
            p.display(),
            limits::MAX_DOCUMENT
        )));
    }
    Ok(b)
}

/// A document blob of the layout at `root`, bounded like [`read_document`] and checked
/// against its digest.
pub(crate) fn read_blob(root: &Path, digest: &str) -> Result<(Digest, Vec<u8>), RegistryError> {
    let d = Digest::parse(digest)
        .ok_or_else(|| RegistryError::Layout(format!("bad digest {}", limits::shown(digest))))?;
    let p = blob_path(root, &d);
    let b = read_document(&p)?;
    if Digest::of(&b) != d {
        return Err(RegistryError::DigestMismatch {
            what: p.display().to_string(),
            expected: d.to_string(),
            actual: Digest::of(&b).to_string(),
        });
    }
    Ok((d, b))
}

/// An `index.json`, index or manifest of a layout being pushed: its shape checked
/// (depth, descriptors) before it is parsed; `what` names it in messages.
pub fn parse_layout_document(bytes: &[u8], what: &str) -> Result<serde_json::Value, RegistryError> {
    limits::check_json_shape(bytes, limits::MAX_JSON_DEPTH, 4096)
        .map_err(|e| RegistryError::Layout(format!("{what}: {e}")))?;
    serde_json::from_slice(bytes).map_err(|e| RegistryError::Layout(format!("{what}: {e}")))
}

fn media_type(v: &serde_json::Value, default: &str) -> String {
    v.get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or(default)
        .to_string()
}

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

impl LayoutImage {
    /// Reads the image the layout's `index.json` points at (the first entry).
    pub fn read(root: &Path) -> Result<LayoutImage, RegistryError> {
        let ip = root.join("index.json");
        let top = read_document(&ip)?;
        let top = parse_layout_document(&top, "index.json")?;
        let first = top["manifests"]
            .get(0)
            .ok_or_else(|| RegistryError::Layout("index.json lists no image".into()))?;
        let d = first["digest"].as_str().unwrap_or_default();
        let (idx_d, idx_b) = read_blob(root, d)?;
        let idx = parse_layout_document(&idx_b, "image index")?;
        let idx_type = media_type(&idx, first["mediaType"].as_str().unwrap_or(INDEX_TYPE));
        let mut manifests = Vec::new();
        let mut blobs: Vec<LayoutBlob> = Vec::new();
        let descs: Vec<serde_json::Value> =
            if idx_type.contains("index") || idx_type.contains("manifest.list") {
                idx["manifests"].as_array().cloned().unwrap_or_default()
            } else {
                Vec::new()
            };
        let mut add = |desc: &serde_json::Value| -> Result<(), RegistryError> {
            let d = desc["digest"].as_str().unwrap_or_default();
            let d = Digest::parse(d)
                .ok_or_else(|| RegistryError::Layout(format!("bad digest {}", limits::shown(d))))?;
            if blobs.iter().any(|b| b.digest == d) {
                return Ok(());
            }
            let path = blob_path(root, &d);
            let size = std::fs::metadata(&path)
                .map_err(|e| RegistryError::io(path.display(), e))?
                .len();
            blobs.push(LayoutBlob {
                digest: d,
                size,
                path,
            });
            Ok(())
        };
        let mut manifest_docs = Vec::new();
        if descs.is_empty() {
            // A single manifest, not an index.
            manifest_docs.push((idx_d, idx_b.clone(), idx_type.clone()));
        } else {
            for m in &descs {
                let (md, mb) = read_blob(root, m["digest"].as_str().unwrap_or_default())?;
                let mv = parse_layout_document(&mb, "manifest")?;
                let mt = media_type(&mv, m["mediaType"].as_str().unwrap_or(MANIFEST_TYPE));
                manifest_docs.push((md, mb, mt));
            }
        }
        for (_, mb, _) in &manifest_docs {
            let mv = parse_layout_document(mb, "manifest")?;
            add(&mv["config"])?;
            for l in mv["layers"].as_array().into_iter().flatten() {
                add(l)?;
            }
        }
        // Referrers: the other entries of index.json whose manifest names the index as
        // its subject.
        let mut referrers = Vec::new();
        for entry in top["manifests"].as_array().into_iter().flatten().skip(1) {
            let Some(artifact_type) = entry["artifactType"].as_str() else {
                continue;
            };
            let (rd, rb) = read_blob(root, entry["digest"].as_str().unwrap_or_default())?;
            let rv = parse_layout_document(&rb, "referrer manifest")?;
            if rv["subject"]["digest"].as_str() != Some(idx_d.to_string().as_str()) {
                continue;
            }
            add(&rv["config"])?;
            for l in rv["layers"].as_array().into_iter().flatten() {
                add(l)?;
            }
            referrers.push((rd, rb, artifact_type.to_string()));
        }
        if !descs.is_empty() {
            manifests = manifest_docs;
        }
        Ok(LayoutImage {
            root: root.to_path_buf(),
            index: (idx_d, idx_b, idx_type),
            manifests,
            referrers,
            blobs,
        })
    }
}

/// Parses `Range: 0-N` of an upload status: the registry has N+1 bytes.
pub(crate) fn upload_offset(range: Option<String>) -> Option<u64> {
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

/// A registry that says it has more of an upload than the blob holds is wrong (or
/// hostile): stop rather than trust it.
fn check_had(had: Option<u64>, blob: &LayoutBlob) -> Result<(), RegistryError> {
    match had {
        Some(n) if n > blob.size => Err(RegistryError::Protocol(format!(
            "the registry says it has {n} bytes of the upload of {}, a {}-byte blob",
            blob.digest, blob.size
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn with_digest(mut url: Url, d: &Digest) -> Url {
    url.query_pairs_mut().append_pair("digest", &d.to_string());
    url
}

fn read_range(path: &Path, start: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
    let mut f = std::fs::File::open(path).map_err(|e| RegistryError::io(path.display(), e))?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| RegistryError::io(path.display(), e))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)
        .map_err(|e| RegistryError::io(path.display(), e))?;
    Ok(buf)
}

struct Pusher<'c, 'e> {
    client: &'c Client,
    opts: PushOptions,
    on_event: &'e mut (dyn FnMut(PushEvent<'_>) + Send),
    uploaded: u64,
    resumed: u32,
    resumed_bytes: u64,
}

impl Pusher<'_, '_> {
    async fn exists(&self, d: &Digest) -> Result<bool, RegistryError> {
        let url = self.client.url(&format!("blobs/{d}"));
        let resp = self
            .client
            .send(|| self.client.request(Method::HEAD, url.clone()))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.client.status_error(resp).await),
        }
    }

    /// Opens an upload session (or mounts): `None` when the mount made the blob exist.
    async fn start_upload(&mut self, d: &Digest) -> Result<Option<Url>, RegistryError> {
        let mut url = self.client.url("blobs/uploads/");
        if let Some(from) = &self.opts.mount_from {
            url.query_pairs_mut()
                .append_pair("mount", &d.to_string())
                .append_pair("from", from);
        }
        let resp = self
            .client
            .send(|| {
                self.client
                    .request(Method::POST, url.clone())
                    .header(CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED if self.opts.mount_from.is_some() => Ok(None),
            StatusCode::ACCEPTED => {
                let loc = header(resp.headers(), LOCATION).ok_or_else(|| {
                    RegistryError::Protocol("upload session without a Location".into())
                })?;
                Ok(Some(self.client.resolve(&loc)?))
            }
            _ => Err(self.client.status_error(resp).await),
        }
    }

    fn state_file(&self, d: &Digest) -> Option<PathBuf> {
        let dir = self.opts.state_dir.as_ref()?;
        let key = format!(
            "{}\n{}\n{d}",
            self.client.base_str(),
            self.client.repository
        );
        Some(dir.join(Digest::of(key.as_bytes()).hex()))
    }

    fn remember(&self, d: &Digest, loc: &Url) {
        if let Some(f) = self.state_file(d) {
            if let Some(dir) = f.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let tmp = f.with_extension("tmp");
            if std::fs::write(&tmp, loc.as_str()).is_ok() {
                let _ = std::fs::rename(&tmp, &f);
            }
        }
    }

    fn forget(&self, d: &Digest) {
        if let Some(f) = self.state_file(d) {
            let _ = std::fs::remove_file(f);
        }
    }

    /// An upload of `d` left by an earlier run that the registry still knows: its URL
    /// and how many bytes the registry has.
    async fn earlier_upload(&self, d: &Digest) -> Option<(Url, u64)> {
        let f = self.state_file(d)?;
        let url = std::fs::read_to_string(&f).ok()?;
        let url = Url::parse(url.trim()).ok()?;
        match self.upload_status(&url).await {
            Ok((loc, Some(n))) if n > 0 => Some((loc, n)),
            _ => {
                self.forget(d);
                None
            }
        }
    }

    async fn upload_status(&self, loc: &Url) -> Result<(Url, Option<u64>), RegistryError> {
        let resp = self
            .client
            .send(|| self.client.request(Method::GET, loc.clone()))
            .await?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            return Err(self.client.status_error(resp).await);
        }
        let new_loc = match header(resp.headers(), LOCATION) {
            Some(l) => self.client.resolve(&l)?,
            None => loc.clone(),
        };
        Ok((new_loc, upload_offset(header(resp.headers(), RANGE))))
    }

    async fn upload(
        &mut self,
        blob: &LayoutBlob,
        mut loc: Url,
        start: u64,
    ) -> Result<(), RegistryError> {
        let d = &blob.digest;
        let chunk = self.opts.chunk_size.max(1);
        if blob.size <= chunk && start == 0 {
            let data = read_range(&blob.path, 0, blob.size)?;
            let url = with_digest(loc, d);
            let resp = self
                .client
                .send(|| {
                    self.client
                        .request(Method::PUT, url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, data.len())
                        .body(data.clone())
                })
                .await?;
            if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
                return Err(self.client.status_error(resp).await);
            }
            self.uploaded += blob.size;
            (self.on_event)(PushEvent::BlobProgress {
                digest: d,
                sent: blob.size,
            });
            return Ok(());
        }
        let mut offset = start.min(blob.size);
        let mut failures = 0u32;
        self.remember(d, &loc);
        while offset < blob.size {
            let len = chunk.min(blob.size - offset);
            let data = read_range(&blob.path, offset, len)?;
            let range = format!("{}-{}", offset, offset + len - 1);
            let sent = self
                .client
                .send_with(
                    || {
                        self.client
                            .request(Method::PATCH, loc.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_RANGE, range.clone())
                            .header(CONTENT_LENGTH, data.len())
                            .body(data.clone())
                    },
                    0,
                )
                .await;
            let why = match sent {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    if let Some(l) = header(resp.headers(), LOCATION) {
                        loc = self.client.resolve(&l)?;
                    }
                    let had = upload_offset(header(resp.headers(), RANGE));
                    check_had(had, blob)?;
                    self.uploaded += len;
                    offset = match had {
                        Some(n) if n > offset => n,
                        _ => offset + len,
                    };
                    self.remember(d, &loc);
                    (self.on_event)(PushEvent::BlobProgress {
                        digest: d,
                        sent: offset,
                    });
                    continue;
                }
                Ok(resp) if resp.status().is_server_error() => {
                    format!("HTTP {}", resp.status())
                }
                Ok(resp) => return Err(self.client.status_error(resp).await),
                Err(RegistryError::Network { msg, .. }) => msg,
                Err(e) => return Err(e),
            };
            failures += 1;
            if failures > self.client.retries() {
                return Err(RegistryError::Network {
                    url: loc.to_string(),
                    msg: format!("{why} (gave up after {failures} tries)"),
                });
            }
            tokio::time::sleep(self.client.backoff(failures - 1)).await;
            let (new_loc, had) = self.upload_status(&loc).await?;
            loc = new_loc;
            offset = had.unwrap_or(0).min(blob.size);
            self.resumed += 1;
            (self.on_event)(PushEvent::Resume {
                digest: d,
                offset,
                why,
            });
        }
        let url = with_digest(loc, d);
        let resp = self
            .client
            .send(|| {
                self.client
                    .request(Method::PUT, url.clone())
                    .header(CONTENT_LENGTH, "0")
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.client.status_error(resp).await);
        }
        self.forget(d);
        Ok(())
    }

    /// PUTs a manifest; returns the `OCI-Subject` header, which registries with the
    /// referrers API send back for a manifest that has a `subject`.
    async fn put_manifest(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
        digest: &Digest,
    ) -> Result<Option<String>, RegistryError> {
        let url = self.client.url(&format!("manifests/{reference}"));
        let resp = self
            .client
            .send(|| {
                self.client
                    .request(Method::PUT, url.clone())
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.client.status_error(resp).await);
        }
        if let Some(got) = header(resp.headers(), "docker-content-digest") {
            if got != digest.to_string() {
                return Err(RegistryError::DigestMismatch {
                    what: format!("manifest {reference} as stored by the registry"),
                    expected: digest.to_string(),
                    actual: got,
                });
            }
        }
        Ok(header(resp.headers(), "oci-subject"))
    }

    /// Lists a referrer under the fallback tag: reads the index there (if any), adds
    /// the descriptor unless it is already listed, and puts it back.
    async fn add_to_fallback(
        &self,
        subject: &Digest,
        referrer: &Digest,
        bytes: &[u8],
        artifact_type: &str,
    ) -> Result<String, RegistryError> {
        let tag = referrers_fallback_tag(subject);
        let url = self.client.url(&format!("manifests/{tag}"));
        let mut entries: Vec<serde_json::Value> =
            match self.client.get_bytes(&url, Some(INDEX_TYPE), None).await {
                Ok((b, _)) => parse_layout_document(&b, "referrers fallback index")?["manifests"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                Err(RegistryError::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
        if !entries
            .iter()
            .any(|e| e["digest"].as_str() == Some(referrer.to_string().as_str()))
        {
            let annotations =
                parse_layout_document(bytes, "referrer manifest")?["annotations"].clone();
            let mut d = serde_json::json!({
                "mediaType": MANIFEST_TYPE,
                "digest": referrer.to_string(),
                "size": bytes.len(),
                "artifactType": artifact_type,
            });
            if annotations.is_object() {
                d["annotations"] = annotations;
            }
            entries.push(d);
        }
        let index = crate::image::canonical_json(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": entries,
        }));
        let digest = Digest::of(&index);
        self.put_manifest(&tag, &index, INDEX_TYPE, &digest).await?;
        Ok(tag)
    }
}

/// Pushes the layout at `root` to `reference` (its tag; a digest reference pushes
/// untagged).
pub async fn push(
    client: &Client,
    root: &Path,
    reference: &Reference,
    opts: PushOptions,
    on_event: &mut (dyn FnMut(PushEvent<'_>) + Send),
) -> Result<PushReport, RegistryError> {
    let image = LayoutImage::read(root)?;
    if let Some(from) = &opts.mount_from {
        client.add_scope(format!("repository:{from}:pull"));
    }
    let mut p = Pusher {
        client,
        opts,
        on_event,
        uploaded: 0,
        resumed: 0,
        resumed_bytes: 0,
    };
    let mut blobs = Vec::new();
    for b in &image.blobs {
        (p.on_event)(PushEvent::BlobStart {
            digest: &b.digest,
            size: b.size,
        });
        let action = if p.exists(&b.digest).await? {
            p.forget(&b.digest);
            BlobAction::Exists
        } else if let Some((loc, had)) = p.earlier_upload(&b.digest).await {
            check_had(Some(had), b)?;
            (p.on_event)(PushEvent::Resume {
                digest: &b.digest,
                offset: had,
                why: "an earlier run".into(),
            });
            p.resumed_bytes += had;
            p.upload(b, loc, had).await?;
            BlobAction::Uploaded
        } else {
            match p.start_upload(&b.digest).await? {
                None => BlobAction::Mounted,
                Some(loc) => {
                    p.upload(b, loc, 0).await?;
                    BlobAction::Uploaded
                }
            }
        };
        (p.on_event)(PushEvent::BlobDone {
            digest: &b.digest,
            action,
        });
        blobs.push(BlobReport {
            digest: b.digest.to_string(),
            size: b.size,
            action,
        });
    }
    for (d, bytes, mt) in &image.manifests {
        p.put_manifest(&d.to_string(), bytes, mt, d).await?;
    }
    let (idx_d, idx_b, idx_t) = &image.index;
    p.put_manifest(reference.manifest_ref(), idx_b, idx_t, idx_d)
        .await?;
    // Referrers after the image they refer to, so the subject exists when they land.
    let mut referrers = Vec::new();
    for (rd, rb, artifact_type) in &image.referrers {
        let subject = p
            .put_manifest(&rd.to_string(), rb, MANIFEST_TYPE, rd)
            .await?;
        let referrers_api = subject.as_deref() == Some(idx_d.to_string().as_str());
        let fallback_tag = if referrers_api {
            None
        } else {
            Some(p.add_to_fallback(idx_d, rd, rb, artifact_type).await?)
        };
        referrers.push(ReferrerReport {
            digest: rd.to_string(),
            artifact_type: artifact_type.clone(),
            referrers_api,
            fallback_tag,
        });
    }
    let _ = &image.root;
    Ok(PushReport {
        reference: reference.to_string(),
        index_digest: idx_d.to_string(),
        manifests: image.manifests.iter().map(|m| m.0.to_string()).collect(),
        blobs,
        uploaded_bytes: p.uploaded,
        resumed: p.resumed,
        resumed_bytes: p.resumed_bytes,
        requests: client.request_count(),
        referrers,
    })
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
        let blob = LayoutBlob {
            digest: Digest::of(b"x"),
            size: 10,
            path: PathBuf::new(),
        };
        assert!(check_had(Some(10), &blob).is_ok());
        assert_eq!(
            check_had(Some(11), &blob).unwrap_err().to_string(),
            format!(
                "registry protocol: the registry says it has 11 bytes of the upload of {}, a 10-byte blob",
                Digest::of(b"x")
            )
        );
    }
}
