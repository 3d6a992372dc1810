//! Reading an eStargz layer: its footer, TOC member and TOC, and the chunk map of its
//! files, each step within [`crate::limits`] (see [`crate::layer::reader`]).

use super::{parse_footer, Toc, TocEntry, FOOTER_SIZE};
use crate::layer::reader::{bad, capped, check_chunks, clean_name, parse_toc};
use crate::layer::reader::{BadLayer, Chunk, ReadAt, ReadError, TocEntries, TocFile};
use crate::limits::{self, shown, MAX_TOC_BYTES, MAX_TOC_TAR};
use crate::units::human_bytes;
use std::io::Read;

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

/// Parses and checks an eStargz TOC.
pub fn parse_estargz_toc(json: &[u8]) -> Result<Toc, BadLayer> {
    parse_toc(json)
}

impl TocEntries for Toc {
    fn entry_names(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        (self.entries.iter()).map(|e| (e.name.as_str(), e.kind.as_str(), e.link_name.as_str()))
    }
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

/// Reads an eStargz blob's TOC through its footer: the TOC member's offset and the TOC
/// JSON, not yet parsed (a caller may check it against a digest first). Reads the
/// footer and then the TOC member, nothing else.
pub async fn read_toc_json<R: ReadAt>(blob: &R) -> Result<(u64, Vec<u8>), ReadError<R::Error>> {
    let size = blob.size();
    if size < FOOTER_SIZE as u64 {
        // The range check says why, without a read.
        estargz_toc_range(&[], size)?;
    }
    let footer = blob
        .read_at(size - FOOTER_SIZE as u64, FOOTER_SIZE as u64)
        .await
        .map_err(ReadError::Read)?;
    let (start, end) = estargz_toc_range(&footer, size)?;
    let member = blob
        .read_at(start, end - start)
        .await
        .map_err(ReadError::Read)?;
    Ok((start, estargz_toc_json(&member)?))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let f = files(&toc, 400).unwrap();
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
}
