//! The Hub cache as a shared, partly filled, partly foreign thing (issue 22, items 4
//! and 5): offline builds are whole or refused, settings that choose files are part of
//! what an image is up to date with, a listing no disk can hold is refused before any
//! download, and builds sharing one `HF_HOME` at once all succeed and leave it clean.

use super::support::hub::{depotai_against, Content, HubServer, Origin, Repo, RepoFile};
use super::support::{assert_ok, sha256_hex, Layout};
use super::{assert_refused, files_under};
use serde_json::Value;
use sha1::Digest as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHA: &str = "2222222222222222222222222222222222222222";
const MODEL: &str = "acme/model";

fn config() -> Vec<u8> {
    br#"{"hidden_size": 8}"#.to_vec()
}

/// Four JSON files, a README and two LFS weights: `--include '*.json'` takes four of
/// seven.
fn repo() -> Repo {
    Repo::new(
        MODEL,
        SHA,
        vec![
            RepoFile::regular("config.json", config()),
            RepoFile::regular("tokenizer.json", br#"{"vocab": {}}"#.to_vec()),
            RepoFile::regular("tokenizer_config.json", b"{}".to_vec()),
            RepoFile::regular("1_Pooling/config.json", br#"{"mean": true}"#.to_vec()),
            RepoFile::regular("README.md", b"# model\n".to_vec()),
            RepoFile::lfs(
                "model.safetensors",
                Content::Generated {
                    size: 3 << 20,
                    seed: 1,
                },
            ),
            RepoFile::lfs(
                "onnx/model.onnx",
                Content::Generated {
                    size: 1 << 20,
                    seed: 2,
                },
            ),
        ],
    )
}

struct Env {
    tmp: tempfile::TempDir,
    server: HubServer,
}

impl Env {
    fn new(repo: Repo) -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
            server: HubServer::start(vec![repo]),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = depotai_against(&self.server, &self.tmp.path().join("hf-home"));
        c.current_dir(self.tmp.path()).env("HOME", self.tmp.path());
        c
    }

    fn offline(&self) -> Command {
        let mut c = self.cmd();
        c.env("HF_HUB_OFFLINE", "1");
        c
    }

    fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join("out").join(name)
    }

    fn repo_cache(&self) -> PathBuf {
        self.tmp.path().join("hf-home/hub/models--acme--model")
    }

    fn snapshot(&self, path: &str) -> PathBuf {
        self.repo_cache().join("snapshots").join(SHA).join(path)
    }
}

/// `build acme/model --sha SHA --json --output out/OUT EXTRA...` with `c`.
fn build(env: &Env, mut c: Command, out: &str, extra: &[&str]) -> Output {
    c.args(["build", MODEL, "--sha", SHA, "--json", "--output"])
        .arg(env.out(out))
        .args(extra);
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Failed as a refusal should: exit 1, one line containing `want`, nothing at `out`.
fn assert_refused_here(o: &Output, want: &str, out: &Path) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit status; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("depotai: error: "), "{err}");
    assert!(err.contains(want), "wanted {want:?} in: {err}");
    assert!(!out.exists(), "nothing written at {}", out.display());
}

fn settings_annotation(dir: &Path) -> String {
    Layout::read(dir).index["annotations"]["io.depotai.settings"]
        .as_str()
        .expect("the index carries its settings digest")
        .to_string()
}

fn record(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("depotai-build.json")).unwrap()).unwrap()
}

