//! Command-line definitions and dispatch.

mod build;
mod catalogue;
mod hub;
mod lazy;
mod lines;
mod progress;
mod push;
mod serve;
mod signals;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "depotai",
    version,
    about = "Turn machine-learning models into reproducible, lazily pullable OCI images"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a reproducible OCI image of eStargz or zstd:chunked layers (one per large
    /// file) from the Hub, a directory or a catalogue, into a layout and/or a registry.
    Build(Box<build::BuildArgs>),
    /// Serve the images under a directory as a read-only OCI registry.
    Serve(serve::ServeArgs),
    /// Push an OCI image layout to a registry (OCI Distribution).
    Push(push::PushArgs),
    /// List the files of an image in a registry, reading only its TOC (eStargz or zstd:chunked).
    Ls(lazy::LsArgs),
    /// Download one file or directory of an image in a registry, reading only its chunks.
    Get(lazy::GetArgs),
    /// Rebuild an image (registry or layout) from the Hub and compare every digest.
    Verify(verify::VerifyArgs),
    /// Show an image's provenance: model, commit, files with hashes, layers, settings.
    Inspect(verify::InspectArgs),
}

pub use signals::{stopped_line, Interrupted};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Before any work: every command stops the same way on SIGINT and SIGTERM.
    signals::install()?;
    match cli.command {
        Command::Build(args) => build::run(*args),
        Command::Serve(args) => serve::run(args),
        Command::Push(args) => push::run(args),
        Command::Ls(args) => lazy::ls(args),
        Command::Get(args) => lazy::get(args),
        Command::Verify(args) => verify::verify(args),
        Command::Inspect(args) => verify::inspect(args),
    }
}

/// Parses a byte size: a plain number or one with a K/M/G (×1024) suffix, e.g. `4MiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4194304 or 4MiB"))?;
    // K/M/G/T and KiB/MiB/GiB/TiB are binary; KB/MB/GB/TB decimal, as registries
    // state their limits ("10 GB" on GHCR is 10^10 bytes).
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit (use K, M, G, T or KiB…TiB; KB…TB are decimal)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s:?} must be a positive size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_suffixes() {
        assert_eq!(parse_size("4194304"), Ok(4194304));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("5GiB"), Ok(5 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("").is_err());
    }
}
