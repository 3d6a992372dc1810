//! The pages' machine-readable twins: `/index.json` and `/<name>.json`. Field order is
//! fixed by the structs; lists are in the pages' order.

use super::{copy_line, image_ref, page_href, pinned_ref, FileEntry, Files, Overview};
use serde::Serialize;

#[derive(Serialize)]
struct Catalogue<'a> {
    registry: &'a str,
    count: usize,
    models: Vec<ModelSummary<'a>>,
}

#[derive(Serialize)]
struct ModelSummary<'a> {
    name: &'a str,
    page: String,
    tags: Vec<&'a str>,
    revision: Option<&'a str>,
    source: Option<&'a str>,
    /// Compressed bytes of the layers: what a pull downloads.
    size: u64,
    layer_count: usize,
    reference: String,
    pinned: Option<String>,
    copy: String,
}

fn summary<'a>(host: &str, o: &'a Overview) -> ModelSummary<'a> {
    let image = image_ref(host, o);
    ModelSummary {
        name: &o.name,
        page: page_href(&o.name),
        tags: o.tags.iter().map(|(t, _)| t.as_str()).collect(),
        revision: o.revision.as_deref(),
        source: o.source.as_deref(),
        size: o.size(),
        layer_count: o.layers.len(),
        copy: copy_line(&image, "", "."),
        pinned: pinned_ref(host, o),
        reference: image,
    }
}

pub fn catalogue(host: &str, models: &[std::sync::Arc<Overview>]) -> Vec<u8> {
    let doc = Catalogue {
        registry: host,
        count: models.len(),
        models: models.iter().map(|o| summary(host, o)).collect(),
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("JSON");
    out.push(b'\n');
    out
}

#[derive(Serialize)]
struct Model<'a> {
    #[serde(flatten)]
    summary: ModelSummary<'a>,
    digests: Digests<'a>,
    layers: Vec<Layer<'a>>,
    files: Vec<File<'a>>,
    file_count: usize,
    file_bytes: u64,
    examples: Examples,
}

#[derive(Serialize)]
struct Digests<'a> {
    tags: Vec<Named<'a>>,
    platforms: Vec<Named<'a>>,
    /// Artifacts about the image (its provenance), as the referrers API lists them.
    referrers: Vec<Referrer<'a>>,
}

#[derive(Serialize)]
struct Referrer<'a> {
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    digest: String,
}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
    digest: String,
}

#[derive(Serialize)]
struct Layer<'a> {
    digest: String,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    size: u64,
    files: usize,
    file_bytes: u64,
    /// Its file, when it holds just one.
    only: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct File<'a> {
    path: &'a str,
    size: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    layer: usize,
    copy: String,
}

#[derive(Serialize)]
struct Examples {
    one_file: Option<String>,
    all: String,
    pinned: Option<String>,
}

fn file<'a>(image: &str, e: &'a FileEntry) -> File<'a> {
    File {
        path: &e.path,
        size: e.size,
        kind: e.kind.as_str(),
        target: e.target.as_deref(),
        // Numbered from 1, as the page shows it and every `--json` numbers layers.
        layer: e.layer + 1,
        copy: copy_line(image, &e.path, "."),
    }
}

pub fn model(host: &str, o: &Overview, files: &Files) -> Vec<u8> {
    let image = image_ref(host, o);
    let pinned = pinned_ref(host, o);
    let doc = Model {
        summary: summary(host, o),
        digests: Digests {
            tags: o
                .tags
                .iter()
                .map(|(t, d)| Named {
                    name: t,
                    digest: d.to_string(),
                })
                .collect(),
            platforms: o
                .platforms
                .iter()
                .map(|(p, d)| Named {
                    name: p,
                    digest: d.to_string(),
                })
                .collect(),
            referrers: o
                .referrers
                .iter()
                .map(|(t, d)| Referrer {
                    artifact_type: t.as_deref(),
                    digest: d.to_string(),
                })
                .collect(),
        },
        layers: o
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let f = files.layers.get(i);
                Layer {
                    digest: l.digest.to_string(),
                    media_type: &l.media_type,
                    size: l.size,
                    files: f.map_or(0, |f| f.files),
                    file_bytes: f.map_or(0, |f| f.bytes),
                    only: f.and_then(|f| f.only.as_deref()),
                    error: f.and_then(|f| f.error.as_deref()),
                }
            })
            .collect(),
        files: files.entries.iter().map(|e| file(&image, e)).collect(),
        file_count: files.entries.len(),
        file_bytes: files.bytes(),
        examples: Examples {
            one_file: files.example().map(|e| copy_line(&image, &e.path, ".")),
            all: copy_line(&image, "", "."),
            pinned: pinned.map(|p| copy_line(&p, "", ".")),
        },
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("JSON");
    out.push(b'\n');
    out
}
