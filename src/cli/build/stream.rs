//! `depotai build ORG/MODEL --sha COMMIT`: every build from the Hub is the streamed job
//! ([`depotai::job`]) into a layout, a registry (`--push`) or both. This file only turns
//! flags into a job and the job's events into a bar, lines and a JSON summary.

use super::{summary_json, BuildArgs};
use crate::cli::lines::Finished;
use crate::cli::progress::Progress;
use crate::cli::signals;
use depotai::job::{self, Event, HubJob, HubOutcome, RegistryTarget};
use depotai::names::ModelName;
use depotai::pipeline::{BuildRequest, LayerEvent};
use depotai::remote::upload::DEFAULT_STREAM_CHUNK;
use depotai::remote::Reference;
use depotai::source::hub::FileFilter;
use depotai::units::human_bytes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// `push` is the `--push` reference with its tag settled (see `push_reference`).
pub(super) fn run(
    args: &BuildArgs,
    name: &ModelName,
    req: BuildRequest,
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
    let job_layout = args.output.is_some() || args.push.is_none();
    let job = HubJob {
        req: req.clone(),
        hub,
        filter,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        stream: crate::cli::hub::stream_options(args.connections.into(), args.no_cache),
        layout: job_layout,
        registry,
        max_scratch: args.max_scratch,
        delete_downloads: args.delete_downloads,
    };
    let quiet = args.quiet || args.json;
    let bar: Mutex<Option<Progress>> = Mutex::new(None);
    // What a stop reports as done: layers made of how many, bytes read of how many.
    let (layers, made) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (total, read) = (AtomicU64::new(0), AtomicU64::new(0));
    let on_event = |e: Event<'_>| match e {
        Event::Planned {
            content_bytes,
            layers: n,
            ..
        } => {
            layers.store(n, Ordering::Relaxed);
            total.store(content_bytes, Ordering::Relaxed);
            let b = Progress::bytes(content_bytes, &format!("streaming {name}"), args.quiet);
            *bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
        }
        Event::Read(n) => {
            read.fetch_add(n, Ordering::Relaxed);
            if let Some(b) = &*bar.lock().unwrap_or_else(|p| p.into_inner()) {
                b.advance(n);
            }
        }
        Event::Layer(LayerEvent::Done { .. }) => {
            made.fetch_add(1, Ordering::Relaxed);
        }
        Event::Retry { path, why } if !quiet => eprintln!("{path}: {why}; retrying"),
        Event::Layer(LayerEvent::Retrying { n, error }) if !quiet => {
            eprintln!("{}", crate::cli::lines::retrying(n, error))
        }
        _ => {}
    };
    let result = job::run_hub(job, &on_event);
    if let Some(b) = bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
        b.finish();
    }
    let outcome = match (result, stop.interrupted()) {
        (Ok(o), _) => o,
        // Exit status 128 + the signal.
        (Err(_), Some(i)) => {
            let kept = match (&pushed_to, job_layout) {
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
        HubOutcome::Built(report) => report,
        HubOutcome::UpToDate(index) => {
            let reference = pushed_to.unwrap_or_default();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": name.as_str(),
                        "image": name.registry_path(),
                        "sha": sha.as_str(),
                        "tag": req.tag,
                        "status": "skipped",
                        "reason": "up to date",
                        "output": null,
                        "index_digest": index.to_string(),
                        "downloaded_bytes": 0,
                        "push": {"reference": reference, "index_digest": index.to_string(),
                                 "uploaded_bytes": 0, "resumed_bytes": 0, "layers": []},
                    })
                );
            } else {
                Finished {
                    result: "skipped",
                    name: name.as_str(),
                    dest: &reference,
                    index: &index.to_string(),
                    built: None,
                    sent: None,
                    seconds: started.elapsed().as_secs_f64(),
                }
                .say(args.quiet);
            }
            return Ok(());
        }
    };
    let build = &report.build;
    if args.json {
        let mut s = summary_json(name, &req, build);
        s["status"] = "built".into();
        s["reason"] = match &report.published {
            Some(p) => p.to_string().into(),
            None if args.force && args.push.is_some() => "--force".into(),
            None => serde_json::Value::Null,
        };
        s["downloaded_bytes"] = report.stream.downloaded_bytes.into();
        s["cached_bytes"] = report.stream.cached_bytes.into();
        s["refetched"] = serde_json::json!(report.stream.failures);
        if args.output.is_none() && args.push.is_some() {
            s["output"] = serde_json::Value::Null;
        }
        if args.delete_downloads {
            s["freed_bytes"] = report.freed_bytes.into();
        }
        if let Some(r) = &pushed_to {
            s["push"] = serde_json::json!({
                "reference": r,
                "index_digest": build.index_digest.to_string(),
                "uploaded_bytes": report.uploads.iter().map(|(_, u)| u.sent).sum::<u64>(),
                "resumed_bytes": report.uploads.iter().map(|(_, u)| u.resumed_from).sum::<u64>(),
                "layers": report.uploads.iter().map(|(n, u)| serde_json::json!({
                    "layer": n,
                    "digest": u.digest.to_string(),
                    "size": u.size,
                    "sent": u.sent,
                    "resumed_from": u.resumed_from,
                })).collect::<Vec<_>>(),
            });
        }
        println!("{s}");
    } else {
        let layout = build.output.display().to_string();
        Finished {
            result: if pushed_to.is_some() {
                "pushed"
            } else {
                "built"
            },
            name: name.as_str(),
            dest: pushed_to.as_deref().unwrap_or(&layout),
            index: &build.index_digest.to_string(),
            built: Some((build.files(), build.layers.len(), build.layers_size())),
            sent: pushed_to
                .is_some()
                .then(|| report.uploads.iter().map(|(_, u)| u.sent).sum()),
            seconds: started.elapsed().as_secs_f64(),
        }
        .say(args.quiet);
    }
    Ok(())
}
