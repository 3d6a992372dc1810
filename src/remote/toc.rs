//! Reading a layer's footer, TOC and tar-split from bytes nobody vouches for (a
//! registry's answers, or a layout on disk), within [`crate::limits`].
//!
//! Each step checks what it was given before using it: the footer's offsets against the
//! blob, the compressed size before it is fetched, the inflated size while it inflates
//! (a small member cannot grow past the limit, whatever it says), the JSON's depth and
//! entry count before it is parsed, and every entry's name. The network flow in
//! [`super::lazy`] and the landing page of `serve` use the same steps;
//! [`estargz_from_blob`] and [`zstd_chunked_from_blob`] run them all on a blob in
//! memory (tests and fuzzing).

use crate::digest::Digest;
use crate::layer::estargz::{parse_footer, Toc, TocEntry, FOOTER_SIZE};
use crate::layer::zstd_chunked::{self, TarSplitEntry};
use crate::limits::{self, shown, MAX_TOC_BYTES, MAX_TOC_ENTRIES, MAX_TOC_TAR};
use crate::names;
use crate::units::human_bytes;
use base64::Engine as _;
use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, BufRead, Read};
use std::rc::Rc;

/// What is wrong with a layer's footer, TOC or tar-split: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadLayer(pub String);

fn bad(msg: impl Into<String>) -> BadLayer {
    BadLayer(msg.into())
}

/// A reader that stops with an error (not an end of file) after `limit` bytes, and
/// remembers that it did, so the caller can say "inflates to more than …" even when a
/// parser above it reports the error its own way.
struct Capped<R> {
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

fn capped<R: Read>(inner: R, limit: u64) -> (Capped<R>, Rc<Cell<bool>>) {
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

/// Where an eStargz TOC member is, from the 51-byte footer of a blob of `size` bytes:
/// `[offset, end)`, checked to lie inside the blob and to be at most
/// [`MAX_TOC_BYTES`] long.
pub fn estargz_toc_range(footer: &[u8], size: u64) -> Result<(u64, u64), BadLayer> {
    if size < FOOTER_SIZE as u64 {
        return Err(bad(format!(
            "a blob of {size} bytes is too small for an eStargz footer"
        )));
    }
    let offset = parse_footer(footer).ok_or_else(|| bad("no eStargz footer"))?;
    let end = size - FOOTER_SIZE as u64;
    if offset >= end {
        return Err(bad(format!(
            "the footer puts the TOC at {offset}, outside the {size}-byte blob"
        )));
    }
    if end - offset > MAX_TOC_BYTES {
        return Err(bad(format!(
            "the TOC member is {} ({} bytes), more than the {} depotai reads",
            human_bytes(end - offset),
            end - offset,
            human_bytes(MAX_TOC_BYTES)
        )));
    }
    Ok((offset, end))
}

/// The JSON inside an eStargz TOC member: a gzip member holding a tar whose first entry
/// is `stargz.index.json`. Inflates at most [`MAX_TOC_TAR`] bytes.
pub fn estargz_toc_json(member: &[u8]) -> Result<Vec<u8>, BadLayer> {
    let (reader, hit) = capped(flate2::read::GzDecoder::new(member), MAX_TOC_TAR);
    let bomb = || {
        bad(format!(
            "the TOC member inflates to more than {}",
            human_bytes(MAX_TOC_TAR)
        ))
    };
    let result = (|| -> Result<Vec<u8>, String> {
        let mut ar = tar::Archive::new(reader);
        let mut entries = ar.entries().map_err(|e| e.to_string())?;
        let mut first = entries
            .next()
            .ok_or("the TOC tar is empty")?
            .map_err(|e| e.to_string())?;
        let path = first.path().map_err(|e| e.to_string())?;
        if path.to_string_lossy() != "stargz.index.json" {
            return Err(format!(
                "the TOC tar starts with {}, not stargz.index.json",
                shown(&path.to_string_lossy())
            ));
        }
        let declared = first.header().entry_size().map_err(|e| e.to_string())?;
        if declared > MAX_TOC_BYTES {
            return Err(format!(
                "the TOC declares {declared} bytes, more than the {} depotai reads",
                human_bytes(MAX_TOC_BYTES)
            ));
        }
        let mut out = Vec::new();
        first
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip: {e}"))?;
        Ok(out)
    })();
    match result {
        _ if hit.get() => Err(bomb()),
        Ok(json) => Ok(json),
        Err(e) => Err(bad(format!("TOC: {}", limits::one_line(&e, 200)))),
    }
}

/// A TOC name as it will be used: one leading `./` dropped, and a trailing `/` (of a
/// directory).
fn toc_name(n: &str) -> &str {
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

fn shape(json: &[u8]) -> Result<(), BadLayer> {
    limits::check_json_shape(json, limits::MAX_JSON_DEPTH, MAX_TOC_ENTRIES)
        .map_err(|e| bad(format!("TOC: {e}")))
}

/// Parses and checks an eStargz TOC.
pub fn parse_estargz_toc(json: &[u8]) -> Result<Toc, BadLayer> {
    shape(json)?;
    let toc = Toc::from_json(json).map_err(|e| {
        bad(format!(
            "TOC JSON: {}",
            limits::one_line(&e.to_string(), 200)
        ))
    })?;
    check_entries(
        toc.entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind.as_str(), e.link_name.as_str())),
    )?;
    Ok(toc)
}

/// Parses and checks a zstd:chunked TOC.
pub fn parse_zstd_toc(json: &[u8]) -> Result<zstd_chunked::Toc, BadLayer> {
    shape(json)?;
    let toc = zstd_chunked::Toc::from_json(json).map_err(|e| {
        bad(format!(
            "TOC JSON: {}",
            limits::one_line(&e.to_string(), 200)
        ))
    })?;
    check_entries(
        toc.entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind.as_str(), e.link_name.as_str())),
    )?;
    Ok(toc)
}

