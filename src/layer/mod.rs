//! Layer format code: a sorted set of entries → a deterministic tar stream → an eStargz
//! or zstd:chunked blob. Nothing here knows where the files came from.
//!
//! Both formats share one pipeline (`members`): the tar stream is cut into members that
//! are compressed in parallel and written back in order. What differs is how a member
//! is compressed, where the cuts go, and what follows the last member.

pub mod bound;
pub mod encoder;
pub mod estargz;
#[cfg(all(target_arch = "x86_64", feature = "isal"))]
mod isal;
pub(crate) mod members;
pub mod reader;
pub mod tar;
pub mod zstd_chunked;

use crate::digest::Digest;
use crate::limits;
use crate::names::{self, PathRule};
pub use encoder::Encoder;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

/// The layer formats depotai writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// eStargz (`tar+gzip`), lazily pulled by the stargz snapshotter (BuildKit, containerd).
    #[default]
    Estargz,
    /// zstd:chunked (`tar+zstd`), partially pulled by podman, buildah and CRI-O.
    ZstdChunked,
}

impl Format {
    /// The name on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Format::Estargz => "estargz",
            Format::ZstdChunked => "zstd-chunked",
        }
    }

    /// The compression level used when none is given.
    pub fn default_level(self) -> i32 {
        match self {
            Format::Estargz => estargz::DEFAULT_LEVEL,
            Format::ZstdChunked => zstd_chunked::DEFAULT_LEVEL,
        }
    }

    /// Levels the format's default encoder accepts (see [`Options::levels`]).
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Format::Estargz => Encoder::Libdeflate.levels(),
            Format::ZstdChunked => 1..=19,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "estargz" => Ok(Format::Estargz),
            "zstd-chunked" | "zstd:chunked" => Ok(Format::ZstdChunked),
            _ => Err(format!(
                "unknown layer format {s:?} (use estargz or zstd-chunked)"
            )),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub format: Format,
    /// Payload chunk size in bytes; each chunk is its own gzip member or zstd frame.
    pub chunk_size: u64,
    /// Compression threads. The output never depends on it.
    pub threads: usize,
    /// Paths to put first, before `.prefetch.landmark` (eStargz only).
    pub prefetch: Vec<String>,
    /// Compression level: for eStargz the encoder's (libdeflate 0–12, ISA-L 1–2), for
    /// zstd:chunked zstd 1–19. `None` is the default of the format and encoder.
    pub level: Option<i32>,
    /// The deflate encoder of eStargz members (zstd:chunked has only zstd).
    pub encoder: Encoder,
    /// The directory every file of the model goes under in the layer (`--prefix`), as
    /// a relative tar path such as `models` ([`parse_prefix`]); empty: the root. The
    /// TOC, the landmarks' place at the root excepted, and every tar name follow it.
    pub prefix: String,
}

impl Options {
    /// The level the encoder runs at.
    pub fn effective_level(&self) -> i32 {
        self.level.unwrap_or_else(|| match self.format {
            Format::Estargz => self.encoder.default_level(),
            Format::ZstdChunked => self.format.default_level(),
        })
    }

    /// Levels the format and encoder accept.
    pub fn levels(&self) -> std::ops::RangeInclusive<i32> {
        match self.format {
            Format::Estargz => self.encoder.levels(),
            Format::ZstdChunked => self.format.levels(),
        }
    }

