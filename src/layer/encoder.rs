//! Which deflate encoder makes eStargz's gzip members, and where its bytes are the same.
//!
//! - `libdeflate` (the default): pinned libdeflate, levels 0–12. Identical output on
//!   every CPU (x86-64 and aarch64 checked); level 0 writes stored blocks (no
//!   compression, fastest, still an ordinary gzip member).
//! - `isal`: ISA-L's igzip, levels 1–2, several times faster on x86-64. Its output is
//!   the same on every x86-64 code path from SSE4.2 up (SSE4.2, AVX, AVX2, AVX-512) but
//!   differs on aarch64 and on x86-64 without SSE4.2, so it is refused there before any
//!   work starts ([`Encoder::check_cpu`]). Only the deflate body comes from ISA-L: the
//!   gzip header and trailer are written here, byte for byte as libdeflate writes them.
//!
//! `DEPOTAI_FORCE_CPU=generic` (x86-64 without SSE4.2) or `=arm64` makes the CPU check
//! answer as on such a machine, so the refusal can be tested anywhere.

use super::LayerError;
use std::fmt;
use std::str::FromStr;

/// The deflate encoders an eStargz layer can be made with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoder {
    #[default]
    Libdeflate,
    Isal,
}

/// Layer annotation naming a non-default encoder and its level, e.g. `isal-1`. Layers
/// from the default encoder have none, so their bytes (and digests) are as before.
pub const ENCODER_ANNOTATION: &str = "dev.depotai.layer.encoder";

/// Environment override of the CPU check, for tests: `generic` or `arm64`.
pub const FORCE_CPU_ENV: &str = "DEPOTAI_FORCE_CPU";

impl Encoder {
    pub fn name(self) -> &'static str {
        match self {
            Encoder::Libdeflate => "libdeflate",
            Encoder::Isal => "isal",
        }
    }

    /// The level used when none is given.
    pub fn default_level(self) -> i32 {
        match self {
            Encoder::Libdeflate => super::estargz::DEFAULT_LEVEL,
            // Level 2 over 1 (bench/estargz.sh): on real weights (MiniLM) level 1's blob
            // is 0.21 % larger than libdeflate level 1's, close to the 0.3 % we allow,
            // level 2's 0.09 %; on a generated 1 GiB model 0.11 % and 0.10 %. Level 2
            // costs at most ~10 % more CPU for the whole build.
            Encoder::Isal => 2,
        }
    }

    /// Levels this encoder accepts. ISA-L's level 0 expands weights by over 20 % and
    /// its level 3 differs between AVX2 and AVX-512, so neither is offered.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Encoder::Libdeflate => 0..=12,
            Encoder::Isal => 1..=2,
        }
    }

    /// The value of [`ENCODER_ANNOTATION`] for a layer made at `level`, if any.
    pub fn annotation(self, level: i32) -> Option<String> {
        match self {
            Encoder::Libdeflate => None,
            Encoder::Isal => Some(format!("isal-{level}")),
        }
    }

    /// Whether this encoder's bytes on this CPU are the ones every accepting machine
    /// writes. Cheap; called up front by the CLI and again by [`super::build`].
    pub fn check_cpu(self) -> Result<(), LayerError> {
        match self {
            Encoder::Libdeflate => Ok(()),
            Encoder::Isal => isal_cpu(forced_cpu()?),
        }
    }
}

/// One eStargz member at a time from an encoder at a level: the gzip member a layer holds
/// for the same bytes. For measuring an encoder alone (`examples/bench_encoder.rs`);
/// layers are made by [`super::build`].
pub struct GzipMembers(super::members::Compressor);

impl GzipMembers {
    /// Checks the level and the CPU as a build would.
    pub fn new(encoder: Encoder, level: i32) -> Result<GzipMembers, LayerError> {
        if !encoder.levels().contains(&level) {
            return Err(LayerError::Compress(format!(
                "{encoder} does not take level {level}"
            )));
        }
        encoder.check_cpu()?;
        let codec = match encoder {
            Encoder::Libdeflate => super::members::Codec::Gzip(level),
            Encoder::Isal => super::members::Codec::IsalGzip(level),
        };
        Ok(GzipMembers(codec.compressor()?))
    }

    /// `data` as one gzip member.
    pub fn compress(&mut self, data: &[u8]) -> Result<Vec<u8>, LayerError> {
        self.0.compress(data)
    }
}

