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
    /// Where the provenance was found (`referrers API`, `fallback tag …`, `layout`).
    pub provenance_from: Option<String>,
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

/// The first in-toto referrer in a referrers index.
fn pick_referrer(index: &Value) -> Option<String> {
    index["manifests"]
        .as_array()?
        .iter()
        .find(|d| d["artifactType"] == IN_TOTO)
        .and_then(|d| d["digest"].as_str())
        .map(str::to_string)
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
    // The referrers API first; a registry without it answers 404 (or an error page),
    // and the spec's fallback tag holds the same list.
    let filter = percent_encoding::utf8_percent_encode(IN_TOTO, percent_encoding::NON_ALPHANUMERIC);
    let url = client.url(&format!("referrers/{index_digest}?artifactType={filter}"));
    let mut found = None;
    if let Ok((b, _)) = client.get_bytes(&url, Some(OCI_INDEX), None).await {
        if let Some(d) = serde_json::from_slice::<Value>(&b)
            .ok()
            .and_then(|v| pick_referrer(&v))
        {
            found = Some((d, "referrers API".to_string()));
        }
    }
    if found.is_none() {
        let digest = Digest::parse(&index_digest).expect("computed digest");
        let tag = referrers_fallback_tag(&digest);
        match manifest(client, &tag).await {
            Ok((fallback, _)) => {
                if let Some(d) = pick_referrer(&fallback) {
                    found = Some((d, format!("fallback tag {tag}")));
                }
            }
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
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
    Ok(PublishedImage {
        index_digest,
        index,
        manifests,
        provenance,
        provenance_from,
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
    let mut provenance = None;
    for e in entries.iter().skip(1) {
        if e["artifactType"] != IN_TOTO {
            continue;
        }
        let (_, _, m) = layout.document(e, "referrer")?;
        if m["subject"]["digest"].as_str() == Some(index_digest.as_str()) {
            // Read as it is (bounded and digest-checked): `Provenance::parse` judges it.
            let statement = &m["layers"][0];
            let digest = read::digest_of(statement)?;
            provenance = Some(layout.document_bytes(&digest, statement["size"].as_u64())?);
            break;
        }
    }
    Ok(PublishedImage {
        index_digest,
        index,
        manifests,
        provenance_from: provenance.as_ref().map(|_| "layout".to_string()),
        provenance,
    })
}
