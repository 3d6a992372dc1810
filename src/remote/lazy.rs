//! Lazy reads of an eStargz or zstd:chunked image in a registry: `ls` reads only the
//! layer's TOC, `get` only the chunks of the files asked for — all with Range requests,
//! every byte checked against a digest.
//!
//! The layers are found as a runtime would: tag → index → the `linux/amd64` manifest
//! (or the first) → every layer carrying a TOC annotation (or, with none, every layer).
//! `ls` merges their listings (an upper layer's copy of a path wins); `get` reads a
//! file's chunks from the one layer that holds it.
//!
//! eStargz: `bytes=size-51-size-1` is the footer, which gives the TOC offset;
//! `[tocOffset, size-51)` is one gzip member holding a tar whose first entry is
//! `stargz.index.json`, checked against the TOC digest annotation. A chunk's compressed
//! bytes span `[offset, next larger member offset)`, the next offset being the next
//! larger `offset` in the TOC, or the TOC offset for the last one.
//!
//! zstd:chunked: the manifest-position annotation gives the compressed TOC's range,
//! checked against the manifest-checksum annotation; a chunk spans `[offset, next
//! chunk's offset)`, the last one `[offset, endOffset)`, each one zstd frame.

use super::client::Client;
use super::{Reference, RegistryError};
use crate::digest::{Digest, Hasher};
use crate::layer::estargz::{parse_footer, Toc, TocEntry, FOOTER_SIZE, TOC_DIGEST_ANNOTATION};
use crate::layer::zstd_chunked;
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// How the layer's chunks are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerFormat {
    Estargz,
    ZstdChunked,
}

/// The layer an image reference resolves to.
#[derive(Clone, Debug, Serialize)]
pub struct LazyLayer {
    pub manifest: String,
    pub digest: String,
    pub size: u64,
    pub format: LayerFormat,
    pub toc_digest: Option<String>,
    pub toc_offset: u64,
}

/// One entry of the TOC, whatever the format (chunk entries left out).
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub digest: Option<String>,
    pub link_name: Option<String>,
}

/// One layer, what its TOC lists, and its regular files with their chunks.
pub struct LayerToc {
    pub layer: LazyLayer,
    pub entries: Vec<Listed>,
    pub files: Vec<TocFile>,
}

/// An image's layers (bottom first) and one merged listing: where two layers list the
/// same path, the upper one wins, as in the mounted image.
pub struct Image {
    pub layers: Vec<LazyLayer>,
    pub entries: Vec<Listed>,
    /// Every regular file, with the index of the layer that holds it.
    pub files: Vec<(usize, TocFile)>,
}

impl Image {
    fn merge(tocs: Vec<LayerToc>) -> Image {
        let mut seen = std::collections::BTreeSet::new();
        let mut entries = Vec::new();
        let mut files = Vec::new();
        let mut layers = Vec::with_capacity(tocs.len());
        let n = tocs.len();
        // Top layer first so the upper copy of a path is the one kept; then back into
        // bottom-up order for the listing.
        let mut per_layer = Vec::with_capacity(n);
        for (i, t) in tocs.into_iter().enumerate().rev() {
            let mine: Vec<Listed> = t
                .entries
                .into_iter()
                .filter(|e| seen.insert(e.name.clone()))
                .collect();
            let names: std::collections::BTreeSet<&str> =
                mine.iter().map(|e| e.name.as_str()).collect();
            let mine_files: Vec<(usize, TocFile)> = t
                .files
                .into_iter()
                .filter(|f| names.contains(f.name.as_str()))
                .map(|f| (i, f))
                .collect();
            per_layer.push((t.layer, mine, mine_files));
        }
        for (layer, mine, mine_files) in per_layer.into_iter().rev() {
            layers.push(layer);
            entries.extend(mine);
            files.extend(mine_files);
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        files.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        Image {
            layers,
            entries,
            files,
        }
    }

    /// Bytes of all layer blobs.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

fn listed(name: &str, kind: &str, size: u64, digest: &str, link: &str) -> Listed {
    Listed {
        name: clean_name(name).to_string(),
        kind: kind.to_string(),
        size,
        digest: (!digest.is_empty()).then(|| digest.to_string()),
        link_name: (!link.is_empty()).then(|| link.to_string()),
    }
}

fn annotation<'a>(layer: &'a serde_json::Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| layer["annotations"][*k].as_str())
}

