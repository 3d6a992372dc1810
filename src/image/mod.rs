//! OCI image layout around its layers: a config and a manifest per platform (sharing the
//! layers), an image index over them, `index.json` naming it by tag, and `oci-layout`.
//! Built from `oci-spec` types and serialised as canonical JSON (keys sorted, no
//! whitespace), so the same inputs give the same digests.

mod layout;
pub mod media;
pub mod read;

pub use layout::{remove_stale_siblings, LayoutWriter};

use crate::digest::Digest;
use crate::layer::LayerInfo;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// The epoch: images carry no build time, so they are the same any day.
pub const CREATED: &str = "1970-01-01T00:00:00Z";

pub use media::{ANNOTATION_REF_NAME, ANNOTATION_REVISION, ANNOTATION_SOURCE};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid platform {0:?}: expected os/arch or os/arch/variant, e.g. linux/arm64")]
    Platform(String),
    #[error("invalid tag {0:?}: up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    Tag(String),
    #[error("tag {0:?} leaves no room for the ModelPack twin's tag {0}-modelpack (at most 128 characters): choose a tag of at most 118 with --modelpack")]
    TwinTag(String),
    #[error("building OCI metadata: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("an image needs at least one layer")]
    NoLayers,
    #[error("output {0} exists and is not an image layout written by depotai; remove it or choose another --output")]
    NotALayout(std::path::PathBuf),
}

/// A target platform such as `linux/amd64` or `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl FromStr for Platform {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Platform, ImageError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(ImageError::Platform(s.to_string())),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `os/arch[/variant]` of an index entry's `platform`, `?` for a missing field: how
/// summaries name a manifest of an image read back from JSON.
pub fn descriptor_platform(d: &serde_json::Value) -> String {
    let p = &d["platform"];
    let mut s = format!(
        "{}/{}",
        p["os"].as_str().unwrap_or("?"),
        p["architecture"].as_str().unwrap_or("?")
    );
    if let Some(v) = p["variant"].as_str() {
        s = format!("{s}/{v}");
    }
    s
}

/// The default platform set: a data image must `COPY --from` on either kind of builder.
pub fn default_platforms() -> Vec<Platform> {
    vec![
        "linux/amd64".parse().expect("valid"),
        "linux/arm64".parse().expect("valid"),
    ]
}

/// Validates an OCI tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), ImageError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::Tag(tag.to_string()))
    }
}

/// What the image says about itself.
#[derive(Clone, Debug)]
pub struct ImageMeta {
    pub tag: String,
    /// Where the content comes from (a URL), for `org.opencontainers.image.source`.
    pub source: String,
    /// The pinned revision, for `org.opencontainers.image.revision`.
    pub revision: String,
    pub platforms: Vec<Platform>,
    /// More annotations for the image index only (e.g. the build settings, so that a
    /// registry's tag tells what it was built with in one request).
    pub index_annotations: std::collections::BTreeMap<String, String>,
}

/// One JSON document ready to be stored as a blob.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: Digest::of(&bytes),
            bytes,
        }
    }
}

/// An OCI 1.1 referrer of the image (e.g. its provenance): an artifact manifest whose
/// `subject` is the image index, and the blobs it names.
#[derive(Clone, Debug)]
pub struct Referrer {
    pub manifest: Blob,
    pub artifact_type: String,
    pub blobs: Vec<Blob>,
    /// A tag of its own: the image's tag plus this (the ModelPack twin's `-modelpack`).
    /// The layout's `index.json` names it so; a push puts it under the pushed tag plus
    /// this.
    pub tag_suffix: Option<String>,
}

/// All metadata documents of an image.
#[derive(Clone, Debug)]
pub struct ImageDocs {
    pub configs: Vec<Blob>,
    pub manifests: Vec<(Platform, Blob)>,
    pub index: Blob,
    /// Artifacts that refer to the index, stored and pushed beside the image.
    pub referrers: Vec<Referrer>,
    /// The layout's `index.json` (not a blob): the tagged index, then each referrer
    /// (with its own ref name if it has a tag).
    pub layout_index: Vec<u8>,
    tag: String,
}

impl ImageDocs {
    /// Adds a referrer; the layout's `index.json` lists it after the tagged index (with
    /// its `artifactType`, untagged), so the layout holds it and `serve` finds it.
    pub fn add_referrer(&mut self, r: Referrer) -> Result<(), ImageError> {
        self.referrers.push(r);
        self.layout_index = layout_index(&self.index, &self.tag, &self.referrers)?;
        Ok(())
    }
}

fn layout_index(index: &Blob, tag: &str, referrers: &[Referrer]) -> Result<Vec<u8>, ImageError> {
    let tag_annotation: HashMap<String, String> =
        [(ANNOTATION_REF_NAME.to_string(), tag.to_string())].into();
    let mut entries = vec![descriptor(
        MediaType::ImageIndex,
        index,
        Some(tag_annotation),
        None,
    )?];
    for r in referrers {
        let name = r
            .tag_suffix
            .as_ref()
            .map(|s| [(ANNOTATION_REF_NAME.to_string(), format!("{tag}{s}"))].into());
        let mut d = descriptor(MediaType::ImageManifest, &r.manifest, name, None)?;
        d.set_artifact_type(Some(MediaType::Other(r.artifact_type.clone())));
        entries.push(d);
    }
    let layout_index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(entries)
        .build()?;
    Ok(canonical_json(&layout_index))
}