impl fmt::Display for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoder {
    type Err = String;
    fn from_str(s: &str) -> Result<Encoder, String> {
        match s {
            "libdeflate" => Ok(Encoder::Libdeflate),
            "isal" => Ok(Encoder::Isal),
            _ => Err(format!("unknown encoder {s:?} (use libdeflate or isal)")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cpu {
    Native,
    Generic,
    Arm64,
}

fn forced_cpu() -> Result<Cpu, LayerError> {
    match std::env::var(FORCE_CPU_ENV).as_deref() {
        Err(_) | Ok("") | Ok("native") => Ok(Cpu::Native),
        Ok("generic") => Ok(Cpu::Generic),
        Ok("arm64") | Ok("aarch64") => Ok(Cpu::Arm64),
        Ok(other) => Err(LayerError::Encoder(format!(
            "{FORCE_CPU_ENV}={other:?} is not one of native, generic, arm64"
        ))),
    }
}

fn isal_cpu(cpu: Cpu) -> Result<(), LayerError> {
    let cpu = match cpu {
        Cpu::Native if cfg!(target_arch = "x86_64") => {
            if has_sse42() {
                return Ok(());
            }
            Cpu::Generic
        }
        Cpu::Native => Cpu::Arm64,
        forced => forced,
    };
    Err(LayerError::Encoder(match cpu {
        Cpu::Arm64 => format!(
            "--encoder isal runs on x86-64 only: ISA-L's output on {} differs, so the digests would not be reproducible (use --encoder libdeflate)",
            if cfg!(target_arch = "x86_64") { "aarch64" } else { std::env::consts::ARCH }
        ),
        _ => "--encoder isal needs an x86-64 CPU with SSE4.2: without it ISA-L's output differs, so the digests would not be reproducible (use --encoder libdeflate)".to_string(),
    }))
}

#[cfg(target_arch = "x86_64")]
fn has_sse42() -> bool {
    // ISA-L's dispatcher picks its portable C code unless CPUID reports SSE4.2; every
    // path it picks with SSE4.2 (SSE4.2, AVX, AVX2, AVX-512) writes the same bytes.
    std::arch::is_x86_feature_detected!("sse4.2")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_sse42() -> bool {
    false
}

/// The 10-byte gzip header libdeflate writes at levels 0 and 1: no name, mtime 0,
/// XFL 4 ("fastest"), OS 255 ("unknown"). ISA-L members carry the same header, so
/// only their deflate bodies differ from libdeflate's.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x04, 0xff];

#[cfg(target_arch = "x86_64")]
pub(crate) use isal_gzip::IsalGzip;

#[cfg(target_arch = "x86_64")]
mod isal_gzip {
    use super::{LayerError, GZIP_HEADER};
    use isal_sys::igzip_lib as isal;

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
            let too_big = || {
                LayerError::Compress(format!("a {}-byte member is too big for ISA-L", data.len()))
            };
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
}

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
    fn encoders_parse_and_name_their_levels() {
        assert_eq!("isal".parse::<Encoder>(), Ok(Encoder::Isal));
        assert_eq!("libdeflate".parse::<Encoder>(), Ok(Encoder::Libdeflate));
        assert!("zlib"
            .parse::<Encoder>()
            .unwrap_err()
            .contains("libdeflate or isal"));
        assert_eq!(Encoder::Libdeflate.levels(), 0..=12);
        assert_eq!(Encoder::Isal.levels(), 1..=2);
        assert_eq!(Encoder::Isal.annotation(2).as_deref(), Some("isal-2"));
        assert_eq!(Encoder::Libdeflate.annotation(0), None);
    }

    #[test]
    fn isal_is_refused_on_cpus_whose_output_differs() {
        let e = isal_cpu(Cpu::Generic).unwrap_err().to_string();
        assert!(e.contains("needs an x86-64 CPU with SSE4.2"), "{e}");
        let e = isal_cpu(Cpu::Arm64).unwrap_err().to_string();
        assert!(e.contains("runs on x86-64 only"), "{e}");
        assert_eq!(Encoder::Libdeflate.check_cpu().ok(), Some(()));
    }

    #[cfg(target_arch = "x86_64")]
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

    #[cfg(target_arch = "x86_64")]
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