    /// The name of what compresses the members: the eStargz encoder, or `zstd`.
    pub fn encoder_name(&self) -> &'static str {
        match self.format {
            Format::Estargz => self.encoder.name(),
            Format::ZstdChunked => "zstd",
        }
    }

    /// Whether the encoder applies to the format and may run on this CPU (see
    /// [`Encoder::check_cpu`]). Cheap: the CLI calls it before any download.
    pub fn check_encoder(&self) -> Result<(), LayerError> {
        if self.format == Format::ZstdChunked && self.encoder != Encoder::Libdeflate {
            return Err(LayerError::Encoder(format!(
                "--encoder {} applies to --format estargz only: zstd:chunked is compressed with zstd",
                self.encoder
            )));
        }
        self.encoder.check_cpu()
    }

    /// Whether the chunk size is in [`limits::MIN_CHUNK_SIZE`]..=[`limits::MAX_CHUNK_SIZE`].
    /// Cheap: checked before anything is downloaded or written.
    pub fn check_chunk_size(&self) -> Result<(), LayerError> {
        if (limits::MIN_CHUNK_SIZE..=limits::MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            Ok(())
        } else {
            Err(LayerError::ChunkSize(self.chunk_size))
        }
    }

    /// The bytes to skip in a tar name for the model's path: the prefix and its `/`.
    pub(crate) fn prefix_len(&self) -> usize {
        prefix_len(&self.prefix)
    }

    /// The effective level, if the format and encoder accept it (and the encoder this
    /// CPU).
    pub(crate) fn checked_level(&self) -> Result<i32, LayerError> {
        self.check_encoder()?;
        let level = self.effective_level();
        let range = self.levels();
        if !range.contains(&level) {
            return Err(LayerError::Level {
                format: self.format,
                encoder: self.encoder_name(),
                level,
                min: *range.start(),
                max: *range.end(),
            });
        }
        Ok(level)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            format: Format::default(),
            chunk_size: estargz::DEFAULT_CHUNK_SIZE,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch: Vec::new(),
            level: None,
            encoder: Encoder::default(),
            prefix: String::new(),
        }
    }
}

/// What a finished layer is, for the image config and manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    pub format: Format,
    /// sha256 of the blob (the layer's digest in the manifest).
    pub digest: Digest,
    pub size: u64,
    /// sha256 of the decompressed stream (`rootfs.diff_ids`).
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// The digest that authenticates the TOC: for eStargz the sha256 of the TOC JSON,
    /// for zstd:chunked the sha256 of the compressed manifest (its manifest-checksum).
    pub toc_digest: Digest,
    /// Blob offset of the TOC: the TOC member (eStargz) or the compressed manifest
    /// (zstd:chunked).
    pub toc_offset: u64,
    /// Regular files taken from the source (landmark excluded).
    pub files: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
    /// TOC entries, landmark and chunk entries included.
    pub toc_entries: u64,
    /// The sha256 of every regular file's content, by tar name, in layer order.
    pub file_digests: Vec<(String, Digest)>,
    /// The layer descriptor's media type.
    pub media_type: &'static str,
    /// The layer descriptor's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Builds the layer in `opts.format` from `entries` into `out`. File contents are read
/// once, through `contents`; `progress` is told how many content bytes were read as they
/// are read. The options are checked here, once, for both formats.
pub fn build<W: Write + Send>(
    entries: Vec<Entry>,
    contents: &dyn Contents,
    opts: &Options,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(LayerInfo, W), LayerError> {
    opts.check_chunk_size()?;
    let level = opts.checked_level()?;
    match opts.format {
        Format::Estargz => estargz::build(entries, contents, opts, level, out, progress),
        Format::ZstdChunked => zstd_chunked::build(entries, contents, opts, level, out, progress),
    }
}

/// A writer that only counts: how long a document will be before it is written.
pub(crate) struct ByteCount(pub u64);

impl Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Fixed permissions: the image never depends on the builder's umask or file owners.
pub const FILE_MODE: u32 = 0o644;
pub const EXEC_MODE: u32 = 0o755;
pub const DIR_MODE: u32 = 0o755;
pub const SYMLINK_MODE: u32 = 0o777;

/// What one path in the image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File { size: u64, executable: bool },
    Symlink { target: String },
}

/// One path of the image: relative, `/`-separated, without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
}

/// Bytes of file content the entries announce.
pub fn content_size(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|e| match e.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        })
        .sum()
}

/// Where file contents come from. `open` is called once per non-empty file, in output
/// order; the reader must yield exactly the size the entry announced.
pub trait Contents: Sync {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>>;
}

