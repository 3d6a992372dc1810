//! `depotai build ORG/MODEL --sha COMMIT`: every build from the Hub is the streamed job
//! ([`depotai::job`]) into a layout, a registry (`--push`) or both. This file only turns
//! flags into a job and the job's events into a bar, lines and a JSON summary.

use super::BuildArgs;
use crate::cli::progress::Bars;
use crate::cli::signals::Stop;
use depotai::catalogue::record::BuildSettings;
use depotai::job::{self, Event, HubJob, HubOutcome, RegistryTarget};
use depotai::names::ModelName;
use depotai::pipeline::{BuildRequest, LayerEvent};
use depotai::remote::upload::DEFAULT_STREAM_CHUNK;
use depotai::remote::Reference;
use depotai::report::{round_seconds, ImageReport, Outcome, PushedReport};
use depotai::source::hub::FileFilter;

/// `push` is the `--push` reference with its tag settled (see `push_reference`).
pub(super) fn run(
    args: &BuildArgs,
    name: &ModelName,
    req: BuildRequest,
    settings: BuildSettings,
    push: Option<Reference>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let stop = Stop::install()?;
    let hub = crate::cli::hub::config(args.jobs.into(), &stop);
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
    let on_event = |e: Event<'_>| {
        shown.event(&e, quiet);
        match e {
            Event::Retry { path, why } if !quiet => bars.say(&format!("{path}: {why}; retrying")),
            Event::Layer(LayerEvent::Retrying { n, error }) if !quiet => bars.say(&format!(
                "layer {}: {error}; fetching its files again and building it once more",
                n + 1
            )),
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
            return Err(anyhow::Error::new(i).context(format!("building {name} at {sha}")))
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
            let mut r = ImageReport::for_request(Outcome::Skipped, &req, settings);
            r.reason = Some("up to date".into());
            r.index_digest = Some(index.to_string());
            r.downloaded_bytes = Some(0);
            r.uploaded_bytes = Some(0);
            r.push = Some(PushedReport {
                reference: pushed_to.unwrap_or_default(),
                digest: index.to_string(),
                blobs: Vec::new(),
                resumed: None,
                resumed_bytes: 0,
                requests: None,
                referrers: Vec::new(),
            });
            r
        }
    };
    let mut report = report;
    report.seconds = round_seconds(started.elapsed().as_secs_f64());
    super::say_report(report, args.json, args.quiet)
}
