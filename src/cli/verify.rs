//! `depotai verify REF|LAYOUT`: rebuild an image from the Hub and compare digests, and
//! `depotai inspect REF|LAYOUT`: what its provenance says. The work is done by
//! `depotai::verify` and `depotai::remote::published`.

use super::push::{runtime, RegistryFlags};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use depotai::catalogue::record::BuildSettings;
use depotai::image::{default_platforms, ANNOTATION_REVISION, ANNOTATION_SOURCE};
use depotai::layer;
use depotai::names::{CommitSha, ModelName};
use depotai::plan::PlanOptions;
use depotai::provenance::Provenance;
use depotai::remote::published::{self, PublishedImage};
use depotai::remote::Reference;
use depotai::report::{ImageReport, ModelpackReport, Report};
use depotai::source::hub::HubConfig;
use depotai::verify::{self, Claim};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// An image in a registry (REGISTRY/REPO[:TAG|@DIGEST]) or an OCI layout directory.
    #[arg(value_name = "REF|LAYOUT")]
    target: String,
    /// Without a provenance: the model (default: from the image's source annotation).
    #[arg(long, value_name = "ORG/MODEL")]
    model: Option<String>,
    /// Without a provenance: the commit (default: from the revision annotation).
    #[arg(long, value_name = "COMMIT")]
    sha: Option<String>,
    /// Without a provenance: a build setting other than the default, as KEY=VALUE
    /// (format, encoder, chunk_size, compression_level, layers, own_layer_above, max_layers,
    /// platforms, prefetch, include, exclude; lists comma-separated). Repeatable.
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Print a machine-readable result on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// An image in a registry (REGISTRY/REPO[:TAG|@DIGEST]) or an OCI layout directory.
    #[arg(value_name = "REF|LAYOUT")]
    target: String,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Print a machine-readable result on stdout.
    #[arg(long)]
    json: bool,
}

