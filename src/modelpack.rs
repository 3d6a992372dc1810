//! The CNCF ModelPack twin of an image (model-spec v0.0.7): an artifact manifest whose
//! layers are the model's files themselves (`…v1.raw`), for the clients that read that
//! format (modctl, KitOps, Docker Model Runner, CRI-O's artifact mounts).
//!
//! A raw layer is the file's bytes, so its digest (and diff ID) is the file's sha256,
//! which the layers compute anyway and, for LFS files, the Hub publishes: the twin
//! costs no extra pass over the model. The pipeline tees each file into the
//! destination as the image's layer reads it (see `pipeline::build_planned_with`).
//!
//! The twin names the image index as its `subject` (a referrer: `oras discover` and the
//! referrers API find it from the image) and is tagged `<tag>-modelpack` (clients that
//! only pull by name, such as `modctl pull` or `kit pull`, find it too). It carries no
//! creation time: the same files at the same commit give the same twin.

use crate::digest::Digest;
use crate::image::{canonical_json, Blob, ImageError, Referrer};
use serde_json::{json, Map, Value};

/// `artifactType` of a ModelPack manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
/// Media type of its config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.model.config.v1+json";
/// The file's path in the model, on each layer.
pub const ANNOTATION_FILEPATH: &str = "org.cncf.model.filepath";
/// The file name oras (and CRI-O's artifact mounts) write the layer to.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// `"true"` where the kind was guessed (the spec's "inferred or assumed").
pub const ANNOTATION_UNTESTED: &str = "org.cncf.model.file.mediatype.untested";
/// What the twin's tag adds to the image's.
pub const TAG_SUFFIX: &str = "-modelpack";
/// An unknown kind of file at least this large is taken for weights (else for a
/// weights configuration), marked untested either way.
pub const UNKNOWN_WEIGHT_ABOVE: u64 = 64 << 20;

/// What a file is to the model, as model-spec names its layer media types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Weight,
    WeightConfig,
    Doc,
    Code,
    Dataset,
}

impl Kind {
    /// The media type of an unarchived, uncompressed layer of this kind.
    pub fn raw_media_type(self) -> &'static str {
        match self {
            Kind::Weight => "application/vnd.cncf.model.weight.v1.raw",
            Kind::WeightConfig => "application/vnd.cncf.model.weight.config.v1.raw",
            Kind::Doc => "application/vnd.cncf.model.doc.v1.raw",
            Kind::Code => "application/vnd.cncf.model.code.v1.raw",
            Kind::Dataset => "application/vnd.cncf.model.dataset.v1.raw",
        }
    }
}

const WEIGHT_EXT: &[&str] = &[
    "safetensors",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "gguf",
    "ggml",
    "onnx",
    "h5",
    "hdf5",
    "msgpack",
    "pb",
    "tflite",
    "keras",
    "mlmodel",
    "ot",
    "nemo",
    "pdparams",
    "llamafile",
];
const CONFIG_EXT: &[&str] = &["json", "yaml", "yml", "toml", "jinja", "tiktoken", "model"];
const CONFIG_NAMES: &[&str] = &["vocab.txt", "merges.txt", "added_tokens.txt"];
const DOC_EXT: &[&str] = &["md", "rst", "pdf", "html", "adoc"];
const DOC_STEMS: &[&str] = &[
    "readme",
    "license",
    "licence",
    "notice",
    "copying",
    "authors",
    "citation",
    "use_policy",
];
const CODE_EXT: &[&str] = &[
    "py", "ipynb", "sh", "js", "ts", "c", "cc", "cpp", "h", "hpp", "cu", "cuh", "rs", "go", "java",
    "rb", "pl", "lua", "r", "jl", "swift", "kt", "scala",
];
const CODE_NAMES: &[&str] = &["requirements.txt", "dockerfile", "makefile"];
const DATASET_EXT: &[&str] = &[
    "csv", "tsv", "jsonl", "parquet", "arrow", "feather", "tfrecord", "npy", "npz",
];

