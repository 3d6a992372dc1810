//! What an image was built from, kept beside it as `depotai-build.json` in the layout
//! directory, written into the staging directory and so renamed into place together
//! with the image.
//!
//! A pinned commit's files cannot change, so the name, the commit, the tag, the tool
//! version and the settings decide whether an image is up to date: [`check`] reads the
//! record and the layout's documents and makes no network request. The file list (with
//! the hashes and sizes the Hub published) is kept for the record, not compared.
//!
//! The record has no timestamps, host names or paths: the same build writes the same
//! bytes. It is not part of the image (no blob or descriptor refers to it), so copying
//! the image with `skopeo copy oci:DIR:TAG …` leaves it behind.

use crate::digest::Digest;
use crate::image::read::{self, Layout};
use crate::image::Platform;
use crate::layer;
use crate::names::{CommitSha, ModelName};
use crate::plan::PlanOptions;
use crate::source::hub::{Check, RemoteFile};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the record inside the image layout directory.
pub const RECORD_FILE: &str = "depotai-build.json";

/// Bumped when the meaning of a record changes; older records then count as stale.
pub const RECORD_VERSION: u32 = 2;

/// The settings the image bytes depend on (threads and download jobs do not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BuildSettings {
    /// `estargz` or `zstd-chunked`.
    pub format: String,
    pub chunk_size: u64,
    pub compression_level: i32,
    /// `libdeflate` or `isal` (eStargz), `zstd` (zstd:chunked). Records written before
    /// there was a choice were made with libdeflate.
    #[serde(default = "libdeflate")]
    pub encoder: String,
    pub platforms: Vec<String>,
    pub prefetch: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// The layer plan: `per-file` or `single`.
    pub layers: String,
    pub own_layer_above: u64,
    pub max_layers: usize,
    /// `--prefix` as a relative tar path (`models`). Left out when empty, so the
    /// settings of a build without one (and their digest on the index) are as before.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// The ModelPack twin is made too (`--modelpack`). Left out of the JSON when off,
    /// so the settings digest of images without it is what it always was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub modelpack: bool,
}

impl BuildSettings {
    /// The layer options these settings describe (`threads` is the machine's: it never
    /// changes the bytes).
    pub fn layer_options(&self) -> Result<layer::Options, String> {
        let format: layer::Format = self.format.parse()?;
        let encoder = match format {
            layer::Format::Estargz => self.encoder.parse()?,
            // zstd:chunked has one encoder (recorded as `zstd`).
            layer::Format::ZstdChunked => Default::default(),
        };
        Ok(layer::Options {
            format,
            encoder,
            chunk_size: self.chunk_size,
            prefetch: self.prefetch.clone(),
            level: Some(self.compression_level),
            prefix: self.prefix.clone(),
            ..layer::Options::default()
        })
    }

    /// The layer plan these settings describe.
    pub fn plan_options(&self) -> Result<PlanOptions, String> {
        Ok(PlanOptions {
            mode: self.layers.parse()?,
            own_layer_above: self.own_layer_above,
            max_layers: self.max_layers,
            max_layer_size: None,
        })
    }

    /// The platforms these settings describe.
    pub fn platforms(&self) -> Result<Vec<Platform>, String> {
        self.platforms
            .iter()
            .map(|p| {
                p.parse()
                    .map_err(|e: crate::image::ImageError| e.to_string())
            })
            .collect()
    }

    pub fn new(
        layer: &layer::Options,
        plan: &PlanOptions,
        platforms: &[Platform],
        include: &[String],
        exclude: &[String],
    ) -> BuildSettings {
        BuildSettings {
            format: layer.format.to_string(),
            layers: plan.mode.to_string(),
            own_layer_above: plan.own_layer_above,
            max_layers: plan.max_layers,
            chunk_size: layer.chunk_size,
            compression_level: layer.effective_level(),
            encoder: layer.encoder_name().to_string(),
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
            prefetch: layer.prefetch.clone(),
            include: include.to_vec(),
            exclude: exclude.to_vec(),
            prefix: layer.prefix.clone(),
            modelpack: false,
        }
    }

    /// These settings, with or without the ModelPack twin.
    pub fn with_modelpack(mut self, modelpack: bool) -> BuildSettings {
        self.modelpack = modelpack;
        self
    }
}

/// One file of the image as the Hub listed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFile {
    pub path: String,
    pub size: u64,
    /// LFS files: the sha256 the Hub publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Other files: the git blob id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_blob: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub record_version: u32,
    /// `depotai <version>`: a new version may write different bytes, so it rebuilds.
    pub tool: String,
    pub source: String,
    pub name: String,
    pub sha: String,
    pub tag: String,
    pub settings: BuildSettings,
    pub files: Vec<RecordedFile>,
}

fn libdeflate() -> String {
    layer::Encoder::Libdeflate.name().to_string()
}

