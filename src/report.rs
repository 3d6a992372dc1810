//! What every `--json` prints: one [`Report`] type for `build` (a directory, the Hub,
//! `--push`), `build --all`, `push`, `verify` and `inspect`. A command that handles one
//! image prints an [`ImageReport`]; `build --all` prints a [`RunReport`] (one
//! `ImageReport` per model and a [`Summary`]). Bytes are integers, layers are numbered
//! from 1 (as the web page and `inspect` number them), `output` is there only when a
//! layout was written. `schema/report.schema.json` is generated from these types
//! ([`schema_json`]); a test fails when the committed file differs. Every struct denies
//! unknown fields, so the schema says `additionalProperties: false` and a key a command
//! printed outside these types would fail the validation of its output.
//!
//! The command line renders the same reports as lines (`cli/lines.rs`), so a CI log and
//! `--json` say the same things.

use crate::catalogue::record::{BuildSettings, ImageSummary};
use crate::job::HubReport;
use crate::pipeline::{BuildReport, BuildRequest};
use crate::provenance::Provenance;
use crate::remote::push::PushReport;
use crate::remote::upload::{BlobAction, ReferrerReport, Uploaded};
use crate::verify::{Difference, Outcome as Verified};
use schemars::JsonSchema;
use serde::Serialize;

/// What a `--json` prints.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Report {
    /// `build`, `push`, `verify`, `inspect`: one image.
    Image(Box<ImageReport>),
    /// `build --all`: every model of the run, and the run's sums.
    Run(RunReport),
}

/// What happened to an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Built into a layout.
    Built,
    /// In the registry under `push.reference` (built and streamed there, or a layout
    /// pushed).
    Pushed,
    /// Not built: it is up to date (`reason` says where it was found).
    Skipped,
    /// Rebuilt from the Hub and every digest matched.
    Verified,
    /// Its provenance was read.
    Inspected,
    /// Stopped by an error (`error`).
    Failed,
    /// Stopped by a signal, or never started because of one.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Built => "built",
            Outcome::Pushed => "pushed",
            Outcome::Skipped => "skipped",
            Outcome::Verified => "verified",
            Outcome::Inspected => "inspected",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One image: what it is, what happened to it, where it went, what it cost.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageReport {
    /// The model as on the Hub (`org/model`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image's repository path (the name, lowercased).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The commit the files come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub result: Outcome,
    /// Why it was built (what made it stale) or skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The error, on one line (`failed`, `interrupted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// One manifest per platform, in index order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ManifestReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_digests: Vec<String>,
    /// Bottom layer first, numbered from 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerReport>,
    /// Regular files in the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Bytes of file content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_bytes: Option<u64>,
    /// Bytes of the layer blobs (what the image stores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// What the image bytes depend on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<BuildSettings>,
    /// The layout directory written (only when one was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Where it went in a registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<PushedReport>,
    /// Bytes sent to the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_bytes: Option<u64>,
    /// Bytes of blobs not sent because the registry had them (or, from an earlier run,
    /// part of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_bytes: Option<u64>,
    /// Bytes received from the Hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloaded_bytes: Option<u64>,
    /// Bytes read back from the Hub cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_bytes: Option<u64>,
    /// Files fetched again after a failed check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refetched: Option<Vec<String>>,
    /// Bytes removed from the Hub cache (`--delete-downloads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<u64>,
    /// `build --all`: the catalogue line of the model's entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// `verify`: what was compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyReport>,
    /// `inspect`: what the provenance says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceReport>,
    /// The image's CNCF ModelPack twin (`--modelpack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modelpack: Option<ModelpackReport>,
    pub seconds: f64,
}

/// Where the ModelPack twin of an image is.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelpackReport {
    /// The twin's manifest digest.
    pub digest: String,
    /// Its tag (`<tag>-modelpack`), where a build gave it one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Where `inspect` or `verify` found it (`layout`, `referrers API`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestReport {
    /// `os/arch`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    pub digest: String,
}

