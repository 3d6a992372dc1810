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
use super::{parse_manifest_document, RegistryError};
use crate::digest::{Digest, Hasher};
use crate::image::read;
use crate::layer::estargz::reader as estargz_reader;
use crate::layer::estargz::{FOOTER_SIZE, TOC_DIGEST_ANNOTATION};
/// A TOC name as readers see it (where the TOC reader defines it).
pub use crate::layer::reader::clean_name;
use crate::layer::reader::{BadLayer, Chunk, LocalBlob, ReadAt, ReadError, SendError, TocFile};
use crate::layer::zstd_chunked;
use crate::layer::zstd_chunked::reader as zstd_reader;
use crate::limits::{self, shown};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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
fn bad(msg: impl Into<String>) -> RegistryError {
    RegistryError::Protocol(msg.into())
}

fn check_digest(what: &str, bytes: &[u8], expected: &str) -> Result<(), RegistryError> {
    let actual = Digest::of(bytes).to_string();
    if actual != expected {
        return Err(RegistryError::DigestMismatch {
            what: what.to_string(),
            expected: limits::one_line(expected, 100),
            actual,
        });
    }
    Ok(())
}

/// An index or manifest by tag or digest, checked against the digest it was asked by
/// (or the registry's `Docker-Content-Digest`) and its shape bounded before parsing.
pub(crate) async fn manifest(
    client: &Client,
    r: &str,
) -> Result<(serde_json::Value, String), RegistryError> {
    // An index names its manifests: only a digest (or a tag) goes into the URL.
    if Digest::parse(r).is_none() && crate::image::validate_tag(r).is_err() {
        return Err(bad(format!("not a digest or tag: {}", shown(r))));
    }
    let url = client.url(&format!("manifests/{r}"));
    let (bytes, headers) = client
        .get_bytes(
            &url,
            Some(&crate::image::media::accept(
                &crate::image::media::MANIFEST_TYPES,
            )),
            None,
        )
        .await?;
    let d = Digest::of(&bytes).to_string();
    if r.starts_with("sha256:") {
        check_digest(&format!("manifest {r}"), &bytes, r)?;
    } else if let Some(h) = super::client::header(&headers, "docker-content-digest") {
        if h != d {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {r}"),
                expected: limits::one_line(&h, 100),
                actual: d,
            });
        }
    }
    Ok((parse_manifest_document(&bytes, r)?, d))
}

/// Where an image is read from: a registry ([`Registry`]) or an OCI layout directory
/// ([`Layout`]). Its documents are bounded and digest-checked either way; its layer
/// blobs are read through [`ReadAt`].
// Used only through generics on one thread (see `ReadAt`).
#[allow(async_fn_in_trait)]
pub trait Source {
    type Blob: ReadAt<Error = RegistryError>;
    /// An index or manifest by tag or digest, parsed, and its digest.
    async fn manifest(&self, r: &str) -> Result<(serde_json::Value, String), RegistryError>;
    /// A layer blob of `size` bytes (as its descriptor says), checked to be a digest.
    fn blob(&self, digest: &str, size: u64) -> Result<Self::Blob, RegistryError>;
    /// Bytes read so far.
    fn fetched_bytes(&self) -> u64;
}

/// An image in a registry, read with the client's (Range) requests.
pub struct Registry<'a>(pub &'a Client);

/// A layer blob in a registry: every read is one Range request.
pub struct RegistryBlob<'a> {
    client: &'a Client,
    url: reqwest::Url,
    size: u64,
}

impl<'a> Source for Registry<'a> {
    type Blob = RegistryBlob<'a>;

    async fn manifest(&self, r: &str) -> Result<(serde_json::Value, String), RegistryError> {
        manifest(self.0, r).await
    }

    fn blob(&self, digest: &str, size: u64) -> Result<RegistryBlob<'a>, RegistryError> {
        blob_digest(digest)?;
        Ok(RegistryBlob {
            client: self.0,
            url: self.0.url(&format!("blobs/{digest}")),
            size,
        })
    }

    fn fetched_bytes(&self) -> u64 {
        self.0.fetched_bytes()
    }
}

