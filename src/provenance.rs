//! Where an image came from, as an in-toto statement with a SLSA provenance v1
//! predicate, attached to the image as an OCI 1.1 referrer (an artifact manifest whose
//! `subject` is the image index).
//!
//! A build is a pure function of (model, commit, settings), so the statement holds what
//! anyone needs to rebuild the image and compare digests (`depotai verify`): the Hub
//! repository at its commit, every file with its sha256 and size, the depotai version
//! and every byte-relevant setting, and the layer plan that came out. Like everything
//! else it is deterministic: no timestamps, no host names, no invocation ids, and URLs
//! always name `https://huggingface.co`, whatever `HF_ENDPOINT` the build used.

use crate::catalogue::record::{BuildRecord, BuildSettings};
use crate::digest::Digest;
use crate::image::{canonical_json, media, Blob, Referrer};
use crate::names::ModelName;
use crate::plan::BuiltLayer;
use oci_spec::image::{DescriptorBuilder, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What a depotai build is: documented in the README ("Provenance").
pub const BUILD_TYPE: &str = "https://depotai.dev/provenance/build/v1";
pub const BUILDER_ID: &str = "https://depotai.dev/provenance/builder/cli";

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("provenance: {0}")]
    Invalid(String),
    #[error(transparent)]
    Spec(#[from] oci_spec::OciSpecError),
}

/// One file as the provenance records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenanceFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// The git blob id the Hub lists for a non-LFS file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_blob: Option<String>,
}

/// One layer as built: its role in the plan, digests and files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenanceLayer {
    pub role: String,
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
    pub files: Vec<String>,
}

/// What the statement says, in the form `verify` and `inspect` use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The image name, e.g. `acme/tiny-model`.
    pub image: String,
    /// The image index digest (the statement's subject).
    pub index_digest: String,
    /// The Hub's spelling of the model name.
    pub model: String,
    pub revision: String,
    /// `huggingface` or `directory`.
    pub source: String,
    pub tag: String,
    pub tool: String,
    pub settings: BuildSettings,
    pub files: Vec<ProvenanceFile>,
    pub layers: Vec<ProvenanceLayer>,
}

/// `https://huggingface.co/<model>/resolve/<sha>/<path>`, each segment percent-encoded.
fn resolve_uri(model: &str, sha: &str, path: &str) -> String {
    let segs: Vec<String> = path
        .split('/')
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect();
    format!(
        "https://huggingface.co/{model}/resolve/{sha}/{}",
        segs.join("/")
    )
}