const ZSTD_CHECKSUM_KEYS: [&str; 2] = [
    zstd_chunked::MANIFEST_CHECKSUM_ANNOTATION,
    zstd_chunked::LEGACY_MANIFEST_CHECKSUM_ANNOTATION,
];
const ZSTD_POSITION_KEYS: [&str; 2] = [
    zstd_chunked::MANIFEST_POSITION_ANNOTATION,
    zstd_chunked::LEGACY_MANIFEST_POSITION_ANNOTATION,
];
/// containers/storage's own limit on an uncompressed TOC.
const MAX_ZSTD_TOC: u64 = 150 << 20;

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
    // Layers that announce a TOC; an image without annotations is read as eStargz
    // through each layer's footer.
    let mut with_toc: Vec<&serde_json::Value> = layers
        .iter()
        .filter(|l| {
            l["annotations"][TOC_DIGEST_ANNOTATION].is_string()
                || annotation(l, &ZSTD_CHECKSUM_KEYS).is_some()
        })
        .collect();
    if with_toc.is_empty() {
        with_toc = layers.iter().collect();
    }
    if with_toc.is_empty() {
        return Err(bad("the manifest has no layers"));
    }
    let mut tocs = Vec::with_capacity(with_toc.len());
    for layer in with_toc {
        tocs.push(open_layer(client, &md, layer).await?);
    }
    Ok(Image::merge(tocs))
}

/// Reads one layer's TOC: its footer and TOC member (eStargz) or the manifest frame its
/// annotations point at (zstd:chunked).
pub async fn open_layer(
    client: &Client,
    manifest_digest: &str,
    layer: &serde_json::Value,
) -> Result<LayerToc, RegistryError> {
    let md = manifest_digest.to_string();
    let digest = layer["digest"]
        .as_str()
        .ok_or_else(|| bad("layer without a digest"))?
        .to_string();
    let size = layer["size"]
        .as_u64()
        .ok_or_else(|| bad("layer without a size"))?;
    let url = client.url(&format!("blobs/{digest}"));
    if let Some(checksum) = annotation(layer, &ZSTD_CHECKSUM_KEYS) {
        let position = annotation(layer, &ZSTD_POSITION_KEYS).ok_or_else(|| {
            bad(format!(
                "layer {digest}: zstd:chunked checksum without a position"
            ))
        })?;
        return open_zstd_chunked(client, &url, md, digest, size, checksum, position).await;
    }
    let toc_digest = layer["annotations"][TOC_DIGEST_ANNOTATION]
        .as_str()
        .map(str::to_string);
    if size < FOOTER_SIZE as u64 {
        return Err(bad(format!("layer {digest} is too small for eStargz")));
    }
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
    let entries = toc
        .entries
        .iter()
        .filter(|e| e.kind != "chunk")
        .map(|e| listed(&e.name, &e.kind, e.size, &e.digest, &e.link_name))
        .collect();
    Ok(LayerToc {
        files: files(&toc, toc_offset),
        entries,
        layer: LazyLayer {
            manifest: md,
            digest,
            size,
            format: LayerFormat::Estargz,
            toc_digest,
            toc_offset,
        },
    })
}

/// Reads a zstd:chunked TOC from the range its position annotation names.
async fn open_zstd_chunked(
    client: &Client,
    url: &reqwest::Url,
    manifest: String,
    digest: String,
    size: u64,
    checksum: &str,
    position: &str,
) -> Result<LayerToc, RegistryError> {
    let nums: Vec<u64> = position
        .split(':')
        .map(|p| p.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            bad(format!(
                "layer {digest}: bad manifest position {position:?}"
            ))
        })?;
    let [offset, len, ulen, ..] = nums[..] else {
        return Err(bad(format!(
            "layer {digest}: bad manifest position {position:?}"
        )));
    };
    if len == 0 || offset.checked_add(len).map_or(true, |end| end > size) || ulen > MAX_ZSTD_TOC {
        return Err(bad(format!(
            "layer {digest}: manifest position {position:?} out of range"
        )));
    }
    let (compressed, _) = client
        .get_bytes(url, None, Some((offset, offset + len - 1)))
        .await?;
    check_digest(&format!("TOC of layer {digest}"), &compressed, checksum)?;
    let json = zstd::bulk::decompress(&compressed, ulen as usize)
        .map_err(|e| bad(format!("layer {digest}: TOC: zstd: {e}")))?;
    let toc = zstd_chunked::Toc::from_json(&json)
        .map_err(|e| bad(format!("layer {digest}: TOC JSON: {e}")))?;
    let entries = toc
        .entries
        .iter()
        .filter(|e| e.kind != "chunk")
        .map(|e| listed(&e.name, &e.kind, e.size, &e.digest, &e.link_name))
        .collect();
    Ok(LayerToc {
        files: zstd_files(&toc)?,
        entries,
        layer: LazyLayer {
            manifest,
            digest,
            size,
            format: LayerFormat::ZstdChunked,
            toc_digest: Some(checksum.to_string()),
            toc_offset: offset,
        },
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
    pub chunks: Vec<Chunk>,
}

/// One chunk of a file and where its compressed bytes are.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// Offset in the file, and length.
    pub offset: u64,
    pub len: u64,
    /// `[start, end)` in the blob: one gzip member or zstd frame (or more).
    pub start: u64,
    pub end: u64,
    pub digest: String,
}