#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerReport {
    /// From 1, bottom first.
    pub number: usize,
    pub digest: String,
    /// Bytes of the blob (not known to `verify`, which compares digests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `files`, `large file`, ... (the plan's role).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncompressed_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toc_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toc_entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_bytes: Option<u64>,
    /// The regular files it holds, in layer order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
}

/// Where an image went in a registry, and how each blob got there.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushedReport {
    /// `REGISTRY/REPO:TAG`.
    pub reference: String,
    /// The digest the tag points at (the index).
    pub digest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobReport>,
    /// Failed chunks continued from the registry's upload status within this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<u32>,
    /// Bytes not sent again because an upload from an earlier run was continued.
    pub resumed_bytes: u64,
    /// HTTP requests made to the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// Referrers of the index pushed after it (the provenance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<ReferrerReport>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobReport {
    /// The layer it is, numbered from 1 (for a streamed build's layers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    pub digest: String,
    pub size: u64,
    /// How it got there (a layout's push).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<BlobAction>,
    /// Bytes sent in this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    /// Bytes the registry held from an earlier run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
}

/// `verify`: the rebuild against the image.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyReport {
    /// Where the claim came from: the provenance (and where it was found), or
    /// annotations and settings.
    pub claim_from: String,
    /// Where the rebuild read the files (the model on the Hub).
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt_index_digest: Option<String>,
    /// The first way the image and the rebuild differ (layers numbered from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference: Option<Difference>,
}

/// `inspect`: the image's provenance.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvenanceReport {
    /// Where it was found (`referrers API`, `fallback tag`, `layout`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `huggingface` or `directory`.
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_url: Option<String>,
    /// The tool and version that built it.
    pub tool: String,
    pub files: Vec<FileReport>,
    /// The in-toto statement as stored.
    pub statement: serde_json::Value,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileReport {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// `build --all`: the run.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// The catalogue file.
    pub catalogue: String,
    /// `I/N` when only a shard ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// Models in the catalogue.
    pub catalogue_models: usize,
    /// One report per model of the run, in catalogue order.
    pub models: Vec<ImageReport>,
    pub summary: Summary,
}

/// A run summed up: models by result, bytes, time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub models: usize,
    pub built: usize,
    pub pushed: usize,
    pub skipped: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub uploaded_bytes: u64,
    pub skipped_bytes: u64,
    pub stored_bytes: u64,
    pub downloaded_bytes: u64,
    pub seconds: f64,
}

impl Summary {
    /// The sums of `reports`, which took `seconds` in all.
    pub fn of(reports: &[ImageReport], seconds: f64) -> Summary {
        let mut s = Summary {
            models: reports.len(),
            seconds: round_seconds(seconds),
            ..Summary::default()
        };
        for r in reports {
            match r.result {
                // `verify` and `inspect` make no run: a rebuild is counted as built.
                Outcome::Built | Outcome::Verified | Outcome::Inspected => s.built += 1,
                Outcome::Pushed => s.pushed += 1,
                Outcome::Skipped => s.skipped += 1,
                Outcome::Failed => s.failed += 1,
                Outcome::Interrupted => s.interrupted += 1,
            }
            s.uploaded_bytes += r.uploaded_bytes.unwrap_or(0);
            s.skipped_bytes += r.skipped_bytes.unwrap_or(0);
            // What was made in this run: a skipped image stores nothing new.
            if r.result != Outcome::Skipped {
                s.stored_bytes += r.stored_bytes.unwrap_or(0);
            }
            s.downloaded_bytes += r.downloaded_bytes.unwrap_or(0);
        }
        s
    }
}

