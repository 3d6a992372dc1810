//! `depotai build ORG/MODEL --sha COMMIT` against a Hugging Face-compatible server on
//! 127.0.0.1 (tests/support/hub.rs), with the faults a real download meets. Every Hub
//! build is the streamed job: files are asked for in Range windows (8 MiB; the 3 MiB
//! `weights/big.bin` is one window, `bytes=0-3145727`), never whole.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::hub::{Content, Fault, HubServer, Origin, Repo, RepoFile, BIG_SEED, BIG_SIZE};
use support::*;

const MODEL: &str = "acme/tiny-model";

/// The repository's files: the bundled example (no executables, as the Hub has none),
/// with the weights in LFS, plus a `.gitattributes` the image must leave out.
fn repo_files() -> Vec<RepoFile> {
    let mut files = vec![RepoFile::regular(
        ".gitattributes",
        "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    )];
    for (path, bytes) in fixture_files() {
        if path.ends_with(".safetensors") || path.ends_with(".bin") {
            files.push(RepoFile::lfs(&path, Content::Bytes(bytes)));
        } else {
            files.push(RepoFile::regular(&path, bytes));
        }
    }
    files
}

fn fixture_files() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let root = Path::new("fixtures/tiny-model");
    for e in walkdir::WalkDir::new(root).into_iter().map(Result::unwrap) {
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            m.insert(rel, fs::read(e.path()).unwrap());
        }
    }
    // A weight file large enough to be cut mid-transfer and span several chunks.
    m.insert("weights/big.bin".into(), pseudo_random(3 << 20, 11));
    m
}

/// The same files as a plain directory (mode 0644 everywhere), for `--from-dir`.
fn fixture_dir(root: &Path) -> PathBuf {
    let dir = root.join("plain");
    for (p, b) in fixture_files() {
        write(&dir, &p, &b);
    }
    dir
}

struct Env {
    tmp: tempfile::TempDir,
    server: HubServer,
}

impl Env {
    fn new() -> Env {
        Env::with(vec![Repo::new(MODEL, SHA, repo_files())])
    }

    fn with(repos: Vec<Repo>) -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
            server: HubServer::start(repos),
        }
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("hf-home/hub")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join("out").join(name)
    }

    fn cmd(&self) -> Command {
        support::hub::depotai_against(&self.server, &self.tmp.path().join("hf-home"))
    }

    /// `depotai build MODEL --sha SHA --output OUT --json EXTRA...`
    fn build(&self, model: &str, sha: &str, out: &str, extra: &[&str]) -> Output {
        self.build_with(self.cmd(), model, sha, out, extra)
    }

    fn build_with(
        &self,
        mut c: Command,
        model: &str,
        sha: &str,
        out: &str,
        extra: &[&str],
    ) -> Output {
        c.args(["build", model, "--sha", sha, "--json", "--output"])
            .arg(self.out(out))
            .args(extra);
        c.output().unwrap()
    }

    fn blobs(&self) -> Vec<String> {
        let dir = self
            .cache()
            .join(format!("models--{}/blobs", MODEL.replace('/', "--")));
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn file_gets(&self, path_suffix: &str) -> Vec<support::hub::Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| {
                r.method == "GET"
                    && !r.path.starts_with("/api/")
                    && r.path.split('?').next().unwrap().ends_with(path_suffix)
            })
            .collect()
    }
}

fn layer_digest(out: &Path) -> String {
    Layout::read(out).layer_digest
}

fn fails_with(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(o.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("depotai: error: "), "{err}");
    assert!(last.contains(needle), "{needle:?} not in {last:?}");
    assert!(!err.contains("panicked"), "{err}");
}

fn no_image(env: &Env, out: &str) {
    assert!(!env.out(out).exists(), "no image may be written");
}