impl Provenance {
    /// The provenance of a build described by `record` (its files as the Hub listed
    /// them; empty for a directory) that produced `layers` under `index_digest`.
    pub fn of_build(
        record: &BuildRecord,
        image: &str,
        index_digest: &Digest,
        layers: &[BuiltLayer],
        sizes: &BTreeMap<String, u64>,
    ) -> Provenance {
        let listed: BTreeMap<&str, &crate::catalogue::record::RecordedFile> =
            record.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let mut files: Vec<ProvenanceFile> = Vec::new();
        for l in layers {
            for (path, digest) in &l.info.file_digests {
                let hex = digest.hex();
                let size = sizes.get(path).copied().unwrap_or_default();
                let git_blob = listed.get(path.as_str()).and_then(|f| f.git_blob.clone());
                files.push(ProvenanceFile {
                    path: path.clone(),
                    size,
                    sha256: hex,
                    git_blob,
                });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Provenance {
            image: image.to_string(),
            index_digest: index_digest.to_string(),
            model: record.name.clone(),
            revision: record.sha.clone(),
            source: record.source.clone(),
            tag: record.tag.clone(),
            tool: record.tool.clone(),
            settings: record.settings.clone(),
            files,
            layers: layers
                .iter()
                .map(|l| ProvenanceLayer {
                    role: l.role.to_string(),
                    digest: l.info.digest.to_string(),
                    diff_id: l.info.diff_id.to_string(),
                    media_type: l.info.media_type.to_string(),
                    size: l.info.size,
                    files: l.info.file_digests.iter().map(|(p, _)| p.clone()).collect(),
                })
                .collect(),
        }
    }

    fn hub(&self) -> bool {
        self.source == "huggingface"
    }

    /// The in-toto statement, as canonical JSON (keys sorted at every depth, compact).
    /// Serialised straight from borrowed fields, declared in key order, so a statement
    /// of many files costs its bytes and nothing per file beside them.
    pub fn statement(&self) -> Vec<u8> {
        let source = if self.hub() {
            source_url_str(&self.model)
        } else {
            "directory".to_string()
        };
        let statement = Statement {
            type_: STATEMENT_TYPE,
            predicate: Predicate {
                build_definition: BuildDefinition {
                    build_type: BUILD_TYPE,
                    external_parameters: ExternalParameters {
                        model: &self.model,
                        revision: &self.revision,
                        settings: serde_json::to_value(&self.settings).expect("settings serialise"),
                        source,
                        tag: &self.tag,
                    },
                    resolved_dependencies: Dependencies(self),
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: BUILDER_ID,
                        version: Version {
                            depotai: self.tool.trim_start_matches("depotai "),
                        },
                    },
                    byproducts: self
                        .layers
                        .iter()
                        .enumerate()
                        .map(|(n, l)| Byproduct {
                            annotations: LayerAnnotations {
                                diff_id: &l.diff_id,
                                files: &l.files,
                                role: &l.role,
                                size: l.size,
                            },
                            digest: Sha256 {
                                sha256: l.digest.trim_start_matches("sha256:"),
                            },
                            media_type: &l.media_type,
                            name: format!("layer {n}: {}", l.role),
                        })
                        .collect(),
                },
            },
            predicate_type: PREDICATE_TYPE,
            subject: [Subject {
                digest: Sha256 {
                    sha256: self.index_digest.trim_start_matches("sha256:"),
                },
                name: &self.image,
            }],
        };
        serde_json::to_vec(&statement).expect("a statement serialises")
    }

    /// Reads a statement written by [`Provenance::statement`].
    pub fn parse(bytes: &[u8]) -> Result<Provenance, ProvenanceError> {
        let bad = |m: &str| ProvenanceError::Invalid(m.to_string());
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| ProvenanceError::Invalid(format!("not JSON: {e}")))?;
        if v["_type"] != STATEMENT_TYPE || v["predicateType"] != PREDICATE_TYPE {
            return Err(bad(
                "not an in-toto statement with a SLSA provenance v1 predicate",
            ));
        }
        let def = &v["predicate"]["buildDefinition"];
        if def["buildType"] != BUILD_TYPE {
            return Err(ProvenanceError::Invalid(format!(
                "build type {} is not depotai's",
                def["buildType"]
            )));
        }
        let ext = &def["externalParameters"];
        let s = |v: &Value, what: &str| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| ProvenanceError::Invalid(format!("no {what}")))
        };
        let subject = &v["subject"][0];
        let settings: BuildSettings = serde_json::from_value(ext["settings"].clone())
            .map_err(|e| ProvenanceError::Invalid(format!("settings: {e}")))?;
        let source = s(&ext["source"], "source")?;
        let mut files = Vec::new();
        for d in def["resolvedDependencies"]
            .as_array()
            .ok_or_else(|| bad("no resolvedDependencies"))?
        {
            if d["digest"]["gitCommit"].is_string() {
                continue;
            }
            files.push(ProvenanceFile {
                path: s(&d["name"], "file name")?,
                size: d["annotations"]["size"]
                    .as_u64()
                    .ok_or_else(|| bad("a file without a size"))?,
                sha256: s(&d["digest"]["sha256"], "file sha256")?,
                git_blob: d["digest"]["gitBlob"].as_str().map(str::to_string),
            });
        }
        let mut layers = Vec::new();
        for b in v["predicate"]["runDetails"]["byproducts"]
            .as_array()
            .ok_or_else(|| bad("no byproducts"))?
        {
            let a = &b["annotations"];
            layers.push(ProvenanceLayer {
                role: s(&a["role"], "layer role")?,
                digest: format!("sha256:{}", s(&b["digest"]["sha256"], "layer digest")?),
                diff_id: s(&a["diffId"], "layer diff ID")?,
                media_type: s(&b["mediaType"], "layer media type")?,
                size: a["size"]
                    .as_u64()
                    .ok_or_else(|| bad("a layer without a size"))?,
                files: a["files"]
                    .as_array()
                    .ok_or_else(|| bad("a layer without files"))?
                    .iter()
                    .map(|f| s(f, "file name"))
                    .collect::<Result<_, _>>()?,
            });
        }
        Ok(Provenance {
            image: s(&subject["name"], "subject name")?,
            index_digest: format!(
                "sha256:{}",
                s(&subject["digest"]["sha256"], "subject digest")?
            ),
            model: s(&ext["model"], "model")?,
            revision: s(&ext["revision"], "revision")?,
            source: if source == "directory" {
                source
            } else {
                "huggingface".into()
            },
            tag: s(&ext["tag"], "tag")?,
            tool: format!(
                "depotai {}",
                s(
                    &v["predicate"]["runDetails"]["builder"]["version"]["depotai"],
                    "version"
                )?
            ),
            settings,
            files,
            layers,
        })
    }

    /// The layer (index and role) holding `path`.
    pub fn layer_of(&self, path: &str) -> Option<(usize, &ProvenanceLayer)> {
        self.layers
            .iter()
            .enumerate()
            .find(|(_, l)| l.files.iter().any(|f| f == path))
    }
}

