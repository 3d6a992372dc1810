//! The parallel, order-preserving member writer both formats share.
//!
//! One reader thread walks the entries in output order, reads file contents chunk by
//! chunk and cuts the uncompressed tar stream into members: a new member before every
//! payload chunk, and, where the format wants it, right after the chunk too. Each member
//! is a numbered job; workers compress jobs in any order (a gzip member or a zstd frame),
//! and the writer puts them back in number order. So the bytes never depend on the
//! thread count. In-flight members are capped by a pool of permits, so memory stays at a
//! few chunks per thread whatever the file sizes.
//!
//! The format decides, through [`Rules`]: how one member is compressed, where a payload's
//! padding goes (eStargz: with the last chunk; zstd:chunked: into the next member, so each
//! chunk is a member of its own), whether the end-of-archive blocks close the stream, and
//! whether a CRC-64 of each file is needed. A [`TarObserver`] hears every non-payload byte
//! and every entry as the reader produces them (zstd:chunked's tar-split). What comes
//! after the last member (TOC, footer) is the format's own `finish`.

use crate::digest::{update_all, Digest, Hasher, HashingWriter};
use crate::layer::tar::{self as tarfmt, Header, Kind};
use crate::layer::{
    Contents, Entry, EntryKind, LayerError, Planned, DIR_MODE, EXEC_MODE, FILE_MODE, SYMLINK_MODE,
};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};

const LANDMARK_CONTENT: u8 = 0x0f;

/// CRC-64 with Go's `crc64.ISO` table, as tar-split records file contents.
pub(crate) const CRC64: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_GO_ISO);

/// How one member is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    /// A gzip member from libdeflate at this level (0: stored blocks).
    Gzip(i32),
    /// A gzip member whose deflate body is ISA-L's at this level (x86-64 only; the
    /// header and trailer are libdeflate's, see `encoder`).
    IsalGzip(i32),
    /// A standard zstd frame at this level, with its content size and checksum.
    Zstd(i32),
}

impl Codec {
    pub(crate) fn compressor(self) -> Result<Compressor, LayerError> {
        match self {
            Codec::Gzip(level) => {
                let lvl = libdeflater::CompressionLvl::new(level).map_err(|_| {
                    LayerError::Compress(format!("invalid compression level {level}"))
                })?;
                Ok(Compressor::Gzip(libdeflater::Compressor::new(lvl)))
            }
            #[cfg(all(target_arch = "x86_64", feature = "isal"))]
            Codec::IsalGzip(level) => Ok(Compressor::IsalGzip(Box::new(
                crate::layer::isal::IsalGzip::new(level)?,
            ))),
            #[cfg(not(all(target_arch = "x86_64", feature = "isal")))]
            Codec::IsalGzip(_) => Err(LayerError::Compress("ISA-L is not in this build".into())),
            Codec::Zstd(level) => {
                let zerr = |e: std::io::Error| LayerError::Compress(format!("zstd: {e}"));
                let mut c = zstd::bulk::Compressor::new(level).map_err(zerr)?;
                c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
                    .map_err(zerr)?;
                c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))
                    .map_err(zerr)?;
                Ok(Compressor::Zstd(Box::new(c)))
            }
        }
    }
}

/// A ready encoder for one codec; each `compress` call gives one independent member.
pub(crate) enum Compressor {
    Gzip(libdeflater::Compressor),
    #[cfg(all(target_arch = "x86_64", feature = "isal"))]
    IsalGzip(Box<crate::layer::isal::IsalGzip>),
    Zstd(Box<zstd::bulk::Compressor<'static>>),
}

impl Compressor {
    pub(crate) fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>, LayerError> {
        match self {
            Compressor::Gzip(c) => {
                let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
                let n = c
                    .gzip_compress(data, &mut out)
                    .map_err(|e| LayerError::Compress(format!("{e:?}")))?;
                out.truncate(n);
                Ok(out)
            }
            #[cfg(all(target_arch = "x86_64", feature = "isal"))]
            Compressor::IsalGzip(c) => c.compress(data),
            Compressor::Zstd(c) => c
                .compress(data)
                .map_err(|e| LayerError::Compress(format!("zstd: {e}"))),
        }
    }
}

/// The format's rules for cutting and compressing the stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    pub codec: Codec,
    pub chunk_size: u64,
    pub threads: usize,
    /// Every payload chunk is a member of its own and the padding after a payload opens
    /// the next member (zstd:chunked). Otherwise the padding and the following headers
    /// stay in the last chunk's member (eStargz).
    pub payload_alone: bool,
    /// The last member ends with the two zero blocks that end a tar archive.
    pub end_of_archive: bool,
    /// Compute each file's CRC-64 (for the tar-split).
    pub crc64: bool,
    /// Bytes of `--prefix` (and its `/`) before the model's path in a file's tar name.
    pub prefix_len: usize,
}

