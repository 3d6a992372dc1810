//! `depotai push LAYOUT REF` (and `build --push REF`): an image layout to a registry.

use super::lines::{summary_line, Finished};
use super::progress::Progress;
use anyhow::{bail, Context};
use clap::Args;
use depotai::remote::auth::{self, Credentials};
use depotai::remote::push::{self, PushEvent, PushOptions, PushReport};
use depotai::remote::{Client, ClientOptions, Reference};
use depotai::report::{round_seconds, ImageReport, Outcome, Report, Summary};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// How to reach a registry: shared by push, ls and get.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryFlags {
    /// Talk plain HTTP to the registry named in the reference.
    ///
    /// Only that registry's host gets plain HTTP with credentials: its own requests, and
    /// a token realm its 401 names on the same host (any port). A realm on plain HTTP
    /// at any other host is refused. Whatever this flag says, the credentials and tokens
    /// go only to the registry's own scheme, host and port and to the realm its own 401
    /// names: a redirect or upload Location to anywhere else is followed without them,
    /// and a 401 from there is an error.
    #[arg(long)]
    pub insecure: bool,
    /// Registry user name (the password is read from stdin with --password-stdin).
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
}

impl RegistryFlags {
    /// A client for `reference`: flags, else DEPOTAI_REGISTRY_USER/PASSWORD, else the
    /// Docker config's credentials for the registry.
    pub fn client(&self, reference: &Reference, push: bool) -> anyhow::Result<Client> {
        Ok(Client::new(reference, self.options(reference)?, push)?)
    }

    /// How to reach `reference`'s registry: plain HTTP or not, and the credentials.
    pub fn options(&self, reference: &Reference) -> anyhow::Result<ClientOptions> {
        let credentials = if let Some(u) = &self.username {
            Some(Credentials {
                username: u.clone(),
                password: password_from_stdin()?,
            })
        } else if let Some(c) = auth::from_env() {
            Some(c)
        } else {
            auth::from_docker_config(&reference.registry)
                .with_context(|| format!("credentials for {}", reference.registry))?
        };
        Ok(ClientOptions {
            insecure: self.insecure,
            credentials,
            ..Default::default()
        })
    }
}

/// The password `--password-stdin` gives, read once: a run makes several clients (the
/// check before a build and the push after it, a catalogue's models).
fn password_from_stdin() -> anyhow::Result<String> {
    static PASSWORD: OnceLock<Result<String, String>> = OnceLock::new();
    let read = PASSWORD.get_or_init(|| {
        let mut p = String::new();
        std::io::stdin()
            .read_to_string(&mut p)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        let p = p.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            return Err("--password-stdin: stdin was empty".into());
        }
        Ok(p)
    });
    match read {
        Ok(p) => Ok(p.clone()),
        Err(e) => bail!("{e}"),
    }
}

/// A client for `reference` once the registry has shown it would take a push there
/// ([`Client::check_push`]): before anything is downloaded, built or sent.
pub fn push_client(reference: &Reference, flags: &RegistryFlags) -> anyhow::Result<Client> {
    let client = flags.client(reference, true)?;
    let stop = super::signals::stop();
    stop.block_on(&runtime()?, client.check_push())
        .map_err(|e| match stop.is_set() {
            true => e.context(format!(
                "checking that {} takes a push: nothing sent",
                reference.registry
            )),
            false => e,
        })?;
    Ok(client)
}

/// Runtime for the async library calls.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The OCI image layout (e.g. out/acme/tiny-model).
    #[arg(value_name = "LAYOUT")]
    layout: PathBuf,
    /// Where to: REGISTRY/REPOSITORY[:TAG] (tag default: latest).
    #[arg(value_name = "REF")]
    reference: String,
    #[command(flatten)]
    flags: PushFlags,
    /// Print a machine-readable report on stdout.
    #[arg(long)]
    json: bool,
    /// Print nothing but errors.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Push settings, also accepted by `build --push`.