#[test]
fn an_offline_build_after_a_partial_include_is_refused_naming_a_missing_file() {
    let env = Env::new(repo());
    // The image `build --all` would find for the model, built from the JSON files only.
    let catalogue_out = "all/acme/model";
    let o = build(&env, env.cmd(), catalogue_out, &["--include", "*.json"]);
    assert_ok(&o);
    let partial = env.out(catalogue_out);
    assert_eq!(
        record(&partial)["settings"]["include"],
        serde_json::json!(["*.json"])
    );
    assert_eq!(record(&partial)["files"].as_array().unwrap().len(), 4);

    // Offline without --include: three selected files were never downloaded. The first
    // in path order is named, with how many more; nothing asks the Hub, nothing is
    // written.
    env.server.clear_requests();
    let o = build(&env, env.offline(), "offline", &[]);
    assert_refused_here(
        &o,
        &format!(
            "\"README.md\" of acme/model at {SHA} is not in the cache {} (nor 2 more files) and HF_HUB_OFFLINE is set; run once online to download them",
            env.repo_cache().display()
        ),
        &env.out("offline"),
    );
    assert!(
        env.server.requests().is_empty(),
        "{:?}",
        env.server.requests()
    );
    // The streamed build (here through --max-scratch) refuses the same way.
    let o = build(&env, env.offline(), "offline", &["--max-scratch", "1GiB"]);
    assert_refused_here(&o, "\"README.md\" of acme/model at", &env.out("offline"));
    // What the include did select is whole offline.
    let o = build(
        &env,
        env.offline(),
        "offline-json",
        &["--include", "*.json"],
    );
    assert_ok(&o);
    assert_eq!(
        Layout::read(&env.out("offline-json")).index_digest,
        Layout::read(&partial).index_digest
    );

    // The catalogue entry has no include: the JSON-only image is not up to date with it.
    let cat = env.tmp.path().join("models.yaml");
    std::fs::write(
        &cat,
        format!("models:\n  - name: {MODEL}\n    sha: {SHA}\n"),
    )
    .unwrap();
    let mut c = env.cmd();
    c.args(["build", "--all"])
        .arg(&cat)
        .arg("--output")
        .arg(env.out("all"))
        .arg("--json");
    let o = c.output().unwrap();
    assert_ok(&o);
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &report["models"][0];
    assert_eq!(m["result"], "built", "{report}");
    assert_eq!(m["reason"], "built with other settings", "{report}");
    assert_eq!(m["files"], 7);
    let whole = env.out(catalogue_out);
    assert_eq!(record(&whole)["settings"]["include"], serde_json::json!([]));
    assert_ne!(
        settings_annotation(&whole),
        settings_annotation(&env.out("offline-json")),
        "the include is part of the settings digest a registry's tag is compared by"
    );

    // Now that everything was downloaded, offline builds the same image.
    env.server.clear_requests();
    let o = build(&env, env.offline(), "offline", &[]);
    assert_ok(&o);
    assert!(env.server.requests().is_empty());
    assert_eq!(
        Layout::read(&env.out("offline")).index_digest,
        m["index_digest"].as_str().unwrap()
    );
}

#[test]
fn a_regular_file_in_the_snapshot_is_used_offline_if_it_verifies_and_named_if_not() {
    let env = Env::new(repo());
    let o = build(&env, env.cmd(), "online", &[]);
    assert_ok(&o);
    let online: Value = serde_json::from_slice(&o.stdout).unwrap();

    // As huggingface_hub leaves it without symlinks: the content in the snapshot, no blob.
    let entry = env.snapshot("config.json");
    let blob = std::fs::canonicalize(&entry).unwrap();
    std::fs::remove_file(&entry).unwrap();
    std::fs::rename(&blob, &entry).unwrap();
    let o = build(&env, env.offline(), "offline", &[]);
    assert_ok(&o);
    let offline: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(offline["index_digest"], online["index_digest"]);
    assert_eq!(offline["files"], 7, "no file dropped");

    // The same size, other bytes: refused, naming the entry, not skipped.
    let mut bad = config();
    bad[2] ^= 0x20;
    std::fs::write(&entry, &bad).unwrap();
    let o = build(&env, env.offline(), "tampered", &[]);
    assert_refused_here(
        &o,
        &format!(
            "{}: does not match the listing of \"config.json\" ({} bytes, git blob id {}); HF_HUB_OFFLINE is set, so run once online to fetch the file again",
            entry.display(),
            config().len(),
            git_blob_id(&config())
        ),
        &env.out("tampered"),
    );
    // A symlink to another file's blob is not this file either.
    std::fs::remove_file(&entry).unwrap();
    let readme_blob = std::fs::canonicalize(env.snapshot("README.md")).unwrap();
    std::os::unix::fs::symlink(&readme_blob, &entry).unwrap();
    let o = build(&env, env.offline(), "tampered", &[]);
    assert_refused_here(
        &o,
        &format!(
            "{}: links to {}, not to the listed blob {}",
            entry.display(),
            readme_blob.display(),
            git_blob_id(&config())
        ),
        &env.out("tampered"),
    );
}