/// The kind of the file at `path` (`size` bytes), and whether it was guessed: by its
/// name (documentation, code and tokenizer files named as such), then by its
/// extension. A file matching no rule is a weights configuration, or weights from
/// [`UNKNOWN_WEIGHT_ABOVE`] up, and untested.
pub fn classify(path: &str, size: u64) -> (Kind, bool) {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, e),
        _ => (name.as_str(), ""),
    };
    if CONFIG_NAMES.contains(&name.as_str()) {
        return (Kind::WeightConfig, false);
    }
    if CODE_NAMES.contains(&name.as_str()) {
        return (Kind::Code, false);
    }
    if DOC_STEMS.contains(&stem) || DOC_STEMS.contains(&name.as_str()) {
        return (Kind::Doc, false);
    }
    let has = |list: &[&str]| list.contains(&ext);
    if has(WEIGHT_EXT) {
        (Kind::Weight, false)
    } else if has(CONFIG_EXT) {
        (Kind::WeightConfig, false)
    } else if has(DOC_EXT) {
        (Kind::Doc, false)
    } else if has(CODE_EXT) {
        (Kind::Code, false)
    } else if has(DATASET_EXT) {
        (Kind::Dataset, false)
    } else if size >= UNKNOWN_WEIGHT_ABOVE {
        (Kind::Weight, true)
    } else {
        (Kind::WeightConfig, true)
    }
}

/// One regular file of the model: a raw layer of the twin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwinFile {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
}

/// What the twin's config says of the model.
#[derive(Clone, Debug)]
pub struct TwinMeta<'a> {
    /// `descriptor.name`: the Hub repository id (`org/model`).
    pub name: &'a str,
    /// `descriptor.revision`: the commit.
    pub revision: &'a str,
    /// `descriptor.sourceURL`: the repository on the Hub.
    pub source_url: &'a str,
    /// The image's tag (the twin's is it plus [`TAG_SUFFIX`]).
    pub tag: &'a str,
}

/// The twin's tag for an image tagged `tag`, or `None` when it would be longer than a
/// tag may be.
pub fn twin_tag(tag: &str) -> Option<String> {
    let t = format!("{tag}{TAG_SUFFIX}");
    crate::image::validate_tag(&t).ok().map(|_| t)
}

/// Refuses an image tag that leaves no room for [`TAG_SUFFIX`].
pub fn check_tag(tag: &str) -> Result<(), ImageError> {
    match twin_tag(tag) {
        Some(_) => Ok(()),
        None => Err(ImageError::TwinTag(tag.to_string())),
    }
}

/// `config.format`, when every weight file says the same: `safetensors`, `gguf` or
/// `onnx` (other extensions, such as `.bin`, do not tell a format).
fn weight_format(files: &[TwinFile]) -> Option<&'static str> {
    let mut format = None;
    for f in files {
        if classify(&f.path, f.size).0 != Kind::Weight {
            continue;
        }
        let this = match f.path.rsplit_once('.').map(|(_, e)| e) {
            Some("safetensors") => "safetensors",
            Some("gguf") => "gguf",
            Some("onnx") => "onnx",
            _ => return None,
        };
        if format.is_some_and(|f| f != this) {
            return None;
        }
        format = Some(this);
    }
    format
}