#[test]
fn hub_build_equals_from_dir_build_byte_for_byte_and_leaves_out_gitattributes() {
    let env = Env::new();
    env.server.set_tree_page_size(3); // the listing must follow every page
    let o = env.build(MODEL, SHA, "hub", &[]);
    assert_ok(&o);
    let plain = fixture_dir(env.tmp.path());
    assert_ok(&build(&plain, MODEL, &env.out("dir"), &["--quiet"]));
    let hub_layout = Layout::read(&env.out("hub"));
    let dir_layout = Layout::read(&env.out("dir"));
    assert_eq!(hub_layout.index_digest, dir_layout.index_digest);
    assert_eq!(hub_layout.blob, dir_layout.blob);
    let toc = read_layer(&hub_layout.blob).toc;
    assert!(!toc.entries.iter().any(|e| e.name == ".gitattributes"));
    assert!(toc
        .entries
        .iter()
        .any(|e| e.name == "1_Pooling/config.json"));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["downloaded_bytes"].as_u64().unwrap(),
        fixture_files()
            .values()
            .map(|b| b.len() as u64)
            .sum::<u64>()
    );
    // LFS bytes came from the CDN origin; tree pages were followed.
    assert!(env
        .server
        .requests()
        .iter()
        .any(|r| r.origin == Origin::Cdn && r.path.contains("big.bin")));
    assert!(
        env.server
            .requests()
            .iter()
            .filter(|r| r.path.contains("/tree/"))
            .count()
            >= 4
    );
}

#[test]
fn cache_is_laid_out_like_huggingface_hub_and_a_rerun_downloads_nothing() {
    let env = Env::new();
    assert_ok(&env.build(MODEL, SHA, "first", &[]));
    let snap = env
        .cache()
        .join(format!("models--acme--tiny-model/snapshots/{SHA}"));
    let link = fs::read_link(snap.join("1_Pooling/config.json")).unwrap();
    assert!(
        link.to_str().unwrap().starts_with("../../../blobs/"),
        "{link:?}"
    );
    let big = fixture_files()["weights/big.bin"].clone();
    assert_eq!(fs::read(snap.join("weights/big.bin")).unwrap(), big);
    assert!(
        env.blobs().contains(&sha256_hex(&big)),
        "LFS blobs are named by sha256"
    );
    assert!(env.blobs().iter().all(|b| !b.ends_with(".incomplete")));

    env.server.clear_requests();
    let o = env.build(MODEL, SHA, "second", &[]);
    assert_ok(&o);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["downloaded_bytes"], 0);
    assert!(
        env.server
            .requests()
            .iter()
            .all(|r| r.path.starts_with("/api/")),
        "only the listing is asked for"
    );
    assert_eq!(
        layer_digest(&env.out("first")),
        layer_digest(&env.out("second"))
    );

    // Offline: no request at all, same image.
    env.server.clear_requests();
    let mut c = env.cmd();
    c.env("HF_HUB_OFFLINE", "1");
    assert_ok(&env.build_with(c, MODEL, SHA, "offline", &[]));
    assert!(env.server.requests().is_empty());
    assert_eq!(
        layer_digest(&env.out("first")),
        layer_digest(&env.out("offline"))
    );
}

/// `bytes=FROM-3145727`: the rest of `weights/big.bin`'s one window.
fn big_window_from(from: u64) -> Option<String> {
    Some(format!("bytes={from}-{}", (3u64 << 20) - 1))
}

#[test]
fn a_connection_cut_mid_file_resumes_its_range_window_from_the_last_byte() {
    let env = Env::new();
    env.server.inject(Fault::CutAfter {
        path: "weights/big.bin".into(),
        bytes: 1 << 20,
        times: 1,
    });
    let o = env.build(MODEL, SHA, "img", &[]);
    assert_ok(&o);
    let gets = env.file_gets("big.bin");
    let cdn: Vec<_> = gets.iter().filter(|r| r.origin == Origin::Cdn).collect();
    assert_eq!(cdn.len(), 2, "{cdn:?}");
    assert_eq!(cdn[0].range, big_window_from(0));
    assert_eq!(cdn[1].range, big_window_from(1 << 20));
    let l = Layout::read(&env.out("img"));
    let toc = read_layer(&l.blob).toc;
    let e = toc
        .entries
        .iter()
        .find(|e| e.name == "weights/big.bin")
        .unwrap();
    assert_eq!(e.digest, sha256(&fixture_files()["weights/big.bin"]));
}

