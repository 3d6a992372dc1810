//! eStargz on the shared member writer: a new gzip member before every payload chunk,
//! padding and following headers with the previous chunk (the Go writer's rule), then
//! the TOC member and the footer.

use super::toc::TocOf;
use super::{footer, TocEntry, MEDIA_TYPE, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION};
use crate::digest::Digest;
use crate::layer::encoder::ENCODER_ANNOTATION;
use crate::layer::members::{self, Codec, ReadResult, Record, Rules, Written};
use crate::layer::tar::{self as tarfmt, Header, Kind};
use crate::layer::{
    plan, ByteCount, Contents, Encoder, Entry, Format, LayerError, LayerInfo, Options, TOC_NAME,
};
use serde::Serialize;
use std::io::Write;

/// Builds an eStargz blob from `entries` into `out` with `opts.encoder` at `level`
/// (options already checked by [`crate::layer::build`]). File contents are read once, through
/// `contents`; `progress` is told how many content bytes were read as they are read.
pub fn build<W: Write + Send>(
    entries: Vec<Entry>,
    contents: &dyn Contents,
    opts: &Options,
    level: i32,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(LayerInfo, W), LayerError> {
    let planned = plan(entries, &opts.prefetch, true, &opts.prefix)?;
    let rules = Rules {
        codec: match opts.encoder {
            Encoder::Libdeflate => Codec::Gzip(level),
            Encoder::Isal => Codec::IsalGzip(level),
        },
        chunk_size: opts.chunk_size,
        threads: opts.threads,
        payload_alone: false,
        end_of_archive: false,
        crc64: false,
        prefix_len: opts.prefix_len(),
    };
    let (written, read) = members::write_members(&planned, contents, rules, None, out, progress)?;
    // The records hold what the TOC needs; the planned entries are done with.
    drop(planned);
    let (mut info, out) = finish(written, read, rules)?;
    if let Some(name) = opts.encoder.annotation(level) {
        info.annotations
            .insert(ENCODER_ANNOTATION.to_string(), name);
    }
    Ok((info, out))
}

/// The TOC's entries, made from the records one at a time as they are serialised (a
/// file's first chunk is its own entry, each later chunk a `chunk` entry), so a layer of
/// many files never holds its TOC twice.
struct Entries<'a> {
    records: &'a [Record],
    offsets: &'a [u64],
    chunk_size: u64,
}

impl Entries<'_> {
    fn count(&self) -> u64 {
        self.records
            .iter()
            .map(|r| r.chunks.len().max(1) as u64)
            .sum()
    }

    /// The entry for chunk `i` of `r` (its only entry if it has no chunks).
    fn entry(&self, r: &Record, i: usize) -> TocEntry {
        let digest = |d: Option<Digest>| d.map(|d| d.to_string()).unwrap_or_default();
        let mut e = if i == 0 {
            TocEntry {
                name: r.name.clone(),
                kind: match r.kind {
                    Kind::Regular => "reg",
                    Kind::Directory => "dir",
                    Kind::Symlink => "symlink",
                }
                .into(),
                size: r.size,
                link_name: r.link_name.clone(),
                mode: r.mode,
                digest: digest(r.digest),
                ..Default::default()
            }
        } else {
            TocEntry {
                name: r.name.clone(),
                kind: "chunk".into(),
                ..Default::default()
            }
        };
        if let Some(c) = r.chunks.get(i) {
            e.chunk_offset = c.chunk_offset;
            e.offset = self.offsets[c.member];
            // Go's quirk, kept for byte-compatible TOCs: chunkSize is set whenever the
            // chunk is a full chunk, the last one included.
            e.chunk_size = if c.chunk_len == self.chunk_size {
                self.chunk_size
            } else {
                0
            };
            e.chunk_digest = digest(c.digest);
        }
        e
    }
}

impl Serialize for Entries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.records
                .iter()
                .flat_map(|r| (0..r.chunks.len().max(1)).map(move |i| self.entry(r, i))),
        )
    }
}

fn toc_err(e: serde_json::Error) -> LayerError {
    LayerError::Compress(format!("writing the TOC: {e}"))
}

/// Fills in offsets and chunk digests, then appends the TOC member and the footer.
fn finish<W: Write>(
    written: Written<W>,
    read: ReadResult,
    rules: Rules,
) -> Result<(LayerInfo, W), LayerError> {
    let ReadResult {
        records,
        mut diff,
        files,
        content_bytes,
    } = read;
    let Written { out, offsets } = written;
    let mut file_digests = Vec::new();
    for r in &records {
        for c in &r.chunks {
            c.digest(&r.name)?;
        }
        if let (Some(d), true) = (r.digest, r.from_source) {
            file_digests.push((rules.source_path(&r.name).to_string(), d));
        }
    }
    let toc = TocOf {
        version: 1,
        entries: Entries {
            records: &records,
            offsets: &offsets,
            chunk_size: rules.chunk_size,
        },
    };
    let toc_entries = toc.entries.count();
    // Measured first, so the tar header can say its size and the buffer is made once.
    let mut counted = ByteCount(0);
    toc.write_json(&mut counted).map_err(toc_err)?;
    let json_len = counted.0;

    let mut tail = Vec::with_capacity(json_len as usize + 5 * tarfmt::BLOCK);
    tarfmt::append_header(
        &mut tail,
        &Header {
            name: TOC_NAME,
            kind: Kind::Regular,
            mode: 0,
            size: json_len,
            link_name: "",
        },
    );
    let start = tail.len();
    toc.write_json(&mut tail).map_err(toc_err)?;
    if (tail.len() - start) as u64 != json_len {
        return Err(LayerError::Compress(
            "the TOC changed between two writes".into(),
        ));
    }
    drop((records, offsets));
    let toc_digest = Digest::of(&tail[start..]);
    tarfmt::pad_to_block(&mut tail);
    tail.resize(tail.len() + 2 * tarfmt::BLOCK, 0);
    diff.update(&tail);
    let uncompressed_size = diff.len();

    let member = rules.codec.compressor()?.compress(&tail)?;
    drop(tail);
    let mut hw = out;
    let toc_offset = hw.position();
    hw.write_all(&member).map_err(LayerError::Write)?;
    hw.write_all(&footer(toc_offset))
        .map_err(LayerError::Write)?;
    hw.flush().map_err(LayerError::Write)?;
    let (out, digest, size) = hw.finish();
    let annotations = [
        (TOC_DIGEST_ANNOTATION.to_string(), toc_digest.to_string()),
        (
            UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
            uncompressed_size.to_string(),
        ),
    ]
    .into();
    Ok((
        LayerInfo {
            format: Format::Estargz,
            digest,
            size,
            diff_id: diff.finish(),
            uncompressed_size,
            toc_digest,
            toc_offset,
            files,
            content_bytes,
            toc_entries,
            file_digests,
            media_type: MEDIA_TYPE,
            annotations,
        },
        out,
    ))
}
