//! Reading an OCI image layout directory: the one reader of `oci-layout`, `index.json`,
//! the index, manifest and config documents and the blob paths, for everything that
//! reads a layout (`push`, `ls`/`get`/`inspect`/`verify` of a directory, `serve`, the
//! catalogue's check that a built image is whole). A layout is untrusted input: every
//! document is read within [`limits::MAX_DOCUMENT`] bytes, its JSON shape checked
//! ([`limits::MAX_JSON_DEPTH`], [`limits::MAX_DESCRIPTORS`]) before it is parsed, its
//! size and digest checked against its descriptor; a blob is opened only if it is a
//! regular file of the size its descriptor gives. Files are opened through [`Files`]:
//! plainly, or (for `serve`) only inside a root.

use super::layout::OCI_LAYOUT_VERSION;
use crate::digest::Digest;
use crate::limits::{self, shown};
use serde::de::DeserializeOwned;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What is wrong with a layout, or with reading it.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A file the layout needs is not there (or is no regular file we may read).
    #[error("{} is missing", path.display())]
    Missing { path: PathBuf },
    #[error("{}: not an OCI image layout ({why})", path.display())]
    NotALayout { path: PathBuf, why: String },
    #[error("{} is larger than {limit} bytes, too large for an index or manifest", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{what}: {msg}")]
    Malformed { what: String, msg: String },
    #[error("bad digest {0}")]
    BadDigest(String),
    #[error("{} holds {actual}, not {expected}", path.display())]
    DigestMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{} is {actual} bytes, not the {expected} its descriptor says", path.display())]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("index.json lists no image")]
    NoImage,
}

/// How a layout's files are opened.
pub trait Files: Send + Sync {
    /// `path` opened for reading with its length, or `None` when there is no regular
    /// file there that may be read.
    fn open(&self, path: &Path) -> io::Result<Option<(File, u64)>>;
}

/// Files opened as they are.
pub struct PlainFiles;

impl Files for PlainFiles {
    fn open(&self, path: &Path) -> io::Result<Option<(File, u64)>> {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let m = f.metadata()?;
        let len = m.len();
        Ok(m.is_file().then_some((f, len)))
    }
}

/// An OCI image layout directory.
#[derive(Clone)]
pub struct Layout {
    root: PathBuf,
    files: Arc<dyn Files>,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout").field("root", &self.root).finish()
    }
}

/// `bytes` as JSON: its shape checked before it is parsed; `what` names it in messages.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, LayoutError> {
    let bad = |msg: String| LayoutError::Malformed {
        what: what.to_string(),
        msg,
    };
    limits::check_json_shape(bytes, limits::MAX_JSON_DEPTH, limits::MAX_DESCRIPTORS)
        .map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(bytes).map_err(|e| bad(limits::one_line(&e.to_string(), 200)))
}

/// A descriptor's `sha256:` digest.
pub fn digest_of(descriptor: &serde_json::Value) -> Result<Digest, LayoutError> {
    let d = descriptor["digest"].as_str().unwrap_or_default();
    Digest::parse(d).ok_or_else(|| LayoutError::BadDigest(shown(d)))
}

impl Layout {
    /// The layout at `root`, its files opened plainly.
    pub fn new(root: &Path) -> Layout {
        Layout::with_files(root, Arc::new(PlainFiles))
    }

    /// The layout at `root`, its files opened by `files`.
    pub fn with_files(root: &Path, files: Arc<dyn Files>) -> Layout {
        Layout {
            root: root.to_path_buf(),
            files,
        }
    }

