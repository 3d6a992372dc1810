//! The whole job for one model: entries from a source → a layer plan → layers (eStargz
//! or zstd:chunked) → a destination (an OCI layout directory).

use crate::digest::Digest;
use crate::image::{self, ImageDocs, ImageError, ImageMeta, LayoutWriter, Platform};
use crate::layer::{self, Contents, Entry, LayerError, LayerInfo};
use crate::names::{CommitSha, ModelName};
use crate::plan::{self, LayerPlan, LayerRole, PlanError, PlanOptions};
use crate::units::human_bytes;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{path}: content has {got}, but the source promised {expected}")]
    ContentMismatch {
        path: String,
        expected: String,
        got: String,
    },
    #[error("the {role} layer came out at {} ({size} bytes), more than the layer limit of {} ({limit} bytes)", human_bytes(*size), human_bytes(*limit))]
    BlobTooLarge { role: String, size: u64, limit: u64 },
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
}

/// One layer of a built image: what it holds and what it is.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    pub role: LayerRole,
    pub info: LayerInfo,
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
pub trait Destination {
    /// A writer for the blob of layer `n` (0-based, bottom first).
    fn layer_writer(&mut self, n: usize) -> Result<Box<dyn Write + Send>, BuildError>;
    /// Layer `n`'s writer has been flushed and dropped; the blob is `info`.
    fn layer_done(&mut self, n: usize, info: &LayerInfo) -> Result<(), BuildError>;
    /// Every layer is built and verified: store the documents (the tag last). Returns
    /// where the image went, for the report.
    fn commit(
        self: Box<Self>,
        layers: &[LayerInfo],
        docs: &ImageDocs,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<PathBuf, BuildError>;
}

/// An OCI image layout directory, written atomically (see [`LayoutWriter`]).
pub struct LayoutDestination {
    layout: LayoutWriter,
}

impl LayoutDestination {
    pub fn create(output: &Path) -> Result<LayoutDestination, BuildError> {
        Ok(LayoutDestination {
            layout: LayoutWriter::create(output)?,
        })
    }
}

impl Destination for LayoutDestination {
    fn layer_writer(&mut self, n: usize) -> Result<Box<dyn Write + Send>, BuildError> {
        Ok(Box::new(BufWriter::with_capacity(
            1 << 20,
            self.layout.layer_file(n)?,
        )))
    }

    fn layer_done(&mut self, _n: usize, _info: &LayerInfo) -> Result<(), BuildError> {
        Ok(())
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

/// Where a model's files live on the Hub, for the image's source annotation.
pub fn source_url(name: &ModelName) -> String {
    format!("https://huggingface.co/{name}")
}

/// The default output directory: `out/<name, lowercased>`.
pub fn default_output(name: &ModelName) -> PathBuf {
    Path::new("out").join(name.registry_path())
}

/// Splits `entries` into layers as `req` says, validating the whole set first.
pub fn plan_layers(entries: Vec<Entry>, req: &BuildRequest) -> Result<LayerPlan, BuildError> {
    let landmarks = req.layer.format == layer::Format::Estargz;
    Ok(plan::plan(
        entries,
        &req.layer.prefetch,
        landmarks,
        &req.plan,
    )?)
}

pub fn build_image(
    entries: Vec<Entry>,
    contents: &dyn Contents,
    req: &BuildRequest,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BuildReport, BuildError> {
    build_image_with_files(entries, contents, req, &[], progress)
}

/// [`build_image`], with `extra` files (name, bytes) put beside `index.json` and renamed
/// into place together with the image, e.g. the build record.
pub fn build_image_with_files(
    entries: Vec<Entry>,
    contents: &dyn Contents,
    req: &BuildRequest,
    extra: &[(&str, Vec<u8>)],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BuildReport, BuildError> {
    image::validate_tag(&req.tag)?;
    let plan = plan_layers(entries, req)?;
    let dest = LayoutDestination::create(&req.output)?;
    build_planned(plan, contents, req, Box::new(dest), extra, progress)
}

/// Builds every layer of `plan` into `dest`, bottom first, checks each against the
/// source's digests and the layer limit, then commits the documents.
pub fn build_planned(
    plan: LayerPlan,
    contents: &dyn Contents,
    req: &BuildRequest,
    mut dest: Box<dyn Destination>,
    extra: &[(&str, Vec<u8>)],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    image::validate_tag(&req.tag)?;
    let mut built = Vec::with_capacity(plan.layers.len());
    for (n, planned) in plan.layers.into_iter().enumerate() {
        let opts = layer::Options {
            prefetch: planned.prefetch,
            ..req.layer.clone()
        };
        let out = dest.layer_writer(n)?;
        let (info, mut out) = layer::build(planned.entries, contents, &opts, out, progress)?;
        out.flush().map_err(LayerError::Write)?;
        drop(out);
        check_digests(&info, &req.expected_digests)?;
        if let Some(limit) = req.plan.max_layer_size {
            if info.size > limit {
                return Err(BuildError::BlobTooLarge {
                    role: planned.role.to_string(),
                    size: info.size,
                    limit,
                });
            }
        }
        dest.layer_done(n, &info)?;
        built.push(BuiltLayer {
            role: planned.role,
            info,
        });
    }
    let meta = ImageMeta {
        tag: req.tag.clone(),
        source: source_url(&req.name),
        revision: req.sha.to_string(),
        platforms: req.platforms.clone(),
    };
    let infos: Vec<LayerInfo> = built.iter().map(|l| l.info.clone()).collect();
    let docs: ImageDocs = image::image_docs(&infos, &meta)?;
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
        seconds: started.elapsed().as_secs_f64(),
    })
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
