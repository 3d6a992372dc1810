//! `depotai build --all CATALOGUE`: every model of a catalogue, one failure at a time.
//!
//! 1. The whole catalogue is validated first (every problem with its line).
//! 2. Each selected model (`--shard I/N`) whose image is up to date (its build record
//!    matches and the layout is whole) is skipped without any network request.
//! 3. The others go through a two-stage pipeline: a downloader thread fetches one model
//!    at a time (`--jobs` files at once) while the main thread compresses the model
//!    fetched before it. The hand-over is a rendezvous, so at most two models' files
//!    are on disk at once (`--delete-downloads` removes each after its build).
//! 4. A failure is recorded and the next model goes on. At the end: a table on stderr,
//!    with `--json` a report on stdout, and exit status 1 if any model failed.
//!
//! SIGINT/SIGTERM stop cleanly: no new model starts, a download under way stops (its
//! partial file is resumed by the next run) and a build under way fails its next read,
//! so its staging directory is removed. A second signal exits at once; the
//! `.NAME.partial-PID` it may leave is removed by the next run.

use super::Interrupted;
use anyhow::{anyhow, Context};
use depotai::catalogue::record::{self, BuildRecord, BuildSettings, Freshness, ImageSummary};
use depotai::catalogue::{Catalogue, CatalogueEntry, Shard};
use depotai::digest::Digest;
use depotai::image::{remove_stale_siblings, Platform, ANNOTATION_REVISION};
use depotai::job::SETTINGS_ANNOTATION;
use depotai::layer::{self, Stoppable};
use depotai::pipeline::{self, BuildError, BuildRequest};
use depotai::plan::PlanOptions;
use depotai::remote::upload::DEFAULT_STREAM_CHUNK;
use depotai::remote::{Client, Reference, RegistryError};
use depotai::source::hub::{
    self, FetchProgress, Fetched, FileFilter, HubConfig, HubError, Silent, StreamOptions,
};
use depotai::units::human_bytes;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
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
    download_seconds: f64,
    build_seconds: f64,
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
            download_seconds: 0.0,
            build_seconds: 0.0,
            downloaded_bytes: None,
            freed_bytes: None,
        }
    }

    fn seconds(&self) -> f64 {
        self.download_seconds + self.build_seconds
    }
}

/// Sets the returned flag on SIGINT or SIGTERM; a second signal exits at once.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicBool::new(false));
    for (sig, code) in [(SIGINT, 130), (SIGTERM, 143)] {
        // Registered first, so it sees the flag as the previous signal left it.
        flag::register_conditional_shutdown(sig, code, stop.clone())
            .context("installing a signal handler")?;
        flag::register(sig, stop.clone()).context("installing a signal handler")?;
    }
    Ok(stop)
}

/// Download progress as log lines naming the model (no bars: two models are under
/// way at once).
struct ModelLines(String);

