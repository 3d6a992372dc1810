//! Reading a layer from bytes nobody vouches for (a registry's answers, or a layout on
//! disk), within [`crate::limits`]: what both formats share (the errors, the checks of a
//! TOC's names and of a file's chunks, the chunk map's types) and [`ReadAt`], through
//! which the readers of [`super::estargz::reader`] and [`super::zstd_chunked::reader`]
//! are fed, from a local file or (in `remote/`) a registry's Range requests.
//!
//! Each step checks what it was given before using it: the footer's offsets against the
//! blob, the compressed size before it is fetched, the inflated size while it inflates
//! (a small member cannot grow past the limit, whatever it says), the JSON's depth and
//! entry count before it is parsed, and every entry's name.

use crate::limits::{self, shown, MAX_TOC_ENTRIES};
use crate::names;
use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, Read};
use std::rc::Rc;

/// What is wrong with a layer's footer, TOC or tar-split: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadLayer(pub String);

pub(crate) fn bad(msg: impl Into<String>) -> BadLayer {
    BadLayer(msg.into())
}

/// A reader that stops with an error (not an end of file) after `limit` bytes, and
/// remembers that it did, so the caller can say "inflates to more than …" even when a
/// parser above it reports the error its own way.
pub(crate) struct Capped<R> {
    inner: R,
    left: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One more byte means the limit is passed; end of input means it was not.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.hit.set(true);
                    Err(io::Error::other("inflates past the limit"))
                }
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

pub(crate) fn capped<R: Read>(inner: R, limit: u64) -> (Capped<R>, Rc<Cell<bool>>) {
    let hit = Rc::new(Cell::new(false));
    (
        Capped {
            inner,
            left: limit,
            hit: hit.clone(),
        },
        hit,
    )
}

/// A TOC name as it will be used: one leading `./` dropped, and a trailing `/` (of a
/// directory).
pub(crate) fn toc_name(n: &str) -> &str {
    n.strip_prefix("./").unwrap_or(n).trim_end_matches('/')
}

/// Checks every entry's name (and link target) and that no two entries share a name or
/// a file sits where another entry needs a directory. `entries` yields (name, type,
/// link name).
pub fn check_entries<'a>(
    entries: impl Iterator<Item = (&'a str, &'a str, &'a str)>,
) -> Result<(), BadLayer> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut dirs: HashSet<&str> = HashSet::new();
    let mut regular: Vec<&str> = Vec::new();
    let mut count = 0usize;
    for (name, kind, link) in entries {
        count += 1;
        if count > MAX_TOC_ENTRIES {
            return Err(bad(format!(
                "the TOC has more than {MAX_TOC_ENTRIES} entries"
            )));
        }
        let n = toc_name(name);
        if n.is_empty() && kind == "dir" {
            continue;
        }
        if let Err(why) = names::check_path(n) {
            return Err(bad(format!(
                "unsafe name in the TOC: {} ({why})",
                shown(name)
            )));
        }
        if let Err(why) = names::check_link_target(link) {
            return Err(bad(format!(
                "unusable link target for {} in the TOC ({why})",
                shown(name)
            )));
        }
        if kind == "chunk" {
            continue;
        }
        if !seen.insert(n) {
            return Err(bad(format!("{} is in the TOC twice", shown(n))));
        }
        match kind {
            "reg" => regular.push(n),
            "dir" => {
                dirs.insert(n);
            }
            _ => {}
        }
    }
    for n in regular {
        let mut at = n.len();
        while let Some(i) = n[..at].rfind('/') {
            if seen.contains(&n[..i]) && !dirs.contains(&n[..i]) {
                return Err(bad(format!(
                    "{} is in the TOC both as a file and as a directory",
                    shown(&n[..i])
                )));
            }
            at = i;
        }
    }
    Ok(())
}

/// A TOC of either format, as [`parse_toc`] needs it: its entries as (name, type, link
/// name) for [`check_entries`].
pub(crate) trait TocEntries: serde::de::DeserializeOwned {
    fn entry_names(&self) -> impl Iterator<Item = (&str, &str, &str)>;
}

