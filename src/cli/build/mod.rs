//! `depotai build ORG/MODEL --sha COMMIT` (from the Hub: the streamed job, see
//! `stream.rs`), `depotai build --from-dir DIR --name ORG/MODEL --sha COMMIT` (from a
//! directory) and `depotai build --all CATALOGUE` (every model of a catalogue, see
//! `catalogue.rs`).

mod stream;

use super::lines::Finished;
use super::progress::Progress;
use anyhow::{bail, Context};
use clap::Args;
use depotai::catalogue::record::{BuildRecord, BuildSettings};
use depotai::catalogue::Shard;
use depotai::image::{default_platforms, Platform};
use depotai::layer::{self, content_size, Contents, Entry, Format, Stoppable};
use depotai::names::{CommitSha, ModelName};
use depotai::pipeline::{self, BuildError, BuildReport, BuildRequest};
use depotai::plan::PlanOptions;
use depotai::remote::Reference;
use depotai::report::{round_seconds, ImageReport, Outcome, Report};
use depotai::source::DirSource;
use depotai::units::human_bytes;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Args, Debug)]
#[command(after_help = ENVIRONMENT)]
#[command(group(clap::ArgGroup::new("rebuildable").args(["all", "push"]).multiple(true)))]
pub struct BuildArgs {
    /// Hugging Face repo id to download at --sha (or use --from-dir or --all).
    #[arg(value_name = "ORG/MODEL", conflicts_with_all = ["from_dir", "name"],
          required_unless_present_any = ["from_dir", "all"])]
    pub(super) model: Option<String>,
    /// Build every model of this catalogue (e.g. models/models.yaml) into
    /// <--output, default out>/<name, lowercased>, skipping images that are up to date.
    #[arg(long, value_name = "FILE",
          conflicts_with_all = ["model", "from_dir", "name", "sha", "tag", "include", "exclude"])]
    pub(super) all: Option<PathBuf>,
    /// With --all: build only part I of N of the catalogue (1-based), for a CI matrix.
    #[arg(long, value_name = "I/N", requires = "all", conflicts_with_all = ["model", "from_dir"])]
    pub(super) shard: Option<Shard>,
    /// With --all or --push (from the Hub): rebuild images even if they are up to date.
    #[arg(long, requires = "rebuildable", conflicts_with = "from_dir")]
    pub(super) force: bool,
    /// Build from this directory instead of downloading (needs --name).
    #[arg(long, value_name = "DIR", requires = "name")]
    pub(super) from_dir: Option<PathBuf>,
    /// Model name for --from-dir, as on the Hub (`org/model`); lowercased for the image path.
    #[arg(long, value_name = "ORG/MODEL")]
    pub(super) name: Option<String>,
    /// The commit the files come from: 40 hex digits.
    #[arg(long, value_name = "COMMIT", required_unless_present = "all")]
    pub(super) sha: Option<String>,
    /// The image's tag: in the layout's index.json and, with --push, in the registry
    /// when the --push reference names none (a reference tag that differs is an error)
    /// [default: the --push reference's tag, else latest].
    #[arg(long, value_name = "TAG")]
    pub(super) tag: Option<String>,
    /// Output directory (default: out/<name, lowercased>); with --all, the directory
    /// the images go under (default: out).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub(super) output: Option<PathBuf>,
    /// Compression threads (default: all cores). The output is identical for any value.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub(super) threads: Option<u16>,
    /// Size of the independently compressed chunks of large files (e.g. 4MiB).
    #[arg(long, value_name = "SIZE", default_value = "4MiB", value_parser = super::parse_size)]
    pub(super) chunk_size: u64,
    /// Layer format: estargz (lazy pulls with the stargz snapshotter: BuildKit, containerd)
    /// or zstd-chunked (partial pulls with podman, buildah, CRI-O).
    #[arg(long, value_name = "FORMAT", default_value = "estargz", value_parser = ["estargz", "zstd-chunked"])]
    pub(super) format: String,
    /// Compression level. eStargz: libdeflate 0 (stored, no compression) or 1 (fastest)
    /// to 12 (smallest), default 1; with --encoder isal 1 or 2, default 2;
    /// zstd-chunked: zstd 1 to 19, default 3. Part of what the digests depend on.
    #[arg(long, value_name = "LEVEL", value_parser = clap::value_parser!(i32).range(0..=19))]
    pub(super) compression_level: Option<i32>,
    /// How files are split into layers: per-file (each file of at least
    /// --own-layer-above in a layer of its own, the rest in one layer on top) or single
    /// (one layer).
    #[arg(long, value_name = "MODE", default_value = "per-file", value_parser = ["per-file", "single"])]
    pub(super) layers: String,
    /// Files of at least this size get a layer of their own (per-file mode).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = super::parse_size)]
    pub(super) own_layer_above: u64,
    /// At most this many layers (per-file mode); more large files than that are grouped
    /// by a hash of their path.
    #[arg(long, value_name = "N", default_value_t = depotai::plan::DEFAULT_MAX_LAYERS as u16,
          value_parser = clap::value_parser!(u16).range(2..=127))]
    pub(super) max_layers: u16,
    /// Refuse, before downloading, a plan with a layer larger than this: a registry's
    /// limit, e.g. 10GB for GHCR (GB = 10^9 bytes, GiB = 2^30).
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size)]
    pub(super) max_layer_size: Option<u64>,
    /// Deflate encoder of eStargz layers: libdeflate (identical bytes on every CPU) or
    /// isal (ISA-L, several times faster; x86-64 with SSE4.2 only, where its bytes are
    /// the same on every such CPU). Part of what the digests depend on.
    #[arg(long, value_name = "ENCODER", default_value = "libdeflate", value_parser = ["libdeflate", "isal"])]
    pub(super) encoder: String,
    /// Files (or directories) to put first, before a `.prefetch.landmark` (eStargz only).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub(super) prefetch: Vec<String>,
    /// Put every file of the model under this directory of the image (e.g. /models, for
    /// KServe's oci+native:// and Kubernetes image volumes). Absolute; part of what the
    /// digests depend on. With --all: the catalogue's `prefix:` of each model.
    #[arg(long, value_name = "DIR", conflicts_with = "all")]
    pub(super) prefix: Option<String>,
    /// Platforms of the image index, comma-separated (the layers are shared)
    /// [default: linux/amd64,linux/arm64].
    #[arg(long, value_name = "OS/ARCH", value_delimiter = ',')]
    pub(super) platform: Vec<String>,
    /// Files downloaded at once, ahead of the layer being made (with --all, one model
    /// after another). With --push from the Hub, two layers are made and uploaded at
    /// once unless this is 1.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(super) jobs: u16,
    /// Only files matching one of these globs (`*` matches `/` too). Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub(super) include: Vec<String>,
    /// Leave out files matching these globs. Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub(super) exclude: Vec<String>,
    /// Delete the files this build downloaded once the image is written (with --all:
    /// after each model, whether it was built or failed).
    #[arg(long)]
    pub(super) delete_downloads: bool,
    /// Also make the CNCF ModelPack twin (model-spec v0.0.7): an artifact of the
    /// model's files as raw layers, tagged <tag>-modelpack and a referrer of the image.
    #[arg(long)]
    pub(super) modelpack: bool,
    /// Print a machine-readable summary on stdout (with --all: a report of every model).
    #[arg(long)]
    pub(super) json: bool,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    pub(super) quiet: bool,
    /// After building, push the image to this reference (REGISTRY/REPO[:TAG]). From the
    /// Hub the image is streamed: each layer is uploaded while it is made, no layout is
    /// written unless --output is given, and (without --output or --force) nothing is
    /// built if the tag already carries the commit and settings.
    /// With --all: REGISTRY/PREFIX; each model goes to PREFIX/<name, lowercased>:<tag>,
    /// skipped the same way.
    #[arg(long, value_name = "REF")]
    pub(super) push: Option<String>,
    /// From the Hub: keep no copy of the model on disk (the files stream from the Hub
    /// into the layers; the Hub cache is neither read nor written).
    #[arg(long, conflicts_with = "from_dir")]
    pub(super) no_cache: bool,
    /// From the Hub: parallel Range requests per file (on top of --jobs files).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(super) connections: u16,
    /// From the Hub: refuse to start a build that would write more than this to disk
    /// (the Hub cache and the layout), e.g. on a CI runner with a small disk.
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size, conflicts_with = "from_dir")]
    pub(super) max_scratch: Option<u64>,
    #[command(flatten)]
    pub(super) push_flags: super::push::PushFlags,
}

