//! eStargz: a gzip'd tar in which every file payload (and every chunk of a large file)
//! starts its own gzip member, followed by a table of contents and a footer, so a reader
//! can fetch one file with a Range request. See `shared/docs/layer-formats.md` §1–§4.

mod footer;
mod toc;
mod writer;

pub use footer::{footer, parse_footer, FOOTER_SIZE};
pub use toc::{Toc, TocEntry};
pub use writer::build;

use crate::digest::Digest;

/// 4 MiB, the reference writer's default chunk size.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// libdeflate level used for every gzip member. On model weights level 1 is both the
/// fastest and the smallest libdeflate level (weights barely compress; what little they
/// do comes from Huffman coding, not matches), and gives blobs no larger than the Go
/// reference at its level 9 on real weights (see `bench/estargz.sh`). Changing it changes
/// every digest: the golden test pins it.
pub const DEFAULT_LEVEL: i32 = 1;

/// Media type of an eStargz layer (it is an ordinary gzip'd tar to any other reader).
pub const MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Layer annotation carrying the sha256 of the TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Layer annotation carrying the size of the decompressed stream.
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";

#[derive(Clone, Debug)]
pub struct Options {
    /// Payload chunk size in bytes; each chunk is its own gzip member.
    pub chunk_size: u64,
    /// Compression threads. The output never depends on it.
    pub threads: usize,
    /// Paths to put first, before `.prefetch.landmark`.
    pub prefetch: Vec<String>,
    /// libdeflate compression level (0–12).
    pub level: i32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_size: DEFAULT_CHUNK_SIZE,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch: Vec::new(),
            level: DEFAULT_LEVEL,
        }
    }
}

/// What a finished layer is, for the image config and manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the blob (the layer's digest in the manifest).
    pub digest: Digest,
    pub size: u64,
    /// sha256 of the decompressed stream (`rootfs.diff_ids`).
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// sha256 of the TOC JSON bytes.
    pub toc_digest: Digest,
    pub toc_offset: u64,
    /// Regular files taken from the source (landmark excluded).
    pub files: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
    /// TOC entries, landmark and chunk entries included.
    pub toc_entries: u64,
    /// The table of contents itself (each file's digest, chunks and offsets).
    pub toc: Toc,
}