#[test]
fn a_rerun_after_a_crash_resumes_the_partial_file() {
    let env = Env::new();
    let big = fixture_files()["weights/big.bin"].clone();
    let blobs = env.cache().join("models--acme--tiny-model/blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(
        blobs.join(format!("{}.incomplete", sha256_hex(&big))),
        &big[..1_000_000],
    )
    .unwrap();
    assert_ok(&env.build(MODEL, SHA, "img", &[]));
    let cdn: Vec<_> = env
        .file_gets("big.bin")
        .into_iter()
        .filter(|r| r.origin == Origin::Cdn)
        .collect();
    assert_eq!(cdn.len(), 1);
    assert_eq!(cdn[0].range, big_window_from(1_000_000));
    assert_eq!(fs::read(blobs.join(sha256_hex(&big))).unwrap(), big);
}

#[test]
fn wrong_bytes_are_downloaded_again_once_then_fail_with_nothing_kept() {
    let env = Env::new();
    env.server.inject(Fault::WrongBytes {
        path: "weights/big.bin".into(),
        times: 1,
    });
    assert_ok(&env.build(MODEL, SHA, "once", &[]));
    assert_eq!(
        env.file_gets("big.bin")
            .iter()
            .filter(|r| r.origin == Origin::Cdn)
            .count(),
        2
    );

    let env = Env::new();
    env.server.inject(Fault::WrongBytes {
        path: "config.json".into(),
        times: 2,
    });
    let o = env.build(MODEL, SHA, "img", &[]);
    fails_with(&o, "config.json: git blob id mismatch");
    no_image(&env, "img");
    let sha1 = support::hub::git_blob_sha1_hex(&fixture_files()["config.json"]);
    assert!(
        env.blobs().iter().all(|b| !b.starts_with(&sha1)),
        "no bad blob or partial kept: {:?}",
        env.blobs()
    );
}

#[test]
fn a_body_longer_than_the_listing_fails_and_a_shorter_one_is_asked_for_again() {
    let env = Env::new();
    env.server.inject(Fault::WrongLength {
        path: "weights/big.bin".into(),
        delta: 10,
        times: 5,
    });
    fails_with(&env.build(MODEL, SHA, "img", &[]), "size mismatch");
    no_image(&env, "img");
    // No blob; at most an empty `.incomplete` (what is kept is always a valid prefix).
    let big = sha256_hex(&fixture_files()["weights/big.bin"]);
    let blobs = env.cache().join("models--acme--tiny-model/blobs");
    assert!(!blobs.join(&big).exists());
    let partial = blobs.join(format!("{big}.incomplete"));
    assert_eq!(fs::read(&partial).unwrap_or_default(), Vec::<u8>::new());
    // Refused at once, fetched once more with the layer rebuilt, refused again.
    let cdn = env
        .file_gets("big.bin")
        .into_iter()
        .filter(|r| r.origin == Origin::Cdn)
        .count();
    assert_eq!(cdn, 2);

    let env = Env::new();
    env.server.inject(Fault::WrongLength {
        path: "weights/big.bin".into(),
        delta: -10,
        times: 1,
    });
    assert_ok(&env.build(MODEL, SHA, "img", &[]));
    // The server said the file is 10 bytes short: the window is asked for again.
    let cdn: Vec<_> = env
        .file_gets("big.bin")
        .into_iter()
        .filter(|r| r.origin == Origin::Cdn)
        .map(|r| (r.range, r.status))
        .collect();
    assert_eq!(cdn, [(big_window_from(0), 206), (big_window_from(0), 206)]);
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let env = Env::new();
    env.server.inject(Fault::Status {
        path: "config.json".into(),
        status: 503,
        retry_after: None,
        times: 2,
    });
    env.server.inject(Fault::Status {
        path: "weights/big.bin".into(),
        status: 500,
        retry_after: None,
        times: 1,
    });
    assert_ok(&env.build(MODEL, SHA, "img", &[]));
    let statuses: Vec<u16> = env
        .file_gets("/config.json")
        .iter()
        .filter(|r| !r.path.contains("1_Pooling"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 503, 206]);
}