/// Contents whose reads fail with `why` once `stop` is set, so a layer under way gives up
/// at its next read (after a signal, or when a layer built beside it failed).
pub struct Stoppable<'a> {
    pub inner: &'a dyn Contents,
    pub stop: &'a AtomicBool,
    pub why: &'static str,
}

impl Contents for Stoppable<'_> {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(StoppableRead {
            inner: self.inner.open(path)?,
            stop: self.stop,
            why: self.why,
        }))
    }
}

struct StoppableRead<'a> {
    inner: Box<dyn Read + Send + 'a>,
    stop: &'a AtomicBool,
    why: &'static str,
}

impl Read for StoppableRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            // Not ErrorKind::Interrupted: readers retry that one.
            return Err(io::Error::other(self.why));
        }
        self.inner.read(buf)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("invalid path {} in the image: {why}", crate::limits::shown(path))]
    InvalidPath { path: String, why: PathRule },
    #[error("{path:?} appears twice")]
    Duplicate { path: String },
    #[error("{path:?} is both a file and a directory")]
    NotADirectory { path: String },
    #[error("{path:?} is reserved for the eStargz format and cannot be a model file")]
    Reserved { path: String },
    #[error("--prefetch path {path:?} is not in the image")]
    PrefetchNotFound { path: String },
    #[error("the layer has no files")]
    Empty,
    #[error(
        "--chunk-size {0} (bytes) is out of range: use 64KiB to 64MiB (a size takes a unit, e.g. 4MiB)"
    )]
    ChunkSize(u64),
    /// The layer's TOC (or tar-split) could pass a reader's limit, first at `path`.
    #[error("{}", bound::too_large(path, *limit))]
    TocTooLarge {
        path: String,
        limit: bound::TocLimit,
    },
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} changed while it was read ({what}); rebuild when the files are stable")]
    Changed { path: String, what: &'static str },
    #[error("writing the layer: {0}")]
    Write(io::Error),
    #[error("compressing the layer failed: {0}")]
    Compress(String),
    /// The encoder cannot be used here (wrong format, or a CPU where its bytes differ).
    #[error("{0}")]
    Encoder(String),
    #[error(
        "compression level {level} is out of range for {format} ({encoder}: use {min} to {max})"
    )]
    Level {
        format: Format,
        encoder: &'static str,
        level: i32,
        min: i32,
        max: i32,
    },
    #[error("--prefetch applies to eStargz only: {0} has no landmark and pulls files on demand")]
    PrefetchUnsupported(Format),
    #[error("--prefix {0:?} is not absolute: name the directory the files go under in the image, such as /models")]
    PrefixNotAbsolute(String),
    #[error("--prefix {prefix:?} is not a directory an image may hold: {why}")]
    InvalidPrefix { prefix: String, why: PathRule },
    #[error("--prefix {0:?} starts with a name eStargz keeps at the root of every layer (stargz.index.json and the landmarks)")]
    PrefixReserved(String),
}

/// The `--prefix` of a build (`/models`, `/models/`, `/opt/ml/model`) as the relative
/// tar path every file goes under (`models`), checked with the one path policy
/// ([`names::check_path`]): absolute, no `.`/`..` or empty components, and no first
/// component that eStargz reserves at the root. An empty argument is refused (not
/// absolute) rather than taken for the root: no prefix is no `--prefix`.
pub fn parse_prefix(arg: &str) -> Result<String, LayerError> {
    let Some(rest) = arg.strip_prefix('/') else {
        return Err(LayerError::PrefixNotAbsolute(arg.to_string()));
    };
    // One trailing slash names the same directory; `//` is an empty component.
    let rel = rest.strip_suffix('/').unwrap_or(rest);
    names::check_path(rel).map_err(|why| LayerError::InvalidPrefix {
        prefix: arg.to_string(),
        why,
    })?;
    let first = rel.split('/').next().unwrap_or_default();
    if [TOC_NAME, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK].contains(&first) {
        return Err(LayerError::PrefixReserved(arg.to_string()));
    }
    Ok(rel.to_string())
}

/// The bytes `prefix` (relative, [`parse_prefix`]) and its `/` put before a model's path.
fn prefix_len(prefix: &str) -> usize {
    if prefix.is_empty() {
        0
    } else {
        prefix.len() + 1
    }
}

