//! A published image's documents, as `verify` and `inspect` need them: the index, each
//! platform manifest, the layers, and the provenance found through the referrers API
//! (or, on registries without it, the spec's `sha256-<hex>` fallback tag). Documents
//! only: no layer blob is downloaded.

use super::client::Client;
use super::lazy::manifest;
use super::upload::referrers_fallback_tag;
use super::{Reference, RegistryError};
use crate::digest::Digest;
use crate::image::descriptor_platform;
use crate::image::media::{IN_TOTO, OCI_INDEX};
use crate::image::read::{self, Layout};
use crate::modelpack;
use serde_json::Value;
use std::path::Path;

/// One layer descriptor of a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedLayer {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// The documents of an image, wherever it is.
#[derive(Clone, Debug)]
pub struct PublishedImage {
    pub index_digest: String,
    pub index: Value,
    /// (platform, manifest digest, manifest) in index order.
    pub manifests: Vec<(String, String, Value)>,
    /// The statement bytes of the provenance referrer, if there is one.
    pub provenance: Option<Vec<u8>>,
    /// Where the provenance was found (`referrers API`, `fallback tag …`, `layout`; on
    /// a registry that refused a referrer of the index, `… of the linux/amd64 manifest`).
    pub provenance_from: Option<String>,
    /// The ModelPack twin (`--modelpack`): its digest and manifest, found as a referrer
    /// like the provenance.
    pub twin: Option<(String, Value)>,
    /// Where the twin was found.
    pub twin_from: Option<String>,
}