impl Rules {
    /// The model's path of a source file's tar name: what the source opens it by and
    /// what the layer's file digests are keyed by (the Hub's names).
    pub(crate) fn source_path<'a>(&self, name: &'a str) -> &'a str {
        name.get(self.prefix_len..).unwrap_or(name)
    }
}

/// Hears the uncompressed tar stream as the reader cuts it, without the payloads.
pub(crate) trait TarObserver {
    /// Bytes that are not file content (headers, padding, end of archive), in order.
    fn raw(&mut self, bytes: &[u8]) -> Result<(), LayerError>;
    /// An entry whose header bytes were just given to `raw`; its payload follows.
    fn entry(&mut self, name: &str, size: u64, crc64: Option<u64>) -> Result<(), LayerError>;
}

/// One payload chunk: its member and its digest (a single-chunk file's is the file's).
#[derive(Clone, Debug)]
pub(crate) struct ChunkRef {
    pub member: usize,
    pub chunk_offset: u64,
    pub chunk_len: u64,
    pub digest: Option<Digest>,
}

/// One tar entry as written, with what the TOC needs to know about it.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    /// The tar name (directories end with `/`).
    pub name: String,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub link_name: String,
    /// Content digest of a regular file (landmarks included, empty files too).
    pub digest: Option<Digest>,
    pub chunks: Vec<ChunkRef>,
    /// A file from the source, not a landmark.
    pub from_source: bool,
}

/// What the reader leaves: the entries, the running diff ID, counts.
pub(crate) struct ReadResult {
    pub records: Vec<Record>,
    /// sha256 of every uncompressed byte, in order (the diff ID so far).
    pub diff: Hasher,
    pub files: u64,
    pub content_bytes: u64,
}

impl ChunkRef {
    /// The chunk's digest, which the reader sets for every chunk it reads.
    pub(crate) fn digest(&self, name: &str) -> Result<Digest, LayerError> {
        self.digest
            .ok_or_else(|| LayerError::Compress(format!("no digest for a chunk of {name}")))
    }
}

/// What the writer thread leaves: the output, and each member's offset.
pub(crate) struct Written<W> {
    pub out: HashingWriter<W>,
    pub offsets: Vec<u64>,
}

struct Job {
    index: usize,
    data: Vec<u8>,
}

struct Done {
    index: usize,
    compressed: Vec<u8>,
}

/// Writes the members of `planned` to `out`: reads, cuts, compresses in parallel and
/// writes in order. Returns what was written and what was read; the format appends its
/// own tail to `Written::out`.
pub(crate) fn write_members<W: Write + Send>(
    planned: &[Planned],
    contents: &dyn Contents,
    rules: Rules,
    observer: Option<&mut dyn TarObserver>,
    out: W,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(Written<W>, ReadResult), LayerError> {
    // Fail on a bad level before any thread starts.
    drop(rules.codec.compressor()?);
    let threads = rules.threads.max(1);
    // Permits bound the members between the reader and the file: queued, being
    // compressed, or waiting for their turn to be written.
    let permits_n = 2 * threads + 2;

    // Set when the reader fails (a signal, a bad file): the members queued behind it
    // are not compressed, so a stop costs at most the chunks being compressed.
    let abandoned = AtomicBool::new(false);
    let abandoned = &abandoned;
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
            s.spawn(move || compress_worker(job_rx, done_tx, rules.codec, abandoned));
        }
        drop(job_rx);
        drop(done_tx);
        let writer = s.spawn(move || write_in_order(out, done_rx, permit_tx, abandoned));

        let read_result = read_and_cut(
            planned, contents, rules, observer, job_tx, permit_rx, progress,
        );
        if read_result.is_err() {
            abandoned.store(true, Ordering::SeqCst);
        }
        let written = writer.join().expect("writer thread panicked");
        // A write error explains a reader that stopped early, so report it first.
        let written = written?;
        Ok((written, read_result?))
    })
}

