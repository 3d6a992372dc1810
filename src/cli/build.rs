//! `depotai build --from-dir DIR --name ORG/MODEL --sha COMMIT`.

use super::progress::Progress;
use anyhow::{bail, Context};
use clap::Args;
use depotai::image::{default_platforms, Platform};
use depotai::layer::estargz;
use depotai::layer::EntryKind;
use depotai::names::{CommitSha, ModelName};
use depotai::pipeline::{self, BuildReport, BuildRequest};
use depotai::source::DirSource;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Directory holding the model's files.
    #[arg(long, value_name = "DIR")]
    from_dir: PathBuf,
    /// Model name, as on the Hub (`org/model`); lowercased for the image path.
    #[arg(long, value_name = "ORG/MODEL")]
    name: String,
    /// The commit the files come from: 40 hex digits.
    #[arg(long, value_name = "COMMIT")]
    sha: String,
    /// Tag recorded in the layout's index.json.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Output directory (default: out/<name, lowercased>).
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
    /// Compression threads (default: all cores). The output is identical for any value.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Size of the independently compressed chunks of large files (e.g. 4MiB).
    #[arg(long, value_name = "BYTES", default_value = "4MiB", value_parser = super::parse_size)]
    chunk_size: u64,
    /// libdeflate level, 1 (fastest) to 12 (smallest). Part of what the digests depend on.
    #[arg(long, value_name = "LEVEL", default_value_t = estargz::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=12))]
    compression_level: i32,
    /// Files (or directories) to put first, before a `.prefetch.landmark`.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    prefetch: Vec<String>,
    /// Platforms of the image index, comma-separated.
    #[arg(long, value_name = "OS/ARCH", value_delimiter = ',')]
    platform: Vec<String>,
    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    json: bool,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let name: ModelName = args.name.parse()?;
    let sha: CommitSha = args.sha.parse()?;
    let platforms: Vec<Platform> = if args.platform.is_empty() {
        default_platforms()
    } else {
        args.platform
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()?
    };
    if platforms.is_empty() {
        bail!("--platform needs at least one platform");
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| pipeline::default_output(&name));
    let layer = estargz::Options {
        chunk_size: args.chunk_size,
        threads: args
            .threads
            .map(usize::from)
            .unwrap_or_else(|| estargz::Options::default().threads),
        prefetch: args.prefetch.clone(),
        level: args.compression_level,
    };
    let req = BuildRequest {
        name: name.clone(),
        sha,
        tag: args.tag.clone(),
        output,
        platforms,
        layer,
    };

    let source = DirSource::scan(&args.from_dir)?;
    let total: u64 = source
        .entries()
        .iter()
        .map(|e| match e.kind {
            EntryKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    let (entries, contents) = source.into_entries();
    let progress = Progress::bytes(total, &format!("building {name}"), args.quiet);
    let report = pipeline::build_image(entries, &contents, &req, &|n| progress.advance(n))
        .with_context(|| format!("building {name} from {}", args.from_dir.display()))?;
    progress.finish();

    if args.json {
        println!("{}", summary_json(&name, &req, &report));
    } else if !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "built {name} -> {} ({} files, layer {} bytes, {:.1}s)\n  index {}",
            report.output.display(),
            report.layer.files,
            report.layer.size,
            report.seconds,
            report.index_digest
        );
    }
    Ok(())
}

fn summary_json(name: &ModelName, req: &BuildRequest, r: &BuildReport) -> serde_json::Value {
    serde_json::json!({
        "name": name.as_str(),
        "image": name.registry_path(),
        "sha": req.sha.as_str(),
        "tag": r.tag,
        "output": r.output.display().to_string(),
        "index_digest": r.index_digest.to_string(),
        "manifests": r.manifests.iter().map(|(p, d)| serde_json::json!({
            "platform": p.to_string(), "digest": d.to_string()
        })).collect::<Vec<_>>(),
        "config_digests": r.configs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "layer": {
            "digest": r.layer.digest.to_string(),
            "size": r.layer.size,
            "diff_id": r.layer.diff_id.to_string(),
            "uncompressed_size": r.layer.uncompressed_size,
            "toc_digest": r.layer.toc_digest.to_string(),
            "toc_entries": r.layer.toc_entries,
        },
        "files": r.layer.files,
        "content_bytes": r.layer.content_bytes,
        "chunk_size": req.layer.chunk_size,
        "seconds": (r.seconds * 1000.0).round() / 1000.0,
    })
}
