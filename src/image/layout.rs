//! Writing an OCI image layout so that it appears all at once: everything is written
//! into a staging directory beside the target, synced, and renamed into place. A failed
//! or interrupted build leaves at most a `.NAME.partial-PID` directory, never something
//! that looks like a finished image; an existing image is replaced only on success.

use super::{Blob, ImageDocs, ImageError};
use crate::layer::LayerInfo;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The version of the image layout spec the layouts are written in (`oci-layout`).
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The staging name of layer `n`'s blob until its digest is known.
fn layer_partial(n: usize) -> String {
    format!(".layer-{n}.partial")
}

pub struct LayoutWriter {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sibling(target: &Path, what: &str) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    target.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// Removes `.NAME.partial-PID` / `.NAME.old-PID` left by builds that were killed (their
/// process is gone), so interrupted builds do not pile up. Only where `/proc` can tell.
/// Every build of `target` does this first; `build --all` also does it for images that
/// are up to date and so are not built.
pub fn remove_stale_siblings(target: &Path) {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = name.to_string_lossy();
    let Ok(dir) = fs::read_dir(parent) else {
        return;
    };
    for e in dir.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let pid = [".partial-", ".old-"].iter().find_map(|what| {
            file.strip_prefix(&format!(".{name}{what}"))
                .and_then(|pid| pid.parse::<u32>().ok())
        });
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

impl LayoutWriter {
    /// Prepares a staging directory for `target`. Refuses a target that exists but is
    /// not an OCI layout, so a mistyped `--output` never deletes someone's files.
    pub fn create(target: &Path) -> Result<LayoutWriter, ImageError> {
        if target.exists() {
            let is_layout = target.join("oci-layout").is_file();
            let is_empty_dir = fs::read_dir(target)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !is_layout && !is_empty_dir {
                return Err(ImageError::NotALayout(target.to_path_buf()));
            }
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        remove_stale_siblings(target);
        let staging = sibling(target, "partial");
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        let blobs = staging.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        Ok(LayoutWriter {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// A fresh file in the staging directory for the blob of layer `n` (bottom first).
    pub fn layer_file(&self, n: usize) -> Result<File, ImageError> {
        let p = self.staging.join("blobs/sha256").join(layer_partial(n));
        File::create(&p).map_err(io_err(&p))
    }

    fn raw_partial(&self, path: &str) -> PathBuf {
        // Named by a hash of the path: any file name, any depth, one flat directory.
        let id = crate::digest::Digest::of(path.as_bytes()).hex();
        self.staging
            .join("blobs/sha256")
            .join(format!(".raw-{id}.partial"))
    }

    /// A fresh staging file for the raw copy of the model's file `path` (a ModelPack
    /// layer), until its digest is known.
    pub fn raw_file(&self, path: &str) -> Result<File, ImageError> {
        let p = self.raw_partial(path);
        File::create(&p).map_err(io_err(&p))
    }

    /// Names the raw copy of `path` by its (checked) digest.
    pub fn name_raw(&self, path: &str, digest: &crate::digest::Digest) -> Result<(), ImageError> {
        let partial = self.raw_partial(path);
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&partial))?;
        let named = self.staging.join("blobs/sha256").join(digest.hex());
        fs::rename(&partial, &named).map_err(io_err(&named))
    }

    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let p = self.staging.join(rel);
        let mut f = File::create(&p).map_err(io_err(&p))?;
        f.write_all(bytes).map_err(io_err(&p))?;
        f.sync_all().map_err(io_err(&p))
    }

    /// Adds a file beside `index.json` (e.g. a build record) that is renamed into place
    /// with the image. It is no blob and no document refers to it: not part of the image.
    pub fn put_extra(&self, name: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\'])
            && !matches!(name, "oci-layout" | "index.json" | "blobs");
        if !plain {
            return Err(ImageError::Io {
                path: self.staging.join(name),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a plain file name outside the layout's own",
                ),
            });
        }
        self.put(name, bytes)
    }

    fn put_blob(&self, blob: &Blob) -> Result<(), ImageError> {
        self.put(&format!("blobs/sha256/{}", blob.digest.hex()), &blob.bytes)
    }

    /// Stores the documents, names each layer blob by its digest (`layers[n]` was
    /// written to `layer_file(n)`), and moves the finished layout into place.
    pub fn commit(mut self, layers: &[LayerInfo], docs: &ImageDocs) -> Result<PathBuf, ImageError> {
        let blobs = self.staging.join("blobs/sha256");
        for (n, layer) in layers.iter().enumerate() {
            let partial = blobs.join(layer_partial(n));
            File::open(&partial)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&partial))?;
            let final_layer = blobs.join(layer.digest.hex());
            fs::rename(&partial, &final_layer).map_err(io_err(&final_layer))?;
        }
        for c in &docs.configs {
            self.put_blob(c)?;
        }
        for (_, m) in &docs.manifests {
            self.put_blob(m)?;
        }
        self.put_blob(&docs.index)?;
        for r in &docs.referrers {
            for b in &r.blobs {
                self.put_blob(b)?;
            }
            self.put_blob(&r.manifest)?;
            // Every blob a referrer names is in the layout (the twin's raw layers were
            // teed in as their files were read): no layout names a blob it lacks.
            let m: serde_json::Value =
                serde_json::from_slice(&r.manifest.bytes).unwrap_or_default();
            for l in m["layers"].as_array().into_iter().flatten() {
                let hex = l["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("sha256:");
                let p = blobs.join(hex);
                if !p.is_file() {
                    return Err(io_err(&p)(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "a referrer's layer was never written",
                    )));
                }
            }
        }
        self.put("oci-layout", OCI_LAYOUT)?;
        self.put("index.json", &docs.layout_index)?;

        // Swap into place: the old image (if any) stays until the new one is there.
        let old = sibling(&self.target, "old");
        let had_old = self.target.exists();
        if had_old {
            fs::rename(&self.target, &old).map_err(io_err(&self.target))?;
        }
        if let Err(e) = fs::rename(&self.staging, &self.target) {
            if had_old {
                let _ = fs::rename(&old, &self.target);
            }
            return Err(io_err(&self.target)(e));
        }
        self.committed = true;
        if had_old {
            fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok(self.target.clone())
    }
}

impl Drop for LayoutWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}
