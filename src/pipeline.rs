//! The whole job for one model: entries from a source → a layer plan → layers (eStargz
//! or zstd:chunked) → a destination (an OCI layout directory).

use crate::catalogue::record::BuildRecord;
use crate::digest::Digest;
use crate::image::{self, ImageDocs, ImageError, ImageMeta, LayoutWriter, Platform};
use crate::layer::{self, Contents, Entry, LayerError, LayerInfo, Stoppable};
use crate::modelpack::{self, TwinFile, TwinMeta};
use crate::names::{CommitSha, ModelName};
pub use crate::plan::BuiltLayer;
use crate::plan::{self, LayerPlan, LayerRole, PlanError, PlanOptions, PlannedLayer};
use crate::provenance::{self, Provenance};
use crate::units::human_bytes;
use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{path}: sha256 mismatch (expected {expected}, got {got}): the source gave other bytes than it lists")]
    ContentMismatch {
        path: String,
        expected: String,
        got: String,
    },
    #[error("the {role} layer came out at {} ({size} bytes), more than the layer limit of {} ({limit} bytes)", human_bytes(*size), human_bytes(*limit))]
    BlobTooLarge { role: String, size: u64, limit: u64 },
    /// Layer `layer` came out other than the blob an earlier run uploaded for it (and
    /// remembered as done): that memory is forgotten, and the layer is worth building
    /// and uploading again.
    #[error("layer {layer} came out as {built} but an earlier run uploaded {remembered} for it; it must be uploaded again from the start")]
    StaleUpload {
        layer: usize,
        built: Digest,
        remembered: Digest,
    },
    #[error("{0}")]
    Destination(String),
}

#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub name: ModelName,
    pub sha: CommitSha,
    pub tag: String,
    pub output: PathBuf,
    pub platforms: Vec<Platform>,
    pub layer: layer::Options,
    /// Which files go into which layer.
    pub plan: PlanOptions,
    /// Digests (`sha256:…`) the source vouches for, by path: checked against what the
    /// layer actually read before anything is written.
    pub expected_digests: BTreeMap<String, String>,
    /// Extra annotations of the image index (see [`ImageMeta::index_annotations`]).
    pub index_annotations: BTreeMap<String, String>,
    /// What the image is built from; with it, the image gets its provenance (an in-toto
    /// statement attached as a referrer of the index).
    pub record: Option<BuildRecord>,
    /// Also make the image's ModelPack twin ([`crate::modelpack`]): every file teed, as
    /// its layer reads it, into the destination as a raw blob.
    pub modelpack: bool,
}