#[test]
fn a_listing_with_a_file_and_a_directory_of_one_name_is_refused_before_any_download() {
    let server = HubServer::start(vec![Repo::new(
        MODEL,
        SHA,
        vec![
            RepoFile::regular("a", b"file\n".to_vec()),
            RepoFile::regular("a-b.txt", b"between\n".to_vec()),
            RepoFile::regular("a/b", b"inside\n".to_vec()),
            RepoFile::regular("config.json", config()),
        ],
    )]);
    for streamed in [false, true] {
        server.clear_requests();
        let cwd = tempfile::tempdir().unwrap();
        let mut c = depotai_against(&server, &cwd.path().join("hf-home"));
        c.current_dir(cwd.path())
            .env("HOME", cwd.path())
            .args(["build", MODEL, "--sha", SHA, "--output", "out/m"]);
        if streamed {
            c.arg("--max-scratch").arg("1GiB");
        }
        let o = c.output().unwrap();
        assert_refused(
            &(o, None),
            cwd.path(),
            "acme/model lists \"a\" both as a file and as the directory of \"a/b\"; refusing to download anything",
        );
        let requests = server.requests();
        assert!(
            requests.iter().all(|r| r.path.starts_with("/api/")),
            "only the listing was asked for: {requests:?}"
        );
        assert!(requests.iter().any(|r| r.path.contains("/tree/")));
    }
}

