//! Lazy reads of an eStargz image in a registry: `ls` reads only the footer and the
//! TOC of the layer, `get` only the chunks of the files asked for — all with Range
//! requests, every byte checked against a digest.
//!
//! The layer is found as a runtime would: tag → index → the `linux/amd64` manifest (or
//! the first) → the layer carrying `containerd.io/snapshot/stargz/toc.digest` (or the
//! last). Its size comes from the descriptor. Then `bytes=size-51-size-1` is the footer,
//! which gives the TOC offset; `[tocOffset, size-51)` is one gzip member holding a tar
//! whose first entry is `stargz.index.json`, checked against the TOC digest annotation.
//!
//! A chunk's compressed bytes span `[offset, next larger member offset)`, the next
//! offset being the next larger `offset` in the TOC, or the TOC offset for the last one.

use super::client::Client;
use super::{Reference, RegistryError};
use crate::digest::{Digest, Hasher};
use crate::layer::estargz::{parse_footer, Toc, TocEntry, FOOTER_SIZE, TOC_DIGEST_ANNOTATION};
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The eStargz layer an image reference resolves to.
#[derive(Clone, Debug, Serialize)]
pub struct LazyLayer {
    pub manifest: String,
    pub digest: String,
    pub size: u64,
    pub toc_digest: Option<String>,
    pub toc_offset: u64,
}

/// The layer and its TOC.
pub struct Image {
    pub layer: LazyLayer,
    pub toc: Toc,
}

fn bad(msg: impl Into<String>) -> RegistryError {
    RegistryError::Protocol(msg.into())
}

