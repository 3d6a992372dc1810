//! ISA-L's igzip as an eStargz member encoder (`--encoder isal`). Built only on x86-64
//! with the cargo feature `isal`: ISA-L is C and assembly built from source with nasm and
//! autotools, which a plain `cargo install` should not need.

use super::LayerError;
use isal_sys::igzip_lib as isal;

/// The 10-byte gzip header libdeflate writes at levels 0 and 1: no name, mtime 0,
/// XFL 4 ("fastest"), OS 255 ("unknown"). ISA-L members carry the same header, so
/// only their deflate bodies differ from libdeflate's.
pub(crate) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x04, 0xff];

/// A reusable ISA-L encoder writing one gzip member per call.
pub(crate) struct IsalGzip {
    level: u32,
    /// ISA-L's working memory for levels 1–2. Its size decides where ISA-L ends a
    /// deflate block, so it is part of what the bytes depend on: fixed here.
    level_buf: Vec<u8>,
}

impl IsalGzip {
    pub(crate) fn new(level: i32) -> Result<IsalGzip, LayerError> {
        let size = match level {
            1 => LVL1_BUF,
            2 => LVL2_BUF,
            _ => {
                return Err(LayerError::Compress(format!(
                    "ISA-L level {level} is not offered (use 1 or 2)"
                )))
            }
        };
        Ok(IsalGzip {
            level: level as u32,
            level_buf: vec![0u8; size],
        })
    }

    pub(crate) fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>, LayerError> {
        let too_big =
            || LayerError::Compress(format!("a {}-byte member is too big for ISA-L", data.len()));
        let avail_in = u32::try_from(data.len()).map_err(|_| too_big())?;
        // ISA-L falls back to stored blocks when the compressed body would be larger
        // than stored ones; it only does so with room for them, so always give it that
        // room (5 bytes per 65535-byte stored block, plus slack). The bytes do not
        // depend on the room beyond that: ISA-L caps its output at the stored size.
        let bound = data.len() + 5 * (data.len() / 65535 + 1) + 64;
        let avail_out = u32::try_from(bound).map_err(|_| too_big())?;
        // Not zeroed: ISA-L writes the body and only what it wrote is kept.
        let mut out = Vec::with_capacity(GZIP_HEADER.len() + bound + 8);
        out.extend_from_slice(&GZIP_HEADER);
        let body = out.spare_capacity_mut().as_mut_ptr() as *mut u8;
        // SAFETY: the stream is initialised by ISA-L before use; every pointer it gets
        // (input, output, level buffer) outlives the call, with the lengths given:
        // `body` has room for `bound` bytes. ISA-L keeps no pointer after returning,
        // and it wrote the `total_out` bytes that `set_len` keeps.
        unsafe {
            let mut stream: Box<isal::isal_zstream> = Box::new(std::mem::zeroed());
            isal::isal_deflate_stateless_init(&mut *stream);
            stream.level = self.level;
            stream.level_buf = self.level_buf.as_mut_ptr();
            stream.level_buf_size = self.level_buf.len() as u32;
            stream.gzip_flag = isal::IGZIP_DEFLATE as u16;
            stream.flush = isal::NO_FLUSH as u16;
            stream.end_of_stream = 1;
            stream.next_in = data.as_ptr() as *mut u8;
            stream.avail_in = avail_in;
            stream.next_out = body;
            stream.avail_out = avail_out;
            let ret = isal::isal_deflate_stateless(&mut *stream);
            if ret != isal::COMP_OK as i32 {
                return Err(LayerError::Compress(format!(
                    "ISA-L deflate failed with code {ret}"
                )));
            }
            let written = (stream.total_out as usize).min(bound);
            out.set_len(GZIP_HEADER.len() + written);
        }
        out.extend_from_slice(&libdeflater::crc32(data).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        Ok(out)
    }
}

// ISA-L's ISAL_DEF_LVL1_DEFAULT and ISAL_DEF_LVL2_DEFAULT in the pinned version,
// written out so that a bump cannot move them silently.
const LVL1_BUF: usize = 282_624;
const LVL2_BUF: usize = 331_776;
const _: () = assert!(LVL1_BUF == isal::ISAL_DEF_LVL1_DEFAULT as usize);
const _: () = assert!(LVL2_BUF == isal::ISAL_DEF_LVL2_DEFAULT as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libdeflate_writes_the_header_isal_members_reuse_at_levels_0_and_1() {
        for level in [0, 1] {
            let mut c =
                libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
            let mut out = vec![0u8; c.gzip_compress_bound(5)];
            let n = c.gzip_compress(b"hello", &mut out).unwrap();
            assert_eq!(out[..10], GZIP_HEADER, "level {level}");
            assert_eq!(
                out[n - 8..n - 4],
                libdeflater::crc32(b"hello").to_le_bytes()
            );
        }
    }

    #[test]
    fn isal_members_are_gzip_members_with_libdeflates_header_and_trailer() {
        use std::io::Read;
        let mut data = Vec::new();
        let mut x = 0x9e37_79b9_u32;
        for i in 0..300_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Half noise, half repeats: both literal and match paths run.
            data.push(if i % 2 == 0 {
                (x >> 24) as u8
            } else {
                (i % 7) as u8
            });
        }
        for level in [1, 2] {
            let mut c = IsalGzip::new(level).unwrap();
            for input in [&data[..], &b""[..], &b"x"[..]] {
                let m = c.compress(input).unwrap();
                assert_eq!(m[..10], GZIP_HEADER);
                let mut back = Vec::new();
                flate2::read::GzDecoder::new(&m[..])
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(back, input, "level {level}");
                // The same call twice gives the same bytes (no state carried over).
                assert_eq!(c.compress(input).unwrap(), m);
            }
        }
        assert!(IsalGzip::new(3).is_err());
    }

    #[test]
    fn isal_members_do_not_depend_on_earlier_members_or_bytes_after_the_input() {
        // A worker reuses its encoder for whichever members it is handed, so a member's
        // bytes must not depend on what that encoder compressed before, nor on what lies
        // past the end of the input in memory.
        let mut noise = Vec::new();
        let mut x = 0x2545_f491_u32;
        for i in 0..(3 << 20) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            noise.push(if i % 3 == 0 {
                (i % 11) as u8
            } else {
                (x >> 24) as u8
            });
        }
        let pieces: Vec<&[u8]> = [100, 3000, 70_000, 1 << 20, 5, 2 << 20]
            .iter()
            .scan(0usize, |at, &len| {
                let p = &noise[*at..*at + len];
                *at = (*at + len) % (1 << 20);
                Some(p)
            })
            .collect();
        for level in [1, 2] {
            let mut used = IsalGzip::new(level).unwrap();
            for (i, piece) in pieces.iter().enumerate() {
                let after_others = used.compress(piece).unwrap();
                let fresh = IsalGzip::new(level).unwrap().compress(piece).unwrap();
                assert_eq!(after_others, fresh, "level {level}, piece {i}");
                let mut padded = piece.to_vec();
                padded.extend_from_slice(&[0xff; 4096]);
                let tail = used.compress(&padded[..piece.len()]).unwrap();
                assert_eq!(tail, fresh, "level {level}, piece {i}, 0xff after it");
            }
        }
    }
}