/// Parses and checks a TOC of either format: the JSON's depth and size before it is
/// parsed, then every entry's name (see [`check_entries`]).
pub(crate) fn parse_toc<T: TocEntries>(json: &[u8]) -> Result<T, BadLayer> {
    limits::check_json_shape(json, limits::MAX_JSON_DEPTH, MAX_TOC_ENTRIES)
        .map_err(|e| bad(format!("TOC: {e}")))?;
    let toc: T = serde_json::from_slice(json).map_err(|e| {
        bad(format!(
            "TOC JSON: {}",
            limits::one_line(&e.to_string(), 200)
        ))
    })?;
    check_entries(toc.entry_names())?;
    Ok(toc)
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

/// Checks one file's chunks: each a non-empty compressed range inside `[0, data_end)`
/// of at most [`limits::MAX_CHUNK_COMPRESSED`] bytes that cannot inflate to more than
/// `ratio` times its size, together covering the file's size exactly, in order.
pub(crate) fn check_chunks(f: &TocFile, data_end: u64, ratio: u64) -> Result<(), BadLayer> {
    let wrong = |what: String| BadLayer(format!("{}: {what}", shown(&f.name)));
    let mut covered = 0u64;
    for c in &f.chunks {
        if c.start >= c.end || c.end > data_end {
            return Err(wrong(format!(
                "the chunk at {} lies at [{}, {}), outside the layer's data (which ends at {data_end})",
                c.offset, c.start, c.end
            )));
        }
        let compressed = c.end - c.start;
        if compressed > limits::MAX_CHUNK_COMPRESSED {
            return Err(wrong(format!(
                "the chunk at {} is {} compressed, more than the {} depotai fetches",
                c.offset,
                crate::units::human_bytes(compressed),
                crate::units::human_bytes(limits::MAX_CHUNK_COMPRESSED)
            )));
        }
        if c.len == 0 || c.len > compressed.saturating_mul(ratio) {
            return Err(wrong(format!(
                "the chunk at {} declares {} bytes from {compressed} compressed bytes",
                c.offset, c.len
            )));
        }
        if c.offset != covered {
            return Err(wrong(format!(
                "chunks in the TOC do not cover the file (a chunk at {} after {covered} bytes)",
                c.offset
            )));
        }
        covered = covered
            .checked_add(c.len)
            .ok_or_else(|| wrong("chunk sizes overflow".into()))?;
    }
    if covered != f.size {
        return Err(wrong(format!(
            "chunks in the TOC do not cover the file ({covered} of {} bytes)",
            f.size
        )));
    }
    Ok(())
}

/// A blob that can be read at any offset: a local file ([`LocalBlob`]) or a blob in a
/// registry read with Range requests (in `remote/`). The readers of both formats and
/// `ls`/`get` read a layer through it, so a layout on disk and a registry are read the
/// same way.
// Async because the registry's reads are; used only through generics (never boxed or
// sent between threads), so the lint about `Send` bounds of public async traits does
// not apply.
#[allow(async_fn_in_trait)]
pub trait ReadAt {
    type Error;
    /// The blob's size in bytes.
    fn size(&self) -> u64;
    /// Exactly `len` bytes at `offset` (callers check `len` against the limits first).
    async fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, Self::Error>;
    /// `[start, end)` of the blob, sent in pieces as it is read, so that a large chunk
    /// is never held whole; stops early (without an error) when `tx` hangs up.
    async fn send_range(
        &self,
        start: u64,
        end: u64,
        tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
    ) -> Result<(), SendError<Self::Error>> {
        let mut at = start;
        while at < end {
            let n = (end - at).min(PIECE);
            let piece = self.read_at(at, n).await.map_err(SendError::Read)?;
            if tx.send(piece.into()).await.is_err() {
                break;
            }
            at += n;
        }
        Ok(())
    }
}

/// How much of a chunk [`ReadAt::send_range`] reads at a time by default.
const PIECE: u64 = 256 << 10;

/// Why [`ReadAt::send_range`] stopped.
#[derive(Debug)]
pub enum SendError<E> {
    /// The read failed (or ended early).
    Read(E),
    /// The source sent more bytes than were asked for.
    TooMuch { asked: u64 },
}

/// A blob in a local file (a layout's `blobs/sha256/…`).
pub struct LocalBlob {
    file: std::fs::File,
    size: u64,
}

impl LocalBlob {
    pub fn open(path: &std::path::Path) -> io::Result<LocalBlob> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        Ok(LocalBlob { file, size })
    }

    /// A file already open, of `size` bytes.
    pub fn new(file: std::fs::File, size: u64) -> LocalBlob {
        LocalBlob { file, size }
    }
}

/// Runs a read of a [`LocalBlob`] (as the readers of both formats do it) to its end
/// without an async runtime, for callers that are not async (`serve`'s pages): a local
/// read never waits on anything, so polling it until it is ready ends at once.
pub fn read_now<T>(read: impl std::future::Future<Output = T>) -> T {
    // Nothing wakes it: it is polled again at once (`Waker::noop` is newer than the MSRV).
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: std::sync::Arc<Self>) {}
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Noop));
    let mut read = std::pin::pin!(read);
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(v) = read.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