/// Where `--push` goes: the reference's own tag, else `--tag`, else `latest`. A
/// reference tag that differs from `--tag` is refused rather than one silently winning.
fn push_reference(push: &str, tag: Option<&str>) -> anyhow::Result<Reference> {
    let mut r = Reference::parse(push)?;
    // `Reference::parse` fills in `latest`: whether a tag was written is in the text
    // (a `:` in the last path component; a registry's port comes before a `/`).
    let written = r.digest.is_none() && push.rsplit('/').next().is_some_and(|c| c.contains(':'));
    match tag {
        Some(t) if written && r.tag.as_deref() != Some(t) => bail!(
            "--push {push} names the tag {}, --tag says {t}: give the tag once",
            r.tag.as_deref().unwrap_or_default()
        ),
        Some(t) if r.digest.is_none() => {
            depotai::image::validate_tag(t).with_context(|| format!("--tag {t}"))?;
            r.tag = Some(t.to_string());
        }
        _ => {}
    }
    Ok(r)
}

/// What `build` reads from the environment, shown under `build --help`.
const ENVIRONMENT: &str = "Environment:
  HF_ENDPOINT           the Hub [default: https://huggingface.co]; a user and password in it go to it alone
  HF_TOKEN              access token (else the file HF_TOKEN_PATH, else $HF_HOME/token), sent to the Hub only
  HF_HOME, HF_HUB_CACHE the Hub cache, shared with huggingface_hub [default: ~/.cache/huggingface]
  HF_HUB_OFFLINE=1      build from the cache alone (every selected file must be there)
  DEPOTAI_REGISTRY_USER, DEPOTAI_REGISTRY_PASSWORD
                        registry credentials with --push (else DOCKER_CONFIG or ~/.docker/config.json)
  DEPOTAI_UPLOAD_STATE  where interrupted uploads are remembered [default: ~/.cache/depotai/uploads]
  DEPOTAI_CONNECT_TIMEOUT, DEPOTAI_IDLE_TIMEOUT
                        seconds [default: 10 and 60]";

fn platforms(args: &BuildArgs) -> anyhow::Result<Vec<Platform>> {
    let platforms: Vec<Platform> = if args.platform.is_empty() {
        default_platforms()
    } else {
        args.platform
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()?
    };
    if platforms.is_empty() {
        bail!("--platform needs at least one platform");
    }
    Ok(platforms)
}

fn plan_options(args: &BuildArgs) -> anyhow::Result<PlanOptions> {
    Ok(PlanOptions {
        mode: args.layers.parse().map_err(anyhow::Error::msg)?,
        own_layer_above: args.own_layer_above,
        max_layers: args.max_layers.into(),
        max_layer_size: args.max_layer_size,
    })
}

fn layer_options(args: &BuildArgs) -> anyhow::Result<layer::Options> {
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    if format == Format::ZstdChunked && !args.prefetch.is_empty() {
        bail!("--prefetch applies to --format estargz only: zstd:chunked has no prefetch landmark, and podman fetches the files it lacks");
    }
    let layer = layer::Options {
        format,
        chunk_size: args.chunk_size,
        threads: args
            .threads
            .map(usize::from)
            .unwrap_or_else(|| layer::Options::default().threads),
        prefetch: args.prefetch.clone(),
        level: args.compression_level,
        encoder: args.encoder.parse().map_err(anyhow::Error::msg)?,
        prefix: match &args.prefix {
            Some(p) => layer::parse_prefix(p)?,
            None => String::new(),
        },
    };
    // Up front, before anything is downloaded: a chunk size readers can live with, and
    // ISA-L only where its bytes are proven.
    layer.check_chunk_size()?;
    layer.check_encoder()?;
    let levels = layer.levels();
    let level = layer.effective_level();
    if !levels.contains(&level) {
        let with = match format {
            Format::Estargz => format!(" with --encoder {}", layer.encoder),
            Format::ZstdChunked => String::new(),
        };
        bail!(
            "--compression-level {level} is out of range for --format {format}{with} ({} to {})",
            levels.start(),
            levels.end()
        );
    }
    Ok(layer)
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.all {
        return super::catalogue::run(super::catalogue::Options {
            file: file.clone(),
            output_root: args.output.clone().unwrap_or_else(|| PathBuf::from("out")),
            shard: args.shard,
            force: args.force,
            jobs: args.jobs.into(),
            layer: layer_options(&args)?,
            plan: plan_options(&args)?,
            platforms: platforms(&args)?,
            delete_downloads: args.delete_downloads,
            json: args.json,
            quiet: args.quiet,
            push: args.push.clone(),
            push_flags: args.push_flags.clone(),
            connections: args.connections.into(),
            no_cache: args.no_cache,
            modelpack: args.modelpack,
            max_scratch: args.max_scratch,
        });
    }
    let name: ModelName = args
        .model
        .as_deref()
        .or(args.name.as_deref())
        .expect("clap requires a model or --name")
        .parse()?;
    let sha: CommitSha = args
        .sha
        .as_deref()
        .expect("clap requires --sha without --all")
        .parse()?;
    let platforms = platforms(&args)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| pipeline::default_output(&name));
    let layer = layer_options(&args)?;
    let push = args
        .push
        .as_deref()
        .map(|r| push_reference(r, args.tag.as_deref()))
        .transpose()?;
    let tag = match &push {
        Some(r) => r.tag.clone(),
        None => args.tag.clone(),
    };
    let mut req = BuildRequest {
        name: name.clone(),
        sha: sha.clone(),
        tag: tag.unwrap_or_else(|| "latest".into()),
        output,
        platforms,
        layer,
        plan: plan_options(&args)?,
        expected_digests: Default::default(),
        index_annotations: Default::default(),
        record: None,
        modelpack: args.modelpack,
    };
    let settings = BuildSettings::new(
        &req.layer,
        &req.plan,
        &req.platforms,
        &args.include,
        &args.exclude,
    )
    .with_modelpack(args.modelpack);
    // What the image was built with, on the index: a registry's tag tells it in one
    // request (`build --push` skips what is up to date that way).
    req.index_annotations = depotai::job::settings_annotations(&settings);

    let Some(dir) = &args.from_dir else {
        return stream::run(&args, &name, req, settings, push);
    };
    // The registry would take the push: checked before the build.
    let pushing = match push {
        Some(r) => {
            let client = super::push::push_client(&r, &args.push_flags.registry)?;
            Some((r, client))
        }
        None => None,
    };
    // The image being built is never part of its own input.
    let source = DirSource::scan_leaving_out(dir, Some(&req.output))?;
    let (entries, contents) = source.into_entries();
    req.record = Some(BuildRecord::from_directory(
        &name,
        &sha,
        &req.tag,
        settings.clone(),
    ));
    let started = std::time::Instant::now();
    let built = build_with_bar(&name, entries, &contents, &req, args.quiet).map_err(
        |(e, read, total)| {
            let e = anyhow::Error::new(e);
            match super::signals::stop().interrupted() {
                // The staging directory went with its writer.
                Some(i) => anyhow::Error::new(i).context(format!(
                    "building {name} from {}: {} of {} read; no layout written",
                    dir.display(),
                    human_bytes(read),
                    human_bytes(total)
                )),
                None => e.context(format!("building {name} from {}", dir.display())),
            }
        },
    )?;
    let mut report = ImageReport::for_request(Outcome::Built, &req, settings).with_build(&built);
    report.output = Some(built.output.display().to_string());
    if let Some((r, client)) = pushing {
        let pushed = super::push::push_layout(
            &built.output,
            &r,
            client,
            &args.push_flags,
            args.quiet || args.json,
        )?;
        report = report.with_push(&pushed);
    }
    report.seconds = round_seconds(started.elapsed().as_secs_f64());
    say_report(report, args.json, args.quiet)
}

/// A single build's report: with `--json` on stdout, else its `Finished` line.
fn say_report(report: ImageReport, json: bool, quiet: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(&Report::Image(Box::new(report)))?
        );
    } else {
        Finished(&report).say(quiet);
    }
    Ok(())
}

/// A build from a directory, stopped at its next read by a signal. Its error comes
/// with the bytes read of the total, for the line a stop prints.
fn build_with_bar(
    name: &ModelName,
    entries: Vec<Entry>,
    contents: &dyn Contents,
    req: &BuildRequest,
    quiet: bool,
) -> Result<BuildReport, (BuildError, u64, u64)> {
    let total = content_size(&entries);
    let bar = Progress::bytes("compress", total, &format!("building {name}"), quiet);
    let read = AtomicU64::new(0);
    let contents = Stoppable {
        inner: contents,
        stop: super::signals::stop().flag_ref(),
        why: "interrupted",
    };
    let report = pipeline::build_image(entries, &contents, req, &|n| {
        read.fetch_add(n, Ordering::Relaxed);
        bar.advance(n)
    });
    bar.finish();
    report.map_err(|e| (e, read.into_inner(), total))
}
