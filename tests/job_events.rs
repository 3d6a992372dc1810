//! The job's transfer events, which every progress display is drawn from: the totals
//! come before any byte, and the bytes told add up to them (downloaded, resumed,
//! cached, given to the registry).

mod support;

use depotai::image::default_platforms;
use depotai::job::{self, Event, HubJob, HubOutcome, HubReport, RegistryTarget};
use depotai::pipeline::BuildRequest;
use depotai::remote::{Client, ClientOptions, Reference};
use depotai::source::hub::{FileFilter, HubConfig, StreamOptions};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use support::forgetful::Forgetful;
use support::hub::{Content, HubServer, Repo, RepoFile};
use support::SHA;

const MODEL: &str = "acme/events";
const MIB: u64 = 1 << 20;
const SHARD1: &str = "model-00001-of-00002.safetensors";

fn shard1() -> Content {
    Content::Generated {
        size: 6 * MIB,
        seed: 21,
    }
}

fn repo() -> Repo {
    Repo::new(
        MODEL,
        SHA,
        vec![
            RepoFile::regular("config.json", br#"{"model_type": "llama"}"#.to_vec()),
            RepoFile::lfs(SHARD1, shard1()),
            RepoFile::lfs(
                "model-00002-of-00002.safetensors",
                Content::Generated {
                    size: 3 * MIB,
                    seed: 22,
                },
            ),
        ],
    )
}

/// What was told, owned.
#[derive(Debug, Clone, PartialEq)]
enum Told {
    Planned(u64),
    Fetching {
        download: u64,
        cached: u64,
        resumed: u64,
    },
    Downloaded(u64),
    Read(u64),
    Resuming(String, u64, u64),
    Uploading(u64),
}

fn run(server: &HubServer, home: &Path, registry: Option<&Forgetful>) -> (HubReport, Vec<Told>) {
    let hub = HubConfig {
        endpoint: server.endpoint.clone(),
        token: None,
        cache_dir: home.join("hub"),
        offline: false,
        jobs: 4,
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        max_attempts: 4,
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        cancel: None,
    };
    let registry = registry.map(|r| {
        let reference = Reference::parse(&format!("{}/acme/events:latest", r.addr)).unwrap();
        let opts = ClientOptions {
            insecure: true,
            ..Default::default()
        };
        RegistryTarget {
            client: Client::new(&reference, opts, true).unwrap(),
            reference,
            chunk_size: MIB,
            state_dir: None,
            skip_if_published: false,
        }
    });
    let job = HubJob {
        req: BuildRequest {
            name: MODEL.parse().unwrap(),
            sha: SHA.parse().unwrap(),
            tag: "latest".into(),
            output: home.join("out"),
            platforms: default_platforms(),
            layer: Default::default(),
            plan: Default::default(),
            expected_digests: Default::default(),
            index_annotations: Default::default(),
            record: None,
            modelpack: false,
        },
        hub,
        listing: None,
        filter: FileFilter::new(&[], &[]).unwrap(),
        include: Vec::new(),
        exclude: Vec::new(),
        stream: StreamOptions::default(),
        layout: registry.is_none(),
        registry,
        max_scratch: None,
        delete_downloads: false,
    };
    let told = Mutex::new(Vec::new());
    let on_event = |e: Event<'_>| {
        let t = match e {
            Event::Planned { content_bytes, .. } => Told::Planned(content_bytes),
            Event::Fetching {
                download_bytes,
                cached_bytes,
                resumed_bytes,
            } => Told::Fetching {
                download: download_bytes,
                cached: cached_bytes,
                resumed: resumed_bytes,
            },
            Event::Downloaded(n) => Told::Downloaded(n),
            Event::Read(n) => Told::Read(n),
            Event::Resuming { path, from, size } => Told::Resuming(path.into(), from, size),
            Event::Uploading(n) => Told::Uploading(n),
            _ => return,
        };
        told.lock().unwrap().push(t);
    };
    let HubOutcome::Built(report) = job::run_hub(job, &on_event).expect("the job") else {
        panic!("not built")
    };
    (*report, told.into_inner().unwrap())
}

fn sum(told: &[Told], f: impl Fn(&Told) -> Option<u64>) -> u64 {
    told.iter().filter_map(f).sum()
}

const CONTENT: u64 = 9 * MIB + 23;

#[test]
fn the_totals_come_first_and_the_bytes_told_add_up_to_them() {
    let server = HubServer::start(vec![repo()]);
    let home = tempfile::tempdir().unwrap();
    // An earlier run's 2 MiB of the first shard.
    let blobs = home.path().join("hub/models--acme--events/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let content = shard1();
    std::fs::write(
        blobs.join(format!("{}.incomplete", content.sha256_hex())),
        content.read(0, 2 * MIB as usize),
    )
    .unwrap();

    let (report, told) = run(&server, home.path(), None);
    assert_eq!(told[0], Told::Planned(CONTENT));
    assert_eq!(
        told[1],
        Told::Fetching {
            download: CONTENT - 2 * MIB,
            cached: 0,
            resumed: 2 * MIB,
        }
    );
    let downloaded = sum(&told, |t| match t {
        Told::Downloaded(n) => Some(*n),
        _ => None,
    });
    assert_eq!(downloaded, CONTENT - 2 * MIB);
    assert_eq!(report.stream.downloaded_bytes, downloaded);
    let read = sum(&told, |t| match t {
        Told::Read(n) => Some(*n),
        _ => None,
    });
    assert_eq!(read, CONTENT);
    let resumes: Vec<&Told> = told
        .iter()
        .filter(|t| matches!(t, Told::Resuming(..)))
        .collect();
    assert_eq!(resumes, [&Told::Resuming(SHARD1.into(), 2 * MIB, 6 * MIB)]);

    // Again: everything is in the cache, nothing is downloaded or told as such.
    let (_, again) = run(&server, home.path(), None);
    assert_eq!(
        again[1],
        Told::Fetching {
            download: 0,
            cached: CONTENT,
            resumed: 0,
        }
    );
    assert!(
        !again
            .iter()
            .any(|t| matches!(t, Told::Downloaded(_) | Told::Resuming(..))),
        "{again:?}"
    );
}

#[test]
fn the_bytes_given_to_the_registry_add_up_to_the_layers() {
    let server = HubServer::start(vec![repo()]);
    let registry = Forgetful::start();
    let home = tempfile::tempdir().unwrap();
    let (report, told) = run(&server, home.path(), Some(&registry));
    let uploading = sum(&told, |t| match t {
        Told::Uploading(n) => Some(*n),
        _ => None,
    });
    assert_eq!(uploading, report.build.layers_size());
    assert_eq!(
        uploading,
        report.uploads.iter().map(|(_, u)| u.sent).sum::<u64>()
    );
    // Nothing moved before the totals were told.
    let first_bytes = told
        .iter()
        .position(|t| !matches!(t, Told::Planned(_) | Told::Fetching { .. }))
        .unwrap();
    assert_eq!(first_bytes, 2, "{:?}", &told[..3]);
}