/// Regular files of an eStargz TOC with their chunks, in TOC order. A chunk ends where
/// the next member begins: the next larger offset in the TOC, or the TOC itself.
pub fn files(toc: &Toc, toc_offset: u64) -> Vec<TocFile> {
    let mut offsets: Vec<u64> = toc
        .entries
        .iter()
        .map(|e| e.offset)
        .filter(|&o| o > 0)
        .collect();
    offsets.push(toc_offset);
    offsets.sort_unstable();
    offsets.dedup();
    let next_after = |o: u64| {
        match offsets.binary_search(&o) {
            Ok(i) => offsets.get(i + 1).copied(),
            Err(i) => offsets.get(i).copied(),
        }
        .unwrap_or(toc_offset)
    };
    let mut out: Vec<TocFile> = Vec::new();
    let chunk_of = |e: &TocEntry, size: u64| {
        let len = if e.chunk_size > 0 {
            e.chunk_size
        } else {
            size - e.chunk_offset
        };
        Chunk {
            offset: e.chunk_offset,
            len,
            start: e.offset,
            end: next_after(e.offset),
            digest: e.chunk_digest.clone(),
        }
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

/// Regular files of a zstd:chunked TOC. A single-chunk file is one range
/// `[offset, endOffset)` checked against the file digest; a chunked file's chunk ends
/// where the next one starts, the last at the file's `endOffset`.
pub fn zstd_files(toc: &zstd_chunked::Toc) -> Result<Vec<TocFile>, RegistryError> {
    let mut out: Vec<TocFile> = Vec::new();
    let mut end_offset = 0u64;
    for e in &toc.entries {
        match e.kind.as_str() {
            "reg" => {
                end_offset = e.end_offset;
                let mut f = TocFile {
                    name: clean_name(&e.name).to_string(),
                    size: e.size,
                    digest: e.digest.clone(),
                    mode: e.mode,
                    chunks: Vec::new(),
                };
                if e.size > 0 {
                    let chunked = !e.chunk_digest.is_empty();
                    f.chunks.push(Chunk {
                        offset: 0,
                        len: if chunked { e.chunk_size } else { e.size },
                        start: e.offset,
                        end: e.end_offset,
                        digest: if chunked {
                            e.chunk_digest.clone()
                        } else {
                            e.digest.clone()
                        },
                    });
                }
                out.push(f);
            }
            "chunk" => {
                let Some(f) = out.last_mut() else {
                    return Err(bad(format!("chunk entry {} before any file", e.name)));
                };
                if let Some(prev) = f.chunks.last_mut() {
                    prev.end = e.offset;
                }
                f.chunks.push(Chunk {
                    offset: e.chunk_offset,
                    len: e.chunk_size,
                    start: e.offset,
                    end: end_offset,
                    digest: e.chunk_digest.clone(),
                });
            }
            _ => {}
        }
    }
    for f in &out {
        let sum: u64 = f.chunks.iter().map(|c| c.len).sum();
        if sum != f.size || f.chunks.iter().any(|c| c.end <= c.start) {
            return Err(bad(format!(
                "{}: chunks in the TOC do not cover the file",
                f.name
            )));
        }
    }
    Ok(out)
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
    /// The layers the files were read from.
    pub layers: Vec<LazyLayer>,
    /// Bytes of all the image's layer blobs.
    pub image_size: u64,
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
    let all = &image.files;
    let selected: Vec<(usize, TocFile, PathBuf)> = match all.iter().find(|f| f.1.name == want) {
        Some((layer, f)) => {
            // `-o DIR/` for a file: the file goes into that directory.
            let dest = if output.is_dir() {
                output.join(f.name.rsplit('/').next().unwrap_or(&f.name))
            } else {
                output.to_path_buf()
            };
            vec![(*layer, f.clone(), dest)]
        }
        None => {
            let prefix = if want.is_empty() {
                String::new()
            } else {
                format!("{want}/")
            };
            let under: Vec<_> = all
                .iter()
                .filter(|(_, f)| f.name.starts_with(&prefix))
                .map(|(l, f)| (*l, f.clone(), output.join(&f.name[prefix.len()..])))
                .collect();
            if under.is_empty() {
                let what = image
                    .entries
                    .iter()
                    .find(|e| e.name == want)
                    .map(|e| format!("{want} (a {} entry, not a file)", e.kind))
                    .unwrap_or_else(|| want.to_string());
                return Err(RegistryError::NoSuchPath(what));
            }
            under
        }
    };
    for (_, f, _) in &selected {
        if f.name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(bad(format!("unsafe path in the TOC: {:?}", f.name)));
        }
    }
    let mut got = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (layer, f, dest) in &selected {
        let l = &image.layers[*layer];
        let url = client.url(&format!("blobs/{}", l.digest));
        let reused = fetch_file(client, &url, f, l.format, dest).await?;
        used.insert(*layer);
        got.push(GotFile {
            path: f.name.clone(),
            output: dest.display().to_string(),
            size: f.size,
            reused_bytes: reused,
        });
    }
    Ok(GetReport {
        image_size: image.size(),
        layers: used.into_iter().map(|i| image.layers[i].clone()).collect(),
        files: got,
        fetched_bytes: client.fetched_bytes(),
    })
}

async fn fetch_file(
    client: &Client,
    url: &reqwest::Url,
    f: &TocFile,
    format: LayerFormat,
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
    for c in &f.chunks {
        let (coff, len, cdigest) = (c.offset, c.len, &c.digest);
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
        if c.end <= c.start {
            return Err(bad(format!(
                "{}: empty range for the chunk at {coff}",
                f.name
            )));
        }
        let (compressed, _) = client
            .get_bytes(url, None, Some((c.start, c.end - 1)))
            .await?;
        let mut data = vec![0u8; len as usize];
        let ok = match format {
            LayerFormat::Estargz => flate2::read::GzDecoder::new(&compressed[..])
                .read_exact(&mut data)
                .map_err(|e| format!("gzip: {e}")),
            LayerFormat::ZstdChunked => zstd::stream::read::Decoder::new(&compressed[..])
                .and_then(|mut d| d.read_exact(&mut data))
                .map_err(|e| format!("zstd: {e}")),
        };
        let check = ok
            .map_err(|e| bad(format!("{}: chunk at {coff}: {e}", f.name)))
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
        let f = files(&toc, 400);
        assert_eq!(f.len(), 2);
        assert_eq!(
            f[0].chunks
                .iter()
                .map(|c| (c.offset, c.len, c.start, c.end))
                .collect::<Vec<_>>(),
            vec![(0, 4, 100, 200), (4, 4, 200, 300), (8, 2, 300, 400)]
        );
        assert!(f[1].chunks.is_empty());
    }

    #[test]
    fn zstd_chunks_end_where_the_next_starts_and_the_last_at_end_offset() {
        let e = |kind: &str, size, offset, end, coff, csize, cd: &str| zstd_chunked::TocEntry {
            kind: kind.into(),
            name: "w".into(),
            size,
            offset,
            end_offset: end,
            chunk_offset: coff,
            chunk_size: csize,
            digest: if kind == "reg" {
                "d".into()
            } else {
                String::new()
            },
            chunk_digest: cd.into(),
            ..Default::default()
        };
        let toc = zstd_chunked::Toc {
            version: 1,
            entries: vec![
                e("reg", 10, 100, 400, 0, 4, "c0"),
                e("chunk", 0, 200, 0, 4, 4, "c1"),
                e("chunk", 0, 300, 0, 8, 2, "c2"),
                e("reg", 3, 500, 600, 0, 0, ""),
            ],
            tar_split_digest: String::new(),
        };
        let f = zstd_files(&toc).unwrap();
        let spans: Vec<_> = f[0]
            .chunks
            .iter()
            .map(|c| (c.offset, c.len, c.start, c.end))
            .collect();
        assert_eq!(
            spans,
            vec![(0, 4, 100, 200), (4, 4, 200, 300), (8, 2, 300, 400)]
        );
        assert_eq!(
            (
                f[1].chunks[0].start,
                f[1].chunks[0].end,
                f[1].chunks[0].digest.as_str()
            ),
            (500, 600, "d")
        );
        let mut bad = toc.clone();
        bad.entries[2].chunk_size = 1;
        assert!(zstd_files(&bad).is_err(), "chunks must add up to the size");
    }
}
