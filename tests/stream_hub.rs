//! Streaming reads of Hub files (`HubStream`) against the Hub emulator: bytes handed out
//! as they arrive in parallel Range windows, bounded buffering, verification at the end
//! of each file, the cache tee (and `--no-cache`), resume and re-fetch.

mod support;

use depotai::layer::{self, Contents};
use depotai::names::{CommitSha, ModelName};
use depotai::source::hub::{
    self, FileFilter, HubConfig, HubError, HubStream, RemoteFile, Silent, StreamOptions,
};
use depotai::source::DirSource;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::hub::{Content, Fault, HubServer, Origin, Repo, RepoFile};
use support::*;

const MODEL: &str = "acme/streamed";
const MIB: u64 = 1 << 20;
const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

fn shard1() -> Content {
    Content::Generated {
        size: 6 * MIB + 123,
        seed: 1,
    }
}

fn shard2() -> Content {
    Content::Generated {
        size: 3 * MIB,
        seed: 2,
    }
}

fn repo_files() -> Vec<RepoFile> {
    vec![
        RepoFile::regular("config.json", br#"{"model_type": "llama"}"#.to_vec()),
        RepoFile::regular("empty.txt", Vec::new()),
        RepoFile::lfs(SHARD1, shard1()),
        RepoFile::lfs(SHARD2, shard2()),
        // The same content as shard 2 under another name: one blob in the cache.
        RepoFile::lfs("copy/of-shard2.safetensors", shard2()),
        RepoFile::regular("tokenizer.json", pseudo_random(300 << 10, 5)),
    ]
}

fn expected() -> BTreeMap<String, Vec<u8>> {
    repo_files()
        .into_iter()
        .map(|f| {
            let n = f.content.len() as usize;
            (f.path, f.content.read(0, n))
        })
        .collect()
}

struct Env {
    tmp: tempfile::TempDir,
    server: HubServer,
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
            server: HubServer::start(vec![Repo::new(MODEL, SHA, repo_files())]),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.tmp.path().join("hub-cache")
    }

    fn cfg(&self, jobs: usize) -> HubConfig {
        HubConfig {
            endpoint: self.server.endpoint.clone(),
            token: None,
            cache_dir: self.cache_dir(),
            offline: false,
            jobs,
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            max_attempts: 4,
            backoff_base: Duration::from_millis(20),
            backoff_cap: Duration::from_millis(200),
            cancel: None,
        }
    }

    fn list(&self) -> Vec<RemoteFile> {
        hub::list(
            &model(),
            &sha(),
            &self.cfg(4),
            &FileFilter::new(&[], &[]).unwrap(),
            false,
        )
        .unwrap()
    }

    fn stream(&self, opts: StreamOptions, jobs: usize) -> HubStream {
        self.stream_of(self.list(), opts, jobs)
    }

    fn stream_of(&self, files: Vec<RemoteFile>, opts: StreamOptions, jobs: usize) -> HubStream {
        HubStream::start(
            &model(),
            &sha(),
            &self.cfg(jobs),
            files,
            opts,
            Arc::new(Silent),
        )
        .unwrap()
    }

    fn blob(&self, c: &Content) -> PathBuf {
        self.cache_dir()
            .join("models--acme--streamed/blobs")
            .join(c.sha256_hex())
    }

    /// Requests for `path`'s bytes (Hub resolve or CDN), with their Range headers.
    fn byte_requests(&self, path: &str) -> Vec<(Origin, Option<String>)> {
        let enc = support::hub::pct_path(path);
        self.server
            .requests()
            .into_iter()
            .filter(|r| {
                r.method == "GET"
                    && (r.path.contains("/resolve/") || r.path.starts_with("/lfs/"))
                    && r.path.split('?').next().unwrap().ends_with(&enc)
            })
            .map(|r| (r.origin, r.range))
            .collect()
    }
}

fn model() -> ModelName {
    MODEL.parse().unwrap()
}

fn sha() -> CommitSha {
    SHA.parse().unwrap()
}

fn small(cache: bool) -> StreamOptions {
    StreamOptions {
        connections: 3,
        window: MIB,
        buffer: 4 * MIB,
        cache,
        reader_checks_sha256: false,
    }
}

fn read(s: &HubStream, path: &str) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    s.open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

