//! The 51-byte eStargz footer: an empty gzip member whose Extra field carries the TOC
//! offset.

pub const FOOTER_SIZE: usize = 51;

pub fn footer(toc_offset: u64) -> [u8; FOOTER_SIZE] {
    let mut f = [0u8; FOOTER_SIZE];
    f[..10].copy_from_slice(&[0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff]);
    f[10..12].copy_from_slice(&26u16.to_le_bytes());
    f[12..14].copy_from_slice(b"SG");
    f[14..16].copy_from_slice(&22u16.to_le_bytes());
    f[16..32].copy_from_slice(format!("{toc_offset:016x}").as_bytes());
    f[32..38].copy_from_slice(b"STARGZ");
    f[38..43].copy_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    // CRC-32 and ISIZE of empty input stay zero.
    f
}

/// Reads the TOC offset back from a footer, or None if it is not an eStargz footer.
pub fn parse_footer(f: &[u8]) -> Option<u64> {
    if f.len() != FOOTER_SIZE || f[..4] != [0x1f, 0x8b, 0x08, 0x04] || &f[12..14] != b"SG" {
        return None;
    }
    if &f[32..38] != b"STARGZ" {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&f[16..32]).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_matches_the_reference_bytes_for_offset_0x1234() {
        let want: [u8; 51] = [
            0x1f, 0x8b, 0x08, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x1a, 0x00, 0x53, 0x47,
            0x16, 0x00, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30,
            0x31, 0x32, 0x33, 0x34, 0x53, 0x54, 0x41, 0x52, 0x47, 0x5a, 0x01, 0x00, 0x00, 0xff,
            0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(footer(0x1234), want);
        assert_eq!(parse_footer(&want), Some(0x1234));
    }

    #[test]
    fn footer_is_a_valid_empty_gzip_member() {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&footer(99)[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