/// Seconds to the millisecond: enough for a person, and no float noise in the JSON.
pub fn round_seconds(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// An error and its causes on one line, each cause once (some messages already end
/// with their source's text).
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(err);
    while let Some(e) = cause {
        let s = e.to_string();
        if !out.ends_with(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        cause = e.source();
    }
    out
}

impl ImageReport {
    /// A report that says only `result` (the rest is filled in by its maker).
    pub fn new(result: Outcome) -> ImageReport {
        ImageReport {
            name: None,
            image: None,
            sha: None,
            tag: None,
            result,
            reason: None,
            error: None,
            index_digest: None,
            manifests: Vec::new(),
            config_digests: Vec::new(),
            layers: Vec::new(),
            files: None,
            content_bytes: None,
            stored_bytes: None,
            settings: None,
            output: None,
            push: None,
            uploaded_bytes: None,
            skipped_bytes: None,
            downloaded_bytes: None,
            cached_bytes: None,
            refetched: None,
            freed_bytes: None,
            line: None,
            verify: None,
            provenance: None,
            modelpack: None,
            seconds: 0.0,
        }
    }

    /// The model and commit of `req`, with `settings`.
    pub fn for_request(result: Outcome, req: &BuildRequest, settings: BuildSettings) -> Self {
        ImageReport {
            name: Some(req.name.to_string()),
            image: Some(req.name.registry_path()),
            sha: Some(req.sha.to_string()),
            tag: Some(req.tag.clone()),
            settings: Some(settings),
            ..ImageReport::new(result)
        }
    }

    /// What a layout's build record says of the image in it (a skipped model).
    pub fn with_summary(mut self, s: &ImageSummary) -> Self {
        self.index_digest = Some(s.index_digest.clone());
        self.manifests = s
            .manifests
            .iter()
            .map(|(p, d)| ManifestReport {
                platform: Some(p.clone()),
                digest: d.clone(),
            })
            .collect();
        self.layers = s
            .layers
            .iter()
            .enumerate()
            .map(|(i, (d, size))| LayerReport {
                number: i + 1,
                digest: d.clone(),
                size: Some(*size),
                ..Default::default()
            })
            .collect();
        self.files = Some(s.files);
        self.stored_bytes = Some(s.layers_size());
        self
    }

    /// What a build made: digests, manifests, layers, sizes. `output` is left to the
    /// caller, which knows whether a layout was written.
    pub fn with_build(mut self, b: &BuildReport) -> Self {
        self.index_digest = Some(b.index_digest.to_string());
        self.manifests = b
            .manifests
            .iter()
            .map(|(p, d)| ManifestReport {
                platform: Some(p.to_string()),
                digest: d.to_string(),
            })
            .collect();
        self.config_digests = b.configs.iter().map(|d| d.to_string()).collect();
        self.layers = b
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerReport {
                number: i + 1,
                digest: l.info.digest.to_string(),
                size: Some(l.info.size),
                role: Some(l.role.to_string()),
                media_type: Some(l.info.media_type.to_string()),
                diff_id: Some(l.info.diff_id.to_string()),
                uncompressed_size: Some(l.info.uncompressed_size),
                toc_digest: Some(l.info.toc_digest.to_string()),
                toc_entries: Some(l.info.toc_entries),
                content_bytes: Some(l.info.content_bytes),
                files: Some(l.info.file_digests.iter().map(|(p, _)| p.clone()).collect()),
            })
            .collect();
        self.files = Some(b.files());
        self.content_bytes = Some(b.content_bytes());
        self.stored_bytes = Some(b.layers_size());
        self.modelpack = b.twin.as_ref().map(|twin| ModelpackReport {
            digest: twin.digest.to_string(),
            tag: crate::modelpack::twin_tag(&b.tag),
            found: None,
        });
        self
    }

    /// A streamed job's build, downloads and uploads (to `reference`, if it pushed).
    pub fn with_hub_job(mut self, r: &HubReport, reference: Option<&str>) -> Self {
        self = self.with_build(&r.build);
        if let Some(p) = &r.published {
            self.reason = Some(p.to_string());
        }
        self.downloaded_bytes = Some(r.stream.downloaded_bytes);
        self.cached_bytes = Some(r.stream.cached_bytes);
        self.refetched = Some(r.stream.failures.clone());
        if let Some(reference) = reference {
            self = self.with_uploads(reference, &r.uploads);
            if let Some(push) = &mut self.push {
                // Where each referrer went: the index, or each platform manifest on a
                // registry that refused a referrer of an index.
                push.referrers = r.referrers.clone();
            }
        }
        self
    }

    /// A job that found the registry's tag (`reference`) already on `index` with the same
    /// commit and settings: skipped, nothing downloaded or sent.
    pub fn up_to_date(mut self, index: &crate::digest::Digest, reference: Option<String>) -> Self {
        self.result = Outcome::Skipped;
        self.reason = Some("up to date".into());
        self.index_digest = Some(index.to_string());
        self.downloaded_bytes = Some(0);
        self.uploaded_bytes = Some(0);
        self.push = Some(PushedReport {
            reference: reference.unwrap_or_default(),
            digest: index.to_string(),
            blobs: Vec::new(),
            resumed: None,
            resumed_bytes: 0,
            requests: None,
            referrers: Vec::new(),
        });
        self
    }

    /// The layer uploads of a streamed build to `reference`.
    pub fn with_uploads(mut self, reference: &str, uploads: &[(usize, Uploaded)]) -> Self {
        let sent: u64 = uploads.iter().map(|(_, u)| u.sent).sum();
        let size: u64 = uploads.iter().map(|(_, u)| u.size).sum();
        self.result = Outcome::Pushed;
        self.uploaded_bytes = Some(sent);
        self.skipped_bytes = Some(size.saturating_sub(sent));
        self.push = Some(PushedReport {
            reference: reference.to_string(),
            digest: self.index_digest.clone().unwrap_or_default(),
            blobs: uploads
                .iter()
                .map(|(n, u)| BlobReport {
                    layer: Some(n + 1),
                    digest: u.digest.to_string(),
                    size: u.size,
                    action: None,
                    sent: Some(u.sent),
                    resumed_from: Some(u.resumed_from),
                })
                .collect(),
            resumed: None,
            resumed_bytes: uploads.iter().map(|(_, u)| u.resumed_from).sum(),
            requests: None,
            referrers: Vec::new(),
        });
        self
    }

    /// A layout pushed to a registry (`push`, `build --from-dir --push`).
    pub fn with_push(mut self, p: &PushReport) -> Self {
        let size: u64 = p.blobs.iter().map(|b| b.size).sum();
        self.result = Outcome::Pushed;
        if self.index_digest.is_none() {
            self.index_digest = Some(p.index_digest.clone());
        }
        if self.manifests.is_empty() {
            self.manifests = p
                .manifests
                .iter()
                .map(|d| ManifestReport {
                    platform: None,
                    digest: d.clone(),
                })
                .collect();
        }
        self.uploaded_bytes = Some(p.uploaded_bytes);
        self.skipped_bytes = Some(size.saturating_sub(p.uploaded_bytes));
        // A layout's blobs are what the registry stores of it.
        self.stored_bytes.get_or_insert(size);
        self.push = Some(PushedReport {
            reference: p.reference.clone(),
            digest: p.index_digest.clone(),
            blobs: p
                .blobs
                .iter()
                .map(|b| BlobReport {
                    layer: None,
                    digest: b.digest.clone(),
                    size: b.size,
                    action: Some(b.action),
                    sent: None,
                    resumed_from: None,
                })
                .collect(),
            resumed: Some(p.resumed),
            resumed_bytes: p.resumed_bytes,
            requests: Some(p.requests),
            referrers: p.referrers.clone(),
        });
        self
    }

    /// `verify`'s outcome.
    pub fn verified(v: &Verified, seconds: f64) -> ImageReport {
        ImageReport {
            name: Some(v.model.clone()),
            sha: Some(v.revision.clone()),
            index_digest: Some(v.index_digest.clone()),
            layers: v
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| LayerReport {
                    number: i + 1,
                    digest: l.digest.clone(),
                    role: Some(l.role.clone()),
                    ..LayerReport::default()
                })
                .collect(),
            downloaded_bytes: Some(v.downloaded_bytes),
            error: v.difference.as_ref().map(ToString::to_string),
            verify: Some(VerifyReport {
                claim_from: v.claim_from.clone(),
                source: v.source.clone(),
                rebuilt_index_digest: v.rebuilt_index_digest.clone(),
                difference: v.difference.clone(),
            }),
            seconds: round_seconds(seconds),
            ..ImageReport::new(if v.verified {
                Outcome::Verified
            } else {
                Outcome::Failed
            })
        }
    }

    /// `inspect`: an image's provenance (`statement` as stored, found `from`).
    pub fn inspected(
        index_digest: &str,
        p: &Provenance,
        statement: serde_json::Value,
        from: Option<&str>,
    ) -> ImageReport {
        ImageReport {
            name: Some(p.model.clone()),
            image: Some(p.image.clone()),
            sha: Some(p.revision.clone()),
            tag: Some(p.tag.clone()),
            index_digest: Some(index_digest.to_string()),
            layers: p
                .layers
                .iter()
                .enumerate()
                .map(|(i, l)| LayerReport {
                    number: i + 1,
                    digest: l.digest.clone(),
                    size: Some(l.size),
                    role: Some(l.role.clone()),
                    media_type: Some(l.media_type.clone()),
                    diff_id: Some(l.diff_id.clone()),
                    files: Some(l.files.clone()),
                    ..LayerReport::default()
                })
                .collect(),
            files: Some(p.files.len() as u64),
            content_bytes: Some(p.files.iter().map(|f| f.size).sum()),
            stored_bytes: Some(p.layers.iter().map(|l| l.size).sum()),
            settings: Some(p.settings.clone()),
            provenance: Some(ProvenanceReport {
                from: from.map(str::to_string),
                source: p.source.clone(),
                hub_url: (p.source == "huggingface")
                    .then(|| format!("https://huggingface.co/{}/tree/{}", p.model, p.revision)),
                tool: p.tool.clone(),
                files: p
                    .files
                    .iter()
                    .map(|f| FileReport {
                        path: f.path.clone(),
                        size: f.size,
                        sha256: f.sha256.clone(),
                    })
                    .collect(),
                statement,
            }),
            ..ImageReport::new(Outcome::Inspected)
        }
    }
}

/// The JSON Schema of [`Report`], as committed in `schema/report.schema.json`
/// (pretty-printed, with a final newline).
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Report);
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_not_repeated() {
        let io = std::io::Error::other("disk on fire");
        let e = crate::layer::LayerError::Read {
            path: "a".into(),
            source: io,
        };
        assert_eq!(one_line(&e), "reading a: disk on fire");
    }

    #[test]
    fn a_summary_counts_results_and_sums_bytes() {
        let mut built = ImageReport::new(Outcome::Pushed);
        built.uploaded_bytes = Some(10);
        built.skipped_bytes = Some(5);
        built.stored_bytes = Some(15);
        built.downloaded_bytes = Some(20);
        let mut skipped = ImageReport::new(Outcome::Skipped);
        skipped.stored_bytes = Some(99);
        let failed = ImageReport::new(Outcome::Failed);
        let s = Summary::of(&[built, skipped, failed], 1.23456);
        assert_eq!(
            s,
            Summary {
                models: 3,
                pushed: 1,
                skipped: 1,
                failed: 1,
                uploaded_bytes: 10,
                skipped_bytes: 5,
                stored_bytes: 15,
                downloaded_bytes: 20,
                seconds: 1.235,
                ..Summary::default()
            }
        );
    }
}
