//! Finding images and blobs under the serve root, safely.
//!
//! An image is a directory `ROOT/<model>` or `ROOT/<org>/<model>` holding an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/…`). Every path is resolved with
//! `canonicalize` and must stay inside the (canonical) root, so neither `..` nor a
//! symlink can lead a request outside it; only regular files are opened. Names are
//! checked against the OCI grammar before they touch the file system.
//!
//! A blob is served only under a name whose image references it: the set of digests is
//! the closure of `index.json` over index → manifests → config and layers. Index and
//! manifest documents are read, size- and digest-checked once, and then served from
//! memory. What an image references is cached, keyed by the identity of its
//! `index.json` (device, inode, size, mtime, ctime), which is re-checked on every
//! request: an image built (or copied) under the root later is picked up without a
//! restart, and a rebuilt one (a new directory renamed into place) is re-read.

use super::data::{Files, LayerDesc, Overview, TocFile};
use crate::digest::Digest;
use crate::image::media::{self, ANNOTATION_REF_NAME, ANNOTATION_REVISION, ANNOTATION_SOURCE};
use crate::image::read::{self, Layout, LayoutError};
use crate::image::validate_tag;
use crate::layer::estargz::reader as estargz_reader;
use crate::layer::estargz::{Toc, FOOTER_SIZE};
use crate::layer::reader::{read_now, BadLayer, LocalBlob, ReadError};
use crate::layer::zstd_chunked;
use crate::layer::zstd_chunked::reader as zstd_reader;
use crate::layer::{NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};
use bytes::Bytes;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Index and manifest bytes held in memory for one image: a multi-platform image has a
/// few documents of a few KiB; a layout that names thousands of large ones is not read
/// past this (the image is then served as incomplete, re-read on each request).
const MAX_IMAGE_DOCUMENTS: u64 = 64 << 20;
/// OCI names are at most 255 characters (distribution's limit).
const MAX_NAME: usize = 255;
/// Index → index → manifest nesting deeper than this is not followed.
const MAX_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid repository name")]
    NameInvalid,
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("provided digest is invalid")]
    DigestInvalid,
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("serve root {path}: {error}")]
    Root { path: PathBuf, error: io::Error },
    #[error("serve root {0} is not a directory")]
    RootNotADirectory(PathBuf),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Errors that mean "there is nothing (we may serve) here" rather than a server fault.
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::PermissionDenied
    ) || e.raw_os_error() == Some(libc::ELOOP) // a symlink loop leads nowhere
}

/// Checks a repository name against the OCI distribution grammar
/// (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most
/// 255 characters).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('/').all(crate::names::is_registry_component)
}

/// Where a manifest request points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A tag, or a digest; a digest of another algorithm is a valid reference we cannot
    /// have (`Ok(None)`).
    pub fn parse(s: &str) -> Result<Option<Reference>, StoreError> {
        if let Some((algo, _)) = s.split_once(':') {
            if algo == "sha256" {
                return Digest::parse(s)
                    .map(|d| Some(Reference::Digest(d)))
                    .ok_or(StoreError::DigestInvalid);
            }
            let ok_algo = !algo.is_empty()
                && algo
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
            return if ok_algo {
                Ok(None)
            } else {
                Err(StoreError::DigestInvalid)
            };
        }
        Ok(validate_tag(s).ok().map(|_| Reference::Tag(s.to_string())))
    }
}

#[derive(Deserialize, Default)]
pub struct Doc {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Desc>,
    #[serde(default)]
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    subject: Option<Desc>,
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
}