/// Reads every non-empty file, in listing order (the layer's order without prefetch).
fn read_all(s: &HubStream, files: &[RemoteFile]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|f| {
            let bytes = if f.size == 0 {
                Vec::new()
            } else {
                read(s, &f.path).unwrap()
            };
            (f.path.clone(), bytes)
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| !e.file_type().is_dir())
        .map(|e| e.path().display().to_string())
        .collect()
}

#[test]
fn streamed_files_are_the_hub_bytes_in_range_windows_and_fill_the_cache_like_a_download() {
    let env = Env::new();
    let files = env.list();
    let s = env.stream(small(true), 4);
    assert_eq!(read_all(&s, &files), expected());
    let st = s.stats();
    let unique = (6 * MIB + 123) + 3 * MIB + 23 + (300 << 10);
    assert_eq!(
        st.downloaded_bytes, unique,
        "the shared blob is fetched once"
    );
    assert_eq!(
        st.cached_bytes,
        3 * MIB,
        "its second path is read from the cache"
    );
    assert_eq!(st.verified_files, 5);
    assert!(st.failures.is_empty());
    drop(s);

    // Shard 1 came as seven 1 MiB windows (the last one 123 bytes), each asked once.
    let reqs = env.byte_requests(SHARD1);
    let mut ranges: Vec<String> = reqs
        .iter()
        .filter(|(o, _)| *o == Origin::Cdn)
        .map(|(_, r)| r.clone().unwrap())
        .collect();
    ranges.sort_by_key(|r| r[6..].split('-').next().unwrap().parse::<u64>().unwrap());
    let want: Vec<String> = (0..7)
        .map(|i| {
            let end = ((i + 1) * MIB).min(6 * MIB + 123) - 1;
            format!("bytes={}-{end}", i * MIB)
        })
        .collect();
    assert_eq!(ranges, want);
    // Later windows go straight to the CDN URL of an earlier one: at most one resolve
    // per connection, not one per window.
    let resolves = reqs.iter().filter(|(o, _)| *o == Origin::Hub).count();
    assert!((1..=3).contains(&resolves), "{resolves} resolve requests");

    // The cache is what a download leaves: verified blobs, snapshot links, no partials.
    let root = env.cache_dir().join("models--acme--streamed");
    for (path, content) in [(SHARD1, shard1()), (SHARD2, shard2())] {
        assert_eq!(
            std::fs::read(env.blob(&content)).unwrap(),
            content.read(0, content.len() as usize)
        );
        let link = root.join("snapshots").join(SHA).join(path);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../../blobs").join(content.sha256_hex())
        );
    }
    let link = root
        .join("snapshots")
        .join(SHA)
        .join("copy/of-shard2.safetensors");
    assert_eq!(std::fs::read(link).unwrap(), expected()[SHARD2]);
    assert!(!files_under(&root)
        .iter()
        .any(|f| f.ends_with(".incomplete")));

    // A second stream reads everything from the cache: no byte request at all.
    env.server.clear_requests();
    let s = env.stream(small(true), 4);
    assert_eq!(read_all(&s, &files), expected());
    assert_eq!(s.stats().downloaded_bytes, 0);
    assert!(env
        .server
        .requests()
        .iter()
        .all(|r| !r.path.contains("/resolve/") && !r.path.starts_with("/lfs/")));
}

#[test]
fn without_the_cache_nothing_is_written_to_disk() {
    let env = Env::new();
    let files = env.list();
    let s = env.stream(small(false), 2);
    assert_eq!(read_all(&s, &files), expected());
    // Both paths of the shared blob came from the network.
    assert_eq!(
        s.stats().downloaded_bytes,
        (6 * MIB + 123) + 2 * 3 * MIB + 23 + (300 << 10)
    );
    assert_eq!(files_under(&env.cache_dir()), Vec::<String>::new());
}