fn compress_worker(
    jobs: Receiver<Job>,
    done: Sender<Result<Done, LayerError>>,
    codec: Codec,
    abandoned: &AtomicBool,
) {
    let mut compressor = match codec.compressor() {
        Ok(c) => c,
        Err(e) => {
            let _ = done.send(Err(e));
            return;
        }
    };
    for job in jobs {
        if abandoned.load(Ordering::SeqCst) {
            return;
        }
        let result = compressor.compress(&job.data).map(|compressed| Done {
            index: job.index,
            compressed,
        });
        if done.send(result).is_err() {
            return;
        }
    }
}

fn write_in_order<W: Write>(
    out: W,
    done: Receiver<Result<Done, LayerError>>,
    permits: Sender<()>,
    abandoned: &AtomicBool,
) -> Result<Written<W>, LayerError> {
    let mut hw = HashingWriter::new(out);
    let mut offsets = Vec::new();
    let mut waiting: BTreeMap<usize, Done> = BTreeMap::new();
    for result in done {
        let d = result?;
        waiting.insert(d.index, d);
        while let Some(d) = waiting.remove(&offsets.len()) {
            offsets.push(hw.position());
            hw.write_all(&d.compressed).map_err(LayerError::Write)?;
            // The reader may have stopped already; a closed permit pool is fine.
            let _ = permits.send(());
        }
    }
    // Every member sent must have arrived, or a worker failed before sending it (or
    // the reader failed, whose error is the one reported).
    if !waiting.is_empty() && !abandoned.load(Ordering::SeqCst) {
        return Err(LayerError::Compress(
            "a compressed member went missing".into(),
        ));
    }
    Ok(Written { out: hw, offsets })
}

/// Emits the open member as the next job.
struct Cutter<'a> {
    jobs: Sender<Job>,
    permits: &'a Receiver<()>,
    next_index: usize,
}

impl Cutter<'_> {
    fn emit(&mut self, data: Vec<u8>) -> Result<(), LayerError> {
        let stopped = || LayerError::Compress("the layer writer stopped".into());
        self.permits.recv().map_err(|_| stopped())?;
        let index = self.next_index;
        self.next_index += 1;
        self.jobs.send(Job { index, data }).map_err(|_| stopped())
    }
}

/// Appends non-payload bytes to the open member and the diff ID, telling the observer.
fn put_raw(
    open: &mut Vec<u8>,
    diff: &mut Hasher,
    bytes: &[u8],
    observer: &mut Option<&mut dyn TarObserver>,
) -> Result<(), LayerError> {
    open.extend_from_slice(bytes);
    diff.update(bytes);
    match observer {
        Some(o) => o.raw(bytes),
        None => Ok(()),
    }
}