impl BuildRequest {
    /// The image's tag, and the twin's (`<tag>-modelpack`) with `--modelpack`: checked
    /// before anything is read.
    pub fn check_tags(&self) -> Result<(), ImageError> {
        image::validate_tag(&self.tag)?;
        if self.modelpack {
            modelpack::check_tag(&self.tag)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct BuildReport {
    pub output: PathBuf,
    pub tag: String,
    pub index_digest: Digest,
    pub manifests: Vec<(Platform, Digest)>,
    pub configs: Vec<Digest>,
    /// Bottom layer first.
    pub layers: Vec<BuiltLayer>,
    /// The ModelPack twin's manifest (`--modelpack`).
    pub twin: Option<image::Blob>,
    pub seconds: f64,
}

impl BuildReport {
    /// Regular files in the image.
    pub fn files(&self) -> u64 {
        self.layers.iter().map(|l| l.info.files).sum()
    }

    /// Bytes of all layer blobs.
    pub fn layers_size(&self) -> u64 {
        self.layers.iter().map(|l| l.info.size).sum()
    }

    /// Bytes of file content.
    pub fn content_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.info.content_bytes).sum()
    }
}

/// Where a built image goes: a layout directory, a registry, or both. The pipeline
/// writes layer `n`'s blob through `layer_writer(n)`, says when it is complete with its
/// digest, and only once every layer is built and verified hands over the documents.
pub trait Destination: Send {
    /// A writer for the blob of layer `n` (0-based, bottom first).
    fn layer_writer(&mut self, n: usize) -> Result<Box<dyn Write + Send>, BuildError>;
    /// Layer `n`'s writer has been flushed and dropped; the blob is `info`.
    fn layer_done(&mut self, n: usize, info: &LayerInfo) -> Result<(), BuildError>;
    /// How many layers are worth making at once for this destination. One for a
    /// directory (a layer's compression already has every core); more for a registry,
    /// which takes each upload in on one core of its own, so one upload at a time is
    /// slower than the layers are made. The bytes never depend on it.
    fn parallel_layers(&self) -> usize {
        1
    }
    /// A writer for the raw blob of the file at `path` (a layer of the ModelPack twin),
    /// fed the file's bytes as the image's layer reads them and finished at their end;
    /// `digest` is the file's sha256 when the source vouches for it beforehand. `None`:
    /// this destination keeps no such blob, or has it already. The blob is the file's
    /// sha256 only once its layer is checked ([`Destination::layer_done`]).
    fn raw_writer(
        &mut self,
        _path: &str,
        _digest: Option<&Digest>,
    ) -> Result<Option<Box<dyn RawSink>>, BuildError> {
        Ok(None)
    }
    /// Every layer is built and verified: store the documents (the tag last). Returns
    /// where the image went, for the report.
    fn commit(
        self: Box<Self>,
        layers: &[LayerInfo],
        docs: &ImageDocs,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<PathBuf, BuildError>;
}

/// Where a file's raw copy goes ([`Destination::raw_writer`]).
pub trait RawSink: Write + Send {
    /// The file's last byte was written.
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

/// A raw copy into two destinations.
pub struct RawTee(pub Box<dyn RawSink>, pub Box<dyn RawSink>);

impl Write for RawTee {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(b)?;
        self.1.write_all(b)?;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        self.1.flush()
    }
}

impl RawSink for RawTee {
    fn finish(self: Box<Self>) -> std::io::Result<()> {
        self.0.finish()?;
        self.1.finish()
    }
}

/// An OCI image layout directory, written atomically (see [`LayoutWriter`]).
pub struct LayoutDestination {
    layout: LayoutWriter,
    /// Files whose raw copy is staged: named by digest when their layer is done.
    raws: std::collections::BTreeSet<String>,
}

impl LayoutDestination {
    pub fn create(output: &Path) -> Result<LayoutDestination, BuildError> {
        Ok(LayoutDestination {
            layout: LayoutWriter::create(output)?,
            raws: Default::default(),
        })
    }
}

/// A raw copy staged in the layout.
struct RawFile(BufWriter<std::fs::File>);

impl Write for RawFile {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl RawSink for RawFile {
    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Destination for LayoutDestination {
    fn layer_writer(&mut self, n: usize) -> Result<Box<dyn Write + Send>, BuildError> {
        Ok(Box::new(BufWriter::with_capacity(
            1 << 20,
            self.layout.layer_file(n)?,
        )))
    }

    fn layer_done(&mut self, _n: usize, info: &LayerInfo) -> Result<(), BuildError> {
        // The layer checked every file's sha256: their raw copies take it as their name.
        for (path, digest) in &info.file_digests {
            if self.raws.remove(path) {
                self.layout.name_raw(path, digest)?;
            }
        }
        Ok(())
    }

    fn raw_writer(
        &mut self,
        path: &str,
        _digest: Option<&Digest>,
    ) -> Result<Option<Box<dyn RawSink>>, BuildError> {
        let file = self.layout.raw_file(path)?;
        self.raws.insert(path.to_string());
        Ok(Some(Box::new(RawFile(BufWriter::with_capacity(
            1 << 20,
            file,
        )))))
    }

    fn commit(
        self: Box<Self>,
        layers: &[LayerInfo],
        docs: &ImageDocs,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<PathBuf, BuildError> {
        for (name, bytes) in extra {
            self.layout.put_extra(name, bytes)?;
        }
        Ok(self.layout.commit(layers, docs)?)
    }
}

/// A destination that keeps nothing: the layers are hashed as they are made (their
/// digests are all `verify` needs), and no byte touches the disk.
pub struct DigestOnly;

impl Destination for DigestOnly {
    fn layer_writer(&mut self, _n: usize) -> Result<Box<dyn Write + Send>, BuildError> {
        Ok(Box::new(std::io::sink()))
    }

    fn layer_done(&mut self, _n: usize, _info: &LayerInfo) -> Result<(), BuildError> {
        Ok(())
    }

    fn commit(
        self: Box<Self>,
        _layers: &[LayerInfo],
        _docs: &ImageDocs,
        _extra: &[(&str, Vec<u8>)],
    ) -> Result<PathBuf, BuildError> {
        Ok(PathBuf::new())
    }
}

/// The default output directory: `out/<name, lowercased>`.
pub fn default_output(name: &ModelName) -> PathBuf {
    Path::new("out").join(name.registry_path())
}

/// Splits `entries` into layers as `req` says, validating the whole set first, and
/// refuses, before anything is written, a chunk size out of range or a layer whose TOC
/// a reader would refuse.
pub fn plan_layers(entries: Vec<Entry>, req: &BuildRequest) -> Result<LayerPlan, BuildError> {
    req.layer.check_chunk_size()?;
    let landmarks = req.layer.format == layer::Format::Estargz;
    let plan = plan::plan(
        entries,
        &req.layer.prefetch,
        landmarks,
        &req.layer.prefix,
        &req.plan,
    )?;
    for l in &plan.layers {
        layer::bound::check_toc_bound(&l.entries, &req.layer)?;
    }
    Ok(plan)
}

/// `entries` (read through `contents`) into a layout at `req.output`: a build from a
/// directory. (A Hub build is the streamed job, `crate::job`.)
pub fn build_image(
    entries: Vec<Entry>,
    contents: &dyn Contents,
    req: &BuildRequest,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BuildReport, BuildError> {
    req.check_tags()?;
    let plan = plan_layers(entries, req)?;
    let dest = LayoutDestination::create(&req.output)?;
    build_planned(plan, contents, req, Box::new(dest), &[], progress)
}

/// What the caller of [`build_planned_with`] hears, layer by layer.
#[derive(Debug)]
pub enum LayerEvent<'a> {
    /// Layer `n` is about to be built (again, after a [`LayerEvent::Retrying`]).
    Started {
        n: usize,
        role: &'a LayerRole,
        content_bytes: u64,
    },
    /// Layer `n` failed and is built once more, as the retry hook asked.
    Retrying { n: usize, error: &'a BuildError },
    /// Layer `n` is built, checked and handed to the destination.
    Done { n: usize, info: &'a LayerInfo },
}

/// Decisions and observations around each layer of [`build_planned_with`].
pub struct Hooks<'a> {
    /// Whether a failed layer is worth building once more (e.g. a source that fetches a
    /// file again after its hash did not match). Asked at most once per layer.
    pub retry: &'a (dyn Fn(usize, &BuildError) -> bool + Sync),
    pub on_layer: &'a (dyn Fn(LayerEvent<'_>) + Sync),
}

impl Default for Hooks<'_> {
    fn default() -> Self {
        Hooks {
            retry: &|_, _| false,
            on_layer: &|_| {},
        }
    }
}

/// Builds every layer of `plan` into `dest`, bottom first, checks each against the
/// source's digests and the layer limit, then commits the documents.
pub fn build_planned(
    plan: LayerPlan,
    contents: &dyn Contents,
    req: &BuildRequest,
    dest: Box<dyn Destination>,
    extra: &[(&str, Vec<u8>)],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BuildReport, BuildError> {
    build_planned_with(
        plan,
        contents,
        req,
        dest,
        extra,
        progress,
        &Hooks::default(),
    )
}

/// [`build_planned`], with a hook that may have a failed layer built once more and one
/// that hears each layer start and finish.
pub fn build_planned_with(
    plan: LayerPlan,
    contents: &dyn Contents,
    req: &BuildRequest,
    dest: Box<dyn Destination>,
    extra: &[(&str, Vec<u8>)],
    progress: &(dyn Fn(u64) + Sync),
    hooks: &Hooks<'_>,
) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    req.check_tags()?;
    let sizes: BTreeMap<String, u64> = plan
        .layers
        .iter()
        .flat_map(|l| &l.entries)
        .filter_map(|e| match e.kind {
            layer::EntryKind::File { size, .. } => Some((e.path.clone(), size)),
            _ => None,
        })
        .collect();
    let layers: Vec<PlannedLayer> = plan.layers;
    let parallel = dest.parallel_layers().clamp(1, layers.len().max(1));
    let dest = Mutex::new(dest);
    let tee = TwinTee {
        inner: contents,
        dest: &dest,
        expected: &req.expected_digests,
    };
    let contents: &dyn Contents = if req.modelpack { &tee } else { contents };
    let built = if parallel == 1 {
        let mut built = Vec::with_capacity(layers.len());
        for (n, planned) in layers.iter().enumerate() {
            built.push(make_layer(
                n, planned, contents, req, &dest, progress, hooks,
            )?);
        }
        built
    } else {
        make_layers_in_parallel(&layers, parallel, contents, req, &dest, progress, hooks)?
    };
    let dest = dest.into_inner().unwrap_or_else(|p| p.into_inner());
    let meta = ImageMeta {
        tag: req.tag.clone(),
        source: provenance::source_url(&req.name),
        revision: req.sha.to_string(),
        platforms: req.platforms.clone(),
        index_annotations: req.index_annotations.clone(),
    };
    let infos: Vec<LayerInfo> = built.iter().map(|l| l.info.clone()).collect();
    let mut docs: ImageDocs = image::image_docs(&infos, &meta)?;
    if let Some(record) = &req.record {
        let p = Provenance::of_build(
            record,
            &req.name.registry_path(),
            &docs.index.digest,
            &built,
            &sizes,
        );
        let r = provenance::referrer(p.statement(), &docs.index)
            .map_err(|e| BuildError::Destination(e.to_string()))?;
        docs.add_referrer(r)?;
    }
    let mut twin = None;
    if req.modelpack {
        let files: Vec<TwinFile> = built
            .iter()
            .flat_map(|l| &l.info.file_digests)
            .map(|(path, digest)| TwinFile {
                path: path.clone(),
                digest: *digest,
                size: sizes.get(path).copied().unwrap_or_default(),
            })
            .collect();
        let meta = TwinMeta {
            name: req.name.as_str(),
            revision: req.sha.as_str(),
            source_url: &provenance::source_url(&req.name),
            tag: &req.tag,
        };
        let r = modelpack::twin(&files, &meta, &docs.index)?;
        twin = Some(r.manifest.clone());
        docs.add_referrer(r)?;
    }
    let output = dest.commit(&infos, &docs, extra)?;
    Ok(BuildReport {
        output,
        tag: req.tag.clone(),
        index_digest: docs.index.digest,
        manifests: docs
            .manifests
            .iter()
            .map(|(p, b)| (p.clone(), b.digest))
            .collect(),
        configs: docs.configs.iter().map(|c| c.digest).collect(),
        layers: built,
        twin,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The source, with every file it opens teed into the destination's raw writer for it
/// (the ModelPack twin): each file is read once, for its layer and its raw blob at once.
struct TwinTee<'a> {
    inner: &'a dyn Contents,
    dest: &'a Mutex<Box<dyn Destination>>,
    expected: &'a BTreeMap<String, String>,
}

impl Contents for TwinTee<'_> {
    fn open(&self, path: &str) -> std::io::Result<Box<dyn Read + Send + '_>> {
        let reader = self.inner.open(path)?;
        let digest = self.expected.get(path).and_then(|d| Digest::parse(d));
        let sink = lock(self.dest)
            .raw_writer(path, digest.as_ref())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(match sink {
            Some(sink) => Box::new(TeeRead {
                inner: reader,
                sink: Some(sink),
            }),
            None => reader,
        })
    }
}

struct TeeRead<'a> {
    inner: Box<dyn Read + Send + 'a>,
    sink: Option<Box<dyn RawSink>>,
}

impl Read for TeeRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // The end of the file (the layer reads on to it to see the file did not grow).
            if let Some(sink) = self.sink.take() {
                sink.finish()?;
            }
        } else if let Some(sink) = &mut self.sink {
            sink.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// Layer `n`: built (once more if the retry hook asks), checked, handed to `dest`.
fn make_layer(
    n: usize,
    planned: &PlannedLayer,
    contents: &dyn Contents,
    req: &BuildRequest,
    dest: &Mutex<Box<dyn Destination>>,
    progress: &(dyn Fn(u64) + Sync),
    hooks: &Hooks<'_>,
) -> Result<BuiltLayer, BuildError> {
    let opts = layer::Options {
        prefetch: planned.prefetch.clone(),
        ..req.layer.clone()
    };
    let content_bytes = layer::content_size(&planned.entries);
    let mut retried = false;
    let info = loop {
        (hooks.on_layer)(LayerEvent::Started {
            n,
            role: &planned.role,
            content_bytes,
        });
        let entries = planned.entries.clone();
        // Handed over inside the retry: a destination may find only then that the layer
        // must be made again (an upload an earlier run left that held other bytes).
        let built = build_layer(
            n,
            &planned.role,
            entries,
            contents,
            &opts,
            req,
            dest,
            progress,
        )
        .and_then(|info| lock(dest).layer_done(n, &info).map(|()| info));
        match built {
            Ok(info) => break info,
            Err(e) if !retried && (hooks.retry)(n, &e) => {
                retried = true;
                (hooks.on_layer)(LayerEvent::Retrying { n, error: &e });
            }
            Err(e) => return Err(e),
        }
    };
    (hooks.on_layer)(LayerEvent::Done { n, info: &info });
    Ok(BuiltLayer {
        role: planned.role.clone(),
        info,
    })
}

fn lock<'a>(
    dest: &'a Mutex<Box<dyn Destination>>,
) -> std::sync::MutexGuard<'a, Box<dyn Destination>> {
    dest.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`make_layer`] for every layer, `parallel` at a time, taken bottom first. The first