impl ReadAt for LocalBlob {
    type Error = io::Error;

    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// Why a layer could not be read through [`ReadAt`]: the read itself, or what was read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    #[error("{0}")]
    Read(E),
    #[error("{0}")]
    Bad(#[from] BadLayer),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::estargz::reader as estargz;
    use crate::layer::zstd_chunked::reader as zstd;
    use crate::layer::{build, Contents, Entry, EntryKind, Format, Options};

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("./a/b/"), "a/b");
        assert_eq!(clean_name("/config.json"), "config.json");
        assert_eq!(clean_name("/"), "");
    }

    #[test]
    fn both_formats_refuse_a_bad_toc_with_the_same_words_through_one_parser() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let cases: [(&str, &str); 4] = [
            (&deep, "TOC: "),
            ("{\"version\":1,\"entries\":[{\"name\":", "TOC JSON: "),
            (
                r#"{"version":1,"entries":[{"name":"../x","type":"reg"}]}"#,
                "../x",
            ),
            (
                r#"{"version":1,"entries":[{"name":"a","type":"reg"},{"name":"a","type":"reg"}]}"#,
                "a",
            ),
        ];
        for (json, says) in cases {
            let e = estargz::parse_estargz_toc(json.as_bytes()).unwrap_err();
            let z = zstd::parse_zstd_toc(json.as_bytes()).unwrap_err();
            assert_eq!(e, z, "{json}");
            assert!(e.0.contains(says), "{json}: {e}");
        }
        let fine =
            r#"{"version":1,"entries":[{"name":"d","type":"dir"},{"name":"d/a","type":"reg"}]}"#;
        let e = estargz::parse_estargz_toc(fine.as_bytes()).unwrap();
        let z = zstd::parse_zstd_toc(fine.as_bytes()).unwrap();
        let e: Vec<_> = e.entries.iter().map(|x| x.name.as_str()).collect();
        let z: Vec<_> = z.entries.iter().map(|x| x.name.as_str()).collect();
        assert_eq!((e, z), (vec!["d", "d/a"], vec!["d", "d/a"]));
    }

    struct Same;
    impl Contents for Same {
        fn open(&self, _: &str) -> io::Result<Box<dyn Read + Send + '_>> {
            Ok(Box::new(&b"twelve bytes"[..]))
        }
    }

    /// A two-file layer of `format` in a temporary file, and what the builder said of it.
    fn layer(format: Format) -> (tempfile::NamedTempFile, crate::layer::LayerInfo) {
        let file = |path: &str| Entry {
            path: path.into(),
            kind: EntryKind::File {
                size: 12,
                executable: false,
            },
        };
        let opts = Options {
            format,
            ..Options::default()
        };
        let out = tempfile::NamedTempFile::new().unwrap();
        let entries = vec![file("a.txt"), file("d/b.txt")];
        let (info, _) = build(entries, &Same, &opts, out.reopen().unwrap(), &|_| {}).unwrap();
        (out, info)
    }

    #[test]
    fn a_local_blob_read_at_its_footer_gives_the_toc_the_whole_blob_gives() {
        let (tmp, info) = layer(Format::Estargz);
        let bytes = std::fs::read(tmp.path()).unwrap();
        let blob = LocalBlob::open(tmp.path()).unwrap();
        assert_eq!(blob.size(), bytes.len() as u64);
        let (offset, json) = read_now(estargz::read_toc_json(&blob)).unwrap();
        assert_eq!(offset, info.toc_offset);
        let (whole, files) = estargz::estargz_from_blob(&bytes).unwrap();
        assert_eq!(estargz::parse_estargz_toc(&json).unwrap(), whole);
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, [".no.prefetch.landmark", "a.txt", "d/b.txt"]);
        // A blob too short for a footer is refused before anything is read.
        let short = LocalBlob::new(std::fs::File::open(tmp.path()).unwrap(), 10);
        let e = read_now(estargz::read_toc_json(&short)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a blob of 10 bytes is too small for an eStargz footer"
        );
    }

    #[test]
    fn a_local_blob_read_at_its_manifest_position_gives_the_zstd_toc() {
        let (tmp, info) = layer(Format::ZstdChunked);
        let bytes = std::fs::read(tmp.path()).unwrap();
        let blob = LocalBlob::open(tmp.path()).unwrap();
        let position = &info.annotations[crate::layer::zstd_chunked::MANIFEST_POSITION_ANNOTATION];
        let (offset, compressed, ulen) = read_now(zstd::read_toc_at(&blob, position)).unwrap();
        let json = zstd::zstd_section("TOC", &compressed, ulen).unwrap();
        let (whole, files, _) = zstd::zstd_chunked_from_blob(&bytes).unwrap();
        assert_eq!(zstd::parse_zstd_toc(&json).unwrap(), whole);
        assert_eq!(zstd::zstd_files(&whole, offset).unwrap().len(), files.len());
        // A position past the blob's end is refused before it is read.
        let e = read_now(zstd::read_toc_at(&blob, &format!("{}:10:10", bytes.len()))).unwrap_err();
        assert!(matches!(e, ReadError::Bad(_)), "{e}");
    }
}