impl PublishedImage {
    /// The layers of the first manifest, bottom first.
    pub fn layers(&self) -> Vec<PublishedLayer> {
        self.manifests
            .first()
            .and_then(|(_, _, m)| m["layers"].as_array())
            .into_iter()
            .flatten()
            .map(|l| PublishedLayer {
                digest: l["digest"].as_str().unwrap_or_default().to_string(),
                size: l["size"].as_u64().unwrap_or_default(),
                media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// An annotation of the index (e.g. `org.opencontainers.image.revision`).
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.index["annotations"][key].as_str()
    }
}

fn bad(msg: impl Into<String>) -> RegistryError {
    RegistryError::Protocol(msg.into())
}

async fn get_blob(client: &Client, digest: &str) -> Result<Vec<u8>, RegistryError> {
    let url = client.url(&format!("blobs/{digest}"));
    let (bytes, _) = client.get_bytes(&url, None, None).await?;
    let d = Digest::of(&bytes).to_string();
    if d != digest {
        return Err(RegistryError::DigestMismatch {
            what: format!("blob {digest}"),
            expected: digest.to_string(),
            actual: d,
        });
    }
    Ok(bytes)
}

/// The first referrer of `artifact_type` in a referrers index.
fn pick_referrer(index: &Value, artifact_type: &str) -> Option<String> {
    index["manifests"]
        .as_array()?
        .iter()
        .find(|d| d["artifactType"] == artifact_type)
        .and_then(|d| d["digest"].as_str())
        .map(str::to_string)
}

/// The first referrer of `artifact_type` of the index, else of a platform manifest
/// (where a registry that refuses a referrer of an index has it): through the
/// referrers API, else the spec's fallback tag. Its digest and where it was found.
async fn find_referrer(
    client: &Client,
    index_digest: &str,
    manifests: &[(String, String, Value)],
    artifact_type: &str,
) -> Result<Option<(String, String)>, RegistryError> {
    let mut subjects = vec![(String::new(), index_digest.to_string())];
    for (platform, digest, _) in manifests {
        subjects.push((format!(" of the {platform} manifest"), digest.clone()));
    }
    let filter =
        percent_encoding::utf8_percent_encode(artifact_type, percent_encoding::NON_ALPHANUMERIC);
    for (of, subject) in subjects {
        // The referrers API first; a registry without it answers 404 (or an error
        // page), and the spec's fallback tag holds the same list.
        let url = client.url(&format!("referrers/{subject}?artifactType={filter}"));
        if let Ok((b, _)) = client.get_bytes(&url, Some(OCI_INDEX), None).await {
            if let Some(d) = serde_json::from_slice::<Value>(&b)
                .ok()
                .and_then(|v| pick_referrer(&v, artifact_type))
            {
                return Ok(Some((d, format!("referrers API{of}"))));
            }
        }
        let Some(digest) = Digest::parse(&subject) else {
            continue;
        };
        let tag = referrers_fallback_tag(&digest);
        match manifest(client, &tag).await {
            Ok((fallback, _)) => {
                if let Some(d) = pick_referrer(&fallback, artifact_type) {
                    return Ok(Some((d, format!("fallback tag {tag}{of}"))));
                }
            }
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Reads the image `reference` names from a registry, with its provenance.
pub async fn from_registry(
    client: &Client,
    reference: &Reference,
) -> Result<PublishedImage, RegistryError> {
    let (index, index_digest) = manifest(client, reference.manifest_ref()).await?;
    let mut manifests = Vec::new();
    for d in index["manifests"]
        .as_array()
        .ok_or_else(|| bad("the reference names a manifest, not an image index"))?
    {
        let digest = d["digest"]
            .as_str()
            .ok_or_else(|| bad("index entry without a digest"))?;
        let (m, _) = manifest(client, digest).await?;
        manifests.push((descriptor_platform(d), digest.to_string(), m));
    }
    let found = find_referrer(client, &index_digest, &manifests, IN_TOTO).await?;
    let (provenance, provenance_from) = match found {
        Some((d, from)) => {
            let (m, _) = manifest(client, &d).await?;
            let statement = m["layers"][0]["digest"]
                .as_str()
                .ok_or_else(|| bad("provenance manifest without a statement layer"))?;
            (Some(get_blob(client, statement).await?), Some(from))
        }
        None => (None, None),
    };
    let (twin, twin_from) =
        match find_referrer(client, &index_digest, &manifests, modelpack::ARTIFACT_TYPE).await? {
            Some((d, from)) => (Some((d.clone(), manifest(client, &d).await?.0)), Some(from)),
            None => (None, None),
        };
    Ok(PublishedImage {
        index_digest,
        index,
        manifests,
        provenance,
        provenance_from,
        twin,
        twin_from,
    })
}

/// Reads the tagged image of an OCI layout directory, with its provenance, through the
/// one layout reader ([`crate::image::read`]).
pub fn from_layout(dir: &Path) -> Result<PublishedImage, RegistryError> {
    let layout = Layout::open(dir)?;
    let top = layout.index_json()?;
    let entries = top["manifests"].as_array().cloned().unwrap_or_default();
    let first = read::first_image(&top)?;
    let (index_digest, _, index) = layout.document(first, "image index")?;
    let index_digest = index_digest.to_string();
    let mut manifests = Vec::new();
    for d in index["manifests"].as_array().into_iter().flatten() {
        let (digest, _, manifest) = layout.document(d, "manifest")?;
        manifests.push((descriptor_platform(d), digest.to_string(), manifest));
    }
    // Referrers of the index (or of one of its manifests) listed after it.
    let refers = |m: &Value| {
        let s = m["subject"]["digest"].as_str();
        s == Some(index_digest.as_str()) || manifests.iter().any(|(_, d, _)| s == Some(d))
    };
    let mut provenance = None;
    let mut twin = None;
    for e in entries.iter().skip(1) {
        let kind = e["artifactType"].as_str();
        if kind != Some(IN_TOTO) && kind != Some(modelpack::ARTIFACT_TYPE) {
            continue;
        }
        let (digest, _, m) = layout.document(e, "referrer")?;
        if !refers(&m) {
            continue;
        }
        if kind == Some(IN_TOTO) && provenance.is_none() {
            // Read as it is (bounded and digest-checked): `Provenance::parse` judges it.
            let statement = &m["layers"][0];
            let digest = read::digest_of(statement)?;
            provenance = Some(layout.document_bytes(&digest, statement["size"].as_u64())?);
        } else if kind == Some(modelpack::ARTIFACT_TYPE) && twin.is_none() {
            twin = Some((digest.to_string(), m));
        }
    }
    Ok(PublishedImage {
        index_digest,
        index,
        manifests,
        provenance_from: provenance.as_ref().map(|_| "layout".to_string()),
        provenance,
        twin_from: twin.as_ref().map(|_| "layout".to_string()),
        twin,
    })
}