#[derive(Deserialize, Clone)]
struct Desc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(Deserialize, Clone)]
struct PlatformJson {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// What an image's metadata says about one digest it references.
#[derive(Clone, Debug)]
pub struct Referenced {
    pub media_type: String,
    pub size: u64,
}

/// Identity of an `index.json`: when it changes, the image is read again.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileKey {
    dir: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(dir: &Path, m: &Metadata) -> FileKey {
        FileKey {
            dir: dir.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// One image as read from its layout.
pub struct Image {
    pub name: String,
    dir: PathBuf,
    key: FileKey,
    /// False when a referenced document was missing or did not match its digest: such an
    /// image is read again on the next request instead of being cached.
    complete: bool,
    /// Tag → digest of the document it names, from `org.opencontainers.image.ref.name`.
    pub tags: BTreeMap<String, Digest>,
    /// Every digest the image references, transitively.
    pub refs: HashMap<Digest, Referenced>,
    /// Index and manifest documents, digest-verified.
    docs: HashMap<Digest, Bytes>,
    /// Platforms named in the index(es).
    pub platforms: Vec<String>,
    /// Layers of the first manifest, in order.
    pub layers: Vec<Digest>,
    /// Platform → digest of its manifest, in index order.
    pub manifests: Vec<(String, Digest)>,
    /// Annotations of the first tagged index (revision, source).
    pub annotations: BTreeMap<String, String>,
    /// Manifests of the layout that name a `subject` (OCI 1.1 referrers).
    pub referrers: Vec<ReferrerDesc>,
    /// What the web pages show, computed once per version of the image (this `Image` is
    /// replaced when its `index.json` changes), so a page never reads a layer twice.
    overview: OnceLock<Arc<Overview>>,
    files: OnceLock<Arc<Files>>,
}

/// A manifest that refers to another (e.g. an image's provenance), as the referrers
/// API lists it.
#[derive(Clone, Debug)]
pub struct ReferrerDesc {
    pub subject: Digest,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// As the referrers API gives it: the manifest's `artifactType`, else its config's
    /// media type; `None` (the key left out) for an index without one.
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// A manifest or index, ready to send.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// A blob, ready to send: small documents from memory, everything else from its file.
pub enum BlobBody {
    Memory(Bytes),
    File(File),
}

pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub body: BlobBody,
}

pub struct Store {
    root: PathBuf,
    /// Opens files only inside `root`: the layout reader reads every image through it.
    files: Arc<Confined>,
    cache: Mutex<HashMap<String, Arc<Image>>>,
}

/// Files opened only inside a (canonical) root: symlinks that lead out of it, FIFOs,
/// devices and directories are not there.
struct Confined {
    root: PathBuf,
}

impl Confined {
    /// Resolves `path` (which may contain symlinks) to a canonical path inside the root,
    /// with its metadata; `Ok(None)` if it does not exist or leads outside the root.
    fn inside(&self, path: &Path) -> io::Result<Option<(PathBuf, Metadata)>> {
        let canon = match fs::canonicalize(path) {
            Ok(c) => c,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !canon.starts_with(&self.root) {
            return Ok(None);
        }
        match fs::symlink_metadata(&canon) {
            Ok(m) => Ok(Some((canon, m))),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl read::Files for Confined {
    /// Opens a regular file inside the root. The last component is opened with
    /// `O_NOFOLLOW`, and the opened file must be the one that was checked.
    fn open(&self, path: &Path) -> io::Result<Option<(File, u64)>> {
        let Some((canon, meta)) = self.inside(path)? else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        let f = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&canon)
        {
            Ok(f) => f,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        if !m.is_file() || m.ino() != meta.ino() || m.dev() != meta.dev() {
            return Ok(None);
        }
        Ok(Some((f, m.len())))
    }
}

impl Store {
    /// Opens the store at `root`, which must be an existing directory.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let canon = fs::canonicalize(root).map_err(|error| StoreError::Root {
            path: root.to_path_buf(),
            error,
        })?;
        if !canon.is_dir() {
            return Err(StoreError::RootNotADirectory(root.to_path_buf()));
        }
        Ok(Store {
            files: Arc::new(Confined {
                root: canon.clone(),
            }),
            root: canon,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` resolved inside the root, with its metadata ([`Confined`]).
    fn inside(&self, path: &Path) -> Result<Option<(PathBuf, Metadata)>, StoreError> {
        self.files.inside(path).map_err(io_err(path))
    }

    /// The layout of the image in `dir`, its files opened only inside the root.
    fn layout(&self, dir: &Path) -> Layout {
        Layout::with_files(dir, self.files.clone())
    }

    /// The image directory and the identity of its `index.json`, if `name` is an image.
    fn locate(&self, name: &str) -> Result<Option<(PathBuf, FileKey)>, StoreError> {
        let Some((dir, meta)) = self.inside(&self.root.join(name))? else {
            return Ok(None);
        };
        if !meta.is_dir() || dir == self.root {
            return Ok(None);
        }
        let Some((_, layout)) = self.inside(&dir.join("oci-layout"))? else {
            return Ok(None);
        };
        let Some((_, index)) = self.inside(&dir.join("index.json"))? else {
            return Ok(None);
        };
        if !layout.is_file() || !index.is_file() {
            return Ok(None);
        }
        let key = FileKey::of(&dir, &index);
        Ok(Some((dir, key)))
    }

    /// The image called `name`, read again if its `index.json` changed.
    pub fn image(&self, name: &str) -> Result<Arc<Image>, StoreError> {
        if !is_valid_name(name) {
            return Err(StoreError::NameInvalid);
        }
        // Images live at ROOT/<model> or ROOT/<org>/<model>; deeper names are valid
        // but cannot be here.
        if name.split('/').count() > 2 {
            return Err(StoreError::NameUnknown);
        }
        let Some((dir, key)) = self.locate(name)? else {
            self.cache.lock().expect("cache lock").remove(name);
            return Err(StoreError::NameUnknown);
        };
        if let Some(img) = self.cache.lock().expect("cache lock").get(name) {
            if img.key == key && img.complete {
                return Ok(img.clone());
            }
        }
        let img = Arc::new(self.scan(name, dir, key)?);
        self.cache
            .lock()
            .expect("cache lock")
            .insert(name.to_string(), img.clone());
        Ok(img)
    }

    /// A document of the image in `dir`, size- and digest-checked; `None` if it is not
    /// the one its descriptor names.
    fn read_document(&self, dir: &Path, digest: &Digest, size: u64) -> Option<Bytes> {
        let bytes = self.layout(dir).document_bytes(digest, Some(size)).ok()?;
        Some(Bytes::from(bytes))
    }

    fn scan(&self, name: &str, dir: PathBuf, key: FileKey) -> Result<Image, StoreError> {
        let layout = self.layout(&dir);
        // Not an image layout of a version we read: no image here.
        if layout.check_version().is_err() {
            return Err(StoreError::NameUnknown);
        }
        let raw = match layout.index_json_bytes() {
            Ok(raw) => raw,
            Err(LayoutError::Io { path, source }) => {
                return Err(StoreError::Io {
                    path,
                    error: source,
                })
            }
            // Missing, or too large: no image (we may serve) here.
            Err(_) => return Err(StoreError::NameUnknown),
        };
        let layout = parse_document(&raw).map_err(|_| StoreError::NameUnknown)?;

        let mut img = Image {
            name: name.to_string(),
            dir,
            key,
            complete: true,
            tags: BTreeMap::new(),
            refs: HashMap::new(),
            docs: HashMap::new(),
            platforms: Vec::new(),
            layers: Vec::new(),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
            referrers: Vec::new(),
            overview: OnceLock::new(),
            files: OnceLock::new(),
        };
        let mut visited = HashSet::new();
        for d in &layout.manifests {
            let Some(digest) = Digest::parse(&d.digest) else {
                continue;
            };
            if let Some(tag) = d.annotations.get(ANNOTATION_REF_NAME) {
                if validate_tag(tag).is_ok() {
                    img.tags.entry(tag.clone()).or_insert(digest);
                }
            }
            self.visit(&mut img, d, 0, &mut visited);
            if img.annotations.is_empty() && d.annotations.contains_key(ANNOTATION_REF_NAME) {
                if let Some(doc) = img.docs.get(&digest) {
                    if let Ok(doc) = parse_document(doc) {
                        img.annotations = doc.annotations;
                    }
                }
            }
        }
        Ok(img)
    }

    fn visit(&self, img: &mut Image, d: &Desc, depth: usize, visited: &mut HashSet<Digest>) {
        let Some(digest) = Digest::parse(&d.digest) else {
            return;
        };
        img.refs.entry(digest).or_insert_with(|| Referenced {
            media_type: d.media_type.clone(),
            size: d.size,
        });
        if !media::is_manifest(&d.media_type) || !visited.insert(digest) || depth >= MAX_DEPTH {
            return;
        }
        let held: u64 = img.docs.values().map(|b| b.len() as u64).sum();
        if held.saturating_add(d.size) > MAX_IMAGE_DOCUMENTS {
            img.complete = false;
            return;
        }
        let Some(bytes) = self.read_document(&img.dir, &digest, d.size) else {
            img.complete = false;
            return;
        };
        let Ok(doc) = parse_document(&bytes) else {
            img.complete = false;
            return;
        };
        img.docs.insert(digest, bytes);
        if let Some(mt) = doc.media_type.as_deref() {
            if mt != d.media_type {
                // The descriptor and the document disagree: serve neither as a manifest.
                img.docs.remove(&digest);
                img.complete = false;
                return;
            }
        }
        if let Some(subject) = doc.subject.as_ref().and_then(|s| Digest::parse(&s.digest)) {
            // The spec: artifactType, else the config's media type (a manifest); an
            // empty one counts as none.
            let non_empty = |t: &String| !t.is_empty();
            let artifact_type = doc
                .artifact_type
                .clone()
                .filter(non_empty)
                .or_else(|| doc.config.as_ref().map(|c| c.media_type.clone()))
                .filter(non_empty);
            img.referrers.push(ReferrerDesc {
                subject,
                digest,
                media_type: d.media_type.clone(),
                size: d.size,
                artifact_type,
                annotations: doc.annotations.clone(),
            });
        }
        for m in &doc.manifests {
            if let Some(p) = &m.platform {
                let mut s = format!("{}/{}", p.os, p.architecture);
                if let Some(v) = &p.variant {
                    s = format!("{s}/{v}");
                }
                if !img.platforms.contains(&s) {
                    if let Some(d) = Digest::parse(&m.digest) {
                        img.manifests.push((s.clone(), d));
                    }
                    img.platforms.push(s);
                }
            }
            self.visit(img, m, depth + 1, visited);
        }
        if let Some(c) = &doc.config {
            self.visit(img, c, depth + 1, visited);
        }
        for l in &doc.layers {
            self.visit(img, l, depth + 1, visited);
        }
        if img.layers.is_empty() {
            img.layers = doc
                .layers
                .iter()
                .filter_map(|l| Digest::parse(&l.digest))
                .collect();
        }
    }

    /// The manifest (or index) `reference` names in image `name`.
    pub fn manifest(&self, name: &str, reference: &str) -> Result<Manifest, StoreError> {
        let img = self.image(name)?;
        let digest = match Reference::parse(reference)? {
            Some(Reference::Tag(t)) => *img.tags.get(&t).ok_or(StoreError::ManifestUnknown)?,
            Some(Reference::Digest(d)) => d,
            None => return Err(StoreError::ManifestUnknown),
        };
        let r = img.refs.get(&digest).ok_or(StoreError::ManifestUnknown)?;
        if !media::is_manifest(&r.media_type) {
            return Err(StoreError::ManifestUnknown);
        }
        let bytes = img
            .docs
            .get(&digest)
            .cloned()
            .ok_or(StoreError::ManifestUnknown)?;
        Ok(Manifest {
            digest,
            media_type: r.media_type.clone(),
            bytes,
        })
    }

    /// The blob `digest`, if image `name` references it.
    pub fn blob(&self, name: &str, digest: &str) -> Result<Blob, StoreError> {
        let img = self.image(name)?;
        let digest = Digest::parse(digest).ok_or(StoreError::DigestInvalid)?;
        let r = img.refs.get(&digest).ok_or(StoreError::BlobUnknown)?;
        if media::is_manifest(&r.media_type) {
            let bytes = img.docs.get(&digest).ok_or(StoreError::BlobUnknown)?;
            return Ok(Blob {
                digest,
                size: bytes.len() as u64,
                body: BlobBody::Memory(bytes.clone()),
            });
        }
        let (file, len) = match self.layout(&img.dir).blob(&digest, Some(r.size)) {
            Ok(f) => f,
            Err(LayoutError::Io { path, source }) => {
                return Err(StoreError::Io {
                    path,
                    error: source,
                })
            }
            // Missing, or not the blob the manifest describes (truncated, or being
            // replaced).
            Err(_) => return Err(StoreError::BlobUnknown),
        };
        Ok(Blob {
            digest,
            size: len,
            body: BlobBody::File(file),
        })
    }

    /// The referrers API's answer for `subject` in image `name`: an image index of the
    /// manifests that name it, only those of `artifact_type` when given.
    pub fn referrers(
        &self,
        name: &str,
        subject: &str,
        artifact_type: Option<&str>,
    ) -> Result<Bytes, StoreError> {
        let subject = Digest::parse(subject).ok_or(StoreError::DigestInvalid)?;
        let img = self.image(name)?;
        let manifests: Vec<serde_json::Value> = img
            .referrers
            .iter()
            .filter(|r| r.subject == subject)
            .filter(|r| artifact_type.map_or(true, |t| r.artifact_type.as_deref() == Some(t)))
            .map(|r| {
                let mut d = serde_json::json!({
                    "mediaType": r.media_type,
                    "digest": r.digest.to_string(),
                    "size": r.size,
                });
                if let Some(t) = &r.artifact_type {
                    d["artifactType"] = serde_json::json!(t);
                }
                if !r.annotations.is_empty() {
                    d["annotations"] = serde_json::json!(r.annotations);
                }
                d
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        });
        Ok(Bytes::from(crate::image::canonical_json(&index)))
    }

    /// The tags of image `name`, sorted.
    pub fn tags(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.image(name)?.tags.keys().cloned().collect())
    }

    fn is_image_dir(&self, path: &Path) -> bool {
        let ok = |p: &Path| matches!(self.inside(p), Ok(Some((_, m))) if m.is_file());
        matches!(self.inside(path), Ok(Some((ref c, ref m))) if m.is_dir() && *c != self.root)
            && ok(&path.join("oci-layout"))
            && ok(&path.join("index.json"))
    }

    fn valid_children(dir: &Path) -> Vec<String> {
        let Ok(rd) = fs::read_dir(dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| crate::names::is_registry_component(n))
            .collect()
    }

    /// Every image name under the root, sorted: `model` and `org/model`.
    pub fn catalog(&self) -> Vec<String> {
        let mut names = Vec::new();
        for top in Self::valid_children(&self.root) {
            let p = self.root.join(&top);
            if self.is_image_dir(&p) {
                names.push(top);
                continue;
            }
            if !matches!(self.inside(&p), Ok(Some((_, m))) if m.is_dir()) {
                continue;
            }
            for sub in Self::valid_children(&p) {
                let name = format!("{top}/{sub}");
                if name.len() <= MAX_NAME && self.is_image_dir(&p.join(&sub)) {
                    names.push(name);
                }
            }
        }
        names.sort();
        names
    }

    /// The overview of every image under the root (the images `catalog` names), sorted
    /// by name, in one walk that reads (or takes from the cache) each image once. An
    /// image that cannot be read is left out and said on stderr.
    pub fn overviews(&self) -> Vec<Arc<Overview>> {
        let mut out = Vec::new();
        let mut add = |name: &str| match self.image(name) {
            Ok(img) => {
                out.push(Self::overview_of(&img));
                true
            }
            Err(StoreError::NameUnknown | StoreError::NameInvalid) => false,
            Err(e) => {
                eprintln!("depotai serve: {name}: {e}");
                true
            }
        };
        for top in Self::valid_children(&self.root) {
            if add(&top) {
                continue;
            }
            let p = self.root.join(&top);
            if !matches!(self.inside(&p), Ok(Some((_, m))) if m.is_dir()) {
                continue;
            }
            for sub in Self::valid_children(&p) {
                let name = format!("{top}/{sub}");
                if name.len() <= MAX_NAME {
                    add(&name);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn overview_of(img: &Image) -> Arc<Overview> {
        img.overview.get_or_init(|| Arc::new(overview(img))).clone()
    }

    /// The overview and the files of every layer (from their TOCs), merged. The TOCs are
    /// read on the first call for each version of the image only.
    pub fn files(&self, name: &str) -> Result<(Arc<Overview>, Arc<Files>), StoreError> {
        let img = self.image(name)?;
        let files = img
            .files
            .get_or_init(|| {
                let tocs = img.layers.iter().map(|d| self.layer_toc(&img, d)).collect();
                Arc::new(Files::merge(tocs))
            })
            .clone();
        Ok((Self::overview_of(&img), files))
    }

    /// The files of one layer blob of `img`, from its TOC; a reason for the page if not.
    fn layer_toc(&self, img: &Image, layer: &Digest) -> Result<Vec<TocFile>, String> {
        match self.layout(&img.dir).blob(layer, None) {
            Ok((f, len)) => layer_files(&f, len).map_err(|e| e.to_string()),
            Err(LayoutError::Missing { .. }) => Err("the layer blob is missing".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TocError {
    #[error("reading the layer: {0}")]
    Io(#[from] io::Error),
    #[error("the layer has no eStargz or zstd:chunked footer")]
    NoFooter,
    #[error("{0}")]
    Bad(#[from] BadLayer),
}

impl From<ReadError<io::Error>> for TocError {
    fn from(e: ReadError<io::Error>) -> TocError {
        match e {
            ReadError::Read(e) => TocError::Io(e),
            ReadError::Bad(e) => TocError::Bad(e),
        }
    }
}

/// An index, manifest or `index.json` as the store reads it: by the layout reader's
/// [`read::parse`] (its JSON shape checked before it is parsed).
pub fn parse_document(bytes: &[u8]) -> Result<Doc, String> {
    read::parse(bytes, "document").map_err(|e| e.to_string())
}

/// The files, symlinks and hard links of a layer blob, from its eStargz or zstd:chunked
/// TOC, in TOC order (directories, chunk entries and eStargz landmarks left out).
pub fn layer_files(f: &File, len: u64) -> Result<Vec<TocFile>, TocError> {
    let keep = |kind: &str, name: &str| {
        matches!(kind, "reg" | "symlink" | "hardlink")
            && name != PREFETCH_LANDMARK
            && name != NO_PREFETCH_LANDMARK
    };
    let file = |kind: String, name: String, size: u64, link_name: String| TocFile {
        name,
        size,
        kind,
        link_name,
    };
    match read_toc(f, len) {
        Ok(toc) => Ok(toc
            .entries
            .into_iter()
            .filter(|e| keep(&e.kind, &e.name))
            .map(|e| file(e.kind, e.name, e.size, e.link_name))
            .collect()),
        Err(TocError::NoFooter) => Ok(read_zstd_chunked_toc(f, len)?
            .entries
            .into_iter()
            .filter(|e| keep(&e.kind, &e.name))
            .map(|e| file(e.kind, e.name, e.size, e.link_name))
            .collect()),
        Err(e) => Err(e),
    }
}

/// Reads the TOC of a zstd:chunked layer blob through its 64-byte footer, within
/// [`crate::limits`] (as `ls` reads one from a registry).
pub fn read_zstd_chunked_toc(f: &File, len: u64) -> Result<zstd_chunked::Toc, TocError> {
    let frame_size = zstd_chunked::FOOTER_FRAME_SIZE as u64;
    if len < frame_size {
        return Err(TocError::NoFooter);
    }
    let mut frame = [0u8; zstd_chunked::FOOTER_FRAME_SIZE];
    f.read_exact_at(&mut frame, len - frame_size)?;
    let footer = zstd_chunked::parse_footer(&frame).ok_or(TocError::NoFooter)?;
    let position = format!(
        "{}:{}:{}",
        footer.manifest_offset, footer.manifest_len, footer.manifest_uncompressed_len
    );
    let blob = LocalBlob::new(f.try_clone()?, len);
    let (_, compressed, ulen) = read_now(zstd_reader::read_toc_at(&blob, &position))?;
    let json = zstd_reader::zstd_section("TOC", &compressed, ulen)?;
    Ok(zstd_reader::parse_zstd_toc(&json)?)
}

/// Reads the eStargz TOC of a layer blob of `len` bytes: the 51-byte footer gives the
/// offset of the TOC member, one gzip member holding a tar entry `stargz.index.json`;
/// within [`crate::limits`] (as `ls` reads one from a registry).
pub fn read_toc(f: &File, len: u64) -> Result<Toc, TocError> {
    let footer_size = FOOTER_SIZE as u64;
    if len < footer_size {
        return Err(TocError::NoFooter);
    }
    let mut footer = [0u8; FOOTER_SIZE];
    f.read_exact_at(&mut footer, len - footer_size)?;
    if crate::layer::estargz::parse_footer(&footer).is_none() {
        return Err(TocError::NoFooter);
    }
    let blob = LocalBlob::new(f.try_clone()?, len);
    let (_, json) = read_now(estargz_reader::read_toc_json(&blob))?;
    Ok(estargz_reader::parse_estargz_toc(&json)?)
}

/// What the web pages show of an image, from its documents.
fn overview(img: &Image) -> Overview {
    Overview {
        name: img.name.clone(),
        tags: img.tags.iter().map(|(t, d)| (t.clone(), *d)).collect(),
        revision: img.annotations.get(ANNOTATION_REVISION).cloned(),
        source: img.annotations.get(ANNOTATION_SOURCE).cloned(),
        platforms: img.manifests.clone(),
        layers: img
            .layers
            .iter()
            .map(|d| {
                let r = img.refs.get(d);
                LayerDesc {
                    digest: *d,
                    size: r.map_or(0, |r| r.size),
                    media_type: r.map(|r| r.media_type.clone()).unwrap_or_default(),
                }
            })
            .collect(),
        referrers: img
            .referrers
            .iter()
            .filter(|r| img.tags.values().any(|d| *d == r.subject))
            .map(|r| (r.artifact_type.clone(), r.digest))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
    use crate::image::ANNOTATION_REVISION;
    use crate::layer::estargz::MEDIA_TYPE as LAYER;

    #[test]
    fn names_follow_the_oci_grammar() {
        for ok in ["a", "acme/tiny-model", "a.b/c__d", "x-y--z/0", "a/b/c"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "..",
            "../etc",
            "a/../b",
            "a/./b",
            "%2e%2e",
            "a_-b",
            "-a",
            "a.",
            &"a".repeat(256),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn references_are_tags_or_digests() {
        let d = Digest::of(b"x");
        assert_eq!(
            Reference::parse(&d.to_string()).unwrap(),
            Some(Reference::Digest(d))
        );
        assert_eq!(
            Reference::parse("latest").unwrap(),
            Some(Reference::Tag("latest".into()))
        );
        assert_eq!(Reference::parse("sha512:abcd").unwrap(), None);
        assert_eq!(Reference::parse("..").unwrap(), None);
        assert!(matches!(
            Reference::parse("sha256:abc"),
            Err(StoreError::DigestInvalid)
        ));
        assert!(matches!(
            Reference::parse("SHA256:abc"),
            Err(StoreError::DigestInvalid)
        ));
    }

    fn layout(root: &Path, rel: &str, tag: &str, layer: &[u8]) -> (Digest, Digest) {
        let dir = root.join(rel);
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |b: &[u8]| {
            let d = Digest::of(b);
            fs::write(blobs.join(d.hex()), b).unwrap();
            d
        };
        let l = put(layer);
        let cfg = put(b"{}");
        let man = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"{LAYER}","digest":"{l}","size":{}}}]}}"#,
            layer.len()
        );
        let m = put(man.as_bytes());
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{m}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}],"annotations":{{"{ANNOTATION_REVISION}":"abc"}}}}"#,
            man.len()
        );
        let i = put(idx.as_bytes());
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        fs::write(
            dir.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_INDEX}","digest":"{i}","size":{},"annotations":{{"{ANNOTATION_REF_NAME}":"{tag}"}}}}]}}"#,
                idx.len()
            ),
        )
        .unwrap();
        (i, l)
    }

    #[test]
    fn images_are_found_blobs_are_scoped_and_changes_are_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let (i, l) = layout(tmp.path(), "acme/a", "latest", b"layer-a");
        let (_, l2) = layout(tmp.path(), "b", "v1", b"layer-b");
        let s = Store::open(tmp.path()).unwrap();
        assert_eq!(s.catalog(), ["acme/a", "b"]);
        let m = s.manifest("acme/a", "latest").unwrap();
        assert_eq!(m.digest, i);
        assert_eq!(m.media_type, OCI_INDEX);
        assert_eq!(
            s.image("acme/a").unwrap().annotations[ANNOTATION_REVISION],
            "abc"
        );
        assert_eq!(s.image("acme/a").unwrap().platforms, ["linux/amd64"]);
        assert!(s.blob("acme/a", &l.to_string()).is_ok());
        // b's layer exists on disk under b, but acme/a does not reference it.
        assert!(matches!(
            s.blob("acme/a", &l2.to_string()),
            Err(StoreError::BlobUnknown)
        ));
        assert!(matches!(s.image("acme"), Err(StoreError::NameUnknown)));
        assert!(matches!(s.image("../x"), Err(StoreError::NameInvalid)));
        // Retagged in place: seen on the next request.
        layout(tmp.path(), "acme/a", "v2", b"layer-a");
        assert_eq!(s.tags("acme/a").unwrap(), ["v2"]);
        // A new image appears.
        layout(tmp.path(), "c", "latest", b"c");
        assert!(s.catalog().contains(&"c".to_string()));
        assert!(s.manifest("c", "latest").is_ok());
    }

    #[test]
    fn symlinks_out_of_the_root_lead_nowhere() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        let root = tmp.path().join("root");
        let (_, l) = layout(&outside, "evil", "latest", b"secret");
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(outside.join("evil"), root.join("evil")).unwrap();
        let s = Store::open(&root).unwrap();
        assert!(s.catalog().is_empty());
        assert!(matches!(s.image("evil"), Err(StoreError::NameUnknown)));
        // An image whose layer blob is a symlink to a file outside the root.
        let (_, l3) = layout(&root, "m", "latest", b"secret");
        let blob = root.join("m/blobs/sha256").join(l3.hex());
        fs::remove_file(&blob).unwrap();
        std::os::unix::fs::symlink(outside.join("evil/blobs/sha256").join(l.hex()), &blob).unwrap();
        assert!(matches!(
            s.blob("m", &l3.to_string()),
            Err(StoreError::BlobUnknown)
        ));
    }

    #[test]
    fn the_toc_of_a_built_layer_is_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("config.json"), b"{}").unwrap();
        let (entries, contents) = crate::source::DirSource::scan(&src).unwrap().into_entries();
        let opts = crate::layer::Options::default();
        let (info, out) =
            crate::layer::build(entries, &contents, &opts, Vec::new(), &|_| {}).unwrap();
        let blob = tmp.path().join("blob");
        fs::write(&blob, &out).unwrap();
        let toc = read_toc(&File::open(&blob).unwrap(), out.len() as u64).unwrap();
        let config = toc
            .entries
            .iter()
            .find(|e| e.name == "config.json")
            .unwrap();
        let want = info
            .file_digests
            .iter()
            .find(|(p, _)| p == "config.json")
            .unwrap();
        assert_eq!(config.digest, want.1.to_string());
        // The same files from a zstd:chunked layer, through its footer.
        let zopts = crate::layer::Options {
            format: crate::layer::Format::ZstdChunked,
            ..Default::default()
        };
        let (entries, contents) = crate::source::DirSource::scan(&src).unwrap().into_entries();
        let (_, zout) =
            crate::layer::build(entries, &contents, &zopts, Vec::new(), &|_| {}).unwrap();
        fs::write(&blob, &zout).unwrap();
        let files = layer_files(&File::open(&blob).unwrap(), zout.len() as u64).unwrap();
        let files: Vec<_> = files.iter().map(|f| (f.name.as_str(), f.size)).collect();
        assert_eq!(files, [("config.json", 2)]);
        // Not an eStargz blob.
        fs::write(&blob, [0u8; 100]).unwrap();
        assert!(matches!(
            read_toc(&File::open(&blob).unwrap(), 100),
            Err(TocError::NoFooter)
        ));
    }
}
