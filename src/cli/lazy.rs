//! `depotai ls REF|LAYOUT` and `depotai get REF|LAYOUT PATH [-o OUT]`: lazy reads of an
//! image in a registry or an OCI layout directory through its layers' TOCs.

use super::push::{runtime, RegistryFlags};
use anyhow::Context;
use clap::Args;
use depotai::remote::client::Client;
use depotai::remote::lazy::{self, Source as _};
use depotai::remote::Reference;
use depotai::units::human_bytes;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct LsArgs {
    /// An image in a registry (REGISTRY/REPOSITORY[:TAG|@DIGEST]) or an OCI layout
    /// directory.
    #[arg(value_name = "REF|LAYOUT")]
    reference: String,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Print a machine-readable listing on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// An image in a registry (REGISTRY/REPOSITORY[:TAG|@DIGEST]) or an OCI layout
    /// directory.
    #[arg(value_name = "REF|LAYOUT")]
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

/// Where `ls`/`get` read from, decided as `inspect` and `verify` decide: a directory
/// holding `index.json` is a layout (read without any network), else a reference.
enum Target {
    Layout(lazy::Layout, String),
    Registry(Reference, Box<Client>),
}

/// Whether a REF|LAYOUT argument (of `ls`, `get`, `inspect`, `verify`) names an OCI
/// layout directory: one holding `index.json`. An argument that names a local path but
/// no layout is refused here, in one line, rather than sent to Docker Hub (where a
/// reference without a registry host goes, after DNS retries): one that exists, one
/// written as a path (`/`, `./`, `../`, `~`), or one whose first component is a local
/// directory (`out/acme/model` beside an `out/`).
pub(super) fn layout_dir(target: &str) -> anyhow::Result<Option<&Path>> {
    let dir = Path::new(target);
    if depotai::image::read::Layout::is_layout(dir) {
        return Ok(Some(dir));
    }
    let written_as_path = ["/", "./", "../", "~"]
        .iter()
        .any(|p| target.starts_with(p));
    let first = target.split('/').next().unwrap_or_default();
    // As `Reference::parse` tells a registry host from a repository's first component.
    let has_host = target.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let as_path = written_as_path
        || (!has_host && (dir.exists() || (target.contains('/') && Path::new(first).is_dir())));
    if as_path {
        anyhow::bail!(
            "{target}: not an OCI layout directory (no index.json there); name a layout directory, or an image in a registry as REGISTRY/REPOSITORY[:TAG]"
        );
    }
    Ok(None)
}

impl Target {
    fn new(target: &str, registry: &RegistryFlags) -> anyhow::Result<Target> {
        if let Some(dir) = layout_dir(target)? {
            let (layout, start) =
                lazy::Layout::open(dir).with_context(|| format!("reading {target}"))?;
            return Ok(Target::Layout(layout, start));
        }
        let r = Reference::parse(target)?;
        let client = registry.client(&r, false)?;
        Ok(Target::Registry(r, Box::new(client)))
    }
}

pub fn ls(args: LsArgs) -> anyhow::Result<()> {
    let target = Target::new(&args.reference, &args.registry)?;
    let rt = runtime()?;
    let stop = super::signals::stop();
    let (name, image, fetched) = match &target {
        Target::Layout(layout, start) => {
            let image = stop.block_on(&rt, lazy::open(layout, start));
            (args.reference.clone(), image, layout.fetched_bytes())
        }
        Target::Registry(r, client) => {
            let image = stop.block_on(&rt, lazy::open(&lazy::Registry(client), r.manifest_ref()));
            (r.to_string(), image, client.fetched_bytes())
        }
    };
    let image = image.with_context(|| format!("reading the TOC of {name}"))?;
    if args.json {
        let v = serde_json::json!({
            "reference": name,
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
                    "{:<8} {:>10}  /{name} -> {}",
                    e.kind,
                    "",
                    e.link_name.as_deref().unwrap_or_default()
                ),
                "dir" => println!("{:<8} {:>10}  /{name}/", e.kind, ""),
                // Sizes for people; `--json` has the bytes.
                _ => println!("{:<8} {:>10}  /{name}", e.kind, human_bytes(e.size)),
            }
        }
        eprintln!(
            "fetched {} of a {} image ({} layer{})",
            human_bytes(fetched),
            human_bytes(image.size()),
            image.layers.len(),
            if image.layers.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let target = Target::new(&args.reference, &args.registry)?;
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
    let rt = runtime()?;
    let stop = super::signals::stop();
    let (name, report) = match &target {
        Target::Layout(layout, start) => (
            args.reference.clone(),
            stop.block_on(&rt, lazy::get(layout, start, &args.path, &output)),
        ),
        Target::Registry(r, client) => (
            r.to_string(),
            stop.block_on(
                &rt,
                lazy::get(
                    &lazy::Registry(client),
                    r.manifest_ref(),
                    &args.path,
                    &output,
                ),
            ),
        ),
    };
    let report = report.with_context(|| match stop.is_set() {
        // Each file is renamed into place whole, its `.partial` removed on a stop.
        true => format!(
            "getting {} from {name}: the files renamed into place are whole; the one under way was removed",
            args.path
        ),
        false => format!("getting {} from {name}", args.path),
    })?;
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
