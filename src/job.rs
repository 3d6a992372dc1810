//! One model from the Hub to its destinations, streamed: list → plan → files read as
//! they arrive → layers → a layout directory, a registry, or both.
//!
//! The stages overlap. The file list is planned first (a plan a registry would refuse
//! stops the job before any download); the Hub stream is then given every file in the
//! order the layers will read them and downloads ahead (`--jobs` files, `--connections`
//! Range requests per file, a bounded buffer), so a layer is compressed while later
//! files are still arriving; a registry destination uploads each layer's blob in
//! PATCHes while it is produced, and takes two layers at once (the registry ingests
//! each upload on one core), so uploads run while the layers are being made.
//!
//! Nothing unverified is published. Every file is checked: its size and git blob id by
//! the stream before its last byte reaches the layer; an LFS file's sha256 by the layer,
//! which digests every byte anyway, once the layer is made (and by the stream too when
//! it fills the cache). A layer's upload is closed only once the layer is complete and
//! checked, and the configs, manifests and the tag go out only after every layer. A file
//! whose hash does not match fails its layer; the layer is built once more with the file
//! fetched afresh (the bytes are deterministic, so the same layer comes out), and a
//! second mismatch fails the job with nothing tagged.
//!
//! A registry destination's tag is looked at first (one manifest request): when it
//! already holds this model at this commit built with these settings, the job stops
//! there, with nothing downloaded ([`Published`], [`HubOutcome::UpToDate`]).
//!
//! A signal (the `cancel` flag of [`HubConfig`]) stops the job at its next read, with
//! [`HubError::Interrupted`]: the layout's staging directory is removed, nothing is
//! tagged, and the partial downloads stay in the cache for the next run.
//!
//! What the job does is told through [`Event`]s; the command line renders them.

use crate::catalogue::record::{BuildRecord, BuildSettings, RECORD_FILE};
use crate::digest::Digest;
use crate::image::media::{self, ANNOTATION_REVISION, ANNOTATION_SETTINGS};
use crate::image::ImageDocs;
use crate::layer::{self, Entry, EntryKind, LayerError, LayerInfo, Planned, Stoppable};
use crate::names::CommitSha;
use crate::pipeline::{
    self, BuildError, BuildReport, BuildRequest, Destination, DigestOnly, Hooks, LayerEvent,
    LayoutDestination,
};
use crate::remote::upload::{
    BlobSink, ImageDocuments, ReferrerDocument, ReferrerReport, UploadError, Uploaded, Uploader,
};
use crate::remote::{Client, Reference, RegistryError};
use crate::source::hub::{
    self, FetchProgress, FileFilter, HubConfig, HubError, HubStream, RemoteFile, RepoCache,
    StreamOptions, StreamStats,
};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The index annotations that say what an image was built with: the digest of its
/// [`BuildSettings`] (byte-relevant settings, platforms, layer plan, file globs).
pub fn settings_annotations(settings: &BuildSettings) -> BTreeMap<String, String> {
    let json = serde_json::to_vec(settings).expect("settings serialise");
    [(
        ANNOTATION_SETTINGS.to_string(),
        Digest::of(&json).to_string(),
    )]
    .into()
}

/// Where the image goes in a registry.
pub struct RegistryTarget {
    pub client: Client,
    pub reference: Reference,
    /// PATCH size of streamed blobs.
    pub chunk_size: u64,
    /// Where unfinished uploads are remembered for a rerun (`None`: nowhere).
    pub state_dir: Option<PathBuf>,
    /// Look at the tag first and build nothing if it already holds this image
    /// ([`Published::UpToDate`]); `false` rebuilds (`--force`). Not when the job writes
    /// a layout too: that layout was asked for.
    pub skip_if_published: bool,
}

/// What a registry's tag holds, against the image a job would build: why it is built,
/// or that it need not be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// No such tag (or repository).
    Absent,
    /// The tag's index was built at another commit (`None`: it records none).
    OtherCommit(Option<String>),
    /// The same commit, built with other settings (format, plan, globs, ...).
    OtherSettings,
    /// The same commit and settings: the index the tag points at.
    UpToDate(Digest),
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Published::Absent => f.write_str("not in the registry"),
            Published::OtherCommit(Some(c)) => write!(f, "built at {c}"),
            Published::OtherCommit(None) => f.write_str("built at an unknown commit"),
            Published::OtherSettings => f.write_str("built with other settings"),
            Published::UpToDate(_) => f.write_str("up to date"),
        }
    }
}

