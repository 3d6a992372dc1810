//! A published image's documents, as `verify` and `inspect` need them: the index, each
//! platform manifest, the layers, and the provenance found through the referrers API
//! (or, on registries without it, the spec's `sha256-<hex>` fallback tag). Documents
//! only: no layer blob is downloaded.

use super::client::Client;
use super::push::referrers_fallback_tag;
use super::{Reference, RegistryError};
use crate::digest::Digest;
use crate::provenance::ARTIFACT_TYPE;
use serde_json::Value;
use std::path::Path;

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

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

fn parse(bytes: &[u8], what: &str) -> Result<Value, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("{what}: {e}")))
}

fn platform_of(d: &Value) -> String {
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

async fn get_doc(client: &Client, reference: &str) -> Result<(Vec<u8>, String), RegistryError> {
    let url = client.url(&format!("manifests/{reference}"));
    let (bytes, _) = client.get_bytes(&url, Some(ACCEPT), None).await?;
    let d = Digest::of(&bytes).to_string();
    if reference.starts_with("sha256:") && d != reference {
        return Err(RegistryError::DigestMismatch {
            what: format!("manifest {reference}"),
            expected: reference.to_string(),
            actual: d,
        });
    }
    Ok((bytes, d))
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
        .find(|d| d["artifactType"] == ARTIFACT_TYPE)
        .and_then(|d| d["digest"].as_str())
        .map(str::to_string)
}

/// Reads the image `reference` names from a registry, with its provenance.
pub async fn from_registry(
    client: &Client,
    reference: &Reference,
) -> Result<PublishedImage, RegistryError> {
    let (bytes, index_digest) = get_doc(client, reference.manifest_ref()).await?;
    let index = parse(&bytes, "image index")?;
    let mut manifests = Vec::new();
    for d in index["manifests"]
        .as_array()
        .ok_or_else(|| bad("the reference names a manifest, not an image index"))?
    {
        let digest = d["digest"]
            .as_str()
            .ok_or_else(|| bad("index entry without a digest"))?;
        let (mb, _) = get_doc(client, digest).await?;
        manifests.push((platform_of(d), digest.to_string(), parse(&mb, "manifest")?));
    }
    // The referrers API first; a registry without it answers 404 (or an error page),
    // and the spec's fallback tag holds the same list.
    let filter =
        percent_encoding::utf8_percent_encode(ARTIFACT_TYPE, percent_encoding::NON_ALPHANUMERIC);
    let url = client.url(&format!("referrers/{index_digest}?artifactType={filter}"));
    let mut found = None;
    if let Ok((b, _)) = client.get_bytes(&url, Some(INDEX), None).await {
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
        match get_doc(client, &tag).await {
            Ok((b, _)) => {
                if let Some(d) = pick_referrer(&parse(&b, "referrers fallback index")?) {
                    found = Some((d, format!("fallback tag {tag}")));
                }
            }
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let (provenance, provenance_from) = match found {
        Some((d, from)) => {
            let (mb, _) = get_doc(client, &d).await?;
            let m = parse(&mb, "provenance manifest")?;
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

/// Reads the tagged image of an OCI layout directory, with its provenance.
pub fn from_layout(dir: &Path) -> Result<PublishedImage, RegistryError> {
    let read = |digest: &str| -> Result<Vec<u8>, RegistryError> {
        let d = Digest::parse(digest).ok_or_else(|| bad(format!("bad digest {digest:?}")))?;
        let p = dir.join("blobs/sha256").join(d.hex());
        let b = std::fs::read(&p).map_err(|e| RegistryError::io(p.display(), e))?;
        if Digest::of(&b) != d {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob {digest} in {}", dir.display()),
                expected: digest.to_string(),
                actual: Digest::of(&b).to_string(),
            });
        }
        Ok(b)
    };
    let ip = dir.join("index.json");
    let top = std::fs::read(&ip).map_err(|e| RegistryError::io(ip.display(), e))?;
    let top = parse(&top, "index.json")?;
    let entries = top["manifests"].as_array().cloned().unwrap_or_default();
    let first = entries
        .first()
        .ok_or_else(|| RegistryError::Layout("index.json lists no image".into()))?;
    let index_digest = first["digest"].as_str().unwrap_or_default().to_string();
    let index = parse(&read(&index_digest)?, "image index")?;
    let mut manifests = Vec::new();
    for d in index["manifests"].as_array().into_iter().flatten() {
        let digest = d["digest"].as_str().unwrap_or_default();
        manifests.push((
            platform_of(d),
            digest.to_string(),
            parse(&read(digest)?, "manifest")?,
        ));
    }
    let mut provenance = None;
    for e in entries.iter().skip(1) {
        if e["artifactType"] != ARTIFACT_TYPE {
            continue;
        }
        let m = parse(&read(e["digest"].as_str().unwrap_or_default())?, "referrer")?;
        if m["subject"]["digest"].as_str() == Some(index_digest.as_str()) {
            let statement = m["layers"][0]["digest"].as_str().unwrap_or_default();
            provenance = Some(read(statement)?);
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
