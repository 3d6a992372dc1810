//! zstd:chunked on the shared member writer: every payload chunk is a zstd frame of its
//! own and its padding opens the next frame, so a file's `endOffset` is the start of the
//! frame after its payload; the last data frame ends with the end-of-archive blocks. Then
//! the manifest, the tar-split and the footer, each in a skippable frame.

use super::footer::{footer, skippable_frame_header, Footer};
use super::tarsplit::TarSplitWriter;
use super::toc::TocOf;
use super::{
    TocEntry, LEGACY_MANIFEST_CHECKSUM_ANNOTATION, LEGACY_MANIFEST_POSITION_ANNOTATION,
    MANIFEST_CHECKSUM_ANNOTATION, MANIFEST_POSITION_ANNOTATION, MANIFEST_TYPE_CRFS, MEDIA_TYPE,
    MODTIME, TAR_SPLIT_POSITION_ANNOTATION,
};
use crate::digest::Digest;
use crate::layer::members::{self, Codec, ReadResult, Record, Rules, Written};
use crate::layer::tar::Kind;
use crate::layer::{plan, ByteCount, Contents, Entry, Format, LayerError, LayerInfo, Options};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// Builds a zstd:chunked blob from `entries` into `out` at zstd `level` (options already
/// checked by [`crate::layer::build`]). File contents are read once, through `contents`;
/// `progress` is told how many content bytes were read as they are read.
pub fn build<W: Write + Send>(
    entries: Vec<Entry>,
    contents: &dyn Contents,
    opts: &Options,
    level: i32,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(LayerInfo, W), LayerError> {
    let planned = plan(entries, &opts.prefetch, false, &opts.prefix)?;
    let rules = Rules {
        codec: Codec::Zstd(level),
        chunk_size: opts.chunk_size,
        threads: opts.threads,
        payload_alone: true,
        end_of_archive: true,
        crc64: true,
        prefix_len: opts.prefix_len(),
    };
    let mut tar_split = TarSplitWriter::new(level)?;
    let (written, read) = members::write_members(
        &planned,
        contents,
        rules,
        Some(&mut tar_split),
        out,
        progress,
    )?;
    // The records hold what the TOC needs; the planned entries are done with.
    drop(planned);
    finish(written, read, tar_split, rules)
}

/// The TOC's entries, made from the records one at a time as they are serialised, so a
/// layer of many files never holds its TOC twice.
struct Entries<'a> {
    records: &'a [Record],
    offsets: &'a [u64],
}

impl Entries<'_> {
    /// TOC entries of `r`: one, or one per chunk when it has several.
    fn of(r: &Record) -> usize {
        if r.chunks.len() > 1 {
            r.chunks.len()
        } else {
            1
        }
    }

    fn count(&self) -> u64 {
        self.records.iter().map(|r| Self::of(r) as u64).sum()
    }

    /// Entry `i` of `r`, with its frame offsets.
    fn entry(&self, r: &Record, i: usize) -> TocEntry {
        let mut e = TocEntry {
            kind: match r.kind {
                Kind::Regular => "reg",
                Kind::Directory => "dir",
                Kind::Symlink => "symlink",
            }
            .into(),
            name: r.name.clone(),
            link_name: r.link_name.clone(),
            mode: r.mode,
            size: r.size,
            mod_time: MODTIME.into(),
            ..Default::default()
        };
        let (Some(first), Some(last)) = (r.chunks.first(), r.chunks.last()) else {
            // Directories, symlinks and empty files: no payload, no digest, no offsets.
            return e;
        };
        e.digest = r.digest.map(|d| d.to_string()).unwrap_or_default();
        e.offset = self.offsets[first.member];
        // The frame after the last payload frame (it holds the padding) always exists:
        // the stream ends with a frame holding the end-of-archive blocks.
        e.end_offset = self.offsets[last.member + 1];
        if r.chunks.len() == 1 {
            return e;
        }
        let c = &r.chunks[i];
        let mut ce = if i == 0 {
            e
        } else {
            TocEntry {
                kind: "chunk".into(),
                name: r.name.clone(),
                offset: self.offsets[c.member],
                chunk_offset: c.chunk_offset,
                ..Default::default()
            }
        };
        ce.chunk_size = c.chunk_len;
        ce.chunk_digest = c.digest.map(|d| d.to_string()).unwrap_or_default();
        ce
    }
}