/// One manifest request: what `tag` of `client`'s repository holds, against an image of
/// `sha` whose index carries `annotations` ([`settings_annotations`]). An answer that is
/// not an index with those annotations (a plain manifest, other JSON) is not up to date.
pub async fn published(
    client: &Client,
    tag: &str,
    sha: &CommitSha,
    annotations: &BTreeMap<String, String>,
) -> Result<Published, RegistryError> {
    let url = client.url(&format!("manifests/{tag}"));
    let accept = media::accept(&[media::OCI_INDEX, media::OCI_MANIFEST]);
    let bytes = match client.get_bytes(&url, Some(&accept), None).await {
        Ok((bytes, _)) => bytes,
        Err(RegistryError::NotFound { .. }) => return Ok(Published::Absent),
        Err(e) => return Err(e),
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let note = |k: &str| v["annotations"][k].as_str().map(str::to_string);
    let revision = note(ANNOTATION_REVISION);
    if revision.as_deref() != Some(sha.as_str()) {
        return Ok(Published::OtherCommit(revision));
    }
    if note(ANNOTATION_SETTINGS).as_ref() != annotations.get(ANNOTATION_SETTINGS) {
        return Ok(Published::OtherSettings);
    }
    Ok(Published::UpToDate(Digest::of(&bytes)))
}

/// One model from the Hub.
pub struct HubJob {
    pub req: BuildRequest,
    pub hub: HubConfig,
    pub filter: FileFilter,
    /// The globs behind `filter`, for the build record.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub stream: StreamOptions,
    /// The files, already listed at `req.sha` by [`hub::list`] with `filter` applied
    /// (`verify` compares them with a provenance first): planned as they are, not
    /// listed again. `None`: the job lists them (or, offline, reads the kept listing).
    pub listing: Option<Vec<RemoteFile>>,
    /// Write the OCI layout to `req.output`. With no layout and no registry the image
    /// is only digested (`verify`'s rebuild): no byte of it is kept.
    pub layout: bool,
    pub registry: Option<RegistryTarget>,
    /// Refuse to start when the job would write more than this many bytes to disk
    /// (cache and layout).
    pub max_scratch: Option<u64>,
    /// Remove what this job put in the Hub cache once the image is stored.
    pub delete_downloads: bool,
}

/// What the job tells as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// The file list is known and planned.
    Planned {
        files: usize,
        content_bytes: u64,
        layers: usize,
    },
    /// A layer started, was retried, or is done (built, checked, and in the
    /// destinations).
    Layer(LayerEvent<'a>),
    /// Content bytes read into the layers (cumulative count not kept: a delta).
    Read(u64),
    /// Told once, after [`Event::Planned`] and before the first byte is fetched: what
    /// the Hub stream has to download (`download_bytes`), what the cache holds whole
    /// (`cached_bytes`) and the partial downloads of an earlier run it goes on from
    /// (`resumed_bytes`, not fetched again). They add up to the content bytes.
    Fetching {
        download_bytes: u64,
        cached_bytes: u64,
        resumed_bytes: u64,
    },
    /// Bytes received from the Hub since the last such event (a delta), told about
    /// every [`TICK`] while bytes arrive, from another thread than the layers'.
    Downloaded(u64),
    /// `path`'s earlier partial download goes on at byte `from` of `size` (the bytes
    /// before it are read back from the cache).
    Resuming { path: &'a str, from: u64, size: u64 },
    /// Layer bytes given to the registry's uploads since the last such event (a delta,
    /// told like [`Event::Downloaded`]): sent in PATCHes at most a few chunks later,
    /// or, for a layer an earlier run uploaded, found there and not sent.
    Uploading(u64),
    /// A transfer failed and is retried.
    Retry { path: &'a str, why: &'a str },
    /// Layer `n`'s blob is in the registry (told after the image is published).
    Uploaded { n: usize, upload: &'a Uploaded },
    /// The registry's tag was looked at (before anything else): the image is built
    /// unless it is [`Published::UpToDate`].
    TagChecked {
        reference: &'a Reference,
        published: &'a Published,
    },
    /// The tag points at the image.
    Published {
        reference: &'a Reference,
        index: &'a Digest,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("this build needs {need} bytes of disk ({what}), more than --max-scratch {limit}; use --no-cache and leave out --output to stream without a copy on disk")]
    Scratch { need: u64, limit: u64, what: String },
    #[error("starting the async runtime: {0}")]
    Runtime(io::Error),
    #[error(
        "HF_HUB_OFFLINE is set but --no-cache leaves the Hub cache unread: nothing to build from"
    )]
    OfflineWithoutCache,
}

/// How a job ended.
#[derive(Debug)]
pub enum HubOutcome {
    /// The registry's tag already holds the image ([`RegistryTarget::skip_if_published`]):
    /// nothing was listed, downloaded or built. The index the tag points at.
    UpToDate(Digest),
    Built(Box<HubReport>),
}

/// What a job did.
#[derive(Debug)]
pub struct HubReport {
    /// What the registry's tag held before (why the image was built), if it was looked at.
    pub published: Option<Published>,
    pub build: BuildReport,
    pub stream: StreamStats,
    /// Layer uploads, by layer number.
    pub uploads: Vec<(usize, Uploaded)>,
    /// Where the referrers (provenance, ModelPack twin) went in the registry.
    pub referrers: Vec<ReferrerReport>,
    /// Bytes removed from the cache (`delete_downloads`).
    pub freed_bytes: u64,
}

/// How often transfer counts are told ([`Event::Downloaded`], [`Event::Uploading`]).
pub const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Reports what the stream and the uploads did as events.
struct RetryEvents<'a>(&'a (dyn Fn(Event<'_>) + Sync));

/// The stream's progress goes through a `'static` trait object, called on the
/// stream's tasks: bytes are counted, retries and resumes queued, and all of it told
/// by the job's own threads ([`RetryEvents::drain`]).
#[derive(Default)]
struct Retries {
    retries: Mutex<Vec<(String, String)>>,
    resumes: Mutex<Vec<(String, u64, u64)>>,
    downloaded: AtomicU64,
    /// Layer bytes given to the registry ([`SinkWriter`], [`Counted`]).
    uploading: Arc<AtomicU64>,
}

impl FetchProgress for Retries {
    fn begin(&self, path: &str, size: u64, resumed_from: u64) {
        if resumed_from > 0 {
            self.resumes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((path.to_string(), resumed_from, size));
        }
    }
    fn advance(&self, _: &str, bytes: u64) {
        self.downloaded.fetch_add(bytes, Ordering::Relaxed);
    }
    fn done(&self, _: &str) {}
    fn retry(&self, path: &str, why: &str) {
        self.retries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path.to_string(), why.to_string()));
    }
}

impl RetryEvents<'_> {
    /// Tells what was queued or counted since the last call. Called from the layers'
    /// thread and the ticker at once: each count is taken (swapped) by one of them.
    fn drain(&self, r: &Retries) {
        let resumes = std::mem::take(&mut *r.resumes.lock().unwrap_or_else(|p| p.into_inner()));
        for (path, from, size) in resumes {
            (self.0)(Event::Resuming {
                path: &path,
                from,
                size,
            });
        }
        let queued = std::mem::take(&mut *r.retries.lock().unwrap_or_else(|p| p.into_inner()));
        for (path, why) in queued {
            (self.0)(Event::Retry {
                path: &path,
                why: &why,
            });
        }
        let down = r.downloaded.swap(0, Ordering::Relaxed);
        if down > 0 {
            (self.0)(Event::Downloaded(down));
        }
        let up = r.uploading.swap(0, Ordering::Relaxed);
        if up > 0 {
            (self.0)(Event::Uploading(up));
        }
    }
}

/// A writer that adds the bytes written through it to its counter (a layer's bytes
/// given to the registry).
struct Counted<W>(W, Arc<AtomicU64>);

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.0.write(b)?;
        self.1.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Where the layers read the files from: the Hub (through the cache unless
/// `--no-cache`), or, offline, the cache alone.
enum Source {
    Stream(HubStream),
    Cache(hub::HubContents),
}

impl Source {
    fn contents(&self) -> &dyn layer::Contents {
        match self {
            Source::Stream(s) => s,
            Source::Cache(c) => c,
        }
    }
}

/// The files to build and, offline, the cache's copies of them (every selected file of
/// the kept listing, or an error naming what is missing).
fn remote_files(job: &mut HubJob) -> Result<(Vec<RemoteFile>, Option<hub::Cached>), HubError> {
    if let Some(files) = job.listing.take() {
        return Ok((files, None));
    }
    let (name, sha) = (&job.req.name, &job.req.sha);
    if job.hub.offline {
        let cached = hub::cached(name, sha, &job.hub, &job.filter)?;
        let files = cached.files.iter().map(|f| f.file.clone()).collect();
        return Ok((files, Some(cached)));
    }
    let files = hub::list(name, sha, &job.hub, &job.filter, job.stream.cache)?;
    Ok((files, None))
}

fn entries_of(files: &[RemoteFile]) -> Vec<Entry> {
    files
        .iter()
        .map(|f| Entry {
            path: f.path.clone(),
            kind: EntryKind::File {
                size: f.size,
                executable: false,
            },
        })
        .collect()
}

/// What makes layer `n`'s bytes: the upload of that blob resumes across runs by it.
fn layer_key(
    req: &BuildRequest,
    entries: &[Entry],
    by_path: &BTreeMap<&str, &RemoteFile>,
) -> String {
    let mut key = format!(
        "{}\n{}\n{}\n{}\n{:?}\n",
        crate::catalogue::record::tool_version(),
        req.layer.format,
        req.layer.chunk_size,
        req.layer.effective_level(),
        req.layer.prefetch,
    );
    for e in entries {
        let check = by_path.get(e.path.as_str()).map_or("", |f| f.check.etag());
        key.push_str(&format!("{}\t{:?}\t{check}\n", e.path, e.kind));
    }
    Digest::of(key.as_bytes()).to_string()
}

/// Bytes of disk the job would write: files not yet complete in the cache (with the
/// cache) and about the content again for a layout.
fn scratch_need(job: &HubJob, files: &[RemoteFile]) -> (u64, String) {
    let cache = RepoCache::new(&job.hub.cache_dir, &job.req.name);
    let mut need = 0;
    let mut what = Vec::new();
    if job.stream.cache {
        let missing: u64 = files
            .iter()
            .filter(|f| {
                std::fs::metadata(cache.blob(f.check.etag())).map_or(true, |m| m.len() != f.size)
            })
            .map(|f| f.size)
            .sum();
        if missing > 0 {
            need += missing;
            what.push(format!("{missing} in the Hub cache"));
        }
    }
    if job.layout {
        let content: u64 = files.iter().map(|f| f.size).sum();
        need += content;
        what.push(format!("about {content} for the layout"));
    }
    (need, what.join(", "))
}

/// A failed layer worth building again: a file failed its check (it is fetched afresh
/// on the next read), or a remembered upload turned out stale (started over).
fn worth_retrying(e: &BuildError) -> bool {
    let io_inner = |e: &io::Error| -> bool {
        e.get_ref().is_some_and(|i| {
            matches!(
                i.downcast_ref::<HubError>(),
                Some(HubError::Integrity { .. })
            )
        })
    };
    match e {
        _ if upload_started_over(e) => true,
        BuildError::Layer(LayerError::Read { source, .. }) => io_inner(source),
        BuildError::Layer(LayerError::Write(source)) => io_inner(source),
        BuildError::ContentMismatch { .. } => true,
        BuildError::StaleUpload { .. } => true,
        _ => false,
    }
}

/// Whether a layer failed only because the upload an earlier run left for it was not
/// its bytes (a session holding other bytes, or a blob remembered as done that is not
/// the layer): the layer is built again into a new upload (no file is fetched again).
pub fn upload_started_over(e: &BuildError) -> bool {
    match e {
        BuildError::StaleUpload { .. } => true,
        BuildError::Layer(LayerError::Write(source)) => source.get_ref().is_some_and(|i| {
            matches!(
                i.downcast_ref::<UploadError>(),
                Some(UploadError::Stale { .. })
            )
        }),
        _ => false,
    }
}

/// Runs `job`, telling `on_event` what happens.
pub fn run_hub(
    mut job: HubJob,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<HubOutcome, JobError> {
    if job.hub.offline && !job.stream.cache {
        return Err(JobError::OfflineWithoutCache);
    }
    job.req.check_tags().map_err(BuildError::from)?;
    let cancel = job.hub.cancel.clone();
    let cancelled = || cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
    // The registry side runs on its own runtime (the tag check too, so the connection
    // it opens is reused by the uploads); the layers are built on this thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("upload")
        .enable_all()
        .build()
        .map_err(JobError::Runtime)?;
    let mut tag_held = None;
    if let Some(t) = job.registry.as_ref().filter(|t| t.skip_if_published) {
        if !job.layout {
            let tag = t.reference.manifest_ref();
            let found = rt.block_on(async {
                tokio::select! {
                    p = published(&t.client, tag, &job.req.sha, &job.req.index_annotations) => Ok(p?),
                    () = hub::cancelled(&job.hub) => Err(JobError::Hub(HubError::Interrupted)),
                }
            })?;
            on_event(Event::TagChecked {
                reference: &t.reference,
                published: &found,
            });
            if let Published::UpToDate(index) = found {
                return Ok(HubOutcome::UpToDate(index));
            }
            tag_held = Some(found);
        }
    }
    let (files, offline) = remote_files(&mut job)?;
    let entries = entries_of(&files);
    let plan = pipeline::plan_layers(entries, &job.req)?;
    let (need, what) = scratch_need(&job, &files);
    if let Some(limit) = job.max_scratch {
        if need > limit {
            return Err(JobError::Scratch { need, limit, what });
        }
    }
    on_event(Event::Planned {
        files: files.len(),
        content_bytes: files.iter().map(|f| f.size).sum(),
        layers: plan.layers.len(),
    });

    // The order every layer will open its files in: the stream downloads ahead in it.
    let by_path: BTreeMap<&str, &RemoteFile> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let landmarks = job.req.layer.format == layer::Format::Estargz;
    let mut order = Vec::with_capacity(files.len());
    let mut keys = Vec::with_capacity(plan.layers.len());
    for planned in &plan.layers {
        keys.push(layer_key(&job.req, &planned.entries, &by_path));
        // Without the prefix: it changes the names, not the order, and the stream
        // fetches by the model's paths.
        let laid = layer::plan(planned.entries.clone(), &planned.prefetch, landmarks, "")
            .map_err(BuildError::from)?;
        for p in laid {
            if let Planned::Source(Entry {
                path,
                kind: EntryKind::File { .. },
            }) = p
            {
                order.push((*by_path[path.as_str()]).clone());
            }
        }
    }
    let cache = RepoCache::new(&job.hub.cache_dir, &job.req.name);
    let cached_before: Vec<bool> = files
        .iter()
        .map(|f| std::fs::metadata(cache.blob(f.check.etag())).is_ok_and(|m| m.len() == f.size))
        .collect();
    let retries = Arc::new(Retries::default());
    // What the stream will fetch, from the same look at the cache it makes (a file
    // another process finishes meanwhile is read from the cache instead).
    let (mut download_bytes, mut cached_bytes, mut resumed_bytes) = (0, 0, 0);
    for (f, before) in files.iter().zip(&cached_before) {
        let partial = || {
            std::fs::metadata(cache.incomplete(f.check.etag())).map_or(0, |m| {
                if m.len() < f.size {
                    m.len()
                } else {
                    0
                }
            })
        };
        match (offline.is_some() || *before, job.stream.cache) {
            (true, _) => cached_bytes += f.size,
            (false, true) => {
                let had = partial();
                resumed_bytes += had;
                download_bytes += f.size - had;
            }
            (false, false) => download_bytes += f.size,
        }
    }
    on_event(Event::Fetching {
        download_bytes,
        cached_bytes,
        resumed_bytes,
    });
    let source = match &offline {
        Some(cached) => Source::Cache(cached.contents()),
        None => Source::Stream(HubStream::start(
            &job.req.name,
            &job.req.sha,
            &job.hub,
            order,
            StreamOptions {
                // Checked once, by the layer (below); a mismatch fails the layer, which
                // is built again with the file fetched afresh.
                reader_checks_sha256: true,
                ..job.stream.clone()
            },
            retries.clone(),
        )?),
    };

    let mut req = job.req.clone();
    req.expected_digests = hub::expected_sha256(files.iter().map(|f| (f.path.as_str(), &f.check)));
    let settings = BuildSettings::new(
        &req.layer,
        &req.plan,
        &req.platforms,
        &job.include,
        &job.exclude,
    )
    .with_modelpack(req.modelpack);
    let record = BuildRecord::new(&req.name, &req.sha, &req.tag, settings).with_files(&files);
    // The record also makes the image's provenance (a referrer of the index).
    req.record = Some(record.clone());
    let record = record.to_bytes();

    let uploads: Arc<Mutex<BTreeMap<usize, Uploaded>>> = Arc::default();
    let referrers: Arc<Mutex<Vec<ReferrerReport>>> = Arc::default();
    let mut reference = None;
    let registry: Option<Box<dyn Destination>> = match job.registry {
        Some(t) => {
            let tag = t.reference.manifest_ref().to_string();
            reference = Some(t.reference.clone());
            let uploader = Uploader::new(
                Arc::new(t.client),
                rt.handle().clone(),
                t.chunk_size,
                t.state_dir,
            );
            Some(Box::new(RegistryDestination {
                uploader,
                tag,
                keys,
                sinks: BTreeMap::new(),
                uploads: uploads.clone(),
                referrers: referrers.clone(),
                raw_failures: RawFailures::default(),
                closing: None,
                present: BTreeMap::new(),
                uploading: retries.uploading.clone(),
                resuming: std::collections::BTreeSet::new(),
                // Two layers at once read two files at once: not with `--jobs 1`.
                parallel: job.hub.jobs.clamp(1, 2),
            }))
        }
        None => None,
    };
    let dest: Box<dyn Destination> = match (job.layout, registry) {
        (true, Some(r)) => Box::new(Both {
            first: Box::new(LayoutDestination::create(&req.output)?),
            second: r,
        }),
        (false, Some(r)) => r,
        (true, None) => Box::new(LayoutDestination::create(&req.output)?),
        (false, None) => Box::new(DigestOnly),
    };

    let tell = RetryEvents(on_event);
    let on_layer = |e: LayerEvent<'_>| {
        tell.drain(&retries);
        on_event(Event::Layer(e));
    };
    // Files the layers caught with the wrong sha256 (the stream leaves that check to
    // them): fetched afresh by the retry, and reported with the stream's own re-fetches.
    let mismatched = Mutex::new(Vec::new());
    let retry = |_n: usize, e: &BuildError| {
        if cancelled() {
            return false;
        }
        if let BuildError::ContentMismatch { path, .. } = e {
            mismatched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(path.clone());
        }
        worth_retrying(e)
    };
    let hooks = Hooks {
        retry: &retry,
        on_layer: &on_layer,
    };
    let extra = [(RECORD_FILE, record)];
    // Every read, from the network or the cache, fails soon after a signal.
    let never = AtomicBool::new(false);
    let contents = Stoppable {
        inner: source.contents(),
        stop: cancel.as_deref().unwrap_or(&never),
        why: "interrupted",
    };
    // Transfers are told as they happen, also while the layers wait for bytes (a stall
    // shows as no bytes, not as silence until the next read).
    let (ticking, ticks) = std::sync::mpsc::channel::<()>();
    let built = std::thread::scope(|s| {
        let (tell, retries) = (&tell, &retries);
        // Without the thread (none could be started) the counts are told at each
        // layer's events and at the end: later, but not wrong.
        let _ = std::thread::Builder::new()
            .name("job-events".into())
            .spawn_scoped(s, move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = ticks.recv_timeout(TICK)
                {
                    tell.drain(retries);
                }
            });
        let built = pipeline::build_planned_with(
            plan,
            &contents,
            &req,
            dest,
            &extra,
            &|n| on_event(Event::Read(n)),
            &hooks,
        );
        drop(ticking);
        built
    });
    tell.drain(&retries);
    let mut stats = match &source {
        Source::Stream(s) => s.stats(),
        Source::Cache(_) => StreamStats {
            cached_bytes: files.iter().map(|f| f.size).sum(),
            verified_files: files.len() as u64,
            ..StreamStats::default()
        },
    };
    drop(source);
    stats
        .failures
        .extend(mismatched.into_inner().unwrap_or_else(|p| p.into_inner()));
    let mut freed = 0;
    // Whether the build succeeded or failed, but not after a signal: the next run
    // resumes what is there. Offline nothing was downloaded (and a file may be a
    // snapshot entry, not a blob).
    if job.delete_downloads && job.stream.cache && offline.is_none() && !cancelled() {
        for (f, before) in files.iter().zip(&cached_before) {
            if *before {
                continue;
            }
            let _ = std::fs::remove_file(cache.snapshot_file(&req.sha, &f.path));
            if std::fs::remove_file(cache.blob(f.check.etag())).is_ok() {
                freed += f.size;
            }
        }
    }
    let build = match built {
        Err(_) if cancelled() => return Err(HubError::Interrupted.into()),
        b => b?,
    };
    if let Some(r) = &reference {
        on_event(Event::Published {
            reference: r,
            index: &build.index_digest,
        });
    }
    let uploads = std::mem::take(&mut *uploads.lock().unwrap_or_else(|p| p.into_inner()));
    for (n, u) in &uploads {
        on_event(Event::Uploaded { n: *n, upload: u });
    }
    let referrers_put = std::mem::take(&mut *referrers.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(HubOutcome::Built(Box::new(HubReport {
        published: tag_held,
        build,
        stream: stats,
        uploads: uploads.into_iter().collect(),
        referrers: referrers_put,
        freed_bytes: freed,
    })))
}

/// A registry: each layer streamed as it is made, the documents put at the end.
struct RegistryDestination {
    uploader: Uploader,
    tag: String,
    keys: Vec<String>,
    sinks: BTreeMap<usize, Arc<Mutex<Option<BlobSink>>>>,
    uploads: Arc<Mutex<BTreeMap<usize, Uploaded>>>,
    referrers: Arc<Mutex<Vec<ReferrerReport>>>,
    /// Raw uploads that failed, by file: told when the file's layer is done.
    raw_failures: RawFailures,
    /// The last layer's upload being closed (its last chunks and the final PUT) while
    /// the next layer is built: (layer, digest, size, closing thread).
    closing: Option<Closing>,
    /// Layers an earlier run uploaded (same key) and the registry still has: built
    /// into nothing, checked against this digest and size, not sent again.
    present: BTreeMap<usize, (Digest, u64)>,
    /// Layers made and uploaded at once.
    parallel: usize,
    /// Counts the layer bytes given to the uploads ([`Event::Uploading`]).
    uploading: Arc<AtomicU64>,
    /// Layers whose upload goes on from an earlier run's session: closed in their own
    /// `layer_done`, where a session that held other bytes is that layer's to build
    /// again, into a new one.
    resuming: std::collections::BTreeSet<usize>,
}

type Closing = (
    usize,
    Digest,
    u64,
    std::thread::JoinHandle<Result<Uploaded, UploadError>>,
);

/// The layer's writer: the sink stays with the destination, which closes it.
struct SinkWriter(Arc<Mutex<Option<BlobSink>>>);

impl Write for SinkWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.as_mut()
            .ok_or_else(|| io::Error::other("the upload is closed"))?
            .write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn upload_error(e: UploadError) -> BuildError {
    match e {
        // Typed, for `upload_started_over`: the layer is built again into a new upload.
        stale @ UploadError::Stale { .. } => {
            BuildError::Layer(LayerError::Write(io::Error::other(stale)))
        }
        other => BuildError::Destination(format!("uploading a layer: {other}")),
    }
}

impl Destination for RegistryDestination {
    fn layer_writer(&mut self, n: usize) -> Result<Box<dyn Write + Send>, BuildError> {
        let key = self.keys.get(n).map(String::as_str);
        if let Some(key) = key {
            let handle = self.uploader.handle();
            if let Ok(Some(known)) = handle.block_on(self.uploader.known(key)) {
                self.present.insert(n, known);
                return Ok(Box::new(Counted(io::sink(), self.uploading.clone())));
            }
        }
        self.present.remove(&n);
        match key.is_some_and(|k| self.uploader.has_pending(k)) {
            true => self.resuming.insert(n),
            false => self.resuming.remove(&n),
        };
        // A second writer for the same layer (a rebuild) drops the first upload
        // unfinished: nothing of it is committed.
        // The layer digests its blob as it writes it: the upload need not again.
        let sink = self.uploader.sink_digested_by_writer(key);
        let slot = Arc::new(Mutex::new(Some(sink)));
        self.sinks.insert(n, slot.clone());
        Ok(Box::new(Counted(SinkWriter(slot), self.uploading.clone())))
    }

    /// A file's raw blob goes up as the layer reads it, unless the registry has it (an
    /// LFS file, whose sha256 the Hub gave: one `HEAD`). With that sha256 the upload is
    /// closed with it, unhashed, and the registry checks it; a small file's is hashed as
    /// it goes.
    fn raw_writer(
        &mut self,
        path: &str,
        digest: Option<&Digest>,
    ) -> Result<Option<Box<dyn pipeline::RawSink>>, BuildError> {
        // A new read of the file (its layer built again) is a new upload.
        lock_map(&self.raw_failures).remove(path);
        if let Some(d) = digest {
            let handle = self.uploader.handle();
            if handle
                .block_on(self.uploader.exists(d))
                .map_err(|e| BuildError::Destination(format!("asking the registry for {d}: {e}")))?
            {
                return Ok(None);
            }
        }
        let sink = match digest {
            Some(_) => self.uploader.sink_digested_by_writer(None),
            None => self.uploader.sink(None),
        };
        Ok(Some(Box::new(RawUpload {
            sink,
            digest: digest.copied(),
            path: path.to_string(),
            failures: self.raw_failures.clone(),
        })))
    }

    /// Two (unless `--jobs 1`): the registry takes each upload in on one core (hashing
    /// and writing it), so a second layer made and sent meanwhile keeps the other core
    /// busy.
    fn parallel_layers(&self) -> usize {
        self.parallel
    }

    fn layer_done(&mut self, n: usize, info: &LayerInfo) -> Result<(), BuildError> {
        // The layer checked its files, so a raw upload that failed did not fail for
        // bytes the Hub got wrong (that fails the layer first, and it is built again).
        {
            let failures = lock_map(&self.raw_failures);
            if let Some((path, why)) = info
                .file_digests
                .iter()
                .find_map(|(p, _)| failures.get(p).map(|w| (p, w)))
            {
                return Err(BuildError::Destination(format!(
                    "uploading the raw blob of {path} (ModelPack twin): {why}"
                )));
            }
        }
        // One layer closes in the background at a time: memory stays bounded.
        self.settle()?;
        if let Some((digest, size)) = self.present.remove(&n) {
            if digest != info.digest || size != info.size {
                // Not the bytes remembered: forget them and build the layer again,
                // this time uploading it.
                if let Some(key) = self.keys.get(n) {
                    self.uploader.forget_done(key);
                }
                return Err(BuildError::StaleUpload {
                    layer: n,
                    built: info.digest,
                    remembered: digest,
                });
            }
            let up = Uploaded {
                digest,
                size,
                sent: 0,
                resumed_from: size,
            };
            self.uploads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(n, up);
            return Ok(());
        }
        let sink = self
            .sinks
            .remove(&n)
            .and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).take())
            .ok_or_else(|| BuildError::Destination(format!("layer {n} has no upload")))?;
        let digest = info.digest;
        if self.resuming.remove(&n) {
            // Bytes past the offset the earlier run remembered are checked by nothing
            // but the closing PUT: a refusal there is stale, and the layer is built
            // once more (the pipeline's retry) into a new session, never a failure.
            let up = sink.finish_as(digest).map_err(upload_error)?;
            return self.uploaded(n, up, digest, info.size);
        }
        let closing = std::thread::Builder::new()
            .name(format!("close-layer-{n}"))
            .spawn(move || sink.finish_as(digest))
            .map_err(|e| {
                BuildError::Destination(format!("closing the upload of layer {n}: {e}"))
            })?;
        self.closing = Some((n, info.digest, info.size, closing));
        Ok(())
    }

    fn commit(
        self: Box<Self>,
        _layers: &[LayerInfo],
        docs: &ImageDocs,
        _extra: &[(&str, Vec<u8>)],
    ) -> Result<PathBuf, BuildError> {
        let configs: Vec<&[u8]> = docs.configs.iter().map(|c| c.bytes.as_slice()).collect();
        let manifests: Vec<(&[u8], &str)> = docs
            .manifests
            .iter()
            .map(|(_, m)| (m.bytes.as_slice(), media::OCI_MANIFEST))
            .collect();
        let referrers: Vec<ReferrerDocument<'_>> = docs
            .referrers
            .iter()
            .map(|r| ReferrerDocument {
                manifest: &r.manifest.bytes,
                artifact_type: &r.artifact_type,
                blobs: r.blobs.iter().map(|b| b.bytes.as_slice()).collect(),
                tag_suffix: r.tag_suffix.as_deref(),
            })
            .collect();
        let image = ImageDocuments {
            configs: &configs,
            manifests: &manifests,
            index: (&docs.index.bytes, media::OCI_INDEX),
            referrers: &referrers,
        };
        let mut this = self;
        this.settle()?;
        let handle = tokio::runtime::Handle::try_current();
        let published = match handle {
            // Never expected: the pipeline runs on a plain thread.
            Ok(_) => Err(RegistryError::Protocol(
                "publish called inside a runtime".into(),
            )),
            Err(_) => this
                .uploader_handle()
                .block_on(this.uploader.publish(&image, &this.tag)),
        };
        let reports =
            published.map_err(|e| BuildError::Destination(format!("publishing the image: {e}")))?;
        *this.referrers.lock().unwrap_or_else(|p| p.into_inner()) = reports;
        Ok(PathBuf::from(format!(
            "{}{}",
            this.uploader.client().base_str(),
            this.uploader.client().repository
        )))
    }
}

