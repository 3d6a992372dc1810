//! `depotai build --all CATALOGUE`: every model of a catalogue, one after another, each
//! through the one streamed Hub job (`depotai::job`), into a layout under `--output` or
//! to the registry under `--push`.
//!
//! 1. The whole catalogue is validated first (every problem with its line).
//! 2. Each selected model (`--shard I/N`) that is up to date is skipped: into layouts,
//!    when its build record matches and the layout is whole (no network request at
//!    all); with `--push`, when the registry's tag carries its commit and settings (the
//!    job's one manifest request, nothing downloaded). `--force` rebuilds.
//! 3. The others are streamed: a layer is compressed while the model's later files are
//!    still arriving (`--jobs` files, `--connections` Range requests each).
//! 4. A failure is recorded and the next model goes on. At the end: a table on stderr,
//!    with `--json` a report on stdout, and exit status 1 if any model failed.
//!
//! SIGINT/SIGTERM stop cleanly (`signals.rs`): no new model starts, the one under way
//! stops at its next read (its staging directory is removed, nothing is tagged, its
//! downloaded windows stay in the cache for the next run), and the run exits with 130
//! (143). A second signal exits at once; the `.NAME.partial-PID` it may leave is removed
//! by the next run.

use super::signals::Stop;
use anyhow::anyhow;
use depotai::catalogue::record::{self, BuildRecord, BuildSettings, Freshness, ImageSummary};
use depotai::catalogue::{Catalogue, CatalogueEntry, Shard};
use depotai::image::{remove_stale_siblings, Platform};
use depotai::job::{self, Event, HubJob, HubOutcome, RegistryTarget};
use depotai::layer;
use depotai::pipeline::{self, BuildRequest, LayerEvent};
use depotai::plan::PlanOptions;
use depotai::remote::upload::DEFAULT_STREAM_CHUNK;
use depotai::remote::Reference;
use depotai::source::hub::FileFilter;
use depotai::units::human_bytes;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Options {
    pub file: PathBuf,
    pub output_root: PathBuf,
    pub shard: Option<Shard>,
    pub force: bool,
    pub jobs: usize,
    pub layer: layer::Options,
    pub plan: PlanOptions,
    pub platforms: Vec<Platform>,
    pub delete_downloads: bool,
    pub json: bool,
    pub quiet: bool,
    /// `--push REGISTRY_PREFIX`: stream each model to `PREFIX/<name, lowercased>:<tag>`
    /// instead of building layouts.
    pub push: Option<String>,
    pub push_flags: super::push::PushFlags,
    pub connections: usize,
    pub no_cache: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Built,
    Skipped,
    Failed,
    Interrupted,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Built => "built",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
            Status::Interrupted => "interrupted",
        }
    }
}

/// What happened to one model.
struct Outcome {
    status: Status,
    /// Why it was built (what made it stale), or why it was skipped.
    reason: String,
    error: Option<String>,
    image: Option<ImageSummary>,
    seconds: f64,
    downloaded_bytes: Option<u64>,
    freed_bytes: Option<u64>,
}

impl Outcome {
    fn new(status: Status, reason: String) -> Outcome {
        Outcome {
            status,
            reason,
            error: None,
            image: None,
            seconds: 0.0,
            downloaded_bytes: None,
            freed_bytes: None,
        }
    }
}

fn wanted_record(e: &CatalogueEntry, o: &Options) -> BuildRecord {
    let settings = BuildSettings::new(&o.layer, &o.plan, &o.platforms, &e.include, &e.exclude);
    BuildRecord::new(&e.name, &e.sha, &e.tag, settings)
}

fn summary_of(r: &pipeline::BuildReport) -> ImageSummary {
    ImageSummary {
        index_digest: r.index_digest.to_string(),
        manifests: r
            .manifests
            .iter()
            .map(|(p, d)| (p.to_string(), d.to_string()))
            .collect(),
        layers: r
            .layers
            .iter()
            .map(|l| (l.info.digest.to_string(), l.info.size))
            .collect(),
        files: r.files(),
    }
}

pub fn run(o: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let catalogue = Catalogue::load(&o.file)?;
    let selected = catalogue.select(o.shard);
    // Once, before any model: a registry that would refuse the pushes stops the run.
    if let (Some(prefix), Some(e)) = (&o.push, selected.first()) {
        let r = Reference::parse(&format!("{prefix}/{}:{}", e.name.registry_path(), e.tag))?;
        super::push::push_client(&r, &o.push_flags.registry)?;
    }
    let total = selected.len();
    let stop = super::signals::stop();
    let say = |line: String| {
        if !o.quiet {
            eprintln!("{line}");
        }
    };
    let shard = o
        .shard
        .map(|s| format!(" in shard {s}"))
        .unwrap_or_default();
    match &o.push {
        Some(prefix) => say(format!(
            "{}: {total} models{shard}, pushing to {}",
            o.file.display(),
            // As typed: a user and password in it must not show (each model's reference
            // refuses them).
            depotai::redact::text(prefix)
        )),
        None => say(format!("{}: {total} models{shard}", o.file.display())),
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..total).map(|_| None).collect();
    for (i, e) in selected.iter().enumerate() {
        if stop.is_set() {
            break;
        }
        let n = format!("[{}/{total}] {}", i + 1, e.name);
        let r = build_one(e, &o, stop, &n);
        match (&r.status, &r.error, &r.image) {
            (Status::Built, _, Some(img)) => say(format!(
                "{n}: built in {:.1}s ({} in {} layer{})",
                r.seconds,
                human_bytes(img.layers_size()),
                img.layers.len(),
                if img.layers.len() == 1 { "" } else { "s" }
            )),
            (Status::Skipped, _, _) => say(format!("{n}: up to date, skipped")),
            (_, Some(err), _) => eprintln!("{n}: {}: {err}", r.status.as_str()),
            _ => {}
        }
        outcomes[i] = Some(r);
    }
    finish(&o, &catalogue, &selected, outcomes, started, stop)
}

