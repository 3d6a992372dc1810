//! Reading a zstd:chunked layer: its footer or manifest position, TOC, tar-split, and
//! the chunk map of its files, each step within [`crate::limits`] (see
//! [`crate::layer::reader`]).

use super::{parse_footer, TarSplitEntry, Toc, FOOTER_FRAME_SIZE};
use crate::digest::Digest;
use crate::layer::reader::{bad, check_chunks, clean_name, parse_toc, toc_name};
use crate::layer::reader::{BadLayer, Chunk, ReadAt, ReadError, TocEntries, TocFile};
use crate::limits::{self, shown, MAX_TOC_BYTES};
use crate::names;
use crate::units::human_bytes;
use base64::Engine as _;
use std::io::{BufRead, Read};

/// Parses and checks a zstd:chunked TOC.
pub fn parse_zstd_toc(json: &[u8]) -> Result<Toc, BadLayer> {
    parse_toc(json)
}

impl TocEntries for Toc {
    fn entry_names(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        (self.entries.iter()).map(|e| (e.name.as_str(), e.kind.as_str(), e.link_name.as_str()))
    }
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
pub fn check_tar_split(compressed: &[u8], ulen: u64, toc: &Toc) -> Result<usize, BadLayer> {
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

/// Reads a whole zstd:chunked blob held in memory through its footer (as `serve` does;
/// `ls`/`get` find the TOC through the layer's annotations instead): TOC, files with
/// their chunks, and the tar-split.
pub fn zstd_chunked_from_blob(blob: &[u8]) -> Result<(Toc, Vec<TocFile>, usize), BadLayer> {
    let size = blob.len() as u64;
    let frame_size = FOOTER_FRAME_SIZE;
    if blob.len() < frame_size {
        return Err(bad("no zstd:chunked footer"));
    }
    let f = parse_footer(&blob[blob.len() - frame_size..])
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

/// Regular files of a zstd:chunked TOC. A single-chunk file is one range
/// `[offset, endOffset)` checked against the file digest; a chunked file's chunk ends
/// where the next one starts, the last at the file's `endOffset`. Every chunk must lie
/// before `data_end` (where the TOC starts) and is checked as in [`check_chunks`].
pub fn zstd_files(toc: &Toc, data_end: u64) -> Result<Vec<TocFile>, BadLayer> {
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

/// Reads the compressed TOC of a zstd:chunked blob at the place its manifest-position
/// annotation names, checked against the blob's size and the limits first: the TOC's
/// offset, its compressed bytes (for the caller to check against the checksum
/// annotation before inflating them with [`zstd_section`]) and its inflated length.
pub async fn read_toc_at<R: ReadAt>(
    blob: &R,
    position: &str,
) -> Result<(u64, Vec<u8>, u64), ReadError<R::Error>> {
    let (offset, len, ulen) = zstd_toc_position(position, blob.size())?;
    let compressed = blob.read_at(offset, len).await.map_err(ReadError::Read)?;
    Ok((offset, compressed, ulen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_chunks_end_where_the_next_starts_and_the_last_at_end_offset() {
        let e = |kind: &str, size, offset, end, coff, csize, cd: &str| super::super::TocEntry {
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
        let toc = Toc {
            version: 1,
            entries: vec![
                e("reg", 10, 100, 400, 0, 4, "c0"),
                e("chunk", 0, 200, 0, 4, 4, "c1"),
                e("chunk", 0, 300, 0, 8, 2, "c2"),
                e("reg", 3, 500, 600, 0, 0, ""),
            ],
            tar_split_digest: String::new(),
        };
        let f = zstd_files(&toc, 1000).unwrap();
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
        assert!(
            zstd_files(&bad, 1000)
                .unwrap_err()
                .0
                .contains("do not cover"),
            "chunks must add up to the size"
        );
        assert!(
            zstd_files(&toc, 599)
                .unwrap_err()
                .0
                .contains("outside the layer's data"),
            "the last file ends at 600"
        );
    }
}
