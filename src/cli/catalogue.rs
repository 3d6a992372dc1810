//! `depotai build --all CATALOGUE`: flags in, the library's run
//! (`depotai::catalogue::run`) in the middle, its events and reports out.
//!
//! Without `--quiet`, stderr gets a line as each model starts being built, its
//! retries, the one `Finished` line of each model (`lines.rs`), a table of every
//! model, and a last line summing the run; with `--json`, stdout gets the run's report.
//! Exit status 1 if any model failed; 130 (143) after SIGINT (SIGTERM): no new model
//! starts, the one under way stops at its next read (its staging directory is removed,
//! nothing is tagged, its downloaded windows stay in the cache for the next run). A
//! second signal exits at once; the `.NAME.partial-PID` it may leave is removed by the
//! next run.

use super::lines::{summary_line, Finished};
use super::progress::{Bars, JobBars};
use super::signals::Stop;
use anyhow::anyhow;
use depotai::catalogue::run::{self, RegistryRun, RunEvent, RunRequest};
use depotai::catalogue::{Catalogue, Shard};
use depotai::image::Platform;
use depotai::job::{self, Event};
use depotai::layer;
use depotai::pipeline::LayerEvent;
use depotai::plan::PlanOptions;
use depotai::remote::upload::DEFAULT_STREAM_CHUNK;
use depotai::remote::Reference;
use depotai::report::{ImageReport, Outcome, Report, RunReport};
use depotai::units::human_bytes;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
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
    /// `--modelpack`: every model gets its ModelPack twin.
    pub modelpack: bool,
    pub max_scratch: Option<u64>,
}

