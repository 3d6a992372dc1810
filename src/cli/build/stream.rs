//! `depotai build ORG/MODEL --sha COMMIT` with `--push`, `--no-cache` or
//! `--max-scratch`: the streamed build ([`depotai::job`]). This file only turns flags
//! into a job and the job's events into a bar, lines and a JSON summary.

use super::{summary_json, BuildArgs};
use crate::cli::progress::Progress;
use anyhow::Context;
use depotai::job::{self, Event, HubJob, RegistryTarget};
use depotai::names::ModelName;
use depotai::pipeline::{BuildRequest, LayerEvent};
use depotai::remote::upload::DEFAULT_STREAM_CHUNK;
use depotai::remote::Reference;
use depotai::source::hub::{FileFilter, HubConfig, StreamOptions, DEFAULT_BUFFER, DEFAULT_WINDOW};
use std::sync::Mutex;

/// `push` is the `--push` reference with its tag settled (see `push_reference`).
pub(super) fn run(
    args: &BuildArgs,
    name: &ModelName,
    req: BuildRequest,
    push: Option<Reference>,
) -> anyhow::Result<()> {
    let mut hub = HubConfig::from_env();
    hub.jobs = args.jobs.into();
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
            })
        }
        None => None,
    };
    let sha = req.sha.clone();
    let job = HubJob {
        req: req.clone(),
        hub,
        filter,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        stream: StreamOptions {
            connections: args.connections.into(),
            cache: !args.no_cache,
            window: env_size("DEPOTAI_STREAM_WINDOW").unwrap_or(DEFAULT_WINDOW),
            buffer: env_size("DEPOTAI_STREAM_BUFFER").unwrap_or(DEFAULT_BUFFER),
            ..StreamOptions::default()
        },
        // Without --push the layout is the only destination; with it, only on request.
        layout: args.output.is_some() || args.push.is_none(),
        registry,
        max_scratch: args.max_scratch,
        delete_downloads: args.delete_downloads,
    };
    let quiet = args.quiet || args.json;
    let bar: Mutex<Option<Progress>> = Mutex::new(None);
    let on_event = |e: Event<'_>| match e {
        Event::Planned { content_bytes, .. } => {
            let b = Progress::bytes(content_bytes, &format!("streaming {name}"), args.quiet);
            *bar.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
        }
        Event::Read(n) => {
            if let Some(b) = &*bar.lock().unwrap_or_else(|p| p.into_inner()) {
                b.advance(n);
            }
        }
        Event::Retry { path, why } if !quiet => eprintln!("{path}: {why}; retrying"),
        Event::Layer(LayerEvent::Retrying { n, error }) if !quiet => {
            eprintln!("layer {n}: {error}; fetching its files again and building it once more")
        }
        _ => {}
    };
    let result = job::run_hub(job, &on_event);
    if let Some(b) = bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
        b.finish();
    }
    let report = result.with_context(|| format!("building {name} at {sha}"))?;
    let build = &report.build;
    if args.json {
        let mut s = summary_json(name, &req, build);
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
    } else if !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "built {name} -> {} ({} files, {} layers, {} bytes, {:.1}s)\n  index {}",
            pushed_to
                .as_deref()
                .map_or_else(|| build.output.display().to_string(), str::to_string),
            build.files(),
            build.layers.len(),
            build.layers_size(),
            build.seconds,
            build.index_digest
        );
    }
    Ok(())
}

/// A size from the environment (tuning for tests and benchmarks: the Range window and
/// the read-ahead buffer of the Hub stream).
fn env_size(key: &str) -> Option<u64> {
    crate::cli::parse_size(&std::env::var(key).ok()?).ok()
}