/// `entries` and `prefetch` as tar paths under `prefix` (unchanged without one).
pub(crate) fn under_prefix(
    mut entries: Vec<Entry>,
    prefetch: &[String],
    prefix: &str,
) -> (Vec<Entry>, Vec<String>) {
    if prefix.is_empty() {
        return (entries, prefetch.to_vec());
    }
    for e in &mut entries {
        e.path = format!("{prefix}/{}", e.path);
    }
    let prefetch = prefetch
        .iter()
        .map(|p| format!("{prefix}/{}", p.trim_start_matches("./").trim_matches('/')))
        .collect();
    (entries, prefetch)
}

/// Validates a whole set of entries as one image under `prefix`, before it is split
/// into layers: unsafe paths, duplicates, a file that is also a directory, reserved
/// names (with `landmarks`), no file at all, and `--prefetch` paths that are not in
/// the image.
pub fn check_entries(
    entries: &[Entry],
    prefetch: &[String],
    landmarks: bool,
    prefix: &str,
) -> Result<(), LayerError> {
    if !entries
        .iter()
        .any(|e| !matches!(e.kind, EntryKind::Directory))
    {
        return Err(LayerError::Empty);
    }
    plan(entries.to_vec(), prefetch, landmarks, prefix).map(|_| ())
}

pub(crate) const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
pub(crate) const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
pub(crate) const TOC_NAME: &str = "stargz.index.json";

/// One entry in output order, with the landmark made explicit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Planned {
    Landmark(&'static str),
    Source(Entry),
}