    /// The layout at `root`, its files opened plainly, checked to be one: `oci-layout`
    /// says version 1.0.0 (`index.json` is read when it is asked for).
    pub fn open(root: &Path) -> Result<Layout, LayoutError> {
        let layout = Layout::new(root);
        layout.check_version()?;
        Ok(layout)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `dir` looks like a layout (`index.json` is there), without reading it.
    pub fn is_layout(dir: &Path) -> bool {
        dir.join("index.json").is_file()
    }

    /// `oci-layout` says `{"imageLayoutVersion": "1.0.0"}`.
    pub fn check_version(&self) -> Result<(), LayoutError> {
        let path = self.root.join("oci-layout");
        let not = |why: String| LayoutError::NotALayout {
            path: self.root.clone(),
            why,
        };
        let bytes = match self.read_bounded(&path, None) {
            Err(LayoutError::Missing { .. }) => return Err(not("no oci-layout file".into())),
            other => other?,
        };
        let v: serde_json::Value = parse(&bytes, "oci-layout")?;
        match v["imageLayoutVersion"].as_str() {
            Some(OCI_LAYOUT_VERSION) => Ok(()),
            other => Err(not(format!(
                "oci-layout gives version {}, not {OCI_LAYOUT_VERSION}",
                shown(other.unwrap_or("none"))
            ))),
        }
    }

    /// Where the blob `digest` is (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// The bytes of `index.json`, at most [`limits::MAX_DOCUMENT`].
    pub fn index_json_bytes(&self) -> Result<Vec<u8>, LayoutError> {
        self.read_bounded(&self.root.join("index.json"), None)
    }

    /// `index.json`, parsed.
    pub fn index_json(&self) -> Result<serde_json::Value, LayoutError> {
        parse(&self.index_json_bytes()?, "index.json")
    }

    /// The document blob `digest` (an index, manifest or config): at most
    /// [`limits::MAX_DOCUMENT`] bytes, of `size` bytes when the descriptor gives one,
    /// holding the bytes `digest` names.
    pub fn document_bytes(
        &self,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(digest);
        let bytes = self.read_bounded(&path, size)?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(LayoutError::DigestMismatch {
                path,
                expected: *digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// The document a descriptor names, checked as [`Layout::document_bytes`] does and
    /// parsed; `what` names it in messages.
    pub fn document(
        &self,
        descriptor: &serde_json::Value,
        what: &str,
    ) -> Result<(Digest, Vec<u8>, serde_json::Value), LayoutError> {
        let digest = digest_of(descriptor)?;
        let bytes = self.document_bytes(&digest, descriptor["size"].as_u64())?;
        let v = parse(&bytes, what)?;
        Ok((digest, bytes, v))
    }

    /// The blob `digest`, opened, if it is a regular file of `size` bytes (any size when
    /// `None`).
    pub fn blob(&self, digest: &Digest, size: Option<u64>) -> Result<(File, u64), LayoutError> {
        let path = self.blob_path(digest);
        let (f, len) = self.open_file(&path)?;
        if let Some(want) = size.filter(|s| *s != len) {
            return Err(LayoutError::SizeMismatch {
                path,
                expected: want,
                actual: len,
            });
        }
        Ok((f, len))
    }

    fn open_file(&self, path: &Path) -> Result<(File, u64), LayoutError> {
        match self.files.open(path) {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(LayoutError::Missing {
                path: path.to_path_buf(),
            }),
            Err(source) => Err(LayoutError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// A small file, at most [`limits::MAX_DOCUMENT`] bytes (and exactly `size` if
    /// given), read whole.
    fn read_bounded(&self, path: &Path, size: Option<u64>) -> Result<Vec<u8>, LayoutError> {
        let (f, len) = self.open_file(path)?;
        let too_large = || LayoutError::TooLarge {
            path: path.to_path_buf(),
            limit: limits::MAX_DOCUMENT,
        };
        if len > limits::MAX_DOCUMENT {
            return Err(too_large());
        }
        let mut b = Vec::with_capacity(len as usize);
        // The file may have grown since it was measured.
        f.take(limits::MAX_DOCUMENT + 1)
            .read_to_end(&mut b)
            .map_err(|source| LayoutError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if b.len() as u64 > limits::MAX_DOCUMENT {
            return Err(too_large());
        }
        if let Some(want) = size.filter(|s| *s != b.len() as u64) {
            return Err(LayoutError::SizeMismatch {
                path: path.to_path_buf(),
                expected: want,
                actual: b.len() as u64,
            });
        }
        Ok(b)
    }
}

/// The first entry of a layout's `index.json`: the image it is about.
pub fn first_image(index_json: &serde_json::Value) -> Result<&serde_json::Value, LayoutError> {
    index_json["manifests"].get(0).ok_or(LayoutError::NoImage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn a_document_is_read_only_with_its_size_and_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::new(tmp.path());
        let doc = br#"{"schemaVersion":2}"#;
        let d = Digest::of(doc);
        put(tmp.path(), &format!("blobs/sha256/{}", d.hex()), doc);
        assert_eq!(l.document_bytes(&d, Some(doc.len() as u64)).unwrap(), doc);
        let e = l.document_bytes(&d, Some(3)).unwrap_err();
        assert!(
            matches!(
                e,
                LayoutError::SizeMismatch {
                    expected: 3,
                    actual: 19,
                    ..
                }
            ),
            "{e}"
        );
        // Other bytes under that name.
        put(tmp.path(), &format!("blobs/sha256/{}", d.hex()), b"{}");
        let e = l.document_bytes(&d, None).unwrap_err();
        assert!(
            matches!(e, LayoutError::DigestMismatch { expected, .. } if expected == d),
            "{e}"
        );
        let missing = Digest::of(b"none");
        assert!(matches!(
            l.document_bytes(&missing, None),
            Err(LayoutError::Missing { .. })
        ));
    }

    #[test]
    fn an_oversized_or_too_deep_document_is_refused_before_it_is_parsed() {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layout::new(tmp.path());
        let big = vec![b' '; limits::MAX_DOCUMENT as usize + 1];
        put(tmp.path(), "index.json", &big);
        assert!(
            matches!(l.index_json(), Err(LayoutError::TooLarge { limit, .. }) if limit == limits::MAX_DOCUMENT)
        );
        let deep = "[".repeat(limits::MAX_JSON_DEPTH + 1) + &"]".repeat(limits::MAX_JSON_DEPTH + 1);
        put(tmp.path(), "index.json", deep.as_bytes());
        let e = l.index_json().unwrap_err();
        assert!(
            matches!(&e, LayoutError::Malformed { what, .. } if what == "index.json"),
            "{e}"
        );
        put(tmp.path(), "index.json", br#"{"manifests":[]}"#);
        assert!(matches!(
            first_image(&l.index_json().unwrap()),
            Err(LayoutError::NoImage)
        ));
    }

    #[test]
    fn a_layout_needs_its_version_file() {
        let tmp = tempfile::tempdir().unwrap();
        put(tmp.path(), "index.json", br#"{"manifests":[]}"#);
        let e = Layout::open(tmp.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: not an OCI image layout (no oci-layout file)",
                tmp.path().display()
            )
        );
        put(
            tmp.path(),
            "oci-layout",
            br#"{"imageLayoutVersion":"2.0.0"}"#,
        );
        assert!(Layout::open(tmp.path()).is_err());
        put(
            tmp.path(),
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        assert!(Layout::open(tmp.path()).is_ok());
    }
}