#[test]
fn rate_limits_are_honoured_with_retry_after() {
    let env = Env::new();
    env.server.inject(Fault::Status {
        path: "vocab.txt".into(),
        status: 429,
        retry_after: Some(2),
        times: 1,
    });
    let t = Instant::now();
    assert_ok(&env.build(MODEL, SHA, "img", &[]));
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "waited {:?}",
        t.elapsed()
    );
    let statuses: Vec<u16> = env
        .file_gets("vocab.txt")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [429, 206]);
}

#[test]
fn endless_server_errors_give_up_with_a_clear_error() {
    let env = Env::new();
    env.server.inject(Fault::Status {
        path: "vocab.txt".into(),
        status: 502,
        retry_after: None,
        times: 1000,
    });
    fails_with(
        &env.build(MODEL, SHA, "img", &[]),
        "giving up after 8 attempts",
    );
    no_image(&env, "img");
}

#[test]
fn a_redirect_loop_is_stopped() {
    let env = Env::new();
    env.server.inject(Fault::RedirectLoop {
        path: "README.md".into(),
    });
    fails_with(&env.build(MODEL, SHA, "img", &[]), "too many redirects");
    assert!(env.file_gets("README.md").len() <= 11);
    no_image(&env, "img");
}

#[test]
fn a_stalled_transfer_times_out_and_resumes() {
    let env = Env::new();
    env.server.inject(Fault::Stall {
        path: "weights/big.bin".into(),
        after_bytes: 500_000,
        times: 1,
    });
    let t = Instant::now();
    assert_ok(&env.build(MODEL, SHA, "img", &[]));
    assert!(t.elapsed() < Duration::from_secs(30));
    let cdn: Vec<_> = env
        .file_gets("big.bin")
        .into_iter()
        .filter(|r| r.origin == Origin::Cdn)
        .collect();
    assert_eq!(cdn.len(), 2);
    assert!(
        cdn[1].range.is_some(),
        "resumed, not restarted: {:?}",
        cdn[1]
    );
}

#[test]
fn traversal_names_in_the_listing_stop_the_build_before_any_write() {
    for name in [
        "../evil",
        "a/../../evil",
        "/etc/passwd",
        "a\\b",
        "a//b",
        "C:\\x",
    ] {
        let env = Env::new();
        env.server.inject(Fault::TraversalName {
            repo: MODEL.into(),
            commit: SHA.into(),
            name: name.into(),
        });
        let o = env.build(MODEL, SHA, "img", &[]);
        fails_with(&o, "unsafe file names");
        assert!(
            !env.cache().exists() || env.blobs().is_empty(),
            "{name}: nothing downloaded"
        );
        assert!(!env.tmp.path().join("evil").exists());
        assert!(
            env.server
                .requests()
                .iter()
                .all(|r| r.path.starts_with("/api/")),
            "{name}: no file fetched"
        );
        no_image(&env, "img");
    }
}

