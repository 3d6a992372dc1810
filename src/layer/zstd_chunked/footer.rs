//! Skippable frames and the 64-byte zstd:chunked footer (containers/storage 1.50 and
//! later; it is never read by containers/storage, which uses the annotations, but makes
//! the blob self-describing).

/// The skippable frame magic 0x184D2A50, little-endian.
pub const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// Footer magic (the 40-byte legacy footer used "GnUlInUx").
pub const FOOTER_MAGIC: &[u8; 8] = b"GNUlInUx";
const FOOTER_SIZE: usize = 64;
/// The footer with its skippable frame header: the last bytes of the blob.
pub const FOOTER_FRAME_SIZE: usize = 8 + FOOTER_SIZE;

/// The 8 bytes before a skippable frame's payload of `len` bytes.
pub fn skippable_frame_header(len: usize) -> [u8; 8] {
    let len = u32::try_from(len).expect("skippable frames hold less than 4 GiB");
    let mut h = [0u8; 8];
    h[..4].copy_from_slice(&SKIPPABLE_MAGIC);
    h[4..].copy_from_slice(&len.to_le_bytes());
    h
}

/// Where the manifest and the tar-split are: blob offsets of their compressed bytes
/// (after the skippable frame headers), compressed and uncompressed lengths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footer {
    pub manifest_offset: u64,
    pub manifest_len: u64,
    pub manifest_uncompressed_len: u64,
    pub tar_split_offset: u64,
    pub tar_split_len: u64,
    pub tar_split_uncompressed_len: u64,
}

/// The footer as a whole skippable frame (72 bytes): seven u64le fields and the magic.
pub fn footer(f: &Footer) -> [u8; FOOTER_FRAME_SIZE] {
    let mut out = [0u8; FOOTER_FRAME_SIZE];
    out[..8].copy_from_slice(&skippable_frame_header(FOOTER_SIZE));
    let fields = [
        f.manifest_offset,
        f.manifest_len,
        f.manifest_uncompressed_len,
        super::MANIFEST_TYPE_CRFS,
        f.tar_split_offset,
        f.tar_split_len,
        f.tar_split_uncompressed_len,
    ];
    for (i, v) in fields.iter().enumerate() {
        out[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    out[64..].copy_from_slice(FOOTER_MAGIC);
    out
}

/// Reads a footer frame back (the last 72 bytes of a blob), or None if it is not one.
pub fn parse_footer(frame: &[u8]) -> Option<Footer> {
    if frame.len() != FOOTER_FRAME_SIZE
        || frame[..8] != skippable_frame_header(FOOTER_SIZE)
        || &frame[64..] != FOOTER_MAGIC
    {
        return None;
    }
    let field = |i: usize| u64::from_le_bytes(frame[8 + 8 * i..16 + 8 * i].try_into().unwrap());
    if field(3) != super::MANIFEST_TYPE_CRFS {
        return None;
    }
    Some(Footer {
        manifest_offset: field(0),
        manifest_len: field(1),
        manifest_uncompressed_len: field(2),
        tar_split_offset: field(4),
        tar_split_len: field(5),
        tar_split_uncompressed_len: field(6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_is_a_skippable_frame_of_seven_little_endian_fields_and_the_magic() {
        let f = Footer {
            manifest_offset: 0x1122,
            manifest_len: 3,
            manifest_uncompressed_len: 4,
            tar_split_offset: 5,
            tar_split_len: 6,
            tar_split_uncompressed_len: 7,
        };
        let b = footer(&f);
        assert_eq!(b[..8], [0x50, 0x2a, 0x4d, 0x18, 64, 0, 0, 0]);
        assert_eq!(b[8..16], [0x22, 0x11, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b[32..40], [1, 0, 0, 0, 0, 0, 0, 0], "manifest type CRFS");
        assert_eq!(&b[64..], b"GNUlInUx");
        assert_eq!(parse_footer(&b), Some(f));
        let mut bad = b;
        bad[70] = b'X';
        assert_eq!(parse_footer(&bad), None);
    }

    #[test]
    fn a_zstd_decoder_skips_skippable_frames() {
        let mut blob = zstd::bulk::compress(b"data", 3).unwrap();
        blob.extend_from_slice(&skippable_frame_header(3));
        blob.extend_from_slice(b"xyz");
        blob.extend_from_slice(&footer(&Footer::default()));
        assert_eq!(zstd::stream::decode_all(&blob[..]).unwrap(), b"data");
    }
}