pub fn tool_version() -> String {
    format!("depotai {}", env!("CARGO_PKG_VERSION"))
}

impl BuildRecord {
    /// The record of a build from the Hub (`files` empty when only comparing).
    pub fn new(name: &ModelName, sha: &CommitSha, tag: &str, settings: BuildSettings) -> Self {
        BuildRecord {
            record_version: RECORD_VERSION,
            tool: tool_version(),
            source: "huggingface".into(),
            name: name.as_str().to_string(),
            sha: sha.as_str().to_string(),
            tag: tag.to_string(),
            settings,
            files: Vec::new(),
        }
    }

    /// The record of a build from a local directory: the name and commit are what the
    /// user says they are, and there is no Hub listing.
    pub fn from_directory(
        name: &ModelName,
        sha: &CommitSha,
        tag: &str,
        settings: BuildSettings,
    ) -> Self {
        BuildRecord {
            source: "directory".into(),
            ..BuildRecord::new(name, sha, tag, settings)
        }
    }

    pub fn with_files(mut self, files: &[RemoteFile]) -> Self {
        let mut v: Vec<RecordedFile> = files
            .iter()
            .map(|f| RecordedFile {
                path: f.path.clone(),
                size: f.size,
                sha256: match &f.check {
                    Check::Sha256(h) => Some(h.clone()),
                    Check::GitSha1(_) => None,
                },
                git_blob: match &f.check {
                    Check::GitSha1(h) => Some(h.clone()),
                    Check::Sha256(_) => None,
                },
            })
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        self.files = v;
        self
    }

    /// The bytes of `depotai-build.json`: pretty JSON in field order, newline-terminated.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).expect("a record serialises");
        b.push(b'\n');
        b
    }

    /// Why `self` (what is on disk) does not match `want`, if it does not. Files are not
    /// compared: a pinned commit's listing cannot change.
    pub fn differs_from(&self, want: &BuildRecord) -> Option<String> {
        if self.record_version != want.record_version || self.tool != want.tool {
            return Some(format!("built by {}", self.tool));
        }
        if self.source != want.source || self.name != want.name {
            return Some(format!("built from {} {}", self.source, self.name));
        }
        if self.sha != want.sha {
            return Some(format!("built at {}", self.sha));
        }
        if self.tag != want.tag {
            return Some(format!("tagged {}", self.tag));
        }
        if self.settings != want.settings {
            return Some("built with other settings".into());
        }
        None
    }
}

/// The image a layout directory holds, read from its documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    pub index_digest: String,
    /// (platform, manifest digest), in index order.
    pub manifests: Vec<(String, String)>,
    /// (digest, size) of each layer, bottom first.
    pub layers: Vec<(String, u64)>,
    pub files: u64,
}

impl ImageSummary {
    /// Bytes of all layer blobs.
    pub fn layers_size(&self) -> u64 {
        self.layers.iter().map(|(_, s)| s).sum()
    }
}

/// Whether the image in `dir` is what `want` describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshness {
    UpToDate(ImageSummary),
    /// Why it must be built.
    Stale(String),
}

/// Compares the record in `dir` with `want` and checks that the layout is whole (its
/// documents parse and every blob they name is there with the right size). Reads a few
/// small files; no network.
pub fn check(dir: &Path, want: &BuildRecord) -> Freshness {
    if !dir.exists() {
        return Freshness::Stale("not built yet".into());
    }
    let rec = match std::fs::read(dir.join(RECORD_FILE)) {
        Ok(b) => b,
        Err(_) => return Freshness::Stale(format!("no {RECORD_FILE}")),
    };
    let rec: BuildRecord = match serde_json::from_slice(&rec) {
        Ok(r) => r,
        Err(e) => return Freshness::Stale(format!("unreadable {RECORD_FILE}: {e}")),
    };
    if let Some(why) = rec.differs_from(want) {
        return Freshness::Stale(why);
    }
    match read_layout(dir, &want.tag) {
        Ok(mut s) => {
            s.files = rec.files.len() as u64;
            Freshness::UpToDate(s)
        }
        Err(why) => Freshness::Stale(format!("incomplete image: {why}")),
    }
}

/// A descriptor's digest and size.
fn descriptor(v: &serde_json::Value) -> Result<(Digest, u64), String> {
    let digest = read::digest_of(v).map_err(|e| e.to_string())?;
    let size = v["size"].as_u64().ok_or("a descriptor without a size")?;
    Ok((digest, size))
}