#[test]
fn missing_repos_revisions_and_files_have_distinct_errors() {
    let mut gated = Repo::new("acme/gated", SHA, repo_files());
    gated.gated = true;
    let mut private = Repo::new("acme/private", SHA, repo_files());
    private.private = true;
    let env = Env::with(vec![Repo::new(MODEL, SHA, repo_files()), gated, private]);
    env.server.add_token("hf_good", &["acme/private"]);

    fails_with(
        &env.build("acme/nope", SHA, "a", &[]),
        "model acme/nope not found",
    );
    let o = env.build("acme/nope", SHA, "a", &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("set HF_TOKEN"));
    fails_with(
        &env.build("acme/private", SHA, "b", &[]),
        "model acme/private not found",
    );
    fails_with(
        &env.build(MODEL, &"f".repeat(40), "c", &[]),
        &format!("commit {} not found in {MODEL}", "f".repeat(40)),
    );
    fails_with(
        &env.build("acme/gated", SHA, "d", &[]),
        "model acme/gated is gated",
    );

    let mut c = env.cmd();
    c.env("HF_TOKEN", "hf_good");
    fails_with(&env.build_with(c, "acme/gated", SHA, "e", &[]), "is gated");
    let mut c = env.cmd();
    c.env("HF_TOKEN", "hf_bogus");
    fails_with(
        &env.build_with(c, MODEL, SHA, "f", &[]),
        "rejected the token",
    );
    for out in ["a", "b", "c", "d", "e", "f"] {
        no_image(&env, out);
    }

    // The token file under HF_HOME is used, and opens the private repo.
    fs::create_dir_all(env.tmp.path().join("hf-home")).unwrap();
    fs::write(env.tmp.path().join("hf-home/token"), "hf_good\n").unwrap();
    assert_ok(&env.build("acme/private", SHA, "g", &[]));
}

#[test]
fn the_token_goes_to_the_hub_only_never_to_the_cdn() {
    let mut private = Repo::new(MODEL, SHA, repo_files());
    private.private = true;
    let env = Env::with(vec![private]);
    env.server.add_token("hf_secret", &[MODEL]);
    let mut c = env.cmd();
    c.env("HF_TOKEN", "hf_secret");
    assert_ok(&env.build_with(c, MODEL, SHA, "img", &[]));
    let reqs = env.server.requests();
    assert!(reqs
        .iter()
        .filter(|r| r.origin == Origin::Hub)
        .all(|r| r.authorization.as_deref() == Some("Bearer hf_secret")));
    let cdn: Vec<_> = reqs.iter().filter(|r| r.origin == Origin::Cdn).collect();
    assert!(!cdn.is_empty());
    assert!(cdn.iter().all(|r| r.authorization.is_none()));
}

#[test]
fn a_moved_branch_does_not_change_a_pinned_build() {
    let new_sha = "1111111111111111111111111111111111111111";
    let mut repo = Repo::new(MODEL, SHA, repo_files());
    let mut newer = repo_files();
    newer.push(RepoFile::regular("NEW.md", "added later\n"));
    repo.commits.push((new_sha.into(), newer));
    let env = Env::with(vec![repo]);
    assert_ok(&env.build(MODEL, SHA, "before", &[]));
    env.server.move_branch(MODEL, "main", new_sha);
    assert_ok(&env.build(MODEL, SHA, "after", &[]));
    assert_eq!(
        layer_digest(&env.out("before")),
        layer_digest(&env.out("after"))
    );
    assert_ok(&env.build(MODEL, new_sha, "new", &[]));
    let toc = read_layer(&Layout::read(&env.out("new")).blob).toc;
    assert!(toc.entries.iter().any(|e| e.name == "NEW.md"));
    assert!(env
        .server
        .requests()
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .all(|r| r.path.contains(SHA) || r.path.contains(new_sha)));
}

