//! `build --all`: every model of a catalogue (or of one shard of it), one after another,
//! each through the one streamed Hub job ([`crate::job`]), into a layout under
//! `output_root` or to the registry under a prefix.
//!
//! 1. With a registry, the first model's repository is asked whether it would take a
//!    push ([`Client::check_push`]) before anything else: a registry that is down or
//!    refuses the credentials stops the whole run, not model after model.
//! 2. A model that is up to date is skipped: into layouts when its build record matches
//!    and the layout is whole (no network request at all); in a registry when its tag
//!    carries its commit and settings (the job's one manifest request, nothing
//!    downloaded). `force` rebuilds.
//! 3. The others are streamed. A failure is the model's report, and the next model
//!    goes on.
//! 4. A signal (the `cancel` flag of the request's [`HubConfig`]) stops the model under
//!    way at its next read and starts no other: their reports say `interrupted`.
//!
//! What happens is told to a handler as [`RunEvent`]s (the job's own events with the
//! model they belong to); the run returns a [`RunReport`]. Rendering is the caller's.

use super::record::{self, BuildRecord, BuildSettings, Freshness};
use super::{Catalogue, CatalogueEntry, Shard};
use crate::image::{remove_stale_siblings, Platform};
use crate::job::{self, HubJob, HubOutcome, JobError, RegistryTarget};
use crate::layer;
use crate::pipeline::BuildRequest;
use crate::plan::PlanOptions;
use crate::remote::{Client, ClientOptions, Reference, RegistryError};
use crate::report::{self, ImageReport, Outcome, RunReport, Summary};
use crate::source::hub::{FileFilter, HubConfig, HubError, StreamOptions};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// One run: which models, how they are built, where they go.
pub struct RunRequest {
    /// How messages and the report name the catalogue (its file).
    pub file: String,
    pub shard: Option<Shard>,
    /// Rebuild what is up to date.
    pub force: bool,
    /// Layouts go under `output_root/<name, lowercased>` (without a registry).
    pub output_root: PathBuf,
    pub layer: layer::Options,
    pub plan: PlanOptions,
    pub platforms: Vec<Platform>,
    /// The Hub, `jobs` files at a time, stopped by its `cancel` flag.
    pub hub: HubConfig,
    pub stream: StreamOptions,
    /// Remove what each model put in the Hub cache once it is done.
    pub delete_downloads: bool,
    /// Each model's build refuses to start when it would write more than this to disk
    /// (as one build's [`HubJob::max_scratch`]): that model fails, the next goes on.
    pub max_scratch: Option<u64>,
    pub registry: Option<RegistryRun>,
    /// `--modelpack`: every model gets its ModelPack twin.
    pub modelpack: bool,
}

/// Where a run pushes: each model to `prefix/<name, lowercased>:<tag>`.
pub struct RegistryRun {
    /// `REGISTRY/PREFIX`.
    pub prefix: String,
    /// How to reach it (the same registry for every model).
    pub client: ClientOptions,
    /// PATCH size of streamed blobs.
    pub chunk_size: u64,
    /// Where unfinished uploads are remembered for a rerun.
    pub state_dir: Option<PathBuf>,
}

/// What a run tells as it goes. `index` counts from 0 among the run's `total` models.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// The run's models are chosen and, with a registry, it would take the pushes.
    Started { total: usize },
    /// A model is being built (not up to date): `why`.
    Building {
        index: usize,
        total: usize,
        entry: &'a CatalogueEntry,
        why: &'a str,
    },
    /// What the model's job tells.
    Job {
        index: usize,
        total: usize,
        entry: &'a CatalogueEntry,
        event: job::Event<'a>,
    },
    /// A model is done, whatever happened to it.
    Finished {
        index: usize,
        total: usize,
        entry: &'a CatalogueEntry,
        report: &'a ImageReport,
    },
}

/// What stops a whole run (a model's own failure is its report).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The registry would not take the pushes (checked before any model).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl RunRequest {
    fn reference(&self, e: &CatalogueEntry) -> Option<Result<Reference, RegistryError>> {
        let r = self.registry.as_ref()?;
        Some(Reference::parse(&format!(
            "{}/{}:{}",
            r.prefix,
            e.name.registry_path(),
            e.tag
        )))
    }

    fn cancelled(&self) -> bool {
        self.hub
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }

    /// The layer options of one model: the request's, under the entry's `prefix`.
    fn layer_options(&self, e: &CatalogueEntry) -> layer::Options {
        layer::Options {
            prefix: e.prefix.clone(),
            ..self.layer.clone()
        }
    }

    fn wanted_record(&self, e: &CatalogueEntry) -> BuildRecord {
        let settings = BuildSettings::new(
            &self.layer_options(e),
            &self.plan,
            &self.platforms,
            &e.include,
            &e.exclude,
        )
        .with_modelpack(self.modelpack);
        BuildRecord::new(&e.name, &e.sha, &e.tag, settings)
    }
}