#[derive(Args, Debug, Clone)]
pub struct PushFlags {
    #[command(flatten)]
    pub registry: RegistryFlags,
    /// Blobs larger than this are uploaded in PATCH chunks of this size.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = super::parse_size)]
    pub push_chunk_size: u64,
    /// Another repository of the same registry to mount missing blobs from.
    #[arg(long, value_name = "REPO")]
    pub mount_from: Option<String>,
}

/// Prints the `Finished` line of the push and a last line summing it (without a
/// terminal too), or with `--json` the push's report.
pub fn run(args: PushArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let r = Reference::parse(&args.reference)?;
    let client = push_client(&r, &args.flags.registry)?;
    let pushed = push_layout(
        &args.layout,
        &r,
        client,
        &args.flags,
        args.quiet || args.json,
    )?;
    // The model and commit, from the layout's provenance when it has one (else the
    // line names the layout).
    let mut report = ImageReport::new(Outcome::Pushed);
    let provenance = depotai::remote::published::from_layout(&args.layout)
        .ok()
        .and_then(|img| img.provenance)
        .and_then(|bytes| depotai::provenance::Provenance::parse(&bytes).ok());
    match provenance {
        Some(p) => {
            report.name = Some(p.model);
            report.image = Some(p.image);
            report.sha = Some(p.revision);
            report.settings = Some(p.settings);
        }
        None => report.name = Some(args.layout.display().to_string()),
    }
    report.tag = r.tag.clone();
    let mut report = report.with_push(&pushed);
    report.seconds = round_seconds(started.elapsed().as_secs_f64());
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&Report::Image(Box::new(report)))?
        );
        return Ok(());
    }
    Finished(&report).say(args.quiet);
    if !args.quiet {
        let summary = Summary::of(std::slice::from_ref(&report), report.seconds);
        eprintln!("{}", summary_line("image", &summary));
    }
    Ok(())
}

/// Pushes a layout with a client from [`push_client`], with a progress bar on a
/// terminal unless `quiet`; the caller says what was pushed.
pub fn push_layout(
    layout: &Path,
    r: &Reference,
    client: Client,
    flags: &PushFlags,
    quiet: bool,
) -> anyhow::Result<PushReport> {
    let opts = PushOptions {
        chunk_size: flags.push_chunk_size,
        mount_from: flags.mount_from.clone(),
        state_dir: depotai::job::upload_state_dir(),
    };
    let bar: OnceLock<Progress> = OnceLock::new();
    // What a stop reports as done.
    let (blobs, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let on_event = |e: PushEvent<'_>| match e {
        PushEvent::Start { bytes, blobs: n } => {
            blobs.store(n, Ordering::Relaxed);
            let _ = bar.set(Progress::bytes(
                "upload",
                bytes,
                &format!("pushing {r}"),
                quiet,
            ));
        }
        PushEvent::Progress(n) => {
            if let Some(b) = bar.get() {
                b.advance(n);
            }
        }
        PushEvent::Resume { offset, why, .. } => {
            if !quiet {
                let line = format!("upload interrupted ({why}); resuming at byte {offset}");
                match bar.get() {
                    Some(b) => b.say(&line),
                    None => eprintln!("{line}"),
                }
            }
        }
        PushEvent::BlobDone { .. } => {
            done.fetch_add(1, Ordering::Relaxed);
        }
    };
    // Two workers: the connections of the two uploads in flight are driven beside the
    // task that hashes and hands over their bytes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let pushed = super::signals::stop().block_on(
        &rt,
        push::push(Arc::new(client), layout, r, opts, &on_event),
    );
    if let Some(b) = bar.get() {
        b.finish();
    }
    pushed.with_context(|| match super::signals::stop().is_set() {
        // The tag is put last: an image stopped before it is not in the registry.
        true => format!(
            "pushing {} to {r}: {} of {} blobs in the registry, nothing tagged (a rerun resumes the unfinished uploads)",
            layout.display(),
            done.load(Ordering::Relaxed),
            blobs.load(Ordering::Relaxed)
        ),
        false => format!("pushing {} to {r}", layout.display()),
    })
}