impl ReadAt for RegistryBlob<'_> {
    type Error = RegistryError;

    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let (bytes, _) = self
            .client
            .get_bytes(&self.url, None, Some((offset, offset + len - 1)))
            .await?;
        Ok(bytes.to_vec())
    }

    /// One Range request, its body passed on as it arrives: a short body or a broken
    /// connection is a [`RegistryError::Network`] (worth a retry), a long one is not.
    async fn send_range(
        &self,
        start: u64,
        end: u64,
        tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
    ) -> Result<(), SendError<RegistryError>> {
        let network = |msg: String| {
            SendError::Read(RegistryError::Network {
                url: self.url.to_string(),
                msg,
            })
        };
        let mut resp = self
            .client
            .get_range(&self.url, (start, end - 1))
            .await
            .map_err(SendError::Read)?;
        let want = end - start;
        let mut got = 0u64;
        loop {
            match resp.chunk().await {
                Ok(Some(piece)) => {
                    got += piece.len() as u64;
                    self.client.count_fetched(piece.len() as u64);
                    if got > want {
                        return Err(SendError::TooMuch { asked: want });
                    }
                    // The decoder hung up: it has the whole chunk (or failed).
                    if tx.send(piece).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(None) if got != want => {
                    return Err(network(format!(
                        "the registry sent {got} of the {want} bytes asked for"
                    )))
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(network(e.to_string())),
            }
        }
    }
}

/// An image in an OCI layout directory (`index.json`, `blobs/sha256/…`), read through
/// the one layout reader ([`crate::image::read`]): its documents bounded and
/// digest-checked, its layers as local files of the size their descriptors give.
pub struct Layout {
    layout: read::Layout,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// A layer blob of a layout directory.
pub struct LayoutBlob {
    blob: LocalBlob,
    path: PathBuf,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Layout {
    /// The layout at `root` and the digest of the image its `index.json` names first
    /// (the image index `open` starts from).
    pub fn open(root: &Path) -> Result<(Layout, String), RegistryError> {
        let layout = read::Layout::open(root)?;
        let top = layout.index_json()?;
        let first = read::digest_of(read::first_image(&top)?)?.to_string();
        let layout = Layout {
            layout,
            read: Default::default(),
        };
        Ok((layout, first))
    }
}

impl Source for Layout {
    type Blob = LayoutBlob;

    async fn manifest(&self, r: &str) -> Result<(serde_json::Value, String), RegistryError> {
        let d = Digest::parse(r).ok_or_else(|| read::LayoutError::BadDigest(shown(r)))?;
        let bytes = self.layout.document_bytes(&d, None)?;
        Ok((read::parse(&bytes, "manifest")?, d.to_string()))
    }

    fn blob(&self, digest: &str, size: u64) -> Result<LayoutBlob, RegistryError> {
        blob_digest(digest)?;
        let d = Digest::parse(digest).expect("checked above");
        let (file, size) = self.layout.blob(&d, Some(size))?;
        Ok(LayoutBlob {
            blob: LocalBlob::new(file, size),
            path: self.layout.blob_path(&d),
            read: self.read.clone(),
        })
    }

    fn fetched_bytes(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl ReadAt for LayoutBlob {
    type Error = RegistryError;

    fn size(&self) -> u64 {
        self.blob.size()
    }

    async fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
        let bytes = self
            .blob
            .read_at(offset, len)
            .await
            .map_err(|e| RegistryError::io(self.path.display(), e))?;
        self.read
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(bytes)
    }
}

/// Resolves an image (by the tag or digest `start` of its index or manifest) to its
/// layers and reads their TOCs.
pub async fn open<S: Source>(source: &S, start: &str) -> Result<Image, RegistryError> {
    let (mut m, mut md) = source.manifest(start).await?;
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
        (m, md) = source.manifest(&d).await?;
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
        tocs.push(open_layer(source, &md, layer).await?);
    }
    Ok(Image::merge(tocs))
}

/// Reads one layer's TOC: its footer and TOC member (eStargz) or the manifest frame its
/// annotations point at (zstd:chunked).
pub async fn open_layer<S: Source>(
    source: &S,
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
    if let Some(checksum) = annotation(layer, &ZSTD_CHECKSUM_KEYS) {
        let position = annotation(layer, &ZSTD_POSITION_KEYS).ok_or_else(|| {
            bad(format!(
                "layer {digest}: zstd:chunked checksum without a position"
            ))
        })?;
        let blob = source.blob(&digest, size)?;
        return open_zstd_chunked(&blob, md, digest, checksum, position).await;
    }
    let toc_digest = layer["annotations"][TOC_DIGEST_ANNOTATION]
        .as_str()
        .map(str::to_string);
    blob_digest(&digest)?;
    if size < FOOTER_SIZE as u64 {
        return Err(bad(format!("layer {digest} is too small for eStargz")));
    }
    let blob = source.blob(&digest, size)?;
    open_estargz(&blob, md, digest, toc_digest).await
}

/// A layer's digest as a manifest gives it, checked before it goes into a URL.
fn blob_digest(digest: &str) -> Result<(), RegistryError> {
    match Digest::parse(digest) {
        Some(_) => Ok(()),
        None => Err(bad(format!(
            "layer digest {} is not sha256:<64 hex>",
            shown(digest)
        ))),
    }
}

fn in_layer(digest: &str) -> impl Fn(BadLayer) -> RegistryError + '_ {
    move |e| bad(format!("layer {digest}: {e}"))
}

fn read_in_layer(digest: &str) -> impl Fn(ReadError<RegistryError>) -> RegistryError + '_ {
    move |e| match e {
        ReadError::Read(e) => e,
        ReadError::Bad(e) => in_layer(digest)(e),
    }
}

/// Reads an eStargz TOC through the footer, each step within [`crate::limits`].
async fn open_estargz<B: ReadAt<Error = RegistryError>>(
    blob: &B,
    manifest: String,
    digest: String,
    toc_digest: Option<String>,
) -> Result<LayerToc, RegistryError> {
    let size = blob.size();
    let (toc_offset, json) = estargz_reader::read_toc_json(blob)
        .await
        .map_err(read_in_layer(&digest))?;
    if let Some(td) = &toc_digest {
        check_digest(&format!("TOC of layer {digest}"), &json, td)?;
    }
    let toc = estargz_reader::parse_estargz_toc(&json).map_err(in_layer(&digest))?;
    let entries = toc
        .entries
        .iter()
        .filter(|e| e.kind != "chunk")
        .map(|e| listed(&e.name, &e.kind, e.size, &e.digest, &e.link_name))
        .collect();
    Ok(LayerToc {
        files: estargz_reader::files(&toc, toc_offset).map_err(in_layer(&digest))?,
        entries,
        layer: LazyLayer {
            manifest,
            digest,
            size,
            format: LayerFormat::Estargz,
            toc_digest,
            toc_offset,
        },
    })
}

/// Reads a zstd:chunked TOC from the range its position annotation names.
async fn open_zstd_chunked<B: ReadAt<Error = RegistryError>>(
    blob: &B,
    manifest: String,
    digest: String,
    checksum: &str,
    position: &str,
) -> Result<LayerToc, RegistryError> {
    let size = blob.size();
    let (offset, compressed, ulen) = zstd_reader::read_toc_at(blob, position)
        .await
        .map_err(read_in_layer(&digest))?;
    check_digest(&format!("TOC of layer {digest}"), &compressed, checksum)?;
    let json = zstd_reader::zstd_section("TOC", &compressed, ulen).map_err(in_layer(&digest))?;
    let toc = zstd_reader::parse_zstd_toc(&json).map_err(in_layer(&digest))?;
    let entries = toc
        .entries
        .iter()
        .filter(|e| e.kind != "chunk")
        .map(|e| listed(&e.name, &e.kind, e.size, &e.digest, &e.link_name))
        .collect();
    Ok(LayerToc {
        files: zstd_reader::zstd_files(&toc, offset).map_err(in_layer(&digest))?,
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

/// Creates the directories from `base` (made as given: the user named it, links and
/// all) down to `dest`'s parent. Below `base` an existing entry must be a real
/// directory: a planted symlink (say `OUT/sub -> /etc`) would otherwise send a file of
/// the image outside `OUT`.
fn make_parents(base: &Path, dest: &Path) -> Result<(), RegistryError> {
    if !base.as_os_str().is_empty() {
        std::fs::create_dir_all(base).map_err(|e| RegistryError::io(base.display(), e))?;
    }
    let Some(below) = dest.parent().and_then(|p| p.strip_prefix(base).ok()) else {
        return Ok(());
    };
    let mut dir = base.to_path_buf();
    for c in below.components() {
        dir.push(c);
        match std::fs::create_dir(&dir) {
            Ok(()) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(RegistryError::io(dir.display(), e)),
        }
        let m = std::fs::symlink_metadata(&dir).map_err(|e| RegistryError::io(dir.display(), e))?;
        if !m.is_dir() {
            return Err(RegistryError::OutputNotADirectory(
                dir.display().to_string(),
            ));
        }
    }
    Ok(())
}

/// Opens `part` to write a file into, never through a link and never into a file this
/// user did not make. An existing regular file of ours with one link is kept: it is
/// what an interrupted run left, and its verified chunks are reused. Anything else there
/// (a symlink, dangling or not; a hard link to another file; someone else's file; a
/// FIFO or device) is removed (unlinking removes the entry, never what it points at)
/// and a new file is made with `O_CREAT | O_EXCL | O_NOFOLLOW`, which fails rather than
/// follow or reuse whatever appears there in between.
fn open_partial(part: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    match std::fs::symlink_metadata(part) {
        Ok(seen) => {
            if seen.is_file() {
                // O_NONBLOCK: should a FIFO be swapped in after the check, opening it
                // does not wait for a writer; it is then refused by the checks below.
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(part);
                if let Ok(f) = f {
                    let m = f.metadata()?;
                    // SAFETY: geteuid has no preconditions and cannot fail.
                    let me = unsafe { libc::geteuid() };
                    if m.is_file() && same_file(&m, &seen) && m.nlink() == 1 && m.uid() == me {
                        return Ok(f);
                    }
                }
            }
            std::fs::remove_file(part)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(part)
}

/// Downloads `path` (a file, or a directory: every file under it) to `output`.
/// Each file is written to `<output>.partial` (opened by [`open_partial`]: never
/// through a link), every chunk checked against its `chunkDigest` and the file against
/// its `digest`, then renamed into place. The rename replaces whatever entry is at the
/// destination, a symlink included, and never writes through it. A `.partial` left by
/// an interrupted run keeps its verified chunks.
pub async fn get<S: Source>(
    source: &S,
    start: &str,
    path: &str,
    output: &Path,
) -> Result<GetReport, RegistryError> {
    let image = open(source, start).await?;
    let want = clean_name(path);
    let all = &image.files;
    // A single file's directory is the user's to name; a directory's files go under
    // `output`, through real directories only.
    let (base, selected): (PathBuf, Vec<(usize, TocFile, PathBuf)>) =
        match all.iter().find(|f| f.1.name == want) {
            Some((layer, f)) => {
                // `-o DIR/` for a file: the file goes into that directory.
                let dest = if output.is_dir() {
                    output.join(f.name.rsplit('/').next().unwrap_or(&f.name))
                } else {
                    output.to_path_buf()
                };
                let base = dest.parent().map(Path::to_path_buf).unwrap_or_default();
                (base, vec![(*layer, f.clone(), dest)])
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
                (output.to_path_buf(), under)
            }
        };
    for (_, f, _) in &selected {
        if f.name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(bad(format!("unsafe path in the TOC: {:?}", f.name)));
        }
    }
    // Every directory first: a refused one stops the get before any file is written.
    for (_, _, dest) in &selected {
        make_parents(&base, dest)?;
    }
    let mut got = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (layer, f, dest) in &selected {
        let l = &image.layers[*layer];
        let blob = source.blob(&l.digest, l.size)?;
        let reused = fetch_file(&blob, f, l.format, dest).await?;
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
        fetched_bytes: source.fetched_bytes(),
    })
}

/// The compressed bytes of a range as they arrive from the network, for a decoder on
/// a blocking thread. The end of the range (or a dropped sender) is the end of input.
struct Arriving {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
}

impl Read for Arriving {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        Ok(n)
    }
}

/// Inflates `input` into `file` (at its current position), exactly `len` bytes and not
/// one more: the decoder is read through `take(len)`, so a member or frame that would
/// go on (an eStargz member continues with tar padding and the next header; a bomb
/// continues for ever) is never inflated past what the TOC says. Returns the chunk's
/// hash and `whole` with the bytes added, and how many bytes came out.
fn inflate(
    format: LayerFormat,
    input: Arriving,
    mut file: File,
    len: u64,
    mut whole: Hasher,
) -> (std::io::Result<()>, u64, Hasher, Hasher) {
    let mut chunk = Hasher::new();
    let mut written = 0u64;
    let result = (|| {
        let decoder: Box<dyn Read> = match format {
            LayerFormat::Estargz => Box::new(flate2::read::MultiGzDecoder::new(input)),
            LayerFormat::ZstdChunked => Box::new(zstd::stream::read::Decoder::new(input)?),
        };
        let mut limited = decoder.take(len);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = limited.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            file.write_all(&buf[..n])?;
            chunk.update(&buf[..n]);
            whole.update(&buf[..n]);
            written += n as u64;
        }
    })();
    (result, written, chunk, whole)
}

/// Why a chunk could not be had: the network (the `.partial` keeps what was verified
/// before it, for the next run) or the data (nothing of the file is kept).
enum ChunkError {
    Network(RegistryError),
    Data(RegistryError),
}

/// Fetches one chunk's compressed range and inflates it into `file` at the chunk's
/// offset as it arrives: memory is a few network reads and one 256 KiB buffer, whatever
/// the chunk's size, and nothing is inflated past the chunk's declared length.
async fn fetch_chunk<B: ReadAt<Error = RegistryError>>(
    blob: &B,
    f: &TocFile,
    c: &Chunk,
    format: LayerFormat,
    file: &mut File,
    whole: &mut Hasher,
) -> Result<(), ChunkError> {
    let coff = c.offset;
    let data_err = |what: String| {
        ChunkError::Data(bad(format!("{}: chunk at {coff}: {what}", shown(&f.name))))
    };
    let codec = match format {
        LayerFormat::Estargz => "gzip",
        LayerFormat::ZstdChunked => "zstd",
    };
    let local = |e: std::io::Error| ChunkError::Data(RegistryError::io(&f.name, e));
    file.seek(SeekFrom::Start(coff)).map_err(local)?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let input = Arriving {
        rx,
        cur: bytes::Bytes::new(),
    };
    let out = file.try_clone().map_err(local)?;
    let (len, w) = (c.len, whole.clone());
    let worker = tokio::task::spawn_blocking(move || inflate(format, input, out, len, w));
    let sent = blob.send_range(c.start, c.end, &tx).await;
    drop(tx);
    let (result, written, chunk, with_chunk) = worker
        .await
        .map_err(|e| ChunkError::Data(RegistryError::io(&f.name, std::io::Error::other(e))))?;
    match sent {
        Ok(()) => {}
        Err(SendError::TooMuch { asked }) => {
            return Err(data_err(format!(
                "the registry sent more than the {asked} bytes asked for"
            )))
        }
        // Cut short, but the decoder already had all it needed.
        Err(SendError::Read(RegistryError::Network { .. })) if written >= c.len => {}
        Err(SendError::Read(e @ RegistryError::Network { .. })) => {
            return Err(ChunkError::Network(e))
        }
        Err(SendError::Read(e)) => return Err(ChunkError::Data(e)),
    }
    result.map_err(|e| {
        data_err(format!(
            "{codec}: {}",
            limits::one_line(&e.to_string(), 200)
        ))
    })?;
    if written != c.len {
        return Err(data_err(format!(
            "the compressed data inflates to {written} bytes, not the {} the TOC says",
            c.len
        )));
    }
    let actual = chunk.finish().to_string();
    if actual != c.digest {
        return Err(ChunkError::Data(RegistryError::DigestMismatch {
            what: format!("{} (chunk at offset {coff})", shown(&f.name)),
            expected: limits::one_line(&c.digest, 100),
            actual,
        }));
    }
    *whole = with_chunk;
    Ok(())
}

/// Hashes `len` bytes of `file` at `offset` in pieces into its own hash and into
/// `whole`.
fn hash_range(
    file: &mut File,
    offset: u64,
    len: u64,
    whole: &mut Hasher,
) -> std::io::Result<Hasher> {
    let mut h = Hasher::new();
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = buf.len().min(left as usize);
        file.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        whole.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h)
}

/// Removes a file when dropped, unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// [`fetch_into`], whose `.partial` is removed when the fetch is dropped mid-way (the
/// command was stopped): only a fetch that failed keeps its verified chunks.
async fn fetch_file<B: ReadAt<Error = RegistryError>>(
    blob: &B,
    f: &TocFile,
    format: LayerFormat,
    dest: &Path,
) -> Result<u64, RegistryError> {
    let mut stopped = RemoveOnDrop(Some(partial_path(dest)));
    let r = fetch_into(blob, f, format, dest).await;
    // Ended by itself: what it left is what it decided to leave.
    stopped.0 = None;
    r
}

async fn fetch_into<B: ReadAt<Error = RegistryError>>(
    blob: &B,
    f: &TocFile,
    format: LayerFormat,
    dest: &Path,
) -> Result<u64, RegistryError> {
    let part = partial_path(dest);
    let io = |e| RegistryError::io(part.display(), e);
    let mut file = open_partial(&part).map_err(io)?;
    let mut have = file.metadata().map_err(io)?.len();
    let mut hasher = Hasher::new();
    let mut reused = 0u64;
    for c in &f.chunks {
        let (coff, len) = (c.offset, c.len);
        if have >= coff + len {
            // A chunk kept from an interrupted run, read back in pieces: kept if its
            // own hash matches (then the file's hash has it too), else fetched again.
            let mut with_it = hasher.clone();
            let kept = hash_range(&mut file, coff, len, &mut with_it).map_err(io)?;
            if kept.finish().to_string() == c.digest {
                hasher = with_it;
                reused += len;
                continue;
            }
        }
        if have > coff {
            file.set_len(coff).map_err(io)?;
        }
        match fetch_chunk(blob, f, c, format, &mut file, &mut hasher).await {
            Ok(()) => have = coff + len,
            Err(ChunkError::Network(e)) => {
                // Interrupted: keep what was verified, for the next run.
                let _ = file.set_len(coff);
                return Err(e);
            }
            Err(ChunkError::Data(e)) => {
                drop(file);
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        }
    }
    if have > f.size {
        file.set_len(f.size).map_err(io)?;
    }
    let actual = hasher.finish().to_string();
    if actual != f.digest {
        drop(file);
        let _ = std::fs::remove_file(&part);
        return Err(RegistryError::DigestMismatch {
            what: shown(&f.name),
            expected: limits::one_line(&f.digest, 100),
            actual,
        });
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if f.mode & 0o111 != 0 { 0o755 } else { 0o644 };
        // On the open file, not by name: a name can be swapped for a link.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io)?;
    }
    file.sync_all().map_err(io)?;
    std::fs::rename(&part, dest).map_err(|e| RegistryError::io(dest.display(), e))?;
    // What was renamed is what was written: else something swapped the `.partial` after
    // the last write (the rename moved that entry, never writing through it).
    let ours = file.metadata().map_err(io)?;
    match std::fs::symlink_metadata(dest) {
        Ok(m) if same_file(&m, &ours) => Ok(reused),
        _ => {
            let _ = std::fs::remove_file(dest);
            Err(RegistryError::OutputReplaced(dest.display().to_string()))
        }
    }
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}