// The statement's shape. Fields are declared in byte order of their keys (serde writes
// them in declaration order), which makes the output canonical JSON.

#[derive(Serialize)]
struct Statement<'a> {
    #[serde(rename = "_type")]
    type_: &'static str,
    predicate: Predicate<'a>,
    #[serde(rename = "predicateType")]
    predicate_type: &'static str,
    subject: [Subject<'a>; 1],
}

#[derive(Serialize)]
struct Subject<'a> {
    digest: Sha256<'a>,
    name: &'a str,
}

#[derive(Serialize)]
struct Sha256<'a> {
    sha256: &'a str,
}

#[derive(Serialize)]
struct Predicate<'a> {
    #[serde(rename = "buildDefinition")]
    build_definition: BuildDefinition<'a>,
    #[serde(rename = "runDetails")]
    run_details: RunDetails<'a>,
}

#[derive(Serialize)]
struct BuildDefinition<'a> {
    #[serde(rename = "buildType")]
    build_type: &'static str,
    #[serde(rename = "externalParameters")]
    external_parameters: ExternalParameters<'a>,
    #[serde(rename = "resolvedDependencies")]
    resolved_dependencies: Dependencies<'a>,
}

#[derive(Serialize)]
struct ExternalParameters<'a> {
    model: &'a str,
    revision: &'a str,
    /// A `Value` of objects (`BTreeMap`s): serialised with sorted keys.
    settings: Value,
    source: String,
    tag: &'a str,
}

/// The Hub commit (for a Hub build), then every file: written one by one as the
/// statement is serialised, never held as a list.
struct Dependencies<'a>(&'a Provenance);

impl Serialize for Dependencies<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let commit = p.hub().then(|| Dependency::Commit {
            digest: GitCommit {
                git_commit: &p.revision,
            },
            name: &p.model,
            uri: format!("git+https://huggingface.co/{}@{}", p.model, p.revision),
        });
        let files = p.files.iter().map(|f| Dependency::File {
            annotations: FileAnnotations { size: f.size },
            digest: FileDigest {
                git_blob: f.git_blob.as_deref(),
                sha256: &f.sha256,
            },
            name: &f.path,
            uri: p.hub().then(|| resolve_uri(&p.model, &p.revision, &f.path)),
        });
        s.collect_seq(commit.into_iter().chain(files))
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Dependency<'a> {
    Commit {
        digest: GitCommit<'a>,
        name: &'a str,
        uri: String,
    },
    File {
        annotations: FileAnnotations,
        digest: FileDigest<'a>,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        uri: Option<String>,
    },
}

