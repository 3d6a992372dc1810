//! `verify`: rebuild a published image from the Hub and compare. A build is a pure
//! function of (model, commit, settings), so anyone can check an image without trusting
//! its publisher: read what it claims to be (its provenance, or its source/revision
//! annotations and explicit settings), check that the Hub answers and has that commit,
//! list it there, rebuild the image by the build's own job ([`crate::job::run_hub`])
//! with no layout and no registry (the layers are only hashed), and compare the
//! digests of every file, layer, config, manifest and the index. The first difference
//! is named precisely: which file of which layer, or which document.

use crate::catalogue::record::BuildSettings;
use crate::image::Platform;
use crate::job::{self, Event, HubJob, HubOutcome, JobError};
use crate::layer::LayerError;
use crate::names::{CommitSha, ModelName};
use crate::pipeline::{BuildError, BuildReport, BuildRequest};
use crate::provenance::{self, Provenance, ProvenanceFile};
use crate::remote::published::PublishedImage;
use crate::source::hub::{self, Check, FileFilter, HubConfig, HubError, RemoteFile, StreamOptions};
use serde::Serialize;
use std::collections::BTreeMap;

/// What the image is claimed to be built from.
#[derive(Clone, Debug)]
pub struct Claim {
    pub model: ModelName,
    pub sha: CommitSha,
    pub tag: String,
    pub settings: BuildSettings,
    /// The provenance's files and layers, when there is a provenance.
    pub provenance: Option<Provenance>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Claim(String),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Job(#[from] JobError),
}

/// The first way the published image and the rebuild differ.
/// Layers are numbered from 1, as `inspect` and the web page number them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// A file's bytes at the commit are not what the provenance recorded.
    File {
        path: String,
        layer: Option<usize>,
        role: Option<String>,
        expected: String,
        actual: String,
    },
    /// The Hub lists a file the provenance lacks, or the other way round.
    FileSet {
        path: String,
        detail: String,
    },
    LayerCount {
        expected: usize,
        actual: usize,
    },
    Layer {
        layer: usize,
        role: String,
        expected: String,
        actual: String,
    },
    Document {
        document: String,
        expected: String,
        actual: String,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::File {
                path,
                layer,
                role,
                expected,
                actual,
            } => {
                write!(f, "file {path}")?;
                if let (Some(n), Some(r)) = (layer, role) {
                    write!(f, " (layer {n}: {r})")?;
                }
                write!(
                    f,
                    " differs: the provenance says {expected}, the Hub's bytes are {actual}"
                )
            }
            Difference::FileSet { path, detail } => write!(f, "file {path}: {detail}"),
            Difference::LayerCount { expected, actual } => write!(
                f,
                "the image has {expected} layers, the rebuild has {actual}"
            ),
            Difference::Layer {
                layer,
                role,
                expected,
                actual,
            } => write!(
                f,
                "layer {layer} ({role}) differs: the image has {expected}, the rebuild gives {actual}"
            ),
            Difference::Document {
                document,
                expected,
                actual,
            } => write!(
                f,
                "{document} differs: the image has {expected}, the rebuild gives {actual}"
            ),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifiedLayer {
    pub role: String,
    pub digest: String,
}

/// What `verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub verified: bool,
    pub model: String,
    pub revision: String,
    pub source: String,
    pub index_digest: String,
    pub rebuilt_index_digest: Option<String>,
    pub layers: Vec<VerifiedLayer>,
    /// Where the claim came from: the provenance (and where it was found) or
    /// annotations and settings.
    pub claim_from: String,
    pub difference: Option<Difference>,
    pub downloaded_bytes: u64,
}

fn listing_matches(f: &RemoteFile, p: &ProvenanceFile) -> Option<String> {
    if f.size != p.size {
        return Some(format!(
            "the Hub lists {} bytes, the provenance {}",
            f.size, p.size
        ));
    }
    match &f.check {
        Check::Sha256(h) if *h != p.sha256 => Some(format!(
            "the Hub lists sha256:{h}, the provenance sha256:{}",
            p.sha256
        )),
        Check::GitSha1(h) if p.git_blob.as_deref().is_some_and(|g| g != h) => Some(format!(
            "the Hub lists git blob {h}, the provenance {}",
            p.git_blob.as_deref().unwrap_or_default()
        )),
        _ => None,
    }
}

/// A file whose bytes failed their check, as the build names it: its path, what was
/// expected and what came. Read from the error's types, never from its text.
fn mismatch(e: &BuildError) -> Option<(String, String, String)> {
    match e {
        BuildError::ContentMismatch {
            path,
            expected,
            got,
        } => Some((path.clone(), expected.clone(), got.clone())),
        BuildError::Layer(LayerError::Read { source, .. } | LayerError::Write(source)) => {
            match source.get_ref()?.downcast_ref::<HubError>()? {
                HubError::Integrity {
                    path,
                    what,
                    expected,
                    got,
                } => Some((
                    path.clone(),
                    format!("{what} {expected}"),
                    format!("{what} {got}"),
                )),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Rebuilds `claim` from the Hub (`cfg`) by the build's own job, telling `on_event` what
/// it does, and compares the result with `published`. The Hub is checked first
/// ([`hub::check`]).
pub fn verify(
    published: &PublishedImage,
    claim: &Claim,
    cfg: &HubConfig,
    claim_from: &str,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Outcome, VerifyError> {
    let layer = claim.settings.layer_options().map_err(VerifyError::Claim)?;
    let plan = claim.settings.plan_options().map_err(VerifyError::Claim)?;
    let platforms: Vec<Platform> = claim.settings.platforms().map_err(VerifyError::Claim)?;
    let filter = FileFilter::new(&claim.settings.include, &claim.settings.exclude)?;
    let mut outcome = Outcome {
        verified: false,
        model: claim.model.to_string(),
        revision: claim.sha.to_string(),
        source: provenance::source_url(&claim.model),
        index_digest: published.index_digest.clone(),
        rebuilt_index_digest: None,
        layers: Vec::new(),
        claim_from: claim_from.to_string(),
        difference: None,
        downloaded_bytes: 0,
    };
    let layer_of = |path: &str| {
        claim
            .provenance
            .as_ref()
            .and_then(|p| p.layer_of(path))
            // Numbered from 1 (see `Difference`).
            .map(|(n, l)| (n + 1, l.role.clone()))
    };

    // One quick request first: a Hub that is down, a wrong endpoint or token, an
    // unknown repository or commit is told at once, not after the listing's retries.
    hub::check(&claim.model, &claim.sha, cfg)?;
    let listed = hub::list(&claim.model, &claim.sha, cfg, &filter, false)?;
    if let Some(p) = &claim.provenance {
        let by_path: BTreeMap<&str, &RemoteFile> =
            listed.iter().map(|f| (f.path.as_str(), f)).collect();
        for pf in &p.files {
            let detail = match by_path.get(pf.path.as_str()) {
                None => Some(format!(
                    "in the provenance but not listed by the Hub at {}",
                    claim.sha
                )),
                Some(f) => listing_matches(f, pf),
            };
            if let Some(detail) = detail {
                outcome.difference = Some(Difference::FileSet {
                    path: pf.path.clone(),
                    detail,
                });
                return Ok(outcome);
            }
        }
        if let Some(extra) = listed
            .iter()
            .find(|f| !p.files.iter().any(|pf| pf.path == f.path))
        {
            outcome.difference = Some(Difference::FileSet {
                path: extra.path.clone(),
                detail: format!(
                    "listed by the Hub at {} but not in the provenance",
                    claim.sha
                ),
            });
            return Ok(outcome);
        }
    }

    let req = BuildRequest {
        name: claim.model.clone(),
        sha: claim.sha.clone(),
        tag: claim.tag.clone(),
        output: std::path::PathBuf::new(),
        platforms,
        layer,
        plan,
        // Filled in by the job from the listing.
        expected_digests: BTreeMap::new(),
        // The published index records its settings; the rebuild must too.
        index_annotations: crate::job::settings_annotations(&claim.settings),
        record: None,
        modelpack: claim.settings.modelpack,
    };
    let mut hub_cfg = cfg.clone();
    hub_cfg.offline = false;
    // The build's own job, with no layout and no registry: the image is only digested.
    let job = HubJob {
        req,
        hub: hub_cfg,
        filter,
        include: claim.settings.include.clone(),
        exclude: claim.settings.exclude.clone(),
        stream: StreamOptions {
            // A rebuild for checking writes nothing, not even into the Hub cache.
            cache: false,
            ..StreamOptions::default()
        },
        listing: Some(listed),
        layout: false,
        registry: None,
        max_scratch: None,
        delete_downloads: false,
    };
    let report = match job::run_hub(job, on_event) {
        Ok(HubOutcome::Built(r)) => *r,
        Ok(HubOutcome::UpToDate(_)) => unreachable!("no registry, so no tag is looked at"),
        Err(JobError::Build(e)) => match mismatch(&e) {
            // The Hub served bytes that do not match its own listing, twice (the job
            // fetches a file that fails its check once more): name the file.
            Some((path, expected, actual)) => {
                let (layer, role) = layer_of(&path).unzip();
                outcome.difference = Some(Difference::File {
                    path,
                    layer,
                    role,
                    expected,
                    actual,
                });
                return Ok(outcome);
            }
            None => return Err(JobError::Build(e).into()),
        },
        Err(e) => return Err(e.into()),
    };
    outcome.downloaded_bytes = report.stream.downloaded_bytes;
    let report = report.build;
    outcome.rebuilt_index_digest = Some(report.index_digest.to_string());
    outcome.difference = compare(published, claim, &report);
    outcome.verified = outcome.difference.is_none();
    outcome.layers = report
        .layers
        .iter()
        .map(|l| VerifiedLayer {
            role: l.role.to_string(),
            digest: l.info.digest.to_string(),
        })
        .collect();
    Ok(outcome)
}

/// The first difference between what was published and what was rebuilt.
fn compare(published: &PublishedImage, claim: &Claim, report: &BuildReport) -> Option<Difference> {
    if let Some(p) = &claim.provenance {
        for (n, l) in report.layers.iter().enumerate() {
            for (path, digest) in &l.info.file_digests {
                let want = p.files.iter().find(|f| f.path == *path)?;
                if want.sha256 != digest.hex() {
                    return Some(Difference::File {
                        path: path.clone(),
                        layer: Some(n + 1),
                        role: Some(l.role.to_string()),
                        expected: format!("sha256:{}", want.sha256),
                        actual: digest.to_string(),
                    });
                }
            }
        }
    }
    let layers = published.layers();
    if layers.len() != report.layers.len() {
        return Some(Difference::LayerCount {
            expected: layers.len(),
            actual: report.layers.len(),
        });
    }
    for (n, (have, built)) in layers.iter().zip(&report.layers).enumerate() {
        if have.digest != built.info.digest.to_string() {
            return Some(Difference::Layer {
                layer: n + 1,
                role: built.role.to_string(),
                expected: have.digest.clone(),
                actual: built.info.digest.to_string(),
            });
        }
    }
    for (i, (platform, digest, manifest)) in published.manifests.iter().enumerate() {
        let config = manifest["config"]["digest"].as_str().unwrap_or_default();
        if let Some(c) = report.configs.get(i) {
            if config != c.to_string() {
                return Some(Difference::Document {
                    document: format!("the {platform} config"),
                    expected: config.to_string(),
                    actual: c.to_string(),
                });
            }
        }
        match report.manifests.get(i) {
            Some((_, m)) if *digest == m.to_string() => {}
            other => {
                return Some(Difference::Document {
                    document: format!("the {platform} manifest"),
                    expected: digest.clone(),
                    actual: other
                        .map(|(_, m)| m.to_string())
                        .unwrap_or("nothing".into()),
                })
            }
        }
    }
    if published.index_digest != report.index_digest.to_string() {
        return Some(Difference::Document {
            document: "the image index".into(),
            expected: published.index_digest.clone(),
            actual: report.index_digest.to_string(),
        });
    }
    if let Some(rebuilt) = &report.twin {
        // Compared without its subject: a registry that refused a referrer of the index
        // holds it as a referrer of a platform manifest instead.
        let unsubjected = |v: &serde_json::Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("subject");
            }
            v
        };
        let built: serde_json::Value = serde_json::from_slice(&rebuilt.bytes).unwrap_or_default();
        let same = published
            .twin
            .as_ref()
            .is_some_and(|(_, m)| unsubjected(m) == unsubjected(&built));
        if !same {
            return Some(Difference::Document {
                document: "the ModelPack twin".into(),
                expected: published
                    .twin
                    .as_ref()
                    .map_or("none".into(), |(d, _)| d.clone()),
                actual: rebuilt.digest.to_string(),
            });
        }
    }
    None
}