/// `referrer` (an artifact manifest we wrote) with another `subject`: a platform
/// manifest instead of the index, for registries that refuse a referrer of an index.
/// Canonical JSON again, so the same inputs give the same digest.
pub fn with_subject(referrer: &[u8], subject: &[u8], media_type: &str) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(referrer).ok()?;
    v.as_object()?;
    v["subject"] = serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::of(subject).to_string(),
        "size": subject.len(),
    });
    Some(canonical_json(&v))
}

/// Keys sorted, compact: the one serialisation we ever write, whatever map type the
/// spec structs use inside.
pub fn canonical_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut pairs: Vec<_> = m.into_iter().collect();
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let value = serde_json::to_value(v).expect("OCI documents serialise");
    serde_json::to_vec(&sort(value)).expect("a JSON value serialises")
}

fn descriptor(
    media_type: MediaType,
    blob: &Blob,
    annotations: Option<HashMap<String, String>>,
    platform: Option<&Platform>,
) -> Result<Descriptor, ImageError> {
    let mut b = DescriptorBuilder::default()
        .media_type(media_type)
        .digest(oci_digest(&blob.digest))
        .size(blob.bytes.len() as u64);
    if let Some(a) = annotations {
        b = b.annotations(a);
    }
    if let Some(p) = platform {
        b = b.platform(oci_platform(p)?);
    }
    Ok(b.build()?)
}

fn oci_digest(d: &Digest) -> oci_spec::image::Digest {
    d.to_string()
        .parse()
        .expect("our digests are valid OCI digests")
}

fn oci_platform(p: &Platform) -> Result<oci_spec::image::Platform, ImageError> {
    let mut b = PlatformBuilder::default()
        .os(Os::from(p.os.as_str()))
        .architecture(Arch::from(p.arch.as_str()));
    if let Some(v) = &p.variant {
        b = b.variant(v.clone());
    }
    Ok(b.build()?)
}

/// Builds the config, manifest and index documents for an image holding `layers`,
/// bottom layer first.
pub fn image_docs(layers: &[LayerInfo], meta: &ImageMeta) -> Result<ImageDocs, ImageError> {
    validate_tag(&meta.tag)?;
    if layers.is_empty() {
        return Err(ImageError::NoLayers);
    }
    let provenance: HashMap<String, String> = [
        (ANNOTATION_SOURCE.to_string(), meta.source.clone()),
        (ANNOTATION_REVISION.to_string(), meta.revision.clone()),
    ]
    .into();
    // Each layer says what it is: media type and annotations come with it.
    let layer_descs = layers
        .iter()
        .map(|layer| {
            let annotations: HashMap<String, String> = layer
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            DescriptorBuilder::default()
                .media_type(MediaType::from(layer.media_type))
                .digest(oci_digest(&layer.digest))
                .size(layer.size)
                .annotations(annotations)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();

    let mut configs = Vec::new();
    let mut manifests = Vec::new();
    let mut index_entries = Vec::new();
    for p in &meta.platforms {
        let mut cb = ImageConfigurationBuilder::default()
            .created(CREATED.to_string())
            .architecture(Arch::from(p.arch.as_str()))
            .os(Os::from(p.os.as_str()))
            .config(
                ConfigBuilder::default()
                    .labels(provenance.clone())
                    .build()?,
            )
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers".to_string())
                    .diff_ids(diff_ids.clone())
                    .build()?,
            );
        if let Some(v) = &p.variant {
            cb = cb.variant(v.clone());
        }
        let config = Blob::new(canonical_json(&cb.build()?));
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, &config, None, None)?)
            .layers(layer_descs.clone())
            .annotations(provenance.clone())
            .build()?;
        let manifest = Blob::new(canonical_json(&manifest));
        index_entries.push(descriptor(
            MediaType::ImageManifest,
            &manifest,
            None,
            Some(p),
        )?);
        configs.push(config);
        manifests.push((p.clone(), manifest));
    }
    let mut index_annotations = provenance;
    for (k, v) in &meta.index_annotations {
        index_annotations.insert(k.clone(), v.clone());
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(index_entries)
        .annotations(index_annotations)
        .build()?;
    let index = Blob::new(canonical_json(&index));
    let layout_index = layout_index(&index, &meta.tag, &[])?;
    Ok(ImageDocs {
        configs,
        manifests,
        index,
        referrers: Vec::new(),
        layout_index,
        tag: meta.tag.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_print() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        for bad in ["linux", "linux/", "Linux/amd64", "a/b/c/d"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        validate_tag("latest").unwrap();
        validate_tag("v1.2_3-rc").unwrap();
        for bad in ["", ".x", "-x", "a:b", &"x".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = serde_json::json!({"b": {"z": 1, "a": [{"y": 1, "x": 2}]}, "a": 0});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":0,"b":{"a":[{"x":2,"y":1}],"z":1}}"#
        );
    }
}