#[derive(Serialize)]
struct GitCommit<'a> {
    #[serde(rename = "gitCommit")]
    git_commit: &'a str,
}

#[derive(Serialize)]
struct FileAnnotations {
    size: u64,
}

#[derive(Serialize)]
struct FileDigest<'a> {
    #[serde(rename = "gitBlob", skip_serializing_if = "Option::is_none")]
    git_blob: Option<&'a str>,
    sha256: &'a str,
}

#[derive(Serialize)]
struct RunDetails<'a> {
    builder: Builder<'a>,
    byproducts: Vec<Byproduct<'a>>,
}

#[derive(Serialize)]
struct Builder<'a> {
    id: &'static str,
    version: Version<'a>,
}

#[derive(Serialize)]
struct Version<'a> {
    depotai: &'a str,
}

#[derive(Serialize)]
struct Byproduct<'a> {
    annotations: LayerAnnotations<'a>,
    digest: Sha256<'a>,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    name: String,
}

#[derive(Serialize)]
struct LayerAnnotations<'a> {
    #[serde(rename = "diffId")]
    diff_id: &'a str,
    files: &'a [String],
    role: &'a str,
    size: u64,
}

/// Where a model's files live on the Hub, for the image's source annotation.
pub fn source_url(name: &ModelName) -> String {
    format!("https://huggingface.co/{name}")
}

fn source_url_str(model: &str) -> String {
    match model.parse() {
        Ok(name) => source_url(&name),
        Err(_) => format!("https://huggingface.co/{model}"),
    }
}