fn read(target: &str, registry: &RegistryFlags) -> anyhow::Result<PublishedImage> {
    if let Some(dir) = super::lazy::layout_dir(target)? {
        return published::from_layout(dir).with_context(|| format!("reading {target}"));
    }
    let r = Reference::parse(target)?;
    let client = registry.client(&r, false)?;
    super::signals::stop()
        .block_on(&runtime()?, published::from_registry(&client, &r))
        .with_context(|| format!("reading {r}"))
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn settings_from_flags(flags: &[String]) -> anyhow::Result<BuildSettings> {
    let mut s = BuildSettings::new(
        &layer::Options::default(),
        &PlanOptions::default(),
        &default_platforms(),
        &[],
        &[],
    );
    for f in flags {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--setting {f:?}: expected KEY=VALUE"))?;
        let num = || super::parse_size(v).map_err(|e| anyhow!("--setting {k}: {e}"));
        match k {
            "format" => s.format = v.to_string(),
            "encoder" => s.encoder = v.to_string(),
            "chunk_size" => s.chunk_size = num()?,
            "compression_level" => {
                s.compression_level = v
                    .parse()
                    .map_err(|_| anyhow!("--setting compression_level: {v:?} is not a number"))?
            }
            "layers" => s.layers = v.to_string(),
            "own_layer_above" => s.own_layer_above = num()?,
            "max_layers" => s.max_layers = num()? as usize,
            "platforms" => s.platforms = list(v),
            "prefetch" => s.prefetch = list(v),
            "include" => s.include = list(v),
            "exclude" => s.exclude = list(v),
            "modelpack" => {
                s.modelpack = v
                    .parse()
                    .map_err(|_| anyhow!("--setting modelpack: {v:?} is not true or false"))?
            }
            _ => bail!("--setting {k}: unknown setting"),
        }
    }
    // The level's default depends on the format and the encoder.
    if !flags.iter().any(|f| f.starts_with("compression_level=")) {
        let mut o = s.layer_options().map_err(anyhow::Error::msg)?;
        o.level = None;
        s.compression_level = o.effective_level();
    }
    Ok(s)
}

fn claim(img: &PublishedImage, args: &VerifyArgs) -> anyhow::Result<(Claim, String)> {
    if let Some(bytes) = &img.provenance {
        let p = Provenance::parse(bytes)?;
        if p.index_digest != img.index_digest {
            bail!(
                "the provenance is for {}, not for this image ({})",
                p.index_digest,
                img.index_digest
            );
        }
        if p.source != "huggingface" {
            bail!("the image was built from a local directory, not from the Hub: there is nothing to rebuild it from");
        }
        let from = format!(
            "provenance ({})",
            img.provenance_from.as_deref().unwrap_or("referrer")
        );
        return Ok((
            Claim {
                model: p.model.parse()?,
                sha: p.revision.parse()?,
                tag: p.tag.clone(),
                settings: p.settings.clone(),
                provenance: Some(p),
            },
            from,
        ));
    }
    let model: ModelName = match &args.model {
        Some(m) => m.parse()?,
        None => img
            .annotation(ANNOTATION_SOURCE)
            .and_then(|s| s.strip_prefix("https://huggingface.co/"))
            .ok_or_else(|| {
                anyhow!("the image has no provenance and no Hub source annotation; give --model")
            })?
            .parse()?,
    };
    let sha: CommitSha = match &args.sha {
        Some(s) => s.parse()?,
        None => img
            .annotation(ANNOTATION_REVISION)
            .ok_or_else(|| {
                anyhow!("the image has no provenance and no revision annotation; give --sha")
            })?
            .parse()?,
    };
    Ok((
        Claim {
            model,
            sha,
            tag: "latest".into(),
            settings: settings_from_flags(&args.settings)?,
            provenance: None,
        },
        "annotations and settings".into(),
    ))
}

pub fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let img = read(&args.target, &args.registry)?;
    let (claim, from) = claim(&img, &args)?;
    let stop = super::signals::stop();
    // The Hub as every build reaches it (its default parallelism), stopped by a signal.
    let cfg = super::hub::config(HubConfig::from_env().jobs, stop);
    // On a terminal, the rebuild's bars (download and compression), as a build shows.
    let bars = super::progress::Bars::new(args.json);
    let shown = bars.job(
        &format!("rebuilding {} at {}", claim.model, claim.sha),
        false,
    );
    let outcome = verify::verify(&img, &claim, &cfg, &from, &|e| shown.event(&e, args.json));
    drop(shown);
    let outcome = outcome
        .map_err(anyhow::Error::new)
        // A rebuild a signal cut short proves nothing either way.
        .and_then(|o| match (&o.difference, stop.interrupted()) {
            (Some(_), Some(i)) => Err(anyhow::Error::new(i)),
            _ => Ok(o),
        });
    let outcome = stop.check(outcome).with_context(|| match stop.is_set() {
        true => format!(
            "rebuilding {} at {}: not finished, nothing compared",
            claim.model, claim.sha
        ),
        false => format!("rebuilding {} at {}", claim.model, claim.sha),
    })?;
    if args.json {
        let report = ImageReport::verified(&outcome, started.elapsed().as_secs_f64());
        println!(
            "{}",
            serde_json::to_string(&Report::Image(Box::new(report)))?
        );
    }
    match &outcome.difference {
        None => {
            if !args.json {
                println!(
                    "verified {} ({} at {}, from its {})",
                    outcome.index_digest, outcome.model, outcome.revision, outcome.claim_from
                );
                // Numbered from 1, as `inspect`, `--json` and the web page number them.
                for (n, l) in (1..).zip(&outcome.layers) {
                    println!("  layer {n}  {}  {}", l.digest, l.role);
                }
            }
            Ok(())
        }
        Some(d) => Err(anyhow!(
            "{} does not match its rebuild from {} at {}: {d}",
            args.target,
            outcome.source,
            outcome.revision
        )),
    }
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let img = read(&args.target, &args.registry)?;
    let Some(bytes) = &img.provenance else {
        bail!(
            "{} has no provenance (no in-toto referrer of {})",
            args.target,
            img.index_digest
        );
    };
    let p = Provenance::parse(bytes)?;
    if args.json {
        let mut report = ImageReport::inspected(
            &img.index_digest,
            &p,
            serde_json::from_slice(bytes)?,
            img.provenance_from.as_deref(),
        );
        report.modelpack = img.twin.as_ref().map(|(d, _)| ModelpackReport {
            digest: d.clone(),
            tag: None,
            found: img.twin_from.clone(),
        });
        println!(
            "{}",
            serde_json::to_string(&Report::Image(Box::new(report)))?
        );
        return Ok(());
    }
    println!("image     {}", img.index_digest);
    if let Some(from) = &img.provenance_from {
        println!("found     provenance via {from}");
    }
    if let (Some((d, _)), Some(from)) = (&img.twin, &img.twin_from) {
        println!("modelpack {d} (via {from})");
    }
    println!("model     {}", p.model);
    println!("revision  {}", p.revision);
    if p.source == "huggingface" {
        println!(
            "hub       https://huggingface.co/{}/tree/{}",
            p.model, p.revision
        );
    } else {
        println!("source    a local directory");
    }
    println!("built by  {}", p.tool);
    println!(
        "settings  format={} chunk_size={} compression_level={} layers={} own_layer_above={} max_layers={} platforms={}",
        p.settings.format,
        p.settings.chunk_size,
        p.settings.compression_level,
        p.settings.layers,
        p.settings.own_layer_above,
        p.settings.max_layers,
        p.settings.platforms.join(","),
    );
    if p.settings.modelpack {
        println!("          modelpack (a ModelPack twin beside the image)");
    }
    println!("layers");
    for (n, l) in (1..).zip(&p.layers) {
        println!(
            "  {n}  {}  {:>10}  {} ({} files)",
            l.digest,
            depotai::units::human_bytes(l.size),
            l.role,
            l.files.len()
        );
    }
    println!("files");
    for f in &p.files {
        println!(
            "  sha256:{}  {:>10}  {}",
            f.sha256,
            depotai::units::human_bytes(f.size),
            f.path
        );
    }
    Ok(())
}
