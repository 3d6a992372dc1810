//! `push`: an OCI image layout to a registry, through the upload engine the streamed
//! build uses too ([`super::upload::Uploader`]).
//!
//! Every blob of the image and its referrers (layers, configs), two at a time, the
//! biggest first: skipped when the registry has it (`HEAD`); with `mount_from`, mounted
//! from that repository when it can be (`POST …/blobs/uploads/?mount=…&from=…`);
//! otherwise sent in one `PUT` when it is at most `chunk_size`, or in `PATCH` chunks of
//! `chunk_size` and a closing `PUT ?digest=`. A chunk whose transfer fails is not blindly
//! resent: the upload's status (`GET` on the upload URL) says how much the registry has
//! (`Range: 0-N`) and the upload continues from there; a run that was killed is
//! continued by the next from the registry's offset. The `PATCH` bodies are read from
//! the files as they are sent, and the registry checks each blob against its digest at
//! the closing `PUT`. Then each platform manifest is put by digest, the index under the
//! tag, and the referrers.

use super::client::Client;
pub use super::upload::{referrers_fallback_tag, BlobAction, ReferrerReport};
use super::upload::{ImageDocuments, ReferrerDocument, UploadEvent, Uploaded, Uploader};
use super::{Reference, RegistryError};
use crate::digest::Digest;
use crate::image::media::{self, OCI_INDEX, OCI_MANIFEST};
use crate::image::read::{self, Layout};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub const DEFAULT_CHUNK_SIZE: u64 = 64 << 20;

#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Blobs larger than this go in PATCH chunks of this size.
    pub chunk_size: u64,
    /// A repository on the same registry to mount missing blobs from.
    pub mount_from: Option<String>,
    /// Where to remember chunked uploads in progress, so that a later run resumes them.
    /// `None`: no memory across runs.
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