/// The artifact manifest carrying `statement`, with `subject` the image index.
pub fn referrer(statement: Vec<u8>, index: &Blob) -> Result<Referrer, ProvenanceError> {
    let statement = Blob::new(statement);
    let config = Blob::new(canonical_json(&serde_json::json!({
        "predicateType": PREDICATE_TYPE,
        "subject": index.digest.to_string(),
    })));
    let digest = |b: &Blob| -> oci_spec::image::Digest {
        b.digest.to_string().parse().expect("valid OCI digest")
    };
    let predicate: HashMap<String, String> = [(
        media::ANNOTATION_PREDICATE_TYPE.to_string(),
        PREDICATE_TYPE.to_string(),
    )]
    .into();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(media::IN_TOTO.to_string()))
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::Other(
                    media::DEPOTAI_PROVENANCE_CONFIG.to_string(),
                ))
                .digest(digest(&config))
                .size(config.bytes.len() as u64)
                .build()?,
        )
        .layers(vec![DescriptorBuilder::default()
            .media_type(MediaType::Other(media::IN_TOTO.to_string()))
            .digest(digest(&statement))
            .size(statement.bytes.len() as u64)
            .annotations(predicate.clone())
            .build()?])
        .subject(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageIndex)
                .digest(digest(index))
                .size(index.bytes.len() as u64)
                .build()?,
        )
        .annotations(predicate)
        .build()?;
    Ok(Referrer {
        manifest: Blob::new(canonical_json(&manifest)),
        artifact_type: media::IN_TOTO.to_string(),
        blobs: vec![statement, config],
        tag_suffix: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance() -> Provenance {
        Provenance {
            image: "acme/m".into(),
            index_digest: Digest::of(b"index").to_string(),
            model: "Acme/M".into(),
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            source: "huggingface".into(),
            tag: "latest".into(),
            tool: "depotai 0.1.0".into(),
            settings: BuildSettings::new(
                &crate::layer::Options::default(),
                &crate::plan::PlanOptions::default(),
                &crate::image::default_platforms(),
                &[],
                &[],
            ),
            files: vec![
                ProvenanceFile {
                    path: "config.json".into(),
                    size: 2,
                    sha256: Digest::of(b"{}").hex(),
                    git_blob: Some("9e26dfeeb6e641a33dae4961196235bdb965b21b".into()),
                },
                ProvenanceFile {
                    path: "w eights/a.bin".into(),
                    size: 5,
                    sha256: Digest::of(b"hello").hex(),
                    git_blob: None,
                },
            ],
            layers: vec![ProvenanceLayer {
                role: "small files".into(),
                digest: Digest::of(b"layer").to_string(),
                diff_id: Digest::of(b"tar").to_string(),
                media_type: crate::layer::estargz::MEDIA_TYPE.into(),
                size: 100,
                files: vec!["config.json".into(), "w eights/a.bin".into()],
            }],
        }
    }

    #[test]
    fn the_statement_reads_back_as_what_was_written() {
        let p = provenance();
        let bytes = p.statement();
        assert_eq!(Provenance::parse(&bytes).unwrap(), p);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let deps = v["predicate"]["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap();
        assert_eq!(
            deps[0]["uri"],
            "git+https://huggingface.co/Acme/M@0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(
            deps[2]["uri"],
            "https://huggingface.co/Acme/M/resolve/0123456789abcdef0123456789abcdef01234567/w%20eights/a%2Ebin"
        );
        assert_eq!(p.layer_of("config.json").unwrap().0, 0);
    }

    #[test]
    fn the_statement_is_canonical_json_for_hub_and_directory_builds() {
        let hub = provenance();
        let dir = Provenance {
            source: "directory".into(),
            ..provenance()
        };
        for p in [hub, dir] {
            let bytes = p.statement();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            // Re-sorting changes nothing: keys are in order at every depth.
            assert_eq!(
                String::from_utf8(canonical_json(&v)).unwrap(),
                String::from_utf8(bytes.clone()).unwrap()
            );
            assert_eq!(Provenance::parse(&bytes).unwrap(), p);
        }
        let dir = Provenance {
            source: "directory".into(),
            ..provenance()
        };
        let v: Value = serde_json::from_slice(&dir.statement()).unwrap();
        let deps = &v["predicate"]["buildDefinition"]["resolvedDependencies"];
        assert_eq!(
            deps.as_array().unwrap().len(),
            2,
            "no commit for a directory"
        );
        assert_eq!(deps[0]["uri"], Value::Null);
        assert_eq!(
            deps[1]["digest"],
            serde_json::json!({"sha256": Digest::of(b"hello").hex()})
        );
        assert_eq!(
            v["predicate"]["buildDefinition"]["externalParameters"]["source"],
            "directory"
        );
    }

    #[test]
    fn the_referrer_names_the_index_as_its_subject_and_is_deterministic() {
        let index = Blob::new(b"{\"schemaVersion\":2}".to_vec());
        let a = referrer(provenance().statement(), &index).unwrap();
        let b = referrer(provenance().statement(), &index).unwrap();
        assert_eq!(a.manifest.bytes, b.manifest.bytes);
        let m: Value = serde_json::from_slice(&a.manifest.bytes).unwrap();
        assert_eq!(m["artifactType"], media::IN_TOTO);
        assert_eq!(m["subject"]["digest"], index.digest.to_string());
        assert_eq!(m["config"]["mediaType"], media::DEPOTAI_PROVENANCE_CONFIG);
        // The config names the subject, so two images never share it (no upload race
        // between runs pushing different models at once).
        let config: Value = serde_json::from_slice(&a.blobs[1].bytes).unwrap();
        assert_eq!(config["subject"], index.digest.to_string());
        assert_eq!(m["config"]["digest"], a.blobs[1].digest.to_string());
        let other = Blob::new(b"{\"schemaVersion\":2,\"x\":1}".to_vec());
        let c = referrer(provenance().statement(), &other).unwrap();
        assert_ne!(c.blobs[1].digest, a.blobs[1].digest);
        assert_eq!(m["layers"][0]["digest"], a.blobs[0].digest.to_string());
    }
}