/// Through the one layout reader ([`crate::image::read`]): every document bounded,
/// size- and digest-checked, every blob there with its size.
fn read_layout(dir: &Path, tag: &str) -> Result<ImageSummary, String> {
    let s = |e: read::LayoutError| e.to_string();
    let layout = Layout::open(dir).map_err(s)?;
    let listed = layout.index_json().map_err(s)?;
    let top = read::first_image(&listed).map_err(s)?;
    if top["annotations"][crate::image::ANNOTATION_REF_NAME].as_str() != Some(tag) {
        return Err(format!("index.json does not tag it {tag}"));
    }
    let index_desc = descriptor(top)?;
    let (_, _, index) = layout.document(top, "image index").map_err(s)?;
    let mut manifests = Vec::new();
    let mut layers: Option<Vec<(String, u64)>> = None;
    for m in index["manifests"]
        .as_array()
        .ok_or("the index has no manifests")?
    {
        let (d, _, man) = layout.document(m, "manifest").map_err(s)?;
        let (config, size) = descriptor(&man["config"])?;
        layout.blob(&config, Some(size)).map_err(s)?;
        let mut these = Vec::new();
        for l in man["layers"]
            .as_array()
            .ok_or("a manifest without layers")?
        {
            let (ld, size) = descriptor(l)?;
            layout.blob(&ld, Some(size)).map_err(s)?;
            these.push((ld.to_string(), size));
        }
        layers.get_or_insert(these);
        manifests.push((crate::image::descriptor_platform(m), d.to_string()));
    }
    let layers = layers
        .filter(|l| !l.is_empty())
        .ok_or("the image has no layer")?;
    // The referrers listed after it (provenance, ModelPack twin) are whole too: a twin
    // whose raw layer went missing is rebuilt.
    for r in listed["manifests"].as_array().into_iter().flatten().skip(1) {
        let (_, _, man) = layout.document(r, "referrer").map_err(s)?;
        let (config, size) = descriptor(&man["config"])?;
        layout.blob(&config, Some(size)).map_err(s)?;
        for l in man["layers"].as_array().into_iter().flatten() {
            let (ld, size) = descriptor(l)?;
            layout.blob(&ld, Some(size)).map_err(s)?;
        }
    }
    Ok(ImageSummary {
        index_digest: index_desc.0.to_string(),
        manifests,
        layers,
        files: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BuildRecord {
        let layer = layer::Options::default();
        BuildRecord::new(
            &"acme/m".parse().unwrap(),
            &"0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
            "latest",
            BuildSettings::new(
                &layer,
                &PlanOptions::default(),
                &crate::image::default_platforms(),
                &[],
                &[],
            ),
        )
    }

    #[test]
    fn records_compare_on_inputs_not_files() {
        let want = record();
        let mut on_disk = want.clone();
        on_disk.files.push(RecordedFile {
            path: "config.json".into(),
            size: 2,
            sha256: None,
            git_blob: Some("9e26dfeeb6e641a33dae4961196235bdb965b21b".into()),
        });
        assert_eq!(on_disk.differs_from(&want), None);
        let mut other = want.clone();
        other.sha = "1".repeat(40);
        assert!(other.differs_from(&want).unwrap().contains("built at 1111"));
        let mut other = want.clone();
        other.settings.chunk_size += 1;
        assert_eq!(
            other.differs_from(&want).as_deref(),
            Some("built with other settings")
        );
        let mut other = want.clone();
        other.tool = "depotai 0.0.1".into();
        assert!(other.differs_from(&want).is_some());
        let mut other = want.clone();
        other.settings.exclude.push("*.onnx".into());
        assert!(other.differs_from(&want).is_some());
        let mut other = want.clone();
        other.settings.encoder = "isal".into();
        assert_eq!(
            other.differs_from(&want).as_deref(),
            Some("built with other settings")
        );
    }

    #[test]
    fn a_record_from_before_the_encoder_setting_reads_as_libdeflate() {
        let want = record();
        let mut v: serde_json::Value = serde_json::from_slice(&want.to_bytes()).unwrap();
        assert_eq!(v["settings"]["encoder"], "libdeflate");
        v["settings"].as_object_mut().unwrap().remove("encoder");
        let old: BuildRecord = serde_json::from_value(v).unwrap();
        assert_eq!(old.differs_from(&want), None);
    }

    #[test]
    fn records_are_deterministic_json_that_reads_back() {
        let r = record();
        assert_eq!(r.to_bytes(), r.clone().to_bytes());
        let back: BuildRecord = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.ends_with("}\n"));
        assert!(!text.contains("seconds"));
    }

    #[test]
    fn a_missing_directory_or_record_is_stale() {
        let tmp = std::env::temp_dir().join(format!("depotai-record-{}", std::process::id()));
        assert_eq!(
            check(&tmp, &record()),
            Freshness::Stale("not built yet".into())
        );
        std::fs::create_dir_all(&tmp).unwrap();
        assert_eq!(
            check(&tmp, &record()),
            Freshness::Stale(format!("no {RECORD_FILE}"))
        );
        std::fs::write(tmp.join(RECORD_FILE), record().to_bytes()).unwrap();
        assert!(
            matches!(check(&tmp, &record()), Freshness::Stale(w) if w.starts_with("incomplete image"))
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