#[test]
fn include_exclude_and_delete_downloads() {
    let env = Env::new();
    let o = env.build(
        MODEL,
        SHA,
        "img",
        &[
            "--include",
            "*.json",
            "--exclude",
            "tokenizer*",
            "--delete-downloads",
        ],
    );
    assert_ok(&o);
    let toc = read_layer(&Layout::read(&env.out("img")).blob).toc;
    let mut names: Vec<&str> = toc
        .entries
        .iter()
        .filter(|e| e.kind == "reg")
        .map(|e| e.name.as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ".no.prefetch.landmark",
            "1_Pooling/config.json",
            "config.json",
            "special_tokens_map.json"
        ]
    );
    assert!(
        env.blobs().is_empty(),
        "downloads removed: {:?}",
        env.blobs()
    );
    assert!(
        env.file_gets("model.safetensors").is_empty(),
        "excluded files are not downloaded"
    );
    fails_with(
        &env.build(MODEL, SHA, "none", &["--include", "*.nothing"]),
        "no files of acme/tiny-model match",
    );
}

#[test]
fn a_corrupt_cached_lfs_blob_is_caught_replaced_and_its_layer_rebuilt_in_the_same_run() {
    let env = Env::new();
    assert_ok(&env.build(MODEL, SHA, "first", &[]));
    let big = fixture_files()["weights/big.bin"].clone();
    let blob = env
        .cache()
        .join("models--acme--tiny-model/blobs")
        .join(sha256_hex(&big));
    let mut bad = big.clone();
    bad[12345] ^= 1;
    fs::write(&blob, &bad).unwrap();
    env.server.clear_requests();
    let o = env.build(MODEL, SHA, "second", &[]);
    assert_ok(&o);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["refetched"], serde_json::json!(["weights/big.bin"]));
    assert_eq!(
        layer_digest(&env.out("first")),
        layer_digest(&env.out("second"))
    );
    // Fetched afresh, in one window, and the cache holds the right bytes again.
    let cdn: Vec<_> = env
        .file_gets("big.bin")
        .into_iter()
        .filter(|r| r.origin == Origin::Cdn)
        .map(|r| r.range)
        .collect();
    assert_eq!(cdn, [big_window_from(0)]);
    assert_eq!(fs::read(&blob).unwrap(), big);
}

#[test]
fn a_file_over_8_gib_from_a_generator_becomes_a_pax_entry_with_the_right_digest() {
    let files = vec![
        RepoFile::regular("config.json", "{}"),
        RepoFile::lfs(
            "huge.safetensors",
            Content::Generated {
                size: BIG_SIZE,
                seed: BIG_SEED,
            },
        ),
    ];
    let env = Env::with(vec![Repo::new("acme/huge", SHA, files)]);
    let o = env.build(
        "acme/huge",
        SHA,
        "img",
        &["--chunk-size", "64MiB", "--delete-downloads"],
    );
    assert_ok(&o);
    let out = env.out("img");
    let l = Layout::read(&out);
    let want = format!(
        "sha256:{}",
        hex::encode(support::hub::generated_sha256(BIG_SIZE, BIG_SEED))
    );
    let (_, toc, _) = toc_of(&l.blob);
    let huge: Vec<_> = toc
        .entries
        .iter()
        .filter(|e| e.name == "huge.safetensors")
        .collect();
    assert_eq!(huge[0].size, BIG_SIZE);
    assert_eq!(huge[0].digest, want);
    assert_eq!(huge.len() as u64, BIG_SIZE.div_ceil(64 << 20));
    // The last chunk is the single byte past 8 GiB, at a member of its own.
    let last = huge.last().unwrap();
    assert_eq!(last.chunk_offset, 8 << 30);
    let tail = gunzip_member(&l.blob, last.offset);
    assert_eq!(
        tail[0],
        support::hub::generated_bytes(BIG_SEED, 8 << 30, 1)[0]
    );
    // The tar header: PAX size record, read back by the tar crate, without holding 8 GiB.
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&l.blob[..]));
    let e = ar
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().to_str() == Some("huge.safetensors"))
        .unwrap();
    assert_eq!(e.size(), BIG_SIZE);
    assert!(env.blobs().is_empty(), "--delete-downloads freed the 8 GiB");
}