impl FetchProgress for ModelLines {
    fn begin(&self, path: &str, size: u64, resumed_from: u64) {
        if resumed_from > 0 {
            eprintln!(
                "  {}: downloading {path} ({}, resuming at {resumed_from})",
                self.0,
                human_bytes(size)
            );
        } else {
            eprintln!("  {}: downloading {path} ({})", self.0, human_bytes(size));
        }
    }
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, _: &str) {}
    fn retry(&self, path: &str, why: &str) {
        eprintln!("  {}: retrying {path}: {why}", self.0);
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

/// A model's files, fetched by the downloader thread.
struct Download {
    index: usize,
    reason: String,
    seconds: f64,
    result: anyhow::Result<Fetched>,
}

pub fn run(o: Options) -> anyhow::Result<()> {
    if o.push.is_some() {
        return run_push(o);
    }
    let started = Instant::now();
    let catalogue = Catalogue::load(&o.file)?;
    let selected = catalogue.select(o.shard);
    let total = selected.len();
    let stop = stop_on_signals()?;
    let mut cfg = HubConfig::from_env();
    cfg.jobs = o.jobs;
    cfg.cancel = Some(stop.clone());
    let say = |line: String| {
        if !o.quiet {
            eprintln!("{line}");
        }
    };
    match o.shard {
        Some(s) => say(format!(
            "{}: {total} of {} models in shard {s}",
            o.file.display(),
            catalogue.entries.len()
        )),
        None => say(format!("{}: {total} models", o.file.display())),
    }

    // Up to date? Reads the records on disk only.
    let mut outcomes: Vec<Option<Outcome>> = (0..total).map(|_| None).collect();
    let mut todo: Vec<(usize, String)> = Vec::new();
    for (i, e) in selected.iter().enumerate() {
        let out = e.output(&o.output_root);
        remove_stale_siblings(&out);
        match record::check(&out, &wanted_record(e, &o)) {
            Freshness::UpToDate(image) if !o.force => {
                say(format!(
                    "[{}/{total}] {}: up to date, skipped",
                    i + 1,
                    e.name
                ));
                let mut r = Outcome::new(Status::Skipped, "up to date".into());
                r.image = Some(image);
                outcomes[i] = Some(r);
            }
            Freshness::UpToDate(_) => todo.push((i, "--force".into())),
            Freshness::Stale(why) => todo.push((i, why)),
        }
    }

    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Download>(0);
        let (selected, cfg, stop, o) = (&selected, &cfg, &stop, &o);
        scope.spawn(move || {
            for (index, reason) in todo {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let e = selected[index];
                say(format!(
                    "[{}/{total}] {}: downloading at {} ({reason})",
                    index + 1,
                    e.name,
                    e.sha
                ));
                let t = Instant::now();
                let progress: Arc<dyn FetchProgress> = if o.quiet {
                    Arc::new(Silent)
                } else {
                    Arc::new(ModelLines(e.name.to_string()))
                };
                let result = FileFilter::new(&e.include, &e.exclude)
                    .and_then(|filter| hub::fetch(&e.name, &e.sha, cfg, &filter, progress))
                    .with_context(|| format!("downloading {} at {}", e.name, e.sha));
                let d = Download {
                    index,
                    reason,
                    seconds: t.elapsed().as_secs_f64(),
                    result,
                };
                if tx.send(d).is_err() {
                    break;
                }
            }
        });
        for d in rx {
            let index = d.index;
            let e = selected[index];
            let r = build_one(e, d, o, stop);
            let n = format!("[{}/{total}] {}", index + 1, e.name);
            match (&r.status, &r.error, &r.image) {
                (Status::Built, _, Some(img)) => say(format!(
                    "{n}: built in {:.1}s ({} in {} layer{})",
                    r.seconds(),
                    human_bytes(img.layers_size()),
                    img.layers.len(),
                    if img.layers.len() == 1 { "" } else { "s" }
                )),
                (_, Some(err), _) => eprintln!("{n}: {}: {err}", r.status.as_str()),
                _ => {}
            }
            outcomes[index] = Some(r);
        }
    });

    finish(&o, &catalogue, &selected, outcomes, started, &stop)
}