impl Serialize for Entries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.records
                .iter()
                .flat_map(|r| (0..Self::of(r)).map(move |i| self.entry(r, i))),
        )
    }
}

fn toc_err(e: serde_json::Error) -> LayerError {
    LayerError::Compress(format!("writing the TOC: {e}"))
}

/// Appends the manifest, tar-split and footer frames.
fn finish<W: Write>(
    written: Written<W>,
    read: ReadResult,
    tar_split: TarSplitWriter,
    rules: Rules,
) -> Result<(LayerInfo, W), LayerError> {
    let ReadResult {
        records,
        diff,
        files,
        content_bytes,
    } = read;
    let Written { out, offsets } = written;
    let mut file_digests = Vec::new();
    for r in &records {
        if r.chunks.len() > 1 {
            for c in &r.chunks {
                c.digest(&r.name)?;
            }
        }
        if let (Some(d), true) = (r.digest, r.from_source) {
            file_digests.push((rules.source_path(&r.name).to_string(), d));
        }
    }
    let (tar_split, tar_split_uncompressed) = tar_split.finish()?;
    let toc = TocOf {
        version: 1,
        entries: Entries {
            records: &records,
            offsets: &offsets,
        },
        tar_split_digest: Digest::of(&tar_split).to_string(),
    };
    let toc_entries = toc.entries.count();
    // Measured first, so the buffer is made once at its size.
    let mut counted = ByteCount(0);
    serde_json::to_writer(&mut counted, &toc).map_err(toc_err)?;
    let mut json = Vec::with_capacity(counted.0 as usize);
    serde_json::to_writer(&mut json, &toc).map_err(toc_err)?;
    drop((records, offsets));
    let manifest = rules.codec.compressor()?.compress(&json)?;
    let manifest_digest = Digest::of(&manifest);
    // The plan was refused if its TOC could pass a reader's limit (`layer::bound`); this
    // stops a layer whose bound was wrong before it is finished, rather than publish it.
    let max = crate::limits::MAX_TOC_BYTES as usize;
    if json.len() > max || manifest.len() > max {
        return Err(LayerError::Compress(format!(
            "the TOC is {} bytes ({} compressed), over the limit of {max} readers accept",
            json.len(),
            manifest.len()
        )));
    }
    if u32::try_from(tar_split.len()).is_err() {
        return Err(LayerError::Compress(
            "the tar-split does not fit a skippable frame".into(),
        ));
    }

    let mut hw = out;
    let manifest_offset = hw.position() + 8;
    let tar_split_offset = manifest_offset + manifest.len() as u64 + 8;
    let f = Footer {
        manifest_offset,
        manifest_len: manifest.len() as u64,
        manifest_uncompressed_len: json.len() as u64,
        tar_split_offset,
        tar_split_len: tar_split.len() as u64,
        tar_split_uncompressed_len: tar_split_uncompressed,
    };
    for part in [
        &skippable_frame_header(manifest.len())[..],
        &manifest,
        &skippable_frame_header(tar_split.len()),
        &tar_split,
        &footer(&f),
    ] {
        hw.write_all(part).map_err(LayerError::Write)?;
    }
    hw.flush().map_err(LayerError::Write)?;
    let (out, digest, size) = hw.finish();

    let position = format!(
        "{}:{}:{}:{MANIFEST_TYPE_CRFS}",
        f.manifest_offset, f.manifest_len, f.manifest_uncompressed_len
    );
    let checksum = manifest_digest.to_string();
    let annotations: BTreeMap<String, String> = [
        (MANIFEST_CHECKSUM_ANNOTATION, checksum.clone()),
        (MANIFEST_POSITION_ANNOTATION, position.clone()),
        (
            TAR_SPLIT_POSITION_ANNOTATION,
            format!(
                "{}:{}:{}",
                f.tar_split_offset, f.tar_split_len, f.tar_split_uncompressed_len
            ),
        ),
        (LEGACY_MANIFEST_CHECKSUM_ANNOTATION, checksum),
        (LEGACY_MANIFEST_POSITION_ANNOTATION, position),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let uncompressed_size = diff.len();
    Ok((
        LayerInfo {
            format: Format::ZstdChunked,
            digest,
            size,
            diff_id: diff.finish(),
            uncompressed_size,
            toc_digest: manifest_digest,
            toc_offset: manifest_offset,
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