impl RegistryDestination {
    fn uploader_handle(&self) -> tokio::runtime::Handle {
        self.uploader.handle()
    }

    /// Waits for the layer upload being closed and checks it is the layer built.
    fn settle(&mut self) -> Result<(), BuildError> {
        let Some((n, digest, size, closing)) = self.closing.take() else {
            return Ok(());
        };
        let up = closing
            .join()
            .map_err(|_| BuildError::Destination(format!("closing the upload of layer {n} panicked")))?
            .map_err(|e| match e {
                // Too late to rebuild that layer here: a rerun uploads it afresh.
                UploadError::Stale { .. } => BuildError::Destination(format!(
                    "layer {n}: the registry's unfinished upload from an earlier run held other bytes; it was forgotten, run again"
                )),
                other => upload_error(other),
            })?;
        self.uploaded(n, up, digest, size)
    }

    /// Records layer `n`'s upload, once checked to be the layer built.
    fn uploaded(
        &mut self,
        n: usize,
        up: Uploaded,
        digest: Digest,
        size: u64,
    ) -> Result<(), BuildError> {
        if up.digest != digest || up.size != size {
            return Err(BuildError::Destination(format!(
                "layer {n} was uploaded as {} ({} bytes) but built as {digest} ({size} bytes)",
                up.digest, up.size
            )));
        }
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, up);
        Ok(())
    }
}