/// The table, the JSON report and the exit status of a run.
fn finish(
    o: &Options,
    catalogue: &Catalogue,
    selected: &[&CatalogueEntry],
    outcomes: Vec<Option<Outcome>>,
    started: Instant,
    stop: &Stop,
) -> anyhow::Result<()> {
    let say = |line: String| {
        if !o.quiet {
            eprintln!("{line}");
        }
    };
    let total = selected.len();
    let interrupted = stop.interrupted();
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                let mut r = Outcome::new(Status::Interrupted, String::new());
                r.error = Some("not started: interrupted".into());
                r
            })
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    if o.json {
        println!(
            "{}",
            report_json(o, catalogue, selected, &outcomes, seconds)
        );
    }
    if !o.quiet {
        eprint!("{}", table(selected, &outcomes));
    }
    let count = |s: Status| outcomes.iter().filter(|r| r.status == s).count();
    let line = format!(
        "{total} models{}: {} built, {} skipped, {} failed{} in {seconds:.1}s",
        o.shard.map(|s| format!(" (shard {s})")).unwrap_or_default(),
        count(Status::Built),
        count(Status::Skipped),
        count(Status::Failed),
        match count(Status::Interrupted) {
            0 => String::new(),
            n => format!(", {n} interrupted"),
        }
    );
    if let Some(i) = interrupted {
        return Err(anyhow::Error::new(i).context(line));
    }
    let failed: Vec<&str> = selected
        .iter()
        .zip(&outcomes)
        .filter(|(_, r)| r.status == Status::Failed)
        .map(|(e, _)| e.name.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(anyhow!("{line}; failed: {}", failed.join(", ")));
    }
    say(line);
    Ok(())
}

/// One model: skipped if up to date, else streamed into its layout or the registry.
/// Never stops the run.
fn build_one(e: &CatalogueEntry, o: &Options, stop: &Stop, n: &str) -> Outcome {
    let t = Instant::now();
    let mut r = Outcome::new(Status::Failed, String::new());
    let want = wanted_record(e, o);
    let result = (|| -> anyhow::Result<Option<HubOutcome>> {
        let registry = match &o.push {
            Some(prefix) => {
                let reference =
                    Reference::parse(&format!("{prefix}/{}:{}", e.name.registry_path(), e.tag))?;
                let client = o.push_flags.registry.client(&reference, true)?;
                Some(RegistryTarget {
                    client,
                    reference,
                    chunk_size: o.push_flags.push_chunk_size.min(DEFAULT_STREAM_CHUNK),
                    state_dir: job::upload_state_dir(),
                    skip_if_published: !o.force,
                })
            }
            None => None,
        };
        let output = e.output(&o.output_root);
        if registry.is_none() {
            // Up to date? Reads the record and the layout on disk only.
            remove_stale_siblings(&output);
            match record::check(&output, &want) {
                Freshness::UpToDate(image) if !o.force => {
                    r.status = Status::Skipped;
                    r.reason = "up to date".into();
                    r.image = Some(image);
                    return Ok(None);
                }
                Freshness::UpToDate(_) => r.reason = "--force".into(),
                Freshness::Stale(why) => r.reason = why,
            }
            if !o.quiet {
                eprintln!("{n}: building at {} ({})", e.sha, r.reason);
            }
        } else if o.force {
            r.reason = "--force".into();
            if !o.quiet {
                eprintln!("{n}: streaming at {} (--force)", e.sha);
            }
        }
        let hub = super::hub::config(o.jobs, stop);
        let req = BuildRequest {
            name: e.name.clone(),
            sha: e.sha.clone(),
            tag: e.tag.clone(),
            output,
            platforms: o.platforms.clone(),
            layer: o.layer.clone(),
            plan: o.plan.clone(),
            expected_digests: Default::default(),
            index_annotations: job::settings_annotations(&want.settings),
            // Made from the listing by the job (with the files).
            record: None,
        };
        let job = HubJob {
            req,
            hub,
            filter: FileFilter::new(&e.include, &e.exclude)?,
            include: e.include.clone(),
            exclude: e.exclude.clone(),
            stream: super::hub::stream_options(o.connections, o.no_cache),
            layout: registry.is_none(),
            registry,
            max_scratch: None,
            delete_downloads: o.delete_downloads,
        };
        let quiet = o.quiet;
        let on_event = |ev: Event<'_>| match ev {
            Event::TagChecked {
                reference,
                published,
            } if !quiet && !matches!(published, job::Published::UpToDate(_)) => {
                eprintln!("{n}: streaming to {reference} ({published})")
            }
            Event::Retry { path, why } if !quiet => {
                eprintln!("  {}: retrying {path}: {why}", e.name)
            }
            Event::Layer(LayerEvent::Retrying { n: layer, error }) if !quiet => {
                eprintln!("  {}: {}", e.name, super::lines::retrying(layer, error))
            }
            _ => {}
        };
        Ok(Some(job::run_hub(job, &on_event)?))
    })();
    r.seconds = t.elapsed().as_secs_f64();
    match result {
        Ok(Some(HubOutcome::Built(report))) => {
            r.status = Status::Built;
            if let Some(p) = &report.published {
                r.reason = p.to_string();
            }
            r.image = Some(summary_of(&report.build));
            r.downloaded_bytes = Some(report.stream.downloaded_bytes);
            if o.delete_downloads {
                r.freed_bytes = Some(report.freed_bytes);
            }
        }
        Ok(Some(HubOutcome::UpToDate(index))) => {
            r.status = Status::Skipped;
            r.reason = "up to date".into();
            r.image = Some(ImageSummary {
                index_digest: index.to_string(),
                manifests: Vec::new(),
                layers: Vec::new(),
                files: 0,
            });
        }
        Ok(None) => {}
        Err(err) => {
            if stop.is_set() {
                r.status = Status::Interrupted;
            }
            r.error = Some(one_line(&err));
        }
    }
    r
}

