//! eStargz: a gzip'd tar in which every file payload (and every chunk of a large file)
//! starts its own gzip member, followed by a table of contents and a footer, so a reader
//! can fetch one file with a Range request. See `shared/docs/layer-formats.md` §1–§4.

mod footer;
pub mod reader;
mod toc;
mod writer;

pub use footer::{footer, parse_footer, FOOTER_SIZE};
pub use toc::{Toc, TocEntry};
pub use writer::build;

/// 4 MiB, the reference writer's default chunk size.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;

/// libdeflate level used for every gzip member by default. On model weights level 1 is both the
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
