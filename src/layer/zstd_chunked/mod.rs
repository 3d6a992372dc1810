//! zstd:chunked, the containers/storage format for partial pulls (podman, buildah,
//! CRI-O): a `tar+zstd` layer whose file payloads (and each chunk of a large file) are
//! zstd frames of their own, followed by three skippable frames that a plain zstd
//! decoder ignores: the TOC ("manifest"), the tar-split, and a 64-byte footer. Readers
//! find the TOC through the layer annotations. See `shared/docs/layer-formats.md` §7.
//!
//! The uncompressed stream is an ordinary tar (entries, then two zero blocks; no
//! landmarks, no TOC entry), so the diff ID is its sha256.

mod footer;
pub mod reader;
mod tarsplit;
mod toc;
mod writer;

pub use footer::{footer, parse_footer, skippable_frame_header, Footer, FOOTER_FRAME_SIZE};
pub use tarsplit::{crc64, TarSplitEntry};
pub use toc::{Toc, TocEntry};
pub use writer::build;

/// zstd level used for every frame by default. Model weights barely compress; level 3
/// (zstd's own default) gets what there is to get at several hundred MB/s per core.
/// Changing it changes every digest: the golden test pins it.
pub const DEFAULT_LEVEL: i32 = 3;

/// Media type of a zstd:chunked layer (an ordinary zstd'd tar to any other reader).
pub const MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// sha256 of the compressed manifest (containers/storage 1.44 and later).
pub const MANIFEST_CHECKSUM_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-checksum";
/// `offset:compressedLength:uncompressedLength:1` of the manifest.
pub const MANIFEST_POSITION_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-position";
/// `offset:compressedLength:uncompressedLength` of the tar-split.
pub const TAR_SPLIT_POSITION_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.tarsplit-position";
/// The same manifest checksum under the key containers/storage up to 1.43 reads
/// (podman 4.x, buildah 1.28, skopeo 1.9 as Debian 12 ships them).
pub const LEGACY_MANIFEST_CHECKSUM_ANNOTATION: &str =
    "io.containers.zstd-chunked.manifest-checksum";
/// The same manifest position under the key containers/storage up to 1.43 reads.
pub const LEGACY_MANIFEST_POSITION_ANNOTATION: &str =
    "io.containers.zstd-chunked.manifest-position";

/// The manifest type in the position annotation and the footer: CRFS, the only one.
pub const MANIFEST_TYPE_CRFS: u64 = 1;

/// The modification time of every entry: Unix time 0, written in UTC whatever the local
/// time zone (the Go writer would use the writer's zone; readers compare instants).
pub const MODTIME: &str = "1970-01-01T00:00:00Z";
