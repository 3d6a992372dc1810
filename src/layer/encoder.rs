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
//! ISA-L is compiled in only with the cargo feature `isal` (it needs nasm and autotools
//! to build); without it `--encoder isal` is refused with how to get it.
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

/// Whether this build has ISA-L: the cargo feature `isal` on x86-64.
pub const ISAL_BUILT: bool = cfg!(all(target_arch = "x86_64", feature = "isal"));

fn isal_cpu(cpu: Cpu) -> Result<(), LayerError> {
    // A CPU that could never run it is told so first, even where the feature is off.
    if ISAL_BUILT || !matches!(cpu, Cpu::Native) || !cfg!(target_arch = "x86_64") {
        isal_cpu_only(cpu)
    } else {
        Err(LayerError::Encoder(
            "--encoder isal is not in this build of depotai: build it with the cargo feature `isal` (`cargo install --path . --features isal`; ISA-L needs nasm and autotools, see scripts/setup-build-deps.sh)".into(),
        ))
    }
}

fn isal_cpu_only(cpu: Cpu) -> Result<(), LayerError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