/// The twin of the image whose index is `subject`: one raw layer per file, in path
/// order, its config and manifest. A referrer of the index, tagged
/// [`twin_tag`]; its blobs are the config (and the empty file's blob, when the model
/// has empty files: they are never read, so never teed).
pub fn twin(
    files: &[TwinFile],
    meta: &TwinMeta<'_>,
    subject: &Blob,
) -> Result<Referrer, ImageError> {
    check_tag(meta.tag)?;
    let mut files = files.to_vec();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut model_config = Map::new();
    if let Some(f) = weight_format(&files) {
        model_config.insert("format".into(), json!(f));
    }
    let config = json!({
        "descriptor": {
            "name": meta.name,
            "revision": meta.revision,
            "sourceURL": meta.source_url,
        },
        "config": Value::Object(model_config),
        "modelfs": {
            "type": "layers",
            "diffIds": files.iter().map(|f| f.digest.to_string()).collect::<Vec<_>>(),
        },
    });
    let config = Blob::new(canonical_json(&config));
    let layers: Vec<Value> = files
        .iter()
        .map(|f| {
            let (kind, untested) = classify(&f.path, f.size);
            let mut annotations = json!({
                ANNOTATION_FILEPATH: f.path,
                ANNOTATION_TITLE: f.path,
            });
            if untested {
                annotations[ANNOTATION_UNTESTED] = json!("true");
            }
            json!({
                "mediaType": kind.raw_media_type(),
                "digest": f.digest.to_string(),
                "size": f.size,
                "annotations": annotations,
            })
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": config.digest.to_string(),
            "size": config.bytes.len(),
        },
        "layers": layers,
        "subject": {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": subject.digest.to_string(),
            "size": subject.bytes.len(),
        },
        "annotations": {
            crate::image::ANNOTATION_SOURCE: meta.source_url,
            crate::image::ANNOTATION_REVISION: meta.revision,
        },
    });
    let mut blobs = vec![config];
    if files.iter().any(|f| f.size == 0) {
        blobs.push(Blob::new(Vec::new()));
    }
    Ok(Referrer {
        manifest: Blob::new(canonical_json(&manifest)),
        artifact_type: ARTIFACT_TYPE.to_string(),
        blobs,
        tag_suffix: Some(TAG_SUFFIX.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_classified_by_name_then_extension_and_unknown_ones_are_marked_untested() {
        let cases = [
            ("model-00001-of-00002.safetensors", Kind::Weight, false),
            ("onnx/model.onnx", Kind::Weight, false),
            ("config.json", Kind::WeightConfig, false),
            ("tokenizer.model", Kind::WeightConfig, false),
            ("vocab.txt", Kind::WeightConfig, false),
            ("README.md", Kind::Doc, false),
            ("LICENSE", Kind::Doc, false),
            ("LICENSE.txt", Kind::Doc, false),
            ("modeling_x.py", Kind::Code, false),
            ("requirements.txt", Kind::Code, false),
            ("data/train.parquet", Kind::Dataset, false),
            ("notes.txt", Kind::WeightConfig, true),
            (".gitattributes", Kind::WeightConfig, true),
        ];
        for (path, kind, untested) in cases {
            assert_eq!(classify(path, 10), (kind, untested), "{path}");
        }
        assert_eq!(classify("weights.dat", 100 << 20), (Kind::Weight, true));
    }

    #[test]
    fn a_tag_with_no_room_for_the_suffix_is_refused_naming_the_rule() {
        check_tag(&"t".repeat(118)).unwrap();
        let e = check_tag(&"t".repeat(119)).unwrap_err().to_string();
        assert!(e.contains("at most 118"), "{e}");
    }

    fn file(path: &str, bytes: &[u8]) -> TwinFile {
        TwinFile {
            path: path.into(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn the_twin_lists_raw_layers_in_path_order_and_its_config_has_no_time() {
        let subject = Blob::new(b"{}".to_vec());
        let meta = TwinMeta {
            name: "acme/m",
            revision: "0123456789abcdef0123456789abcdef01234567",
            source_url: "https://huggingface.co/acme/m",
            tag: "latest",
        };
        let files = [file("model.safetensors", b"w"), file("config.json", b"{}")];
        let t = twin(&files, &meta, &subject).unwrap();
        assert_eq!(t.tag_suffix.as_deref(), Some(TAG_SUFFIX));
        let m: Value = serde_json::from_slice(&t.manifest.bytes).unwrap();
        assert_eq!(
            m["layers"][0]["annotations"][ANNOTATION_FILEPATH],
            "config.json"
        );
        assert_eq!(
            m["layers"][1]["mediaType"],
            "application/vnd.cncf.model.weight.v1.raw"
        );
        assert_eq!(m["layers"][1]["digest"], Digest::of(b"w").to_string());
        assert_eq!(m["subject"]["digest"], subject.digest.to_string());
        let c: Value = serde_json::from_slice(&t.blobs[0].bytes).unwrap();
        assert_eq!(c["config"]["format"], "safetensors");
        assert!(c["descriptor"].get("createdAt").is_none());
        assert_eq!(
            c["modelfs"]["diffIds"][0], m["layers"][0]["digest"],
            "a raw layer's diff ID is its digest"
        );
        // The same files in another order give the same twin.
        let swapped = [files[1].clone(), files[0].clone()];
        assert_eq!(
            twin(&swapped, &meta, &subject).unwrap().manifest.digest,
            t.manifest.digest
        );
    }
}