fn check_digest(what: &str, bytes: &[u8], expected: &str) -> Result<(), RegistryError> {
    let actual = Digest::of(bytes).to_string();
    if actual != expected {
        return Err(RegistryError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

async fn manifest(client: &Client, r: &str) -> Result<(serde_json::Value, String), RegistryError> {
    let url = client.url(&format!("manifests/{r}"));
    let (bytes, headers) = client.get_bytes(&url, Some(ACCEPT), None).await?;
    let d = Digest::of(&bytes).to_string();
    if r.starts_with("sha256:") {
        check_digest(&format!("manifest {r}"), &bytes, r)?;
    } else if let Some(h) = super::client::header(&headers, "docker-content-digest") {
        if h != d {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {r}"),
                expected: h,
                actual: d,
            });
        }
    }
    let v = serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest {r}: {e}")))?;
    Ok((v, d))
}

/// Resolves the reference to its eStargz layer and reads the layer's TOC.
pub async fn open(client: &Client, reference: &Reference) -> Result<Image, RegistryError> {
    let (mut m, mut md) = manifest(client, reference.manifest_ref()).await?;
    if let Some(list) = m.get("manifests").and_then(|v| v.as_array()) {
        let pick = list
            .iter()
            .find(|d| d["platform"]["os"] == "linux" && d["platform"]["architecture"] == "amd64")
            .or_else(|| list.first())
            .ok_or_else(|| bad("the image index lists no manifest"))?;
        let d = pick["digest"]
            .as_str()
            .ok_or_else(|| bad("index entry without a digest"))?
            .to_string();
        (m, md) = manifest(client, &d).await?;
    }
    let layers = m["layers"]
        .as_array()
        .ok_or_else(|| bad("the manifest has no layers"))?;
    let layer = layers
        .iter()
        .find(|l| l["annotations"][TOC_DIGEST_ANNOTATION].is_string())
        .or_else(|| layers.last())
        .ok_or_else(|| bad("the manifest has no layers"))?;
    let digest = layer["digest"]
        .as_str()
        .ok_or_else(|| bad("layer without a digest"))?
        .to_string();
    let size = layer["size"]
        .as_u64()
        .ok_or_else(|| bad("layer without a size"))?;
    let toc_digest = layer["annotations"][TOC_DIGEST_ANNOTATION]
        .as_str()
        .map(str::to_string);
    if size < FOOTER_SIZE as u64 {
        return Err(bad(format!("layer {digest} is too small for eStargz")));
    }
    let url = client.url(&format!("blobs/{digest}"));
    let (footer, _) = client
        .get_bytes(&url, None, Some((size - FOOTER_SIZE as u64, size - 1)))
        .await?;
    let toc_offset = parse_footer(&footer)
        .ok_or_else(|| bad(format!("layer {digest} has no eStargz footer")))?;
    let toc_end = size - FOOTER_SIZE as u64;
    if toc_offset >= toc_end {
        return Err(bad(format!(
            "layer {digest}: TOC offset {toc_offset} out of range"
        )));
    }
    let (gz, _) = client
        .get_bytes(&url, None, Some((toc_offset, toc_end - 1)))
        .await?;
    let json = toc_json(&gz).map_err(|e| bad(format!("layer {digest}: TOC: {e}")))?;
    if let Some(td) = &toc_digest {
        check_digest(&format!("TOC of layer {digest}"), &json, td)?;
    }
    let toc = Toc::from_json(&json).map_err(|e| bad(format!("layer {digest}: TOC JSON: {e}")))?;
    Ok(Image {
        layer: LazyLayer {
            manifest: md,
            digest,
            size,
            toc_digest,
            toc_offset,
        },
        toc,
    })
}

fn toc_json(gz: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut entries = ar.entries()?;
    let mut first = entries
        .next()
        .ok_or_else(|| std::io::Error::other("empty TOC tar"))??;
    if first.path()?.to_string_lossy() != "stargz.index.json" {
        return Err(std::io::Error::other(
            "first entry is not stargz.index.json",
        ));
    }
    let mut out = Vec::new();
    first.read_to_end(&mut out)?;
    Ok(out)
}

/// A TOC name as readers see it: no leading `./` or `/`, no trailing `/`.
pub fn clean_name(n: &str) -> &str {
    let mut n = n;
    loop {
        if let Some(r) = n.strip_prefix("./") {
            n = r;
        } else if let Some(r) = n.strip_prefix('/') {
            n = r;
        } else {
            break;
        }
    }
    n.trim_end_matches('/')
}

/// One regular file of the TOC with its chunks.
#[derive(Clone, Debug)]
pub struct TocFile {
    pub name: String,
    pub size: u64,
    pub digest: String,
    pub mode: u32,
    /// (chunk offset in the file, length, member offset in the blob, chunk digest)
    pub chunks: Vec<(u64, u64, u64, String)>,
}

/// Regular files with their chunks, in TOC order.
pub fn files(toc: &Toc) -> Vec<TocFile> {
    let mut out: Vec<TocFile> = Vec::new();
    let chunk_of = |e: &TocEntry, size: u64| {
        let len = if e.chunk_size > 0 {
            e.chunk_size
        } else {
            size - e.chunk_offset
        };
        (e.chunk_offset, len, e.offset, e.chunk_digest.clone())
    };
    let mut in_reg = false;
    for e in &toc.entries {
        match e.kind.as_str() {
            "reg" => {
                let mut f = TocFile {
                    name: clean_name(&e.name).to_string(),
                    size: e.size,
                    digest: e.digest.clone(),
                    mode: e.mode,
                    chunks: Vec::new(),
                };
                if e.size > 0 {
                    f.chunks.push(chunk_of(e, e.size));
                }
                out.push(f);
                in_reg = true;
            }
            "chunk" if in_reg => {
                let f = out.last_mut().expect("in_reg implies a file");
                let c = chunk_of(e, f.size);
                f.chunks.push(c);
            }
            _ => in_reg = false,
        }
    }
    out
}

#[derive(Clone, Debug, Serialize)]
pub struct GotFile {
    pub path: String,
    pub output: String,
    pub size: u64,
    /// Bytes kept from an earlier interrupted `get` (verified again, not fetched).
    pub reused_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct GetReport {
    pub layer: LazyLayer,
    pub files: Vec<GotFile>,
    pub fetched_bytes: u64,
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Downloads `path` (a file, or a directory: every file under it) to `output`.
/// Each file is written to `<output>.partial`, every chunk checked against its
/// `chunkDigest` and the file against its `digest`, then renamed into place. A
/// `.partial` left by an interrupted run keeps its verified chunks.
pub async fn get(
    client: &Client,
    reference: &Reference,
    path: &str,
    output: &Path,
) -> Result<GetReport, RegistryError> {
    let image = open(client, reference).await?;
    let want = clean_name(path);
    let all = files(&image.toc);
    let selected: Vec<(TocFile, PathBuf)> = match all.iter().find(|f| f.name == want) {
        Some(f) => {
            // `-o DIR/` for a file: the file goes into that directory.
            let dest = if output.is_dir() {
                output.join(f.name.rsplit('/').next().unwrap_or(&f.name))
            } else {
                output.to_path_buf()
            };
            vec![(f.clone(), dest)]
        }
        None => {
            let prefix = if want.is_empty() {
                String::new()
            } else {
                format!("{want}/")
            };
            let under: Vec<_> = all
                .iter()
                .filter(|f| f.name.starts_with(&prefix))
                .map(|f| (f.clone(), output.join(&f.name[prefix.len()..])))
                .collect();
            if under.is_empty() {
                let what = image
                    .toc
                    .entries
                    .iter()
                    .find(|e| clean_name(&e.name) == want)
                    .map(|e| format!("{want} (a {} entry, not a file)", e.kind))
                    .unwrap_or_else(|| want.to_string());
                return Err(RegistryError::NoSuchPath(what));
            }
            under
        }
    };
    for (f, _) in &selected {
        if f.name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(bad(format!("unsafe path in the TOC: {:?}", f.name)));
        }
    }
    let mut offsets: Vec<u64> = image
        .toc
        .entries
        .iter()
        .map(|e| e.offset)
        .filter(|&o| o > 0)
        .collect();
    offsets.push(image.layer.toc_offset);
    offsets.sort_unstable();
    offsets.dedup();
    let url = client.url(&format!("blobs/{}", image.layer.digest));
    let mut got = Vec::new();
    for (f, dest) in &selected {
        let reused = fetch_file(client, &url, f, &offsets, dest).await?;
        got.push(GotFile {
            path: f.name.clone(),
            output: dest.display().to_string(),
            size: f.size,
            reused_bytes: reused,
        });
    }
    Ok(GetReport {
        layer: image.layer,
        files: got,
        fetched_bytes: client.fetched_bytes(),
    })
}

async fn fetch_file(
    client: &Client,
    url: &reqwest::Url,
    f: &TocFile,
    offsets: &[u64],
    dest: &Path,
) -> Result<u64, RegistryError> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| RegistryError::io(parent.display(), e))?;
    }
    let part = partial_path(dest);
    let io = |e| RegistryError::io(part.display(), e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
        .map_err(io)?;
    let mut have = file.metadata().map_err(io)?.len();
    let mut hasher = Hasher::new();
    let mut reused = 0u64;
    for (coff, len, member, cdigest) in &f.chunks {
        let (coff, len, member) = (*coff, *len, *member);
        if have >= coff + len {
            let mut buf = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(coff)).map_err(io)?;
            file.read_exact(&mut buf).map_err(io)?;
            if Digest::of(&buf).to_string() == *cdigest {
                hasher.update(&buf);
                reused += len;
                continue;
            }
        }
        if have > coff {
            file.set_len(coff).map_err(io)?;
        }
        let end = match offsets.binary_search(&member) {
            Ok(i) | Err(i) => offsets[i..].iter().copied().find(|&o| o > member),
        }
        .ok_or_else(|| bad(format!("{}: chunk offset {member} past the TOC", f.name)))?;
        let (gz, _) = client.get_bytes(url, None, Some((member, end - 1))).await?;
        let mut data = vec![0u8; len as usize];
        let ok = flate2::read::GzDecoder::new(&gz[..]).read_exact(&mut data);
        let check = ok
            .map_err(|e| bad(format!("{}: chunk at {coff}: gzip: {e}", f.name)))
            .and_then(|()| {
                check_digest(
                    &format!("{} (chunk at offset {coff})", f.name),
                    &data,
                    cdigest,
                )
            });
        if let Err(e) = check {
            drop(file);
            if coff == 0 {
                let _ = std::fs::remove_file(&part);
            }
            return Err(e);
        }
        file.seek(SeekFrom::Start(coff)).map_err(io)?;
        file.write_all(&data).map_err(io)?;
        hasher.update(&data);
        have = coff + len;
    }
    if have > f.size {
        file.set_len(f.size).map_err(io)?;
    }
    let actual = hasher.finish().to_string();
    if actual != f.digest {
        drop(file);
        let _ = std::fs::remove_file(&part);
        return Err(RegistryError::DigestMismatch {
            what: f.name.clone(),
            expected: f.digest.clone(),
            actual,
        });
    }
    file.sync_all().map_err(io)?;
    drop(file);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if f.mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let _ = std::fs::set_permissions(&part, std::fs::Permissions::from_mode(mode));
    }
    std::fs::rename(&part, dest).map_err(|e| RegistryError::io(dest.display(), e))?;
    Ok(reused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("./a/b/"), "a/b");
        assert_eq!(clean_name("/config.json"), "config.json");
        assert_eq!(clean_name("/"), "");
    }

    #[test]
    fn chunks_follow_their_file() {
        let e = |name: &str, kind: &str, size, offset, coff, csize| TocEntry {
            name: name.into(),
            kind: kind.into(),
            size,
            offset,
            chunk_offset: coff,
            chunk_size: csize,
            digest: "d".into(),
            chunk_digest: "c".into(),
            ..Default::default()
        };
        let toc = Toc {
            version: 1,
            entries: vec![
                e("d/", "dir", 0, 0, 0, 0),
                e("d/big", "reg", 10, 100, 0, 4),
                e("d/big", "chunk", 0, 200, 4, 4),
                e("d/big", "chunk", 0, 300, 8, 0),
                e("empty", "reg", 0, 0, 0, 0),
            ],
        };
        let f = files(&toc);
        assert_eq!(f.len(), 2);
        assert_eq!(
            f[0].chunks
                .iter()
                .map(|c| (c.0, c.1, c.2))
                .collect::<Vec<_>>(),
            vec![(0, 4, 100), (4, 4, 200), (8, 2, 300)]
        );
        assert!(f[1].chunks.is_empty());
    }
}