/// Why each file's raw upload failed.
type RawFailures = Arc<Mutex<BTreeMap<String, String>>>;

fn lock_map(m: &RawFailures) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A file's raw blob on its way into the registry.
struct RawUpload {
    sink: BlobSink,
    digest: Option<Digest>,
    path: String,
    failures: RawFailures,
}

impl Write for RawUpload {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.sink.write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl pipeline::RawSink for RawUpload {
    /// A failure is not the read's: the registry refuses a blob whose bytes are not the
    /// Hub's sha256, and the layer reading the same bytes fails on them too, with the
    /// retry a bad download gets. So it is kept for [`Destination::layer_done`].
    fn finish(self: Box<Self>) -> io::Result<()> {
        let RawUpload {
            sink,
            digest,
            path,
            failures,
        } = *self;
        let done = match digest {
            Some(d) => sink.finish_as(d),
            None => sink.finish(),
        };
        if let Err(e) = done {
            lock_map(&failures).insert(path, e.to_string());
        }
        Ok(())
    }
}

/// Two destinations fed the same bytes (a layout and a registry).
struct Both {
    first: Box<dyn Destination>,
    second: Box<dyn Destination>,
}

struct Tee(Box<dyn Write + Send>, Box<dyn Write + Send>);

impl Write for Tee {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write_all(b)?;
        self.1.write_all(b)?;
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

impl Destination for Both {
    fn layer_writer(&mut self, n: usize) -> Result<Box<dyn Write + Send>, BuildError> {
        Ok(Box::new(Tee(
            self.first.layer_writer(n)?,
            self.second.layer_writer(n)?,
        )))
    }