/// Puts the entries in their one output order: parents added where missing, then
/// sorted by path bytes (a parent is a prefix of its children, so it always comes
/// first). With `prefetch`, the listed paths (and their parents; a directory brings
/// everything below it) come first, then `.prefetch.landmark`; otherwise
/// `.no.prefetch.landmark` leads. Without `landmarks` (zstd:chunked) there is neither
/// landmark, no reordering, and no reserved name.
///
/// With a `prefix` ([`parse_prefix`]) every path, prefetch paths too, is taken under
/// it first, so its directories are parents like any other; the landmarks stay at the
/// root, where readers look for them. A common prefix keeps the byte order of the
/// paths, so the files come in the same order with or without one.
pub(crate) fn plan(
    entries: Vec<Entry>,
    prefetch: &[String],
    landmarks: bool,
    prefix: &str,
) -> Result<Vec<Planned>, LayerError> {
    let (entries, prefetch) = under_prefix(entries, prefetch, prefix);
    let prefetch = &prefetch[..];
    let mut by_path: BTreeMap<String, Entry> = BTreeMap::new();
    for e in entries {
        names::check_path(&e.path).map_err(|why| LayerError::InvalidPath {
            path: e.path.clone(),
            why,
        })?;
        if landmarks
            && [TOC_NAME, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK].contains(&e.path.as_str())
        {
            return Err(LayerError::Reserved { path: e.path });
        }
        if by_path.contains_key(&e.path) {
            return Err(LayerError::Duplicate { path: e.path });
        }
        by_path.insert(e.path.clone(), e);
    }
    // One layer of an image may hold only directories (the empty ones of a per-file
    // plan); the image as a whole must have a file (`check_entries`).
    if by_path.is_empty() {
        return Err(LayerError::Empty);
    }
    let paths: Vec<String> = by_path.keys().cloned().collect();
    for p in paths {
        let mut parent = p.as_str();
        while let Some(i) = parent.rfind('/') {
            parent = &parent[..i];
            match by_path.get(parent) {
                Some(Entry {
                    kind: EntryKind::Directory,
                    ..
                }) => {}
                Some(_) => {
                    return Err(LayerError::NotADirectory {
                        path: parent.to_string(),
                    })
                }
                None => {
                    by_path.insert(
                        parent.to_string(),
                        Entry {
                            path: parent.to_string(),
                            kind: EntryKind::Directory,
                        },
                    );
                }
            }
        }
    }

    if !landmarks {
        if !prefetch.is_empty() {
            return Err(LayerError::PrefetchUnsupported(Format::ZstdChunked));
        }
        return Ok(by_path.into_values().map(Planned::Source).collect());
    }
    if prefetch.is_empty() {
        let mut out = vec![Planned::Landmark(NO_PREFETCH_LANDMARK)];
        out.extend(by_path.into_values().map(Planned::Source));
        return Ok(out);
    }

    let mut out = Vec::new();
    for wanted in prefetch {
        let wanted = wanted.trim_start_matches("./").trim_matches('/');
        if !by_path.contains_key(wanted) {
            // Named as the user gave it, without the prefix.
            return Err(LayerError::PrefetchNotFound {
                path: wanted[prefix_len(prefix)..].to_string(),
            });
        }
        let mut chain: Vec<&str> = Vec::new();
        let mut p = wanted;
        chain.push(p);
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            chain.push(p);
        }
        let under = format!("{wanted}/");
        let mut take: Vec<String> = chain.into_iter().rev().map(str::to_string).collect();
        take.extend(
            by_path
                .range(under.clone()..)
                .take_while(|(k, _)| k.starts_with(&under))
                .map(|(k, _)| k.clone()),
        );
        for k in take {
            if let Some(e) = by_path.remove(&k) {
                out.push(Planned::Source(e));
            }
        }
    }
    out.push(Planned::Landmark(PREFETCH_LANDMARK));
    out.extend(by_path.into_values().map(Planned::Source));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stoppable_readers_fail_with_their_reason_once_stopped() {
        struct Bytes;
        impl Contents for Bytes {
            fn open(&self, _: &str) -> io::Result<Box<dyn Read + Send + '_>> {
                Ok(Box::new(&b"hello world"[..]))
            }
        }
        let stop = AtomicBool::new(false);
        let c = Stoppable {
            inner: &Bytes,
            stop: &stop,
            why: "interrupted by a signal",
        };
        let mut r = c.open("x").unwrap();
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).unwrap();
        stop.store(true, Ordering::Relaxed);
        let err = r.read(&mut buf).unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::Interrupted);
        assert_eq!(err.to_string(), "interrupted by a signal");
    }

    #[test]
    fn chunk_sizes_outside_64_kib_to_64_mib_are_refused_naming_the_range() {
        // The message states the range; the limits are what it states.
        assert_eq!(
            (limits::MIN_CHUNK_SIZE, limits::MAX_CHUNK_SIZE),
            (64 << 10, 64 << 20)
        );
        for (chunk_size, ok) in [
            (4, false),
            ((64 << 10) - 1, false),
            (64 << 10, true),
            (4 << 20, true),
            (64 << 20, true),
            ((64 << 20) + 1, false),
            (1 << 30, false),
        ] {
            let opts = Options {
                chunk_size,
                ..Options::default()
            };
            match opts.check_chunk_size() {
                Ok(()) => assert!(ok, "{chunk_size}"),
                Err(e) => {
                    assert!(!ok, "{chunk_size}");
                    assert_eq!(
                        e.to_string(),
                        format!("--chunk-size {chunk_size} (bytes) is out of range: use 64KiB to 64MiB (a size takes a unit, e.g. 4MiB)")
                    );
                }
            }
        }
    }

    fn file(p: &str) -> Entry {
        Entry {
            path: p.into(),
            kind: EntryKind::File {
                size: 1,
                executable: false,
            },
        }
    }

    fn names(plan: &[Planned]) -> Vec<String> {
        plan.iter()
            .map(|p| match p {
                Planned::Landmark(n) => n.to_string(),
                Planned::Source(e) => e.path.clone(),
            })
            .collect()
    }

    #[test]
    fn entries_are_sorted_by_path_bytes_with_parents_added() {
        let plan = plan(
            vec![file("b/c/d.txt"), file("a-b"), file("a/x"), file("B")],
            &[],
            true,
            "",
        )
        .unwrap();
        assert_eq!(
            names(&plan),
            [
                ".no.prefetch.landmark",
                "B",
                "a",
                "a-b",
                "a/x",
                "b",
                "b/c",
                "b/c/d.txt"
            ]
        );
    }

    #[test]
    fn prefetch_paths_come_first_with_their_parents_then_the_landmark() {
        let plan = plan(
            vec![
                file("z.txt"),
                file("m/cfg.json"),
                file("m/w.bin"),
                file("d/a"),
                file("d/b"),
            ],
            &["m/cfg.json".into(), "d".into()],
            true,
            "",
        )
        .unwrap();
        assert_eq!(
            names(&plan),
            [
                "m",
                "m/cfg.json",
                "d",
                "d/a",
                "d/b",
                ".prefetch.landmark",
                "m/w.bin",
                "z.txt"
            ]
        );
    }

    #[test]
    fn unsafe_duplicate_reserved_and_missing_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            ".wh.a",
            "a\tb",
        ] {
            assert!(
                matches!(
                    plan(vec![file(bad)], &[], true, ""),
                    Err(LayerError::InvalidPath { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            plan(vec![file("a"), file("a")], &[], true, ""),
            Err(LayerError::Duplicate { .. })
        ));
        assert!(matches!(
            plan(vec![file("stargz.index.json")], &[], true, ""),
            Err(LayerError::Reserved { .. })
        ));
        assert!(matches!(
            plan(vec![file("a"), file("a/b")], &[], true, ""),
            Err(LayerError::NotADirectory { .. })
        ));
        assert!(matches!(
            plan(vec![file("a")], &["nope".into()], true, ""),
            Err(LayerError::PrefetchNotFound { .. })
        ));
        assert!(matches!(
            plan(vec![], &[], true, ""),
            Err(LayerError::Empty)
        ));
        let dir = Entry {
            path: "d".into(),
            kind: EntryKind::Directory,
        };
        assert!(matches!(
            check_entries(&[dir], &[], true, ""),
            Err(LayerError::Empty)
        ));
    }

    #[test]
    fn under_a_prefix_its_directories_lead_the_landmark_stays_at_the_root_and_prefetch_names_the_models_path(
    ) {
        let p = plan(
            vec![file("stargz.index.json"), file("w.bin"), file("cfg.json")],
            &["cfg.json".into()],
            true,
            "opt/ml",
        )
        .unwrap();
        // A model file named like the TOC is no longer at the root: nothing to reserve.
        assert_eq!(
            names(&p),
            [
                "opt",
                "opt/ml",
                "opt/ml/cfg.json",
                ".prefetch.landmark",
                "opt/ml/stargz.index.json",
                "opt/ml/w.bin"
            ]
        );
        match plan(vec![file("a")], &["nope".into()], true, "models") {
            Err(LayerError::PrefetchNotFound { path }) => assert_eq!(path, "nope"),
            other => panic!("{other:?}"),
        }
        for (arg, want) in [
            ("/models", Ok("models")),
            ("/models/", Ok("models")),
            ("/opt/ml/model", Ok("opt/ml/model")),
            ("models", Err("not absolute")),
            ("", Err("not absolute")),
            ("/", Err("empty name")),
            ("/a//b", Err("empty, '.' or '..' component")),
            ("/a/./b", Err("empty, '.' or '..' component")),
            ("/.no.prefetch.landmark", Err("eStargz keeps at the root")),
        ] {
            match (parse_prefix(arg), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{arg:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{arg:?}: {e}"),
                (got, w) => panic!("{arg:?}: {got:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn without_landmarks_the_order_is_plain_and_no_name_is_reserved() {
        let plan = plan(
            vec![
                file("stargz.index.json"),
                file("b/c"),
                file(".prefetch.landmark"),
            ],
            &[],
            false,
            "",
        )
        .unwrap();
        assert_eq!(
            names(&plan),
            [".prefetch.landmark", "b", "b/c", "stargz.index.json"]
        );
        assert!(matches!(
            super::plan(vec![file("a")], &["a".into()], false, ""),
            Err(LayerError::PrefetchUnsupported(_))
        ));
    }
}