fn read_and_cut(
    planned: &[Planned],
    contents: &dyn Contents,
    rules: Rules,
    mut observer: Option<&mut dyn TarObserver>,
    jobs: Sender<Job>,
    permits: Receiver<()>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ReadResult, LayerError> {
    let chunk_size = rules.chunk_size;
    let mut cut = Cutter {
        jobs,
        permits: &permits,
        next_index: 0,
    };
    // The member being filled, and the diff ID: every uncompressed byte, hashed as it
    // is appended, so in stream order.
    let mut open: Vec<u8> = Vec::new();
    let mut diff = Hasher::new();
    let mut records = Vec::with_capacity(planned.len());
    let (mut files, mut content_bytes) = (0u64, 0u64);
    let mut header = Vec::with_capacity(3 * tarfmt::BLOCK);

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
        header.clear();
        tarfmt::append_header(
            &mut header,
            &Header {
                name: &name,
                kind,
                mode,
                size,
                link_name: link,
            },
        );
        put_raw(&mut open, &mut diff, &header, &mut observer)?;
        let n_chunks = size.div_ceil(chunk_size);
        let mut record = Record {
            name,
            kind,
            mode,
            size,
            link_name: link.to_string(),
            digest: None,
            // A record is kept until the TOC is written: a small file's one chunk must
            // not reserve the four a growing Vec starts with (capped: the size is the
            // source's word until it is read).
            chunks: Vec::with_capacity(n_chunks.min(64) as usize),
            from_source: matches!(p, Planned::Source(_)),
        };
        if kind != Kind::Regular {
            if let Some(o) = &mut observer {
                o.entry(&record.name, 0, None)?;
            }
            records.push(record);
            continue;
        }

        let mut file_hash = Hasher::new();
        let mut crc = rules.crc64.then(|| CRC64.digest());
        let mut reader: Option<Box<dyn Read + Send + '_>> = match p {
            Planned::Source(e) if size > 0 => {
                let path = rules.source_path(&e.path);
                Some(contents.open(path).map_err(|source| LayerError::Read {
                    path: path.to_string(),
                    source,
                })?)
            }
            _ => None,
        };
        let mut chunk_offset = 0u64;
        while chunk_offset < size {
            let len = (size - chunk_offset).min(chunk_size);
            // A new member before every payload chunk.
            if !open.is_empty() {
                cut.emit(std::mem::take(&mut open))?;
            }
            let mut chunk = Vec::with_capacity(len as usize + tarfmt::BLOCK * 4);
            match &mut reader {
                Some(r) => {
                    read_chunk(r, &mut chunk, len, &record.name)?;
                    progress(len);
                }
                None => chunk.push(LANDMARK_CONTENT),
            }
            // One pass feeds the file's digest, the diff ID and (for a multi-chunk file)
            // the chunk's digest; a single chunk's digest is the file's.
            let digest = if n_chunks > 1 {
                let mut chunk_hash = Hasher::new();
                update_all(&mut [&mut file_hash, &mut diff, &mut chunk_hash], &chunk);
                Some(chunk_hash.finish())
            } else {
                update_all(&mut [&mut file_hash, &mut diff], &chunk);
                None
            };
            if let Some(c) = &mut crc {
                c.update(&chunk);
            }
            record.chunks.push(ChunkRef {
                member: cut.next_index,
                chunk_offset,
                chunk_len: len,
                digest,
            });
            if rules.payload_alone {
                cut.emit(chunk)?;
            } else {
                open = chunk;
            }
            chunk_offset += len;
        }
        if let Some(r) = &mut reader {
            let mut probe = [0u8; 1];
            match r.read(&mut probe) {
                Ok(0) => {}
                Ok(_) => {
                    return Err(LayerError::Changed {
                        path: record.name,
                        what: "it grew",
                    })
                }
                Err(source) => {
                    return Err(LayerError::Read {
                        path: record.name,
                        source,
                    })
                }
            }
        }
        // The observer hears the entry before its padding (tar-split order).
        if let Some(o) = &mut observer {
            let crc = crc.filter(|_| size > 0).map(|c| c.finalize());
            o.entry(&record.name, size, crc)?;
        }
        let pad = [0u8; tarfmt::BLOCK];
        put_raw(
            &mut open,
            &mut diff,
            &pad[..tarfmt::padding_len(size)],
            &mut observer,
        )?;
        let digest = file_hash.finish();
        record.digest = Some(digest);
        if n_chunks == 1 {
            record.chunks[0].digest = Some(digest);
        }
        if record.from_source {
            files += 1;
            content_bytes += size;
        }
        records.push(record);
    }
    if rules.end_of_archive {
        put_raw(
            &mut open,
            &mut diff,
            &[0u8; 2 * tarfmt::BLOCK],
            &mut observer,
        )?;
    }
    cut.emit(open)?;
    Ok(ReadResult {
        records,
        diff,
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