#[test]
fn a_file_whose_lock_another_build_holds_is_streamed_without_touching_its_cache_entry() {
    let env = Env::new();
    let files = env.list();
    let cache = hub::RepoCache::new(&env.cache_dir(), &model());
    // Another build holds shard 1's lock and has written its first MiB.
    let etag = shard1().sha256_hex();
    let held = cache.try_lock(&etag).unwrap().expect("the lock is free");
    let partial = cache.incomplete(&etag);
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, shard1().read(0, MIB as usize)).unwrap();

    let s = env.stream(small(true), 4);
    assert_eq!(read_all(&s, &files), expected());
    // Shard 1 came whole from the Hub and was verified, but is not this build's to write.
    let unique = (6 * MIB + 123) + 3 * MIB + 23 + (300 << 10);
    assert_eq!(s.stats().downloaded_bytes, unique);
    assert_eq!(s.stats().verified_files, 5);
    drop(s);
    assert_eq!(
        std::fs::read(&partial).unwrap(),
        shard1().read(0, MIB as usize)
    );
    assert!(!env.blob(&shard1()).exists());
    let snap = env
        .cache_dir()
        .join("models--acme--streamed/snapshots")
        .join(SHA);
    assert!(
        std::fs::symlink_metadata(snap.join(SHARD1)).is_err(),
        "no link to a blob that is not there"
    );
    assert!(env.blob(&shard2()).is_file(), "the other files are cached");
    assert!(snap.join(SHARD2).is_file());

    // Once the other build lets go, the next stream resumes after its MiB.
    drop(held);
    let s = env.stream(small(true), 4);
    assert_eq!(read_all(&s, &files), expected());
    assert_eq!(s.stats().downloaded_bytes, 5 * MIB + 123);
    drop(s);
    assert_eq!(
        std::fs::read(env.blob(&shard1())).unwrap(),
        expected()[SHARD1]
    );
    assert!(!partial.exists());
}

