//! The parallel, order-preserving eStargz writer.
//!
//! One reader thread walks the entries in output order, reads file contents chunk by
//! chunk and cuts the uncompressed stream into gzip members (the Go writer's rule: a new
//! member before every payload chunk; padding and following headers go with the previous
//! chunk). Each member is a numbered job; workers compress jobs in any order, and the
//! writer puts them back in number order. So the bytes never depend on the thread count.
//! In-flight members are capped by a pool of permits, so memory stays at a few chunks per
//! thread whatever the file sizes.

use super::{footer, LayerInfo, Options, Toc, TocEntry};
use crate::digest::{Digest, Hasher, HashingWriter};
use crate::layer::tar::{self as tarfmt, Header, Kind};
use crate::layer::{
    plan, Contents, Entry, EntryKind, LayerError, Planned, DIR_MODE, EXEC_MODE, FILE_MODE,
    SYMLINK_MODE, TOC_NAME,
};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::BTreeMap;
use std::io::{Read, Write};

const MAX_CHUNK_SIZE: u64 = 1 << 30;
const LANDMARK_CONTENT: u8 = 0x0f;

struct Job {
    index: usize,
    data: Vec<u8>,
    /// Leading bytes that are one chunk of a multi-chunk file, to hash for `chunkDigest`.
    chunk_len: usize,
}

struct Done {
    index: usize,
    compressed: Vec<u8>,
    chunk_digest: Option<Digest>,
}

/// Where a TOC entry's payload chunk lives: its member and its digest if the reader
/// already knows it (single-chunk files reuse the file digest).
struct ChunkRef {
    member: usize,
    chunk_offset: u64,
    chunk_len: u64,
    digest: Option<Digest>,
}

struct PlannedToc {
    entry: TocEntry,
    chunks: Vec<ChunkRef>,
}

/// Builds an eStargz blob from `entries` into `out`. File contents are read once, through
/// `contents`; `progress` is told how many content bytes were read as they are read.
pub fn build<W: Write + Send>(
    entries: Vec<Entry>,
    contents: &dyn Contents,
    opts: &Options,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(LayerInfo, W), LayerError> {
    if opts.chunk_size == 0 || opts.chunk_size > MAX_CHUNK_SIZE {
        return Err(LayerError::ChunkSize(opts.chunk_size));
    }
    let planned = plan(entries, &opts.prefetch)?;
    let threads = opts.threads.max(1);
    let level = opts.level;
    // Permits bound the members between the reader and the file: queued, being
    // compressed, or waiting for their turn to be written.
    let permits_n = 2 * threads + 2;

    std::thread::scope(|s| {
        let (job_tx, job_rx) = bounded::<Job>(threads);
        let (done_tx, done_rx) = bounded::<Result<Done, LayerError>>(permits_n);
        let (permit_tx, permit_rx) = bounded::<()>(permits_n);
        for _ in 0..permits_n {
            permit_tx.send(()).expect("fresh channel has room");
        }
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            s.spawn(move || compress_worker(job_rx, done_tx, level));
        }
        drop(job_rx);
        drop(done_tx);
        let writer = s.spawn(move || write_in_order(out, done_rx, permit_tx));

        let read_result = read_and_cut(&planned, contents, opts, job_tx, permit_rx, progress);
        let written = writer.join().expect("writer thread panicked");
        // A write error explains a reader that stopped early, so report it first.
        let written = written?;
        finish(written, read_result?, opts)
    })
}

fn compress_worker(jobs: Receiver<Job>, done: Sender<Result<Done, LayerError>>, level: i32) {
    let lvl = match libdeflater::CompressionLvl::new(level) {
        Ok(l) => l,
        Err(_) => {
            let _ = done.send(Err(LayerError::Compress(format!(
                "invalid compression level {level}"
            ))));
            return;
        }
    };
    let mut compressor = libdeflater::Compressor::new(lvl);
    for job in jobs {
        let result = gzip_member(&mut compressor, &job.data).map(|compressed| Done {
            index: job.index,
            compressed,
            chunk_digest: (job.chunk_len > 0).then(|| Digest::of(&job.data[..job.chunk_len])),
        });
        if done.send(result).is_err() {
            return;
        }
    }
}

fn gzip_member(c: &mut libdeflater::Compressor, data: &[u8]) -> Result<Vec<u8>, LayerError> {
    let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
    let n = c
        .gzip_compress(data, &mut out)
        .map_err(|e| LayerError::Compress(format!("{e:?}")))?;
    out.truncate(n);
    Ok(out)
}