/// The table, the JSON report and the exit status of a run.
fn finish(
    o: &Options,
    catalogue: &Catalogue,
    selected: &[&CatalogueEntry],
    outcomes: Vec<Option<Outcome>>,
    started: Instant,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let say = |line: String| {
        if !o.quiet {
            eprintln!("{line}");
        }
    };
    let total = selected.len();
    let interrupted = stop.load(Ordering::Relaxed);
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
    if interrupted {
        return Err(anyhow::Error::new(Interrupted).context(line));
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

/// Builds one fetched model (removing its downloads if asked). Never stops the run.
fn build_one(e: &CatalogueEntry, d: Download, o: &Options, stop: &AtomicBool) -> Outcome {
    let mut r = Outcome::new(Status::Failed, d.reason);
    r.download_seconds = d.seconds;
    let fetched = match d.result {
        Ok(f) => f,
        Err(err) => {
            let cut = err
                .downcast_ref::<HubError>()
                .is_some_and(|h| matches!(h, HubError::Interrupted));
            if cut || stop.load(Ordering::Relaxed) {
                r.status = Status::Interrupted;
            }
            r.error = Some(one_line(&err));
            return r;
        }
    };
    r.downloaded_bytes = Some(fetched.downloaded_bytes());
    let t = Instant::now();
    let result = if stop.load(Ordering::Relaxed) {
        Err(anyhow!("interrupted before its build"))
    } else {
        build_fetched(e, &fetched, o, stop)
    };
    r.build_seconds = t.elapsed().as_secs_f64();
    match result {
        Ok(report) => {
            r.status = Status::Built;
            r.image = Some(summary_of(&report));
        }
        Err(err) => {
            if stop.load(Ordering::Relaxed) {
                r.status = Status::Interrupted;
            }
            r.error = Some(one_line(&err));
        }
    }
    if o.delete_downloads {
        match fetched.remove_downloads(&e.sha) {
            Ok(freed) => r.freed_bytes = Some(freed),
            Err(err) => {
                r.status = Status::Failed;
                r.error = Some(format!("removing the downloads of {}: {err}", e.name));
            }
        }
    }
    r
}

fn build_fetched(
    e: &CatalogueEntry,
    fetched: &Fetched,
    o: &Options,
    stop: &AtomicBool,
) -> anyhow::Result<pipeline::BuildReport> {
    let (entries, contents) = fetched.entries();
    // A build under way ends (and its staging directory is removed) soon after a signal.
    let contents = Stoppable {
        inner: &contents,
        stop,
        why: "interrupted by a signal",
    };
    let req = BuildRequest {
        name: e.name.clone(),
        sha: e.sha.clone(),
        tag: e.tag.clone(),
        output: e.output(&o.output_root),
        platforms: o.platforms.clone(),
        layer: o.layer.clone(),
        plan: o.plan.clone(),
        expected_digests: fetched.expected_sha256(),
        index_annotations: depotai::job::settings_annotations(&wanted_record(e, o).settings),
        record: Some(wanted_record(e, o).with_files(&fetched.files)),
    };
    let rec = req
        .record
        .as_ref()
        .map(|r| r.to_bytes())
        .unwrap_or_default();
    let extra = [(record::RECORD_FILE, rec)];
    match pipeline::build_image_with_files(entries, &contents, &req, &extra, &|_| {}) {
        Ok(report) => Ok(report),
        Err(BuildError::ContentMismatch {
            path,
            expected,
            got,
        }) => {
            fetched.evict(&path);
            Err(anyhow!(
                "building {}: {path}: content has {got}, but the Hub promised {expected}; the cached copy was removed, run again to download it afresh",
                e.name
            ))
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!("building {}", e.name))),
    }
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
                format!("{:.1}", r.seconds()),
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
                "seconds": round(r.seconds()),
                "download_seconds": round(r.download_seconds),
                "build_seconds": round(r.build_seconds),
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

/// What a registry's tag says it was built from: commit, settings digest, index digest.
struct Tagged {
    revision: Option<String>,
    settings: Option<String>,
    index: String,
}

/// One manifest request: the tag's index and its annotations (`None`: no such tag).
async fn tagged(client: &Client, tag: &str) -> anyhow::Result<Option<Tagged>> {
    let url = client.url(&format!("manifests/{tag}"));
    let accept =
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
    match client.get_bytes(&url, Some(accept), None).await {
        Ok((bytes, _)) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let note = |k: &str| v["annotations"][k].as_str().map(str::to_string);
            Ok(Some(Tagged {
                revision: note(ANNOTATION_REVISION),
                settings: note(SETTINGS_ANNOTATION),
                index: Digest::of(&bytes).to_string(),
            }))
        }
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `build --all FILE --push PREFIX`: each model is streamed from the Hub to the
/// registry as it is built, unless the registry's tag already carries its commit and
/// settings (one manifest request per model, nothing downloaded).
fn run_push(o: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let prefix = o.push.clone().expect("push mode");
    let catalogue = Catalogue::load(&o.file)?;
    let selected = catalogue.select(o.shard);
    // Once, before any model: a registry that would refuse the pushes stops the run.
    if let Some(e) = selected.first() {
        let r = Reference::parse(&format!("{prefix}/{}:{}", e.name.registry_path(), e.tag))?;
        super::push::push_client(&r, &o.push_flags.registry)?;
    }
    let total = selected.len();
    let stop = stop_on_signals()?;
    let say = |line: String| {
        if !o.quiet {
            eprintln!("{line}");
        }
    };
    say(format!(
        "{}: {total} models{}, pushing to {}",
        o.file.display(),
        o.shard
            .map(|s| format!(" in shard {s}"))
            .unwrap_or_default(),
        // As typed: a user and password in it must not show (each model's reference
        // refuses them).
        depotai::redact::text(&prefix)
    ));
    // Multi-threaded so that it keeps serving the connections the tag checks open: the
    // job reuses the same client (and its connection pool) on its own runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut outcomes: Vec<Option<Outcome>> = (0..total).map(|_| None).collect();
    for (i, e) in selected.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let n = format!("[{}/{total}] {}", i + 1, e.name);
        let r = push_one(e, &o, &prefix, &stop, &rt, &n);
        match (&r.status, &r.error) {
            (Status::Built, _) => say(format!("{n}: pushed in {:.1}s", r.seconds())),
            (Status::Skipped, _) => say(format!("{n}: up to date in the registry, skipped")),
            (_, Some(err)) => eprintln!("{n}: {}: {err}", r.status.as_str()),
            _ => {}
        }
        outcomes[i] = Some(r);
    }
    finish(&o, &catalogue, &selected, outcomes, started, &stop)
}

fn push_one(
    e: &CatalogueEntry,
    o: &Options,
    prefix: &str,
    stop: &Arc<AtomicBool>,
    rt: &tokio::runtime::Runtime,
    n: &str,
) -> Outcome {
    let t = Instant::now();
    let mut r = Outcome::new(Status::Failed, String::new());
    let reference = format!("{prefix}/{}:{}", e.name.registry_path(), e.tag);
    let want = wanted_record(e, o);
    let annotations = depotai::job::settings_annotations(&want.settings);
    let result = (|| -> anyhow::Result<Option<depotai::job::HubReport>> {
        let reference = Reference::parse(&reference)?;
        let client = o.push_flags.registry.client(&reference, true)?;
        let tag = reference.manifest_ref().to_string();
        let current = rt.block_on(tagged(&client, &tag))?;
        r.reason = match &current {
            _ if o.force => "--force".into(),
            None => "not in the registry".into(),
            Some(c) if c.revision.as_deref() != Some(e.sha.as_str()) => format!(
                "built at {}",
                c.revision.as_deref().unwrap_or("an unknown commit")
            ),
            Some(c) if c.settings.as_ref() != annotations.get(SETTINGS_ANNOTATION) => {
                "built with other settings".into()
            }
            Some(c) => {
                r.status = Status::Skipped;
                r.reason = "up to date".into();
                r.image = Some(ImageSummary {
                    index_digest: c.index.clone(),
                    manifests: Vec::new(),
                    layers: Vec::new(),
                    files: 0,
                });
                return Ok(None);
            }
        };
        if !o.quiet {
            eprintln!("{n}: streaming to {reference} ({})", r.reason);
        }
        let mut hub = HubConfig::from_env();
        hub.jobs = o.jobs;
        hub.cancel = Some(stop.clone());
        let req = BuildRequest {
            name: e.name.clone(),
            sha: e.sha.clone(),
            tag: e.tag.clone(),
            output: e.output(&o.output_root),
            platforms: o.platforms.clone(),
            layer: o.layer.clone(),
            plan: o.plan.clone(),
            expected_digests: Default::default(),
            index_annotations: annotations.clone(),
            // Made from the listing by the job (with the files).
            record: None,
        };
        let job = depotai::job::HubJob {
            req,
            hub,
            filter: FileFilter::new(&e.include, &e.exclude)?,
            include: e.include.clone(),
            exclude: e.exclude.clone(),
            stream: StreamOptions {
                connections: o.connections,
                cache: !o.no_cache,
                ..Default::default()
            },
            layout: false,
            registry: Some(depotai::job::RegistryTarget {
                client,
                reference,
                chunk_size: o.push_flags.push_chunk_size.min(DEFAULT_STREAM_CHUNK),
                state_dir: depotai::job::upload_state_dir(),
            }),
            max_scratch: None,
            delete_downloads: o.delete_downloads,
        };
        Ok(Some(depotai::job::run_hub(job, &|_| {})?))
    })();
    r.build_seconds = t.elapsed().as_secs_f64();
    match result {
        Ok(Some(report)) => {
            r.status = Status::Built;
            r.image = Some(summary_of(&report.build));
            r.downloaded_bytes = Some(report.stream.downloaded_bytes);
            if o.delete_downloads {
                r.freed_bytes = Some(report.freed_bytes);
            }
        }
        Ok(None) => {}
        Err(err) => {
            if stop.load(Ordering::Relaxed) {
                r.status = Status::Interrupted;
            }
            r.error = Some(one_line(&err));
        }
    }
    r
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
