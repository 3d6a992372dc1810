//! `depotai build ORG/MODEL --sha COMMIT`: every build from the Hub is the streamed job
//! ([`depotai::job`]) into a layout, a registry (`--push`) or both. This file only turns
//! flags into a job and the job's events into a bar, lines and a JSON summary.

use super::BuildArgs;
use crate::cli::progress::Bars;
use crate::cli::signals;
use depotai::catalogue::record::BuildSettings;
use depotai::job::{self, Event, HubJob, HubOutcome, RegistryTarget};
use depotai::names::ModelName;
use depotai::pipeline::{BuildRequest, LayerEvent};
use depotai::remote::upload::DEFAULT_STREAM_CHUNK;
use depotai::remote::Reference;
use depotai::report::{round_seconds, ImageReport, Outcome};
use depotai::source::hub::FileFilter;
use depotai::units::human_bytes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// `push` is the `--push` reference with its tag settled (see `push_reference`).
pub(super) fn run(
    args: &BuildArgs,
    name: &ModelName,
    req: BuildRequest,
    settings: BuildSettings,
    push: Option<Reference>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let stop = signals::stop();
    let hub = crate::cli::hub::config(args.jobs.into(), stop);
    let filter = FileFilter::new(&args.include, &args.exclude)?;
    let pushed_to = push.as_ref().map(Reference::to_string);
    let registry = match push {
        Some(reference) => {
            // Before the first Hub request: the registry would take the push.
            let client = crate::cli::push::push_client(&reference, &args.push_flags.registry)?;
            Some(RegistryTarget {
                client,
                reference,
                // Three chunks are in memory at once: keep them small.
                chunk_size: args.push_flags.push_chunk_size.min(DEFAULT_STREAM_CHUNK),
                state_dir: job::upload_state_dir(),
                skip_if_published: !args.force,
            })
        }
        None => None,
    };
    let sha = req.sha.clone();
    // Without --push the layout is the only destination; with it, only on request.
    let layout = args.output.is_some() || args.push.is_none();
    let job = HubJob {
        req: req.clone(),
        hub,
        filter,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        stream: crate::cli::hub::stream_options(args.connections.into(), args.no_cache),
        listing: None,
        layout,
        registry,
        max_scratch: args.max_scratch,
        delete_downloads: args.delete_downloads,
    };
    let quiet = args.quiet || args.json;
    let bars = Bars::new(args.quiet);
    let title = match &pushed_to {
        Some(r) => format!("{name} to {r}"),
        None => format!("{name} into {}", req.output.display()),
    };
    let shown = bars.job(&title, pushed_to.is_some());
    // What a stop reports as done: layers made of how many, bytes read of how many.
    let (layers, made) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (total, read) = (AtomicU64::new(0), AtomicU64::new(0));
    let on_event = |e: Event<'_>| {
        shown.event(&e, quiet);
        match e {
            Event::Planned {
                content_bytes,
                layers: n,
                ..
            } => {
                layers.store(n, Ordering::Relaxed);
                total.store(content_bytes, Ordering::Relaxed);
            }
            Event::Read(n) => {
                read.fetch_add(n, Ordering::Relaxed);
            }
            Event::Layer(LayerEvent::Done { .. }) => {
                made.fetch_add(1, Ordering::Relaxed);
            }
            Event::Retry { path, why } if !quiet => bars.say(&format!("{path}: {why}; retrying")),
            Event::Layer(LayerEvent::Retrying { n, error }) if !quiet => {
                bars.say(&crate::cli::lines::retrying(n, error))
            }
            _ => {}
        }
    };
    let result = job::run_hub(job, &on_event);
    // The bars go before the result's or the error's line.
    drop(shown);
    let outcome = match (result, stop.interrupted()) {
        (Ok(o), _) => o,
        // Exit status 128 + the signal.
        (Err(_), Some(i)) => {
            let kept = match (&pushed_to, layout) {
                (Some(r), false) => format!("nothing tagged at {r}"),
                (Some(r), true) => format!("nothing tagged at {r}, no layout written"),
                (None, _) => "no layout written".to_string(),
            };
            return Err(anyhow::Error::new(i).context(format!(
                "building {name} at {sha}: {} of {} layers made, {} of {} read; {kept}",
                made.load(Ordering::Relaxed),
                layers.load(Ordering::Relaxed),
                human_bytes(read.load(Ordering::Relaxed)),
                human_bytes(total.load(Ordering::Relaxed)),
            )));
        }
        (Err(e), None) => {
            return Err(anyhow::Error::new(e).context(format!("building {name} at {sha}")))
        }
    };
    let report = match outcome {
        HubOutcome::Built(hub) => {
            let mut r = ImageReport::for_request(Outcome::Built, &req, settings)
                .with_hub_job(&hub, pushed_to.as_deref());
            if r.reason.is_none() && args.force && args.push.is_some() {
                r.reason = Some("--force".into());
            }
            if layout {
                r.output = Some(hub.build.output.display().to_string());
            }
            if args.delete_downloads {
                r.freed_bytes = Some(hub.freed_bytes);
            }
            r
        }
        HubOutcome::UpToDate(index) => {
            ImageReport::for_request(Outcome::Skipped, &req, settings).up_to_date(&index, pushed_to)
        }
    };
    let mut report = report;
    report.seconds = round_seconds(started.elapsed().as_secs_f64());
    super::say_report(report, args.json, args.quiet)
}