/// git's blob id: sha1 of `blob <len>\0` and the bytes.
fn git_blob_id(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

#[test]
fn builds_sharing_one_cache_at_once_all_succeed_and_leave_it_clean() {
    // Several MiB per file, so the downloads overlap; two paths share a blob.
    let mut files = vec![
        RepoFile::regular("config.json", config()),
        RepoFile::regular("copy/config.json", config()),
        RepoFile::regular("tokenizer.json", vec![b'x'; 300 << 10]),
    ];
    for i in 0..4u64 {
        let content = Content::Generated {
            size: (3 << 20) + i * 4099,
            seed: 10 + i,
        };
        files.push(RepoFile::lfs(&format!("model-{i}.safetensors"), content));
    }
    let env = Env::new(Repo::new(MODEL, SHA, files));
    // Four streamed builds through the cache at once, two of them with --max-scratch.
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut c = env.cmd();
            c.args(["build", MODEL, "--sha", SHA, "--json", "--output"])
                .arg(env.out(&format!("run{i}")))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            if i % 2 == 1 {
                c.args(["--max-scratch", "1GiB"]);
            }
            c.spawn().unwrap()
        })
        .collect();
    let digests: Vec<String> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert_ok(&o);
            let s: Value = serde_json::from_slice(&o.stdout).unwrap();
            s["index_digest"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");

    // Every blob is the content its name says; nothing temporary is left anywhere.
    let blobs = env.repo_cache().join("blobs");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&blobs).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let bytes = std::fs::read(blobs.join(&name)).unwrap();
        let got = match name.len() {
            64 => sha256_hex(&bytes),
            40 => git_blob_id(&bytes),
            _ => panic!("not a blob: {name}"),
        };
        assert_eq!(got, name, "blob content matches its name");
        names.push(name);
    }
    assert_eq!(names.len(), 6, "one blob per content: {names:?}");
    let left: Vec<String> = files_under(&env.repo_cache())
        .into_iter()
        .filter(|f| f.ends_with(".incomplete") || f.ends_with(".tmp"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    for path in ["copy/config.json", "model-3.safetensors"] {
        let link = std::fs::read_link(env.snapshot(path)).unwrap();
        assert!(link.starts_with("../") && link.to_str().unwrap().contains("/blobs/"));
        assert!(env.snapshot(path).is_file(), "{path} resolves");
    }
    // The locks are where huggingface_hub takes them, one per blob.
    let locks = env
        .tmp
        .path()
        .join("hf-home/hub/.locks/models--acme--model");
    for name in &names {
        assert!(locks.join(format!("{name}.lock")).is_file(), "{name}.lock");
    }
}

#[test]
fn a_file_whose_lock_huggingface_hub_holds_is_streamed_untouched_and_its_blob_then_used_offline() {
    use std::os::fd::AsRawFd;
    let env = Env::new(repo());
    let weights = Content::Generated {
        size: 3 << 20,
        seed: 1,
    };
    let etag = weights.sha256_hex();
    // What Python's filelock does for hf_hub_download: flock(2) on this file.
    let locks = env
        .tmp
        .path()
        .join("hf-home/hub/.locks/models--acme--model");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = std::fs::File::create(locks.join(format!("{etag}.lock"))).unwrap();
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    // The build never waits (two builds each holding one lock and waiting for the
    // other's would never end): the locked file is streamed and verified, not written.
    let o = build(&env, env.cmd(), "img", &[]);
    assert_ok(&o);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["files"], 7);
    let blobs = env.repo_cache().join("blobs");
    assert!(!blobs.join(format!("{etag}.incomplete")).exists());
    assert!(!blobs.join(&etag).exists());
    // No link to a blob that is not there; the other six files are in the cache.
    assert!(std::fs::symlink_metadata(env.snapshot("model.safetensors")).is_err());
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 6);
    let fetched: Vec<Option<String>> = env
        .server
        .requests()
        .into_iter()
        .filter(|r| r.origin == Origin::Cdn && r.path.contains("model.safetensors"))
        .map(|r| r.range)
        .collect();
    assert_eq!(fetched, [Some(format!("bytes=0-{}", (3 << 20) - 1))]);

    // The lock holder puts the blob in place and lets go: an offline build takes it.
    std::fs::write(blobs.join(&etag), weights.read(0, 3 << 20)).unwrap();
    drop(lock);
    env.server.clear_requests();
    let o = build(&env, env.offline(), "offline", &[]);
    assert_ok(&o);
    let t: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t["index_digest"], s["index_digest"]);
    assert!(env.server.requests().is_empty(), "offline asks nothing");
}

#[test]
fn an_offline_build_without_a_kept_listing_is_refused_with_the_reason() {
    let env = Env::new(repo());
    let o = build(&env, env.offline(), "img", &[]);
    assert_refused_here(
        &o,
        &format!(
            "acme/model at {SHA} is not in the cache {} and HF_HUB_OFFLINE is set; run once online",
            env.repo_cache().display()
        ),
        &env.out("img"),
    );
    assert_ok(&build(&env, env.cmd(), "online", &[]));
    // A cache as Python tools leave it: blobs and snapshots, no listing of depotai's.
    let listing = env
        .repo_cache()
        .join(format!(".depotai/listings/{SHA}.json"));
    assert!(listing.is_file(), "an online build keeps the listing");
    std::fs::remove_file(&listing).unwrap();
    env.server.clear_requests();
    let o = build(&env, env.offline(), "img", &[]);
    assert_refused_here(
        &o,
        &format!(
            "acme/model at {SHA} has no file listing in the cache ({}), so HF_HUB_OFFLINE cannot tell that every file is there; run once online (depotai keeps the listing)",
            listing.display()
        ),
        &env.out("img"),
    );
    assert!(env.server.requests().is_empty(), "offline asks nothing");
}