#[test]
fn the_first_bytes_are_read_long_before_the_file_is_fetched_and_the_buffer_bounds_the_lead() {
    let big = Content::Generated {
        size: 48 * MIB,
        seed: 9,
    };
    let env = Env {
        tmp: tempfile::tempdir().unwrap(),
        server: HubServer::start(vec![Repo::new(
            MODEL,
            SHA,
            vec![RepoFile::lfs("big.safetensors", big.clone())],
        )]),
    };
    let opts = StreamOptions {
        connections: 4,
        window: MIB,
        buffer: 4 * MIB,
        cache: false,
        reader_checks_sha256: false,
    };
    let s = env.stream(opts, 2);
    let mut r = s.open("big.safetensors").unwrap();
    let mut first = vec![0u8; 1000];
    r.read_exact(&mut first).unwrap();
    assert_eq!(first, big.read(0, 1000));
    // Give the workers every chance to run ahead: they stop at the buffer (4 windows)
    // plus the window being read.
    std::thread::sleep(Duration::from_millis(600));
    let asked = env
        .byte_requests("big.safetensors")
        .iter()
        .filter(|(o, _)| *o == Origin::Cdn)
        .count();
    assert!(
        (1..=6).contains(&asked),
        "{asked} windows of 48 asked for while the reader holds the first"
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    assert_eq!(sha256_hex(&first), big.sha256_hex());
    drop(r);
    let windows = env
        .byte_requests("big.safetensors")
        .iter()
        .filter(|(o, _)| *o == Origin::Cdn)
        .count();
    assert_eq!(windows, 48);
}

#[test]
fn a_corrupted_byte_fails_the_file_at_its_end_and_opening_it_again_fetches_it_afresh() {
    let env = Env::new();
    env.server.inject(Fault::WrongBytes {
        path: SHARD1.into(),
        times: 1,
    });
    let s = env.stream(small(true), 4);
    let mut r = s.open(SHARD1).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let err = loop {
        match r.read(&mut buf) {
            Ok(0) => panic!("a corrupted file was read to the end"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    drop(r);
    // Most of the file was handed out (and could be compressed) before the check failed.
    assert!(
        got.len() as u64 > 5 * MIB,
        "{} bytes before the error",
        got.len()
    );
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<HubError>());
    match inner {
        Some(HubError::Integrity { path, what, .. }) => {
            assert_eq!(path, SHARD1);
            assert_eq!(*what, "sha256");
        }
        other => panic!("not an integrity error: {other:?} ({err})"),
    }
    assert_eq!(s.stats().failures, vec![SHARD1.to_string()]);
    // Nothing unverified is left in the cache.
    assert!(!env.blob(&shard1()).exists());
    let partial = env.blob(&shard1()).with_extension("incomplete");
    assert!(!partial.exists());

    // The second read is fetched again and is right; the cache gets the good blob.
    assert_eq!(read(&s, SHARD1).unwrap(), expected()[SHARD1]);
    assert_eq!(
        std::fs::read(env.blob(&shard1())).unwrap(),
        expected()[SHARD1]
    );
    assert_eq!(s.stats().failures, vec![SHARD1.to_string()]);
}

#[test]
fn a_connection_cut_mid_window_resumes_that_window_from_the_last_byte() {
    let env = Env::new();
    env.server.inject(Fault::CutAfter {
        path: SHARD2.into(),
        bytes: 300_000,
        times: 1,
    });
    let opts = StreamOptions {
        connections: 1,
        ..small(false)
    };
    let s = env.stream(opts, 1);
    let files = env.list();
    assert_eq!(read_all(&s, &files), expected());
    let ranges: Vec<String> = env
        .byte_requests(SHARD2)
        .into_iter()
        .filter(|(o, _)| *o == Origin::Cdn)
        .filter_map(|(_, r)| r)
        .collect();
    assert_eq!(
        ranges,
        [
            "bytes=0-1048575",
            "bytes=300000-1048575",
            "bytes=1048576-2097151",
            "bytes=2097152-3145727"
        ]
    );
}

#[test]
fn an_interrupted_download_in_the_cache_is_resumed_after_its_prefix() {
    let env = Env::new();
    let prefix = (2 * MIB + MIB / 2) as usize;
    let partial = env.blob(&shard1()).with_extension("incomplete");
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, shard1().read(0, prefix)).unwrap();
    let only: Vec<RemoteFile> = env
        .list()
        .into_iter()
        .filter(|f| f.path == SHARD1)
        .collect();
    let s = env.stream_of(only, small(true), 4);
    assert_eq!(read(&s, SHARD1).unwrap(), expected()[SHARD1]);
    let st = s.stats();
    assert_eq!(st.cached_bytes, prefix as u64);
    assert_eq!(st.downloaded_bytes, shard1().len() - prefix as u64);
    let mut firsts: Vec<u64> = env
        .byte_requests(SHARD1)
        .into_iter()
        .filter_map(|(_, r)| r)
        .map(|r| r[6..].split('-').next().unwrap().parse().unwrap())
        .collect();
    firsts.sort();
    firsts.dedup();
    assert_eq!(
        firsts[0], prefix as u64,
        "nothing before the prefix is fetched"
    );
    assert_eq!(
        std::fs::read(env.blob(&shard1())).unwrap(),
        expected()[SHARD1]
    );
    assert!(!partial.exists());
}

#[test]
fn a_layer_built_from_the_stream_equals_the_layer_built_from_a_directory() {
    let env = Env::new();
    let dir = env.tmp.path().join("plain");
    for (p, b) in expected() {
        write(&dir, &p, &b);
    }
    let opts = layer::Options {
        threads: 2,
        ..Default::default()
    };
    let (entries, contents) = DirSource::scan(&dir).unwrap().into_entries();
    let (from_dir, _) = layer::build(entries, &contents, &opts, Vec::new(), &|_| {}).unwrap();

    let files = env.list();
    let entries = files
        .iter()
        .map(|f| layer::Entry {
            path: f.path.clone(),
            kind: layer::EntryKind::File {
                size: f.size,
                executable: false,
            },
        })
        .collect();
    let s = env.stream(small(false), 4);
    let (streamed, bytes) = layer::build(entries, &s, &opts, Vec::new(), &|_| {}).unwrap();
    assert_eq!(streamed.digest, from_dir.digest);
    assert_eq!(streamed.diff_id, from_dir.diff_id);
    assert_eq!(sha256(&bytes), streamed.digest.to_string());
}

/// `reader_checks_sha256`: an LFS file's sha256 is the reader's to check (the layer
/// digests every byte anyway), so the stream hands out a corrupted LFS file whole and
/// records nothing; a git-blob-checked file is still checked by the stream.
#[test]
fn with_reader_checks_sha256_the_stream_leaves_lfs_hashes_to_the_reader_but_checks_git_blobs() {
    let env = Env::new();
    env.server.inject(Fault::WrongBytes {
        path: SHARD1.into(),
        times: 1,
    });
    env.server.inject(Fault::WrongBytes {
        path: "tokenizer.json".into(),
        times: 1,
    });
    let opts = StreamOptions {
        reader_checks_sha256: true,
        ..small(false)
    };
    let s = env.stream(opts, 4);
    let got = read(&s, SHARD1).unwrap();
    assert_eq!(got.len(), expected()[SHARD1].len());
    assert_ne!(
        got,
        expected()[SHARD1],
        "the corrupted bytes were handed out"
    );
    let err = read(&s, "tokenizer.json").unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<HubError>());
    assert!(
        matches!(
            inner,
            Some(HubError::Integrity {
                what: "git blob id",
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(s.stats().failures, vec!["tokenizer.json".to_string()]);
}