/// The error and its causes on one line, each cause once (some messages already end
/// with their source's text).
fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if out.ends_with(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

fn table(selected: &[&CatalogueEntry], outcomes: &[Outcome]) -> String {
    let rows: Vec<[String; 5]> = selected
        .iter()
        .zip(outcomes)
        .map(|(e, r)| {
            [
                e.name.to_string(),
                r.status.as_str().to_string(),
                r.image
                    .as_ref()
                    .map(|i| human_bytes(i.layers_size()))
                    .unwrap_or_else(|| "-".into()),
                format!("{:.1}", r.seconds),
                r.error.clone().unwrap_or_else(|| r.reason.clone()),
            ]
        })
        .collect();
    let head = ["MODEL", "STATUS", "LAYERS", "SECONDS", "NOTE"];
    let width = |c: usize| {
        rows.iter()
            .map(|r| r[c].chars().count())
            .chain([head[c].len()])
            .max()
            .unwrap_or(0)
    };
    let w: Vec<usize> = (0..4).map(width).collect();
    let mut s = String::new();
    for r in std::iter::once(head.map(String::from)).chain(rows) {
        s.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        ));
    }
    s
}

fn report_json(
    o: &Options,
    catalogue: &Catalogue,
    selected: &[&CatalogueEntry],
    outcomes: &[Outcome],
    seconds: f64,
) -> serde_json::Value {
    let round = |s: f64| (s * 1000.0).round() / 1000.0;
    let count = |s: Status| outcomes.iter().filter(|r| r.status == s).count();
    let models: Vec<serde_json::Value> = selected
        .iter()
        .zip(outcomes)
        .map(|(e, r)| {
            let img = r.image.as_ref();
            json!({
                "name": e.name.as_str(),
                "image": e.name.registry_path(),
                "sha": e.sha.as_str(),
                "tag": e.tag,
                "line": e.line,
                "output": output_string(&e.output(&o.output_root)),
                "status": r.status.as_str(),
                "reason": r.reason,
                "error": r.error,
                "seconds": round(r.seconds),
                "index_digest": img.map(|i| i.index_digest.clone()),
                "manifests": img.map(|i| i.manifests.iter().map(|(p, d)| json!({
                    "platform": p, "digest": d
                })).collect::<Vec<_>>()),
                "layers": img.map(|i| i.layers.iter().map(|(d, size)| json!({
                    "digest": d, "size": size
                })).collect::<Vec<_>>()),
                "files": img.map(|i| i.files),
                "downloaded_bytes": r.downloaded_bytes,
                "freed_bytes": r.freed_bytes,
            })
        })
        .collect();
    json!({
        "catalogue": o.file.display().to_string(),
        "shard": o.shard.map(|s| s.to_string()),
        "catalogue_models": catalogue.entries.len(),
        "models_in_run": selected.len(),
        "counts": {
            "built": count(Status::Built),
            "skipped": count(Status::Skipped),
            "failed": count(Status::Failed),
            "interrupted": count(Status::Interrupted),
        },
        "seconds": round(seconds),
        "models": models,
    })
}

fn output_string(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn causes_are_not_repeated() {
        let io = io::Error::other("disk on fire");
        let e = anyhow::Error::new(depotai::layer::LayerError::Read {
            path: "a".into(),
            source: io,
        })
        .context("building m");
        assert_eq!(one_line(&e), "building m: reading a: disk on fire");
    }
}