/// Builds the models of `catalogue` that `req` selects, telling `on_event`.
pub fn run(
    catalogue: &Catalogue,
    req: &RunRequest,
    on_event: &(dyn Fn(RunEvent<'_>) + Sync),
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let selected = catalogue.select(req.shard);
    let total = selected.len();
    if let (Some(r), Some(Ok(reference))) = (
        &req.registry,
        selected.first().and_then(|e| req.reference(e)),
    ) {
        let client = Client::new(&reference, r.client.clone(), true)?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RunError::Runtime)?
            .block_on(client.check_push())?;
    }
    on_event(RunEvent::Started { total });
    let mut models = Vec::with_capacity(total);
    for (index, e) in selected.iter().enumerate() {
        let mut report = if req.cancelled() {
            let mut r = base_report(e, req, Outcome::Interrupted);
            r.error = Some("not started: interrupted".into());
            r
        } else {
            build_one(
                e,
                req,
                &|event| {
                    on_event(RunEvent::Job {
                        index,
                        total,
                        entry: e,
                        event,
                    })
                },
                &|why| {
                    on_event(RunEvent::Building {
                        index,
                        total,
                        entry: e,
                        why,
                    })
                },
            )
        };
        report.seconds = report::round_seconds(report.seconds);
        on_event(RunEvent::Finished {
            index,
            total,
            entry: e,
            report: &report,
        });
        models.push(report);
    }
    let summary = Summary::of(&models, started.elapsed().as_secs_f64());
    Ok(RunReport {
        catalogue: req.file.clone(),
        shard: req.shard.map(|s| s.to_string()),
        catalogue_models: catalogue.entries.len(),
        models,
        summary,
    })
}

/// The model, its commit, tag, catalogue line and settings.
fn base_report(e: &CatalogueEntry, req: &RunRequest, result: Outcome) -> ImageReport {
    ImageReport {
        name: Some(e.name.to_string()),
        image: Some(e.name.registry_path()),
        sha: Some(e.sha.to_string()),
        tag: Some(e.tag.clone()),
        line: Some(e.line),
        settings: Some(req.wanted_record(e).settings),
        ..ImageReport::new(result)
    }
}

/// Why one model failed (its report's `error`; the run goes on).
#[derive(Debug, thiserror::Error)]
enum ModelError {
    /// Its reference or the registry client.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Its globs (checked with the catalogue already), the Hub, the build.
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// How a model's job ended, and the reference it went to (with a registry).
type Streamed = (HubOutcome, Option<String>);

/// One model: skipped if up to date, else streamed into its layout or the registry.
/// Never stops the run: what went wrong is in the report.
fn build_one(
    e: &CatalogueEntry,
    req: &RunRequest,
    on_job: &(dyn Fn(job::Event<'_>) + Sync),
    building: &dyn Fn(&str),
) -> ImageReport {
    let t = Instant::now();
    let mut report = base_report(e, req, Outcome::Failed);
    let result = stream_one(e, req, &mut report, on_job, building);
    let seconds = t.elapsed().as_secs_f64();
    let mut report = match result {
        Ok(None) => report,
        Ok(Some((HubOutcome::Built(hub), reference))) => {
            let why = report.reason.take();
            let mut r = report.with_hub_job(&hub, reference.as_deref());
            if r.reason.is_none() {
                r.reason = why;
            }
            if reference.is_none() {
                r.result = Outcome::Built;
                r.output = Some(hub.build.output.display().to_string());
            }
            if req.delete_downloads {
                r.freed_bytes = Some(hub.freed_bytes);
            }
            r
        }
        Ok(Some((HubOutcome::UpToDate(index), reference))) => report.up_to_date(&index, reference),
        Err(err) => {
            report.result = if req.cancelled() {
                Outcome::Interrupted
            } else {
                Outcome::Failed
            };
            report.error = Some(report::one_line(&err));
            report
        }
    };
    report.seconds = seconds;
    report
}

/// The model's job, unless its layout is up to date (then `report` says so and the
/// answer is `None`). `report.reason` gets why it is built.
fn stream_one(
    e: &CatalogueEntry,
    req: &RunRequest,
    report: &mut ImageReport,
    on_job: &(dyn Fn(job::Event<'_>) + Sync),
    building: &dyn Fn(&str),
) -> Result<Option<Streamed>, ModelError> {
    let want = req.wanted_record(e);
    let output = e.output(&req.output_root);
    let registry = match (&req.registry, req.reference(e)) {
        (Some(r), Some(reference)) => {
            let reference = reference?;
            Some(RegistryTarget {
                client: Client::new(&reference, r.client.clone(), true)?,
                reference,
                chunk_size: r.chunk_size,
                state_dir: r.state_dir.clone(),
                skip_if_published: !req.force,
            })
        }
        _ => None,
    };
    if registry.is_none() {
        // Up to date? Reads the record and the layout on disk only.
        remove_stale_siblings(&output);
        let why = match record::check(&output, &want) {
            Freshness::UpToDate(image) if !req.force => {
                let mut r = base_report(e, req, Outcome::Skipped).with_summary(&image);
                r.reason = Some("up to date".into());
                r.output = Some(output.display().to_string());
                *report = r;
                return Ok(None);
            }
            Freshness::UpToDate(_) => "--force".to_string(),
            Freshness::Stale(why) => why,
        };
        building(&why);
        report.reason = Some(why);
    } else if req.force {
        building("--force");
        report.reason = Some("--force".into());
    }
    let reference = registry.as_ref().map(|r| r.reference.to_string());
    let build = BuildRequest {
        name: e.name.clone(),
        sha: e.sha.clone(),
        tag: e.tag.clone(),
        output,
        platforms: req.platforms.clone(),
        layer: req.layer_options(e),
        plan: req.plan.clone(),
        expected_digests: Default::default(),
        index_annotations: job::settings_annotations(&want.settings),
        // Made from the listing by the job (with the files).
        record: None,
        modelpack: req.modelpack,
    };
    let job = HubJob {
        req: build,
        hub: req.hub.clone(),
        filter: FileFilter::new(&e.include, &e.exclude)?,
        include: e.include.clone(),
        exclude: e.exclude.clone(),
        stream: req.stream.clone(),
        listing: None,
        layout: registry.is_none(),
        registry,
        max_scratch: req.max_scratch,
        delete_downloads: req.delete_downloads,
    };
    Ok(Some((job::run_hub(job, on_job)?, reference)))
}