/// `offset:length:uncompressed length:type` of a zstd:chunked manifest-position
/// annotation, checked against a blob of `size` bytes and the limits.
pub fn zstd_toc_position(position: &str, size: u64) -> Result<(u64, u64, u64), BadLayer> {
    let wrong = || bad(format!("bad manifest position {}", shown(position)));
    let mut nums = position.split(':').map(|p| p.parse::<u64>());
    let mut next = || nums.next().ok_or_else(wrong)?.map_err(|_| wrong());
    let (offset, len, ulen) = (next()?, next()?, next()?);
    check_zstd_section("TOC", offset, len, ulen, size, MAX_TOC_BYTES)?;
    Ok((offset, len, ulen))
}

fn check_zstd_section(
    what: &str,
    offset: u64,
    len: u64,
    ulen: u64,
    size: u64,
    max: u64,
) -> Result<(), BadLayer> {
    if len == 0 || offset.checked_add(len).map_or(true, |end| end > size) {
        return Err(bad(format!(
            "the {what} at {offset} ({len} bytes) is outside the {size}-byte blob"
        )));
    }
    if len > max || ulen > max {
        return Err(bad(format!(
            "the {what} is {} ({} uncompressed), more than the {} depotai reads",
            human_bytes(len),
            human_bytes(ulen),
            human_bytes(max)
        )));
    }
    Ok(())
}

/// Inflates one zstd section that must come to exactly `ulen` bytes, never more.
pub fn zstd_section(what: &str, compressed: &[u8], ulen: u64) -> Result<Vec<u8>, BadLayer> {
    let dec = zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| bad(format!("{what}: zstd: {e}")))?;
    let mut out = Vec::new();
    dec.take(ulen + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("{what}: zstd: {e}")))?;
    if out.len() as u64 != ulen {
        return Err(bad(format!(
            "the {what} inflates to {}{} bytes, not the {ulen} its position says",
            if out.len() as u64 > ulen {
                "more than "
            } else {
                ""
            },
            out.len().min(ulen as usize)
        )));
    }
    Ok(out)
}

/// Checks a zstd:chunked tar-split against its TOC: its digest, and that it is at most
/// [`limits::MAX_TAR_SPLIT_LINES`] lines of tar-split JSON with sequential positions
/// whose file entries have safe names. Returns the number of file entries.
pub fn check_tar_split(
    compressed: &[u8],
    ulen: u64,
    toc: &zstd_chunked::Toc,
) -> Result<usize, BadLayer> {
    if !toc.tar_split_digest.is_empty()
        && Digest::of(compressed).to_string() != toc.tar_split_digest
    {
        return Err(bad(format!(
            "the tar-split does not match the TOC's tarSplitDigest {}",
            shown(&toc.tar_split_digest)
        )));
    }
    let raw = zstd_section("tar-split", compressed, ulen)?;
    let mut files = 0usize;
    for (i, line) in raw.lines().enumerate() {
        if i >= limits::MAX_TAR_SPLIT_LINES {
            return Err(bad(format!(
                "the tar-split has more than {} lines",
                limits::MAX_TAR_SPLIT_LINES
            )));
        }
        let line = line.map_err(|_| bad(format!("tar-split line {}: not UTF-8", i + 1)))?;
        limits::check_json_shape(line.as_bytes(), 2, 0)
            .map_err(|e| bad(format!("tar-split line {}: {e}", i + 1)))?;
        let e: TarSplitEntry = serde_json::from_str(&line).map_err(|e| {
            bad(format!(
                "tar-split line {}: {}",
                i + 1,
                limits::one_line(&e.to_string(), 200)
            ))
        })?;
        if e.position != i as u64 {
            return Err(bad(format!(
                "tar-split line {} says it is at position {}",
                i + 1,
                e.position
            )));
        }
        let payload = e.payload.as_deref().unwrap_or("");
        base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| bad(format!("tar-split line {}: payload is not base64", i + 1)))?;
        match e.kind {
            1 => {
                files += 1;
                let name = e.name.as_deref().unwrap_or("");
                let n = toc_name(name);
                if !n.is_empty() {
                    if let Err(why) = names::check_path(n) {
                        return Err(bad(format!(
                            "unsafe name in the tar-split: {} ({why})",
                            shown(name)
                        )));
                    }
                }
            }
            2 => {}
            k => {
                return Err(bad(format!(
                    "tar-split line {}: unknown entry type {k}",
                    i + 1
                )))
            }
        }
    }
    Ok(files)
}