/// What the writer thread leaves: the output, and each member's offset and chunk digest.
struct Written<W> {
    out: HashingWriter<W>,
    offsets: Vec<u64>,
    chunk_digests: Vec<Option<Digest>>,
}

fn write_in_order<W: Write>(
    out: W,
    done: Receiver<Result<Done, LayerError>>,
    permits: Sender<()>,
) -> Result<Written<W>, LayerError> {
    let mut hw = HashingWriter::new(out);
    let mut offsets = Vec::new();
    let mut digests = Vec::new();
    let mut waiting: BTreeMap<usize, Done> = BTreeMap::new();
    for result in done {
        let d = result?;
        waiting.insert(d.index, d);
        while let Some(d) = waiting.remove(&offsets.len()) {
            offsets.push(hw.position());
            digests.push(d.chunk_digest);
            hw.write_all(&d.compressed).map_err(LayerError::Write)?;
            // The reader may have stopped already; a closed permit pool is fine.
            let _ = permits.send(());
        }
    }
    // Every member sent must have arrived, or a worker failed before sending it.
    if !waiting.is_empty() {
        return Err(LayerError::Compress(
            "a compressed member went missing".into(),
        ));
    }
    Ok(Written {
        out: hw,
        offsets,
        chunk_digests: digests,
    })
}

/// Emits the open member as the next job, hashing it into the diff ID in order.
struct Cutter<'a> {
    jobs: Sender<Job>,
    permits: &'a Receiver<()>,
    next_index: usize,
    diff: Hasher,
}

impl Cutter<'_> {
    fn emit(&mut self, data: Vec<u8>, chunk_len: usize) -> Result<(), LayerError> {
        let stopped = || LayerError::Compress("the layer writer stopped".into());
        self.permits.recv().map_err(|_| stopped())?;
        self.diff.update(&data);
        let index = self.next_index;
        self.next_index += 1;
        self.jobs
            .send(Job {
                index,
                data,
                chunk_len,
            })
            .map_err(|_| stopped())
    }
}

/// What the reader leaves: TOC entries waiting for offsets, the running diff ID, counts.
struct ReadResult {
    tocs: Vec<PlannedToc>,
    diff: Hasher,
    files: u64,
    content_bytes: u64,
}

fn read_and_cut(
    planned: &[Planned],
    contents: &dyn Contents,
    opts: &Options,
    jobs: Sender<Job>,
    permits: Receiver<()>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ReadResult, LayerError> {
    let chunk_size = opts.chunk_size;
    let mut cut = Cutter {
        jobs,
        permits: &permits,
        next_index: 0,
        diff: Hasher::new(),
    };
    let mut open: Vec<u8> = Vec::new();
    // The chunk at the head of `open`, if any (hashed by a worker for multi-chunk files).
    let mut open_chunk_len = 0usize;
    let mut tocs = Vec::with_capacity(planned.len());
    let (mut files, mut content_bytes) = (0u64, 0u64);

    for p in planned {
        let (name, kind, mode, size, link) = match p {
            Planned::Landmark(n) => (n.to_string(), Kind::Regular, 0, 1, ""),
            Planned::Source(Entry { path, kind }) => match kind {
                EntryKind::Directory => (format!("{path}/"), Kind::Directory, DIR_MODE, 0, ""),
                EntryKind::File { size, executable } => {
                    let mode = if *executable { EXEC_MODE } else { FILE_MODE };
                    (path.clone(), Kind::Regular, mode, *size, "")
                }
                EntryKind::Symlink { target } => (
                    path.clone(),
                    Kind::Symlink,
                    SYMLINK_MODE,
                    0,
                    target.as_str(),
                ),
            },
        };
        tarfmt::append_header(
            &mut open,
            &Header {
                name: &name,
                kind,
                mode,
                size,
                link_name: link,
            },
        );
        let mut toc = TocEntry {
            name: name.clone(),
            kind: match kind {
                Kind::Regular => "reg",
                Kind::Directory => "dir",
                Kind::Symlink => "symlink",
            }
            .into(),
            size,
            link_name: link.to_string(),
            mode,
            ..Default::default()
        };
        let mut chunks = Vec::new();
        if kind == Kind::Regular {
            let mut file_hash = Hasher::new();
            let mut reader: Option<Box<dyn Read + Send + '_>> = match p {
                Planned::Source(e) if size > 0 => {
                    Some(contents.open(&e.path).map_err(|source| LayerError::Read {
                        path: e.path.clone(),
                        source,
                    })?)
                }
                _ => None,
            };
            let n_chunks = size.div_ceil(chunk_size);
            let mut chunk_offset = 0u64;
            while chunk_offset < size {
                let len = (size - chunk_offset).min(chunk_size);
                cut.emit(std::mem::take(&mut open), open_chunk_len)?;
                open = Vec::with_capacity(len as usize + tarfmt::BLOCK * 4);
                match &mut reader {
                    Some(r) => {
                        read_chunk(r, &mut open, len, &name)?;
                        progress(len);
                    }
                    None => open.push(LANDMARK_CONTENT),
                }
                file_hash.update(&open);
                open_chunk_len = if n_chunks > 1 { len as usize } else { 0 };
                chunks.push(ChunkRef {
                    member: cut.next_index,
                    chunk_offset,
                    chunk_len: len,
                    digest: None,
                });
                chunk_offset += len;
            }
            if let Some(r) = &mut reader {
                let mut probe = [0u8; 1];
                match r.read(&mut probe) {
                    Ok(0) => {}
                    Ok(_) => {
                        return Err(LayerError::Changed {
                            path: name,
                            what: "it grew",
                        })
                    }
                    Err(source) => return Err(LayerError::Read { path: name, source }),
                }
            }
            tarfmt::pad_to_block(&mut open);
            let digest = file_hash.finish();
            toc.digest = digest.to_string();
            if n_chunks == 1 {
                chunks[0].digest = Some(digest);
            }
            if matches!(p, Planned::Source(_)) {
                files += 1;
                content_bytes += size;
            }
        }
        tocs.push(PlannedToc { entry: toc, chunks });
    }
    cut.emit(open, open_chunk_len)?;
    Ok(ReadResult {
        tocs,
        diff: cut.diff,
        files,
        content_bytes,
    })
}

