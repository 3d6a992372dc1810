//! The whole job for one model: entries from a source → layer (eStargz or zstd:chunked) →
//! OCI layout.

use crate::digest::Digest;
use crate::image::{self, ImageDocs, ImageError, ImageMeta, LayoutWriter, Platform};
use crate::layer::{self, Contents, Entry, LayerError, LayerInfo};
use crate::names::{CommitSha, ModelName};
use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
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
}

#[derive(Clone, Debug)]
pub struct BuildRequest {
    pub name: ModelName,
    pub sha: CommitSha,
    pub tag: String,
    pub output: PathBuf,
    pub platforms: Vec<Platform>,
    pub layer: layer::Options,
    /// Digests (`sha256:…`) the source vouches for, by path: checked against what the
    /// layer actually read before anything is written.
    pub expected_digests: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct BuildReport {
    pub output: PathBuf,
    pub tag: String,
    pub index_digest: Digest,
    pub manifests: Vec<(Platform, Digest)>,
    pub configs: Vec<Digest>,
    pub layer: LayerInfo,
    pub seconds: f64,
}

/// Where a model's files live on the Hub, for the image's source annotation.
pub fn source_url(name: &ModelName) -> String {
    format!("https://huggingface.co/{name}")
}

/// The default output directory: `out/<name, lowercased>`.
pub fn default_output(name: &ModelName) -> PathBuf {
    Path::new("out").join(name.registry_path())
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
    let started = Instant::now();
    image::validate_tag(&req.tag)?;
    let layout = LayoutWriter::create(&req.output)?;
    let file = layout.layer_file()?;
    let (layer, out) = layer::build(
        entries,
        contents,
        &req.layer,
        BufWriter::with_capacity(1 << 20, file),
        progress,
    )?;
    out.into_inner()
        .map_err(|e| LayerError::Write(e.into_error()))?;
    check_digests(&layer, &req.expected_digests)?;
    let meta = ImageMeta {
        tag: req.tag.clone(),
        source: source_url(&req.name),
        revision: req.sha.to_string(),
        platforms: req.platforms.clone(),
    };
    let docs: ImageDocs = image::image_docs(&layer, &meta)?;
    for (name, bytes) in extra {
        layout.put_extra(name, bytes)?;
    }
    let output = layout.commit(&layer, &docs)?;
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
        layer,
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