/// Reads a whole eStargz blob held in memory as `ls`/`get` read it remotely: footer,
/// TOC member, TOC, and the files with their chunks.
pub fn estargz_from_blob(blob: &[u8]) -> Result<(Toc, Vec<TocFile>), BadLayer> {
    let size = blob.len() as u64;
    let footer = blob
        .get(blob.len().saturating_sub(FOOTER_SIZE)..)
        .unwrap_or(&[]);
    let (start, end) = estargz_toc_range(footer, size)?;
    let json = estargz_toc_json(&blob[start as usize..end as usize])?;
    let toc = parse_estargz_toc(&json)?;
    let files = files(&toc, start).map_err(|e| bad(e.to_string()))?;
    Ok((toc, files))
}

/// Reads a whole zstd:chunked blob held in memory through its footer (as `serve` does;
/// `ls`/`get` find the TOC through the layer's annotations instead): TOC, files with
/// their chunks, and the tar-split.
pub fn zstd_chunked_from_blob(
    blob: &[u8],
) -> Result<(zstd_chunked::Toc, Vec<TocFile>, usize), BadLayer> {
    let size = blob.len() as u64;
    let frame_size = zstd_chunked::FOOTER_FRAME_SIZE;
    if blob.len() < frame_size {
        return Err(bad("no zstd:chunked footer"));
    }
    let f = zstd_chunked::parse_footer(&blob[blob.len() - frame_size..])
        .ok_or_else(|| bad("no zstd:chunked footer"))?;
    check_zstd_section(
        "TOC",
        f.manifest_offset,
        f.manifest_len,
        f.manifest_uncompressed_len,
        size,
        MAX_TOC_BYTES,
    )?;
    let m = &blob[f.manifest_offset as usize..(f.manifest_offset + f.manifest_len) as usize];
    let json = zstd_section("TOC", m, f.manifest_uncompressed_len)?;
    let toc = parse_zstd_toc(&json)?;
    let files = zstd_files(&toc, f.manifest_offset).map_err(|e| bad(e.to_string()))?;
    check_zstd_section(
        "tar-split",
        f.tar_split_offset,
        f.tar_split_len,
        f.tar_split_uncompressed_len,
        size,
        limits::MAX_TAR_SPLIT_BYTES,
    )?;
    let ts = &blob[f.tar_split_offset as usize..(f.tar_split_offset + f.tar_split_len) as usize];
    let n = check_tar_split(ts, f.tar_split_uncompressed_len, &toc)?;
    Ok((toc, files, n))
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
fn check_chunks(f: &TocFile, data_end: u64, ratio: u64) -> Result<(), BadLayer> {
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

/// Regular files of an eStargz TOC with their chunks, in TOC order. A chunk ends where
/// the next member begins: the next larger offset in the TOC, or the TOC itself. Every
/// chunk is checked against the blob (see [`check_chunks`]).
pub fn files(toc: &Toc, toc_offset: u64) -> Result<Vec<TocFile>, BadLayer> {
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
    let chunk_of = |e: &TocEntry, size: u64| Chunk {
        offset: e.chunk_offset,
        // A last chunk may leave its size out; one past the file's end has none.
        len: if e.chunk_size > 0 {
            e.chunk_size
        } else {
            size.saturating_sub(e.chunk_offset)
        },
        start: e.offset,
        end: next_after(e.offset),
        digest: e.chunk_digest.clone(),
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
    for f in &out {
        check_chunks(f, toc_offset, limits::MAX_GZIP_RATIO)?;
    }
    Ok(out)
}

/// Regular files of a zstd:chunked TOC. A single-chunk file is one range
/// `[offset, endOffset)` checked against the file digest; a chunked file's chunk ends
/// where the next one starts, the last at the file's `endOffset`. Every chunk must lie
/// before `data_end` (where the TOC starts) and is checked as in [`check_chunks`].
pub fn zstd_files(toc: &zstd_chunked::Toc, data_end: u64) -> Result<Vec<TocFile>, BadLayer> {
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
                    return Err(BadLayer(format!(
                        "chunk entry {} before any file",
                        shown(&e.name)
                    )));
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
        check_chunks(f, data_end, limits::MAX_ZSTD_RATIO)?;
    }
    Ok(out)
}