fn read_chunk(
    r: &mut Box<dyn Read + Send + '_>,
    buf: &mut Vec<u8>,
    len: u64,
    name: &str,
) -> Result<(), LayerError> {
    let got = r
        .take(len)
        .read_to_end(buf)
        .map_err(|source| LayerError::Read {
            path: name.to_string(),
            source,
        })?;
    if (got as u64) < len {
        return Err(LayerError::Changed {
            path: name.to_string(),
            what: "it shrank",
        });
    }
    Ok(())
}

/// Fills in offsets and chunk digests, then appends the TOC member and the footer.
fn finish<W: Write>(
    written: Written<W>,
    read: ReadResult,
    opts: &Options,
) -> Result<(LayerInfo, W), LayerError> {
    let Written {
        out: mut hw,
        offsets,
        chunk_digests,
    } = written;
    let ReadResult {
        tocs,
        mut diff,
        files,
        content_bytes,
    } = read;
    let (chunk_size, level) = (opts.chunk_size, opts.level);
    let mut entries = Vec::new();
    for PlannedToc { entry, chunks } in tocs {
        if chunks.is_empty() {
            entries.push(entry);
            continue;
        }
        for (i, c) in chunks.iter().enumerate() {
            let digest = c.digest.or(chunk_digests[c.member]).ok_or_else(|| {
                LayerError::Compress(format!("no digest for a chunk of {}", entry.name))
            })?;
            // Go's quirk, kept for byte-compatible TOCs: chunkSize is set whenever the
            // chunk is a full chunk, the last one included.
            let mut e = if i == 0 {
                entry.clone()
            } else {
                TocEntry {
                    name: entry.name.clone(),
                    kind: "chunk".into(),
                    chunk_offset: c.chunk_offset,
                    ..Default::default()
                }
            };
            e.offset = offsets[c.member];
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
    diff.update(&tail);
    let uncompressed_size = diff.len();

    let lvl = libdeflater::CompressionLvl::new(level)
        .map_err(|_| LayerError::Compress(format!("invalid compression level {level}")))?;
    let member = gzip_member(&mut libdeflater::Compressor::new(lvl), &tail)?;
    let toc_offset = hw.position();
    hw.write_all(&member).map_err(LayerError::Write)?;
    hw.write_all(&footer(toc_offset))
        .map_err(LayerError::Write)?;
    hw.flush().map_err(LayerError::Write)?;
    let (out, digest, size) = hw.finish();
    Ok((
        LayerInfo {
            digest,
            size,
            diff_id: diff.finish(),
            uncompressed_size,
            toc_digest,
            toc_offset,
            files,
            content_bytes,
            toc_entries,
            toc,
        },
        out,
    ))
}