/// What `push` tells its caller as it goes (from two uploads at once).
#[derive(Debug)]
pub enum PushEvent<'a> {
    /// The blobs to look at: how many, and their bytes.
    Start { blobs: usize, bytes: u64 },
    /// More bytes of blobs are in the registry: sent, found there, or mounted.
    Progress(u64),
    /// The upload of `digest` goes on at `offset`: after a failed transfer (`why`), or
    /// where an earlier run left it.
    Resume {
        digest: &'a Digest,
        offset: u64,
        why: &'a str,
    },
    BlobDone {
        digest: &'a Digest,
        action: BlobAction,
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

/// A blob of the layout: digest, size, file.
struct LayoutBlob {
    digest: Digest,
    size: u64,
    path: PathBuf,
}

/// What a layout holds for one tag: the index, its manifests, their blobs.
pub struct LayoutImage {
    pub index: (Digest, Vec<u8>, String),
    pub manifests: Vec<(Digest, Vec<u8>, String)>,
    /// Artifact manifests in the layout whose `subject` is the index (e.g. its
    /// provenance): (digest, bytes, artifactType).
    pub referrers: Vec<(Digest, Vec<u8>, String)>,
    /// For each referrer, what its own ref name adds to the image's (the ModelPack
    /// twin's `-modelpack`): a push tags it so beside the pushed tag.
    pub referrer_tag_suffixes: Vec<Option<String>>,
    blobs: Vec<LayoutBlob>,
}

fn media_type(v: &serde_json::Value, default: &str) -> String {
    v.get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or(default)
        .to_string()
}

impl LayoutImage {
    /// Reads the image the layout's `index.json` points at (the first entry), through
    /// the one layout reader ([`crate::image::read`]): bounded, size- and digest-checked.
    pub fn read(root: &Path) -> Result<LayoutImage, RegistryError> {
        let layout = Layout::open(root)?;
        let top = layout.index_json()?;
        let first = read::first_image(&top)?;
        let (idx_d, idx_b, idx) = layout.document(first, "image index")?;
        let idx_type = media_type(&idx, first["mediaType"].as_str().unwrap_or(OCI_INDEX));
        let mut manifests = Vec::new();
        let mut blobs: Vec<LayoutBlob> = Vec::new();
        let descs: Vec<serde_json::Value> = if media::is_index(&idx_type) {
            idx["manifests"].as_array().cloned().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut add = |desc: &serde_json::Value| -> Result<(), RegistryError> {
            let d = read::digest_of(desc)?;
            if blobs.iter().any(|b| b.digest == d) {
                return Ok(());
            }
            let (_, size) = layout.blob(&d, desc["size"].as_u64())?;
            blobs.push(LayoutBlob {
                digest: d,
                size,
                path: layout.blob_path(&d),
            });
            Ok(())
        };
        let mut manifest_docs = Vec::new();
        if descs.is_empty() {
            // A single manifest, not an index.
            manifest_docs.push((idx_d, idx_b.clone(), idx_type.clone(), idx.clone()));
        } else {
            for m in &descs {
                let (md, mb, mv) = layout.document(m, "manifest")?;
                let mt = media_type(&mv, m["mediaType"].as_str().unwrap_or(OCI_MANIFEST));
                manifest_docs.push((md, mb, mt, mv));
            }
        }
        for (_, _, _, mv) in &manifest_docs {
            add(&mv["config"])?;
            for l in mv["layers"].as_array().into_iter().flatten() {
                add(l)?;
            }
        }
        // Referrers: the other entries of index.json whose manifest names the index as
        // its subject.
        let mut referrers = Vec::new();
        let mut referrer_tag_suffixes = Vec::new();
        let ref_name = |e: &serde_json::Value| {
            e["annotations"][crate::image::ANNOTATION_REF_NAME]
                .as_str()
                .map(str::to_string)
        };
        let image_name = ref_name(first);
        for entry in top["manifests"].as_array().into_iter().flatten().skip(1) {
            let Some(artifact_type) = entry["artifactType"].as_str() else {
                continue;
            };
            let (rd, rb, rv) = layout.document(entry, "referrer manifest")?;
            if rv["subject"]["digest"].as_str() != Some(idx_d.to_string().as_str()) {
                continue;
            }
            add(&rv["config"])?;
            for l in rv["layers"].as_array().into_iter().flatten() {
                add(l)?;
            }
            referrers.push((rd, rb, artifact_type.to_string()));
            let suffix = ref_name(entry)
                .zip(image_name.as_deref())
                .and_then(|(r, i)| {
                    r.strip_prefix(i)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                });
            referrer_tag_suffixes.push(suffix);
        }
        if !descs.is_empty() {
            manifests = manifest_docs
                .into_iter()
                .map(|(d, b, t, _)| (d, b, t))
                .collect();
        }
        Ok(LayoutImage {
            index: (idx_d, idx_b, idx_type),
            manifests,
            referrers,
            referrer_tag_suffixes,
            blobs,
        })
    }
}

/// Pushes the layout at `root` to `reference` (its tag; a digest reference pushes
/// untagged). Blobs go two at a time; the first failure stops the other upload, and
/// nothing is tagged.
pub async fn push(
    client: Arc<Client>,
    root: &Path,
    reference: &Reference,
    opts: PushOptions,
    on_event: &(dyn Fn(PushEvent<'_>) + Sync),
) -> Result<PushReport, RegistryError> {
    let image = LayoutImage::read(root)?;
    let uploader = Uploader::new(
        client.clone(),
        tokio::runtime::Handle::current(),
        opts.chunk_size,
        opts.state_dir,
    )
    .with_mount_from(opts.mount_from);
    let blobs = &image.blobs;
    on_event(PushEvent::Start {
        blobs: blobs.len(),
        bytes: blobs.iter().map(|b| b.size).sum(),
    });
    // Biggest first, so that the two uploads in flight end about together.
    let mut order: Vec<usize> = (0..blobs.len()).collect();
    order.sort_by(|&a, &b| blobs[b].size.cmp(&blobs[a].size).then(a.cmp(&b)));
    let next = AtomicUsize::new(0);
    let resumed = AtomicU32::new(0);
    let done: Vec<Mutex<Option<(BlobAction, Uploaded)>>> =
        blobs.iter().map(|_| Mutex::new(None)).collect();
    let worker = || async {
        loop {
            let Some(&n) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                return Ok::<(), RegistryError>(());
            };
            let b = &blobs[n];
            let events = |e: UploadEvent<'_>| match e {
                UploadEvent::Sent(bytes) => on_event(PushEvent::Progress(bytes)),
                UploadEvent::Resumed { offset, why } => {
                    resumed.fetch_add(1, Ordering::SeqCst);
                    on_event(PushEvent::Resume {
                        digest: &b.digest,
                        offset,
                        why,
                    });
                }
                UploadEvent::Continued { offset } => {
                    on_event(PushEvent::Resume {
                        digest: &b.digest,
                        offset,
                        why: "left by an earlier run",
                    });
                    on_event(PushEvent::Progress(offset));
                }
            };
            let (action, up) = uploader
                .upload_file(&b.path, &b.digest, b.size, &events)
                .await?;
            if action != BlobAction::Uploaded {
                on_event(PushEvent::Progress(b.size));
            }
            on_event(PushEvent::BlobDone {
                digest: &b.digest,
                action,
            });
            *done[n].lock().unwrap_or_else(|p| p.into_inner()) = Some((action, up));
        }
    };
    // Two blobs in flight: the registry takes each upload in on one core (hashing and
    // writing it), so a second one keeps another core busy. Dropping the other worker on
    // a failure drops its upload unfinished: nothing of it is committed.
    tokio::try_join!(worker(), worker())?;
    let done: Vec<(BlobAction, Uploaded)> = done
        .into_iter()
        .map(|d| d.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect::<Option<_>>()
        .ok_or_else(|| RegistryError::Protocol("a blob was never pushed".into()))?;

    // The configs and the referrers' blobs went up with the layers.
    let manifests: Vec<(&[u8], &str)> = image
        .manifests
        .iter()
        .map(|(_, b, t)| (b.as_slice(), t.as_str()))
        .collect();
    let referrers: Vec<ReferrerDocument<'_>> = image
        .referrers
        .iter()
        .zip(&image.referrer_tag_suffixes)
        .map(|((_, b, t), suffix)| ReferrerDocument {
            manifest: b,
            artifact_type: t,
            blobs: Vec::new(),
            tag_suffix: suffix.as_deref(),
        })
        .collect();
    let (idx_d, idx_b, idx_t) = &image.index;
    let docs = ImageDocuments {
        configs: &[],
        manifests: &manifests,
        index: (idx_b, idx_t),
        referrers: &referrers,
    };
    let referrers = uploader.publish(&docs, reference.manifest_ref()).await?;
    Ok(PushReport {
        reference: reference.to_string(),
        index_digest: idx_d.to_string(),
        manifests: image.manifests.iter().map(|m| m.0.to_string()).collect(),
        blobs: blobs
            .iter()
            .zip(&done)
            .map(|(b, (action, _))| BlobReport {
                digest: b.digest.to_string(),
                size: b.size,
                action: *action,
            })
            .collect(),
        uploaded_bytes: done.iter().map(|(_, u)| u.sent).sum(),
        resumed: resumed.into_inner(),
        resumed_bytes: done.iter().map(|(_, u)| u.resumed_from).sum(),
        requests: client.request_count(),
        referrers,
    })
}
