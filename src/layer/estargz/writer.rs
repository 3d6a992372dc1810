//! eStargz on the shared member writer: a new gzip member before every payload chunk,
//! padding and following headers with the previous chunk (the Go writer's rule), then
//! the TOC member and the footer.

use super::{
    footer, Toc, TocEntry, MEDIA_TYPE, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION,
};
use crate::digest::Digest;
use crate::layer::encoder::ENCODER_ANNOTATION;
use crate::layer::members::{self, Codec, ReadResult, Rules, Written};
use crate::layer::tar::{self as tarfmt, Header, Kind};
use crate::layer::{
    plan, Contents, Encoder, Entry, Format, LayerError, LayerInfo, Options, TOC_NAME,
};
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
    let planned = plan(entries, &opts.prefetch, true)?;
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
    };
    let (written, read) = members::write_members(&planned, contents, rules, None, out, progress)?;
    let (mut info, out) = finish(written, read, rules)?;
    if let Some(name) = opts.encoder.annotation(level) {
        info.annotations
            .insert(ENCODER_ANNOTATION.to_string(), name);
    }
    Ok((info, out))
}

/// Fills in offsets and chunk digests, then appends the TOC member and the footer.
fn finish<W: Write>(
    written: Written<W>,
    read: ReadResult,
    rules: Rules,
) -> Result<(LayerInfo, W), LayerError> {
    let chunk_size = rules.chunk_size;
    let mut entries = Vec::new();
    let mut file_digests = Vec::new();
    for r in &read.records {
        let kind = match r.kind {
            Kind::Regular => "reg",
            Kind::Directory => "dir",
            Kind::Symlink => "symlink",
        };
        let entry = TocEntry {
            name: r.name.clone(),
            kind: kind.into(),
            size: r.size,
            link_name: r.link_name.clone(),
            mode: r.mode,
            digest: r.digest.map(|d| d.to_string()).unwrap_or_default(),
            ..Default::default()
        };
        if let (Some(d), true) = (r.digest, r.from_source) {
            file_digests.push((r.name.clone(), d));
        }
        if r.chunks.is_empty() {
            entries.push(entry);
            continue;
        }
        for (i, c) in r.chunks.iter().enumerate() {
            let digest = c.digest(&r.name)?;
            // Go's quirk, kept for byte-compatible TOCs: chunkSize is set whenever the
            // chunk is a full chunk, the last one included.
            let mut e = if i == 0 {
                entry.clone()
            } else {
                TocEntry {
                    name: r.name.clone(),
                    kind: "chunk".into(),
                    chunk_offset: c.chunk_offset,
                    ..Default::default()
                }
            };
            e.offset = written.offsets[c.member];
            e.chunk_size = if c.chunk_len == chunk_size {
                chunk_size
            } else {
                0
            };
            e.chunk_digest = digest.to_string();
            entries.push(e);
        }
    }
    let toc = Toc {
        version: 1,
        entries,
    };
    let json = toc.to_json();
    let toc_digest = Digest::of(&json);
    let toc_entries = toc.entries.len() as u64;

    let mut tail = Vec::with_capacity(json.len() + 4 * tarfmt::BLOCK);
    tarfmt::append_header(
        &mut tail,
        &Header {
            name: TOC_NAME,
            kind: Kind::Regular,
            mode: 0,
            size: json.len() as u64,
            link_name: "",
        },
    );
    tail.extend_from_slice(&json);
    tarfmt::pad_to_block(&mut tail);
    tail.resize(tail.len() + 2 * tarfmt::BLOCK, 0);
    let mut diff = read.diff;
    diff.update(&tail);
    let uncompressed_size = diff.len();

    let member = rules.codec.compressor()?.compress(&tail)?;
    let mut hw = written.out;
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
            files: read.files,
            content_bytes: read.content_bytes,
            toc_entries,
            file_digests,
            media_type: MEDIA_TYPE,
            annotations,
        },
        out,
    ))
}
