//! `depotai ls REF` and `depotai get REF PATH [-o OUT]`: lazy reads of an image in a
//! registry through its eStargz TOC.

use super::push::{runtime, RegistryFlags};
use anyhow::Context;
use clap::Args;
use depotai::remote::{lazy, Reference};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct LsArgs {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST]
    #[arg(value_name = "REF")]
    reference: String,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Print a machine-readable listing on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST]
    #[arg(value_name = "REF")]
    reference: String,
    /// A file or directory in the image, e.g. /config.json.
    #[arg(value_name = "PATH")]
    path: String,
    /// Where to write it (default: its base name in the current directory).
    #[arg(long, short = 'o', value_name = "OUT")]
    output: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Print a machine-readable report on stdout.
    #[arg(long)]
    json: bool,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn ls(args: LsArgs) -> anyhow::Result<()> {
    let r = Reference::parse(&args.reference)?;
    let client = args.registry.client(&r, false)?;
    let image = runtime()?
        .block_on(lazy::open(&client, &r))
        .with_context(|| format!("reading the TOC of {r}"))?;
    let fetched = client.fetched_bytes();
    if args.json {
        let v = serde_json::json!({
            "reference": r.to_string(),
            "layers": image.layers,
            "image_size": image.size(),
            "entries": image.entries,
            "fetched_bytes": fetched,
        });
        println!("{v}");
    } else {
        for e in &image.entries {
            let name = &e.name;
            match e.kind.as_str() {
                "symlink" | "hardlink" => println!(
                    "{:<8} {:>14}  /{name} -> {}",
                    e.kind,
                    "",
                    e.link_name.as_deref().unwrap_or_default()
                ),
                "dir" => println!("{:<8} {:>14}  /{name}/", e.kind, ""),
                _ => println!("{:<8} {:>14}  /{name}", e.kind, e.size),
            }
        }
        eprintln!(
            "fetched {fetched} bytes of a {}-byte image ({} layer{})",
            image.size(),
            image.layers.len(),
            if image.layers.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let r = Reference::parse(&args.reference)?;
    let client = args.registry.client(&r, false)?;
    let output = match &args.output {
        Some(o) => o.clone(),
        None => {
            let base = lazy::clean_name(&args.path)
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("image")
                .to_string();
            PathBuf::from(base)
        }
    };
    let report = runtime()?
        .block_on(lazy::get(&client, &r, &args.path, &output))
        .with_context(|| format!("getting {} from {r}", args.path))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if !args.quiet {
        let size: u64 = report.files.iter().map(|f| f.size).sum();
        eprintln!(
            "wrote {} file(s), {size} bytes, to {}; fetched {} bytes of a {}-byte image",
            report.files.len(),
            output.display(),
            report.fetched_bytes,
            report.image_size
        );
    }
    Ok(())
}