    fn raw_writer(
        &mut self,
        path: &str,
        digest: Option<&Digest>,
    ) -> Result<Option<Box<dyn pipeline::RawSink>>, BuildError> {
        let first = self.first.raw_writer(path, digest)?;
        let second = self.second.raw_writer(path, digest)?;
        Ok(match (first, second) {
            (Some(a), Some(b)) => Some(Box::new(pipeline::RawTee(a, b))),
            (a, b) => a.or(b),
        })
    }

    fn layer_done(&mut self, n: usize, info: &LayerInfo) -> Result<(), BuildError> {
        self.first.layer_done(n, info)?;
        self.second.layer_done(n, info)
    }

    fn parallel_layers(&self) -> usize {
        self.first
            .parallel_layers()
            .max(self.second.parallel_layers())
    }

    fn commit(
        self: Box<Self>,
        layers: &[LayerInfo],
        docs: &ImageDocs,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<PathBuf, BuildError> {
        let out = self.first.commit(layers, docs, extra)?;
        self.second.commit(layers, docs, &[])?;
        Ok(out)
    }
}

/// The default place for unfinished upload memories: `DEPOTAI_UPLOAD_STATE`, else
/// `$XDG_CACHE_HOME/depotai/uploads`, else `~/.cache/depotai/uploads`.
pub fn upload_state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DEPOTAI_UPLOAD_STATE") {
        return Some(PathBuf::from(d));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(cache.join("depotai/uploads"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_upload_is_retried_by_its_type_and_a_message_saying_so_is_not() {
        let (a, b) = (Digest::of(b"built"), Digest::of(b"remembered"));
        let stale = BuildError::StaleUpload {
            layer: 2,
            built: a,
            remembered: b,
        };
        assert!(worth_retrying(&stale));
        assert_eq!(
            stale.to_string(),
            format!("layer 2 came out as {a} but an earlier run uploaded {b} for it; it must be uploaded again from the start")
        );
        // The same words in a destination's message decide nothing.
        assert!(!worth_retrying(&BuildError::Destination(stale.to_string())));
    }
}