pub fn run(o: Options) -> anyhow::Result<()> {
    let catalogue = Catalogue::load(&o.file)?;
    let registry = match &o.push {
        Some(prefix) => {
            // The credentials are the registry's: the same for every model.
            let first = catalogue.select(o.shard).first().map(|e| {
                Reference::parse(&format!("{prefix}/{}:{}", e.name.registry_path(), e.tag))
            });
            let client = match first {
                Some(r) => o.push_flags.registry.options(&r?)?,
                None => Default::default(),
            };
            Some(RegistryRun {
                prefix: prefix.clone(),
                client,
                chunk_size: o.push_flags.push_chunk_size.min(DEFAULT_STREAM_CHUNK),
                state_dir: job::upload_state_dir(),
            })
        }
        None => None,
    };
    let stop = super::signals::stop();
    let req = RunRequest {
        file: o.file.display().to_string(),
        shard: o.shard,
        force: o.force,
        output_root: o.output_root.clone(),
        layer: o.layer.clone(),
        plan: o.plan.clone(),
        platforms: o.platforms.clone(),
        hub: super::hub::config(o.jobs, stop),
        stream: super::hub::stream_options(o.connections, o.no_cache),
        delete_downloads: o.delete_downloads,
        max_scratch: o.max_scratch,
        registry,
        modelpack: o.modelpack,
    };
    // On a terminal: a line for the whole run above the current model's bars.
    let bars = Bars::new(o.quiet);
    let say = |line: String| {
        if !o.quiet {
            bars.say(&line);
        }
    };
    let started = Instant::now();
    let run_line = bars.text("");
    let (built, skipped, failed) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let progress = |index: usize, total: usize| {
        run_line.set(&format!(
            "{}: model {} of {total}; {} built, {} skipped, {} failed so far; {}",
            o.file.display(),
            index + 1,
            built.load(Relaxed),
            skipped.load(Relaxed),
            failed.load(Relaxed),
            super::progress::duration(started.elapsed()),
        ))
    };
    // The bars of the model under way, made at its first event, gone when it is done.
    let shown: Mutex<Option<JobBars<'_>>> = Mutex::new(None);
    let model_bars = |index: usize, total: usize, entry: &depotai::catalogue::CatalogueEntry| {
        let mut s = shown.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_none() {
            progress(index, total);
            *s = Some(bars.job(
                &format!("[{}/{total}] {}", index + 1, entry.name),
                o.push.is_some(),
            ));
        }
    };
    let on_event = |ev: RunEvent<'_>| match ev {
        RunEvent::Started { total } => {
            let models = if total == 1 { "model" } else { "models" };
            let shard = o
                .shard
                .map(|s| format!(" in shard {s}"))
                .unwrap_or_default();
            match &o.push {
                // As typed: a user and password in it must not show (each model's
                // reference refuses them).
                Some(prefix) => say(format!(
                    "{}: {total} {models}{shard}, pushing to {}",
                    o.file.display(),
                    depotai::redact::text(prefix)
                )),
                None => say(format!("{}: {total} {models}{shard}", o.file.display())),
            }
        }
        RunEvent::Building {
            index,
            total,
            entry,
            why,
        } => {
            model_bars(index, total, entry);
            say(format!(
                "[{}/{total}] {}: building at {} ({why})",
                index + 1,
                entry.name,
                entry.sha
            ))
        }
        RunEvent::Job {
            index,
            total,
            entry,
            event,
        } => {
            model_bars(index, total, entry);
            if let Some(s) = &*shown.lock().unwrap_or_else(|p| p.into_inner()) {
                s.event(&event, o.quiet);
            }
            match event {
                Event::TagChecked {
                    reference,
                    published,
                } if !matches!(published, job::Published::UpToDate(_)) => say(format!(
                    "[{}/{total}] {}: streaming to {reference} ({published})",
                    index + 1,
                    entry.name
                )),
                Event::Retry { path, why } => {
                    say(format!("  {}: retrying {path}: {why}", entry.name))
                }
                Event::Layer(LayerEvent::Retrying { n, error }) => say(format!(
                    "  {}: {}",
                    entry.name,
                    super::lines::retrying(n, error)
                )),
                _ => {}
            }
        }
        RunEvent::Finished { report, .. } => {
            // The model's bars go before its line.
            shown.lock().unwrap_or_else(|p| p.into_inner()).take();
            let counter = match report.result {
                Outcome::Skipped => &skipped,
                Outcome::Failed | Outcome::Interrupted => &failed,
                _ => &built,
            };
            counter.fetch_add(1, Relaxed);
            if o.quiet {
                Finished(report).say(true)
            } else {
                bars.say(&Finished(report).line())
            }
        }
    };
    let report = run::run(&catalogue, &req, &on_event);
    // The table and the last lines are printed without bars.
    drop(shown.into_inner().unwrap_or_else(|p| p.into_inner()));
    drop(run_line);
    let report = report?;
    if o.json {
        println!("{}", serde_json::to_string(&Report::Run(report.clone()))?);
    }
    if !o.quiet {
        eprint!("{}", table(&report.models));
    }
    finish(&o, &report, stop)
}

/// The last line and the exit status of a run.
fn finish(o: &Options, report: &RunReport, stop: &Stop) -> anyhow::Result<()> {
    let shard = o.shard.map(|s| format!(" (shard {s})")).unwrap_or_default();
    let line = format!("{}{shard}", summary_line("model", &report.summary));
    if let Some(i) = stop.interrupted() {
        return Err(anyhow::Error::new(i).context(line));
    }
    let failed: Vec<&str> = report
        .models
        .iter()
        .filter(|r| r.result == depotai::report::Outcome::Failed)
        .filter_map(|r| r.name.as_deref())
        .collect();
    if !failed.is_empty() {
        return Err(anyhow!("{line}; failed: {}", failed.join(", ")));
    }
    if !o.quiet {
        eprintln!("{line}");
    }
    Ok(())
}

fn table(models: &[ImageReport]) -> String {
    let rows: Vec<[String; 5]> = models
        .iter()
        .map(|r| {
            [
                r.name.clone().unwrap_or_default(),
                r.result.as_str().to_string(),
                r.stored_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "-".into()),
                format!("{:.1}", r.seconds),
                r.error
                    .clone()
                    .or_else(|| r.reason.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let head = ["MODEL", "RESULT", "STORED", "SECONDS", "NOTE"];
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
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
        // No trailing blanks where a note is empty (snapshots and CI logs compare lines).
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}