/// failure stops the others (their reads fail) and is the one reported.
fn make_layers_in_parallel(
    layers: &[PlannedLayer],
    parallel: usize,
    contents: &dyn Contents,
    req: &BuildRequest,
    dest: &Mutex<Box<dyn Destination>>,
    progress: &(dyn Fn(u64) + Sync),
    hooks: &Hooks<'_>,
) -> Result<Vec<BuiltLayer>, BuildError> {
    let stop = AtomicBool::new(false);
    let contents = Stoppable {
        inner: contents,
        stop: &stop,
        why: "stopped: another layer failed",
    };
    let next = AtomicUsize::new(0);
    let done: Vec<Mutex<Option<BuiltLayer>>> = layers.iter().map(|_| Mutex::new(None)).collect();
    let failed: Mutex<Option<BuildError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= layers.len() || stop.load(Ordering::SeqCst) {
                    break;
                }
                match make_layer(n, &layers[n], &contents, req, dest, progress, hooks) {
                    Ok(b) => *done[n].lock().unwrap_or_else(|p| p.into_inner()) = Some(b),
                    Err(e) => {
                        let mut first = failed.lock().unwrap_or_else(|p| p.into_inner());
                        if !stop.swap(true, Ordering::SeqCst) {
                            *first = Some(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    done.into_iter()
        .map(|d| {
            d.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .ok_or_else(|| BuildError::Destination("a layer was never built".into()))
        })
        .collect()
}

/// One layer into `dest`'s writer for it, checked against the source's digests and the
/// layer limit.
#[allow(clippy::too_many_arguments)]
fn build_layer(
    n: usize,
    role: &LayerRole,
    entries: Vec<Entry>,
    contents: &dyn Contents,
    opts: &layer::Options,
    req: &BuildRequest,
    dest: &Mutex<Box<dyn Destination>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<LayerInfo, BuildError> {
    let out = lock(dest).layer_writer(n)?;
    let (info, mut out) = layer::build(entries, contents, opts, out, progress)?;
    out.flush().map_err(LayerError::Write)?;
    drop(out);
    check_digests(&info, &req.expected_digests)?;
    if let Some(limit) = req.plan.max_layer_size {
        if info.size > limit {
            return Err(BuildError::BlobTooLarge {
                role: role.to_string(),
                size: info.size,
                limit,
            });
        }
    }
    Ok(info)
}

fn check_digests(layer: &LayerInfo, expected: &BTreeMap<String, String>) -> Result<(), BuildError> {
    if expected.is_empty() {
        return Ok(());
    }
    for (name, digest) in &layer.file_digests {
        if let Some(want) = expected.get(name) {
            let got = digest.to_string();
            if *want != got {
                return Err(BuildError::ContentMismatch {
                    path: name.clone(),
                    expected: want.clone(),
                    got,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::EntryKind;
    use std::io::{self, Read};
    use std::sync::Arc;

    /// Files in memory; a path listed in `broken` fails to open.
    struct Mem {
        files: BTreeMap<String, Vec<u8>>,
        broken: Option<String>,
    }

    impl Contents for Mem {
        fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>> {
            if self.broken.as_deref() == Some(path) {
                return Err(io::Error::other(format!("{path} is broken")));
            }
            let bytes = self.files.get(path).ok_or(io::ErrorKind::NotFound)?;
            Ok(Box::new(&bytes[..]))
        }
    }

    /// Keeps nothing; counts the layer writers open at once. Each write dawdles, so
    /// layers made at once overlap.
    struct Counting {
        parallel: usize,
        open: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    struct CountingWriter(Arc<AtomicUsize>);

    impl Write for CountingWriter {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(2));
            Ok(b.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for CountingWriter {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Destination for Counting {
        fn layer_writer(&mut self, _n: usize) -> Result<Box<dyn Write + Send>, BuildError> {
            let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            Ok(Box::new(CountingWriter(self.open.clone())))
        }

        fn layer_done(&mut self, _n: usize, _info: &LayerInfo) -> Result<(), BuildError> {
            Ok(())
        }

        fn parallel_layers(&self) -> usize {
            self.parallel
        }

        fn commit(
            self: Box<Self>,
            _layers: &[LayerInfo],
            _docs: &ImageDocs,
            _extra: &[(&str, Vec<u8>)],
        ) -> Result<PathBuf, BuildError> {
            Ok(PathBuf::new())
        }
    }

    /// Four 160 KiB shards (a layer each, 64 KiB chunks) and a small file on top.
    fn model() -> (Vec<Entry>, BTreeMap<String, Vec<u8>>) {
        let mut files = BTreeMap::new();
        for i in 0..4u32 {
            let bytes: Vec<u8> = (0..160 * 1024u32)
                .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i) >> 11) as u8)
                .collect();
            files.insert(format!("shard-{i}.bin"), bytes);
        }
        files.insert("config.json".to_string(), b"{}".to_vec());
        let entries = files
            .iter()
            .map(|(p, b)| Entry {
                path: p.clone(),
                kind: EntryKind::File {
                    size: b.len() as u64,
                    executable: false,
                },
            })
            .collect();
        (entries, files)
    }

    fn request() -> BuildRequest {
        BuildRequest {
            name: "acme/parallel".parse().unwrap(),
            sha: "0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
            tag: "latest".into(),
            output: PathBuf::new(),
            platforms: image::default_platforms(),
            layer: layer::Options {
                chunk_size: 64 << 10,
                ..layer::Options::default()
            },
            plan: PlanOptions {
                own_layer_above: 64 << 10,
                ..PlanOptions::default()
            },
            expected_digests: BTreeMap::new(),
            index_annotations: BTreeMap::new(),
            record: None,
            modelpack: false,
        }
    }

    fn build(parallel: usize, broken: Option<&str>) -> (Result<BuildReport, BuildError>, usize) {
        let (entries, files) = model();
        let req = request();
        let plan = plan_layers(entries, &req).unwrap();
        assert_eq!(plan.layers.len(), 5);
        let peak = Arc::new(AtomicUsize::new(0));
        let dest = Counting {
            parallel,
            open: Arc::new(AtomicUsize::new(0)),
            peak: peak.clone(),
        };
        let contents = Mem {
            files,
            broken: broken.map(str::to_string),
        };
        let r = build_planned(plan, &contents, &req, Box::new(dest), &[], &|_| {});
        (r, peak.load(Ordering::SeqCst))
    }

    #[test]
    fn layers_made_two_at_a_time_give_the_image_made_one_at_a_time() {
        let (one, peak_one) = build(1, None);
        let (two, peak_two) = build(2, None);
        let (one, two) = (one.unwrap(), two.unwrap());
        assert_eq!(peak_one, 1);
        assert_eq!(peak_two, 2, "two layers were made at once");
        assert_eq!(one.index_digest, two.index_digest);
        let digests =
            |r: &BuildReport| -> Vec<Digest> { r.layers.iter().map(|l| l.info.digest).collect() };
        assert_eq!(digests(&one), digests(&two));
    }

    #[test]
    fn a_failing_layer_stops_the_one_beside_it_and_its_own_error_is_reported() {
        let (r, _) = build(2, Some("shard-0.bin"));
        let err = r.unwrap_err().to_string();
        assert!(err.contains("shard-0.bin is broken"), "{err}");
    }
}
