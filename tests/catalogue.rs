//! `depotai build --all CATALOGUE` against the Hugging Face-compatible test server
//! (tests/support/hub.rs) hosting several models: every model built, failures isolated,
//! shards, up-to-date skipping with no request, rebuilds of what changed, interrupts.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::hub::{Content, Fault, HubServer, Origin, Repo, RepoFile};
use support::*;

const SHA2: &str = "2222222222222222222222222222222222222222";

fn alpha_files() -> Vec<RepoFile> {
    vec![
        RepoFile::regular(
            ".gitattributes",
            "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        ),
        RepoFile::regular("config.json", r#"{"model_type":"alpha"}"#),
        RepoFile::regular("README.md", "# alpha\n"),
        RepoFile::lfs(
            "model.safetensors",
            Content::Bytes(pseudo_random(300_000, 1)),
        ),
    ]
}

/// The models the server hosts. `acme/broken` is served with bad bytes when a test
/// injects the fault on `broken.json`.
fn repos() -> Vec<Repo> {
    let mut alpha = Repo::new("acme/alpha", SHA, alpha_files());
    let mut newer = alpha_files();
    newer.push(RepoFile::regular("NEW.md", "added in the second commit\n"));
    alpha.commits.push((SHA2.into(), newer));
    vec![
        alpha,
        Repo::new(
            "acme/beta",
            SHA,
            vec![
                RepoFile::regular("config.json", r#"{"model_type":"beta"}"#),
                RepoFile::regular("tokenizer.json", "{}"),
                RepoFile::lfs("weights/w.bin", Content::Bytes(pseudo_random(100_000, 2))),
            ],
        ),
        Repo::new(
            "Org/Gamma",
            SHA,
            vec![
                RepoFile::regular("config.json", r#"{"model_type":"gamma"}"#),
                RepoFile::lfs("model.bin", Content::Bytes(pseudo_random(50_000, 3))),
            ],
        ),
        Repo::new(
            "solo",
            SHA,
            vec![RepoFile::regular("config.json", r#"{"model_type":"solo"}"#)],
        ),
        Repo::new(
            "acme/broken",
            SHA,
            vec![RepoFile::regular("broken.json", r#"{"broken":false}"#)],
        ),
    ]
}

/// The catalogue of the four good models (depot.ai's `tagAs` and our `tag` both).
fn good_catalogue(alpha_sha: &str) -> String {
    format!(
        "# test catalogue\nmodels:\n  - name: acme/alpha\n    sha: {alpha_sha}\n    tagAs: latest\n  - name: acme/beta\n    sha: {SHA}\n    tag: v1\n    exclude: ['tokenizer*']\n  - name: Org/Gamma\n    sha: {SHA}\n  - name: solo\n    sha: {SHA}\n    include: ['*.json']\n"
    )
}

const GOOD: [&str; 4] = ["acme/alpha", "acme/beta", "Org/Gamma", "solo"];

struct Env {
    tmp: tempfile::TempDir,
    server: HubServer,
}

impl Env {
    fn new() -> Env {
        Env::with(repos())
    }

    fn with(repos: Vec<Repo>) -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
            server: HubServer::start(repos),
        }
    }

    fn out(&self) -> PathBuf {
        self.tmp.path().join("out")
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("hf-home/hub")
    }

    fn catalogue(&self, text: &str) -> PathBuf {
        let p = self.tmp.path().join("models.yaml");
        fs::write(&p, text).unwrap();
        p
    }

    fn cmd(&self) -> Command {
        support::hub::depotai_against(&self.server, &self.tmp.path().join("hf-home"))
    }

    /// `depotai build --all CAT --output OUT --json EXTRA...`
    fn all_cmd(&self, cat: &Path, extra: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["build", "--all"])
            .arg(cat)
            .arg("--output")
            .arg(self.out())
            .arg("--json")
            .args(extra);
        c
    }

    fn all(&self, cat: &Path, extra: &[&str]) -> Output {
        self.all_cmd(cat, extra).output().unwrap()
    }

    /// GETs of file contents (resolve or CDN), not metadata.
    fn content_requests(&self) -> Vec<support::hub::Request> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.origin == Origin::Cdn || r.path.contains("/resolve/"))
            .collect()
    }
}

fn report(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON report ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn statuses(r: &Value) -> BTreeMap<String, String> {
    r["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all_with(names: &[&str], status: &str) -> BTreeMap<String, String> {
    names
        .iter()
        .map(|n| (n.to_string(), status.to_string()))
        .collect()
}

/// Every file under `dir` with its bytes, plus each image directory's inode (a
/// rewritten image is a renamed new directory).
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let mut m = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        if e.file_type().is_file() {
            m.insert(rel, fs::read(e.path()).unwrap());
        } else if e.path().join("oci-layout").exists() {
            let ino = e.metadata().unwrap().ino();
            m.insert(format!("{rel}/ (inode)"), ino.to_le_bytes().to_vec());
        }
    }
    m
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn no_partials(dir: &Path) {
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy();
        assert!(
            !name.contains(".partial-") && !name.contains(".old-"),
            "left behind: {}",
            e.path().display()
        );
    }
}

#[test]
fn builds_every_model_then_a_rerun_skips_all_with_no_request_and_touches_nothing() {
    let env = Env::new();
    let cat = env.catalogue(&good_catalogue(SHA));
    let o = env.all(&cat, &[]);
    assert_ok(&o);
    let r = report(&o);
    assert_eq!(statuses(&r), all_with(&GOOD, "built"));
    assert_eq!(r["summary"]["built"], 4);
    assert_eq!(r["catalogue_models"], 4);

    // Each image where the README says, readable, tagged as the catalogue asks.
    for (name, tag) in [
        ("acme/alpha", "latest"),
        ("acme/beta", "v1"),
        ("Org/Gamma", "latest"),
        ("solo", "latest"),
    ] {
        let dir = env.out().join(name.to_lowercase());
        let l = Layout::read(&dir);
        assert_eq!(
            l.layout_index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            tag
        );
        let m = r["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap();
        assert_eq!(m["index_digest"], l.index_digest.as_str());
        assert_eq!(m["layers"][0]["digest"], l.layer_digest.as_str());
        assert_eq!(m["layers"][0]["size"], l.blob.len() as u64);
        assert_eq!(m["output"], dir.display().to_string());
        let record: Value =
            serde_json::from_slice(&fs::read(dir.join("depotai-build.json")).unwrap()).unwrap();
        assert_eq!(record["name"], name);
        assert_eq!(record["sha"], SHA);
        assert_eq!(record["tag"], tag);
    }
    // include/exclude apply per model.
    let beta = read_layer(&Layout::read(&env.out().join("acme/beta")).blob).toc;
    assert!(!beta.entries.iter().any(|e| e.name == "tokenizer.json"));
    let record: Value =
        serde_json::from_slice(&fs::read(env.out().join("acme/alpha/depotai-build.json")).unwrap())
            .unwrap();
    let files: Vec<&str> = record["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["README.md", "config.json", "model.safetensors"]);
    assert_eq!(
        record["files"][2]["sha256"],
        sha256_hex(&pseudo_random(300_000, 1))
    );
    // The human table names every model.
    let err = stderr(&o);
    for n in GOOD {
        assert!(
            err.lines()
                .any(|l| l.starts_with(n) && l.contains(" built ")),
            "{n} in the table:\n{err}"
        );
    }

    // Same catalogue again: nothing is asked of the server, nothing on disk changes.
    let before = snapshot(&env.out());
    env.server.clear_requests();
    let o = env.all(&cat, &[]);
    assert_ok(&o);
    assert_eq!(statuses(&report(&o)), all_with(&GOOD, "skipped"));
    assert!(
        env.server.requests().is_empty(),
        "{:?}",
        env.server.requests()
    );
    assert_eq!(snapshot(&env.out()), before, "outputs untouched");
    let r = report(&o);
    assert_eq!(r["models"][0]["reason"], "up to date");
    assert!(r["models"][0]["layers"][0]["size"].as_u64().unwrap() > 300_000);

    // The images equal single builds, byte for byte (the record is beside the image).
    let single = env.tmp.path().join("single");
    let o = env
        .cmd()
        .args(["build", "acme/beta", "--sha", SHA, "--tag", "v1"])
        .args(["--exclude", "tokenizer*", "--quiet", "--output"])
        .arg(&single)
        .output()
        .unwrap();
    assert_ok(&o);
    let a = snapshot(&single);
    let b = snapshot(&env.out().join("acme/beta"));
    let strip = |m: BTreeMap<String, Vec<u8>>| -> Vec<(String, Vec<u8>)> {
        m.into_iter()
            .filter(|(k, _)| !k.contains("inode"))
            .collect()
    };
    assert_eq!(strip(a), strip(b));

    // --force rebuilds everything, to the same bytes.
    let o = env.all(&cat, &["--force"]);
    assert_ok(&o);
    assert_eq!(statuses(&report(&o)), all_with(&GOOD, "built"));
    assert_eq!(report(&o)["models"][0]["reason"], "--force");
    let strip_inodes = |m: BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        m.into_iter()
            .filter(|(k, _)| !k.contains("inode"))
            .collect()
    };
    assert_eq!(strip_inodes(snapshot(&env.out())), strip_inodes(before));
    no_partials(&env.out());
}

#[test]
fn a_broken_model_fails_alone_and_is_plain_to_see() {
    let env = Env::new();
    env.server.inject(Fault::WrongBytes {
        path: "broken.json".into(),
        times: 2,
    });
    let text = format!(
        "{}  - name: acme/nope\n    sha: {SHA}\n  - name: acme/broken\n    sha: {SHA}\n",
        good_catalogue(SHA)
    );
    let cat = env.catalogue(&text);
    let o = env.all(&cat, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r = report(&o);
    let mut want = all_with(&GOOD, "built");
    want.insert("acme/nope".into(), "failed".into());
    want.insert("acme/broken".into(), "failed".into());
    assert_eq!(statuses(&r), want);
    assert_eq!(r["summary"]["failed"], 2);
    let nope = &r["models"][4];
    assert!(
        nope["error"]
            .as_str()
            .unwrap()
            .contains("model acme/nope not found"),
        "{nope}"
    );
    assert_eq!(nope["layers"], Value::Null);
    assert!(r["models"][5]["error"]
        .as_str()
        .unwrap()
        .contains("broken.json: git blob id mismatch"));

    let err = stderr(&o);
    let row = err
        .lines()
        .find(|l| l.starts_with("acme/nope "))
        .unwrap_or_else(|| panic!("a table row for acme/nope:\n{err}"));
    assert!(
        row.contains(" failed ") && row.contains("not found"),
        "{row}"
    );
    assert!(err
        .lines()
        .any(|l| l.starts_with("acme/broken ") && l.contains(" failed ")));
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("depotai: error: 6 models: 4 built, 0 skipped, 2 failed"),
        "{last}"
    );
    assert!(last.ends_with("failed: acme/nope, acme/broken"), "{last}");
    assert!(!err.contains("panicked"), "{err}");
    for n in GOOD {
        Layout::read(&env.out().join(n.to_lowercase()));
    }
    assert!(!env.out().join("acme/nope").exists());
    assert!(!env.out().join("acme/broken").exists());
    no_partials(&env.out());

    // Once the Hub serves the right bytes, a rerun builds only the failed one.
    env.server.clear_requests();
    let o = env.all(&cat, &[]);
    assert_eq!(o.status.code(), Some(1));
    let mut want = all_with(&GOOD, "skipped");
    want.insert("acme/nope".into(), "failed".into());
    want.insert("acme/broken".into(), "built".into());
    assert_eq!(statuses(&report(&o)), want);
    assert!(env
        .content_requests()
        .iter()
        .all(|r| r.path.contains("broken.json")));
}

#[test]
fn shards_split_the_catalogue_into_disjoint_parts_that_cover_it() {
    let env = Env::new();
    let cat = env.catalogue(&good_catalogue(SHA));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for i in 1..=3 {
        let shard = format!("{i}/3");
        let o = env.all(&cat, &["--shard", &shard]);
        assert_ok(&o);
        let r = report(&o);
        assert_eq!(r["shard"], shard.as_str());
        assert_eq!(r["catalogue_models"], 4);
        for (name, status) in statuses(&r) {
            assert_eq!(status, "built", "{name} in shard {shard}");
            assert!(
                seen.insert(name.clone(), shard.clone()).is_none(),
                "{name} is in two shards"
            );
        }
    }
    let names: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(names, GOOD.into_iter().collect());
    // The shards built the whole catalogue: an unsharded run has nothing left to do.
    env.server.clear_requests();
    let o = env.all(&cat, &[]);
    assert_ok(&o);
    assert_eq!(statuses(&report(&o)), all_with(&GOOD, "skipped"));
    assert!(env.server.requests().is_empty());
    // The same assignment on every run.
    let o = env.all(&cat, &["--shard", "2/3"]);
    let again: BTreeSet<String> = statuses(&report(&o)).into_keys().collect();
    let before: BTreeSet<String> = seen
        .iter()
        .filter(|(_, s)| s.as_str() == "2/3")
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(again, before);
}

#[test]
fn a_changed_sha_rebuilds_only_that_model() {
    let env = Env::new();
    let cat = env.catalogue(&good_catalogue(SHA));
    assert_ok(&env.all(&cat, &[]));
    let before = snapshot(&env.out());
    env.server.clear_requests();
    let cat = env.catalogue(&good_catalogue(SHA2));
    let o = env.all(&cat, &[]);
    assert_ok(&o);
    let r = report(&o);
    let mut want = all_with(&GOOD, "skipped");
    want.insert("acme/alpha".into(), "built".into());
    assert_eq!(statuses(&r), want);
    assert_eq!(r["models"][0]["reason"], format!("built at {SHA}"));
    // Only alpha was asked for, at the new commit; the others' bytes did not move.
    let reqs = env.server.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|r| r.origin == Origin::Cdn
                || (r.path.contains("acme/alpha") && r.path.contains(SHA2))),
        "{reqs:?}"
    );
    let after = snapshot(&env.out());
    for (k, v) in &before {
        if !k.starts_with("acme/alpha") {
            assert_eq!(after.get(k), Some(v), "{k} unchanged");
        }
    }
    let l = Layout::read(&env.out().join("acme/alpha"));
    assert_eq!(
        l.manifests[0]["annotations"]["org.opencontainers.image.revision"],
        SHA2
    );
    assert!(read_layer(&l.blob)
        .toc
        .entries
        .iter()
        .any(|e| e.name == "NEW.md"));
    // Other settings count as a change too: another chunk size rebuilds everything.
    let o = env.all(&cat, &["--chunk-size", "64KiB"]);
    assert_ok(&o);
    let r = report(&o);
    assert_eq!(statuses(&r), all_with(&GOOD, "built"));
    assert_eq!(r["models"][1]["reason"], "built with other settings");
}

#[test]
fn a_models_prefix_puts_its_files_under_it_and_changing_it_rebuilds_only_that_model() {
    let env = Env::new();
    let with_prefix = |prefix: &str| {
        good_catalogue(SHA).replace(
            "  - name: solo\n",
            &format!("  - name: solo\n    prefix: {prefix}\n"),
        )
    };
    let cat = env.catalogue(&with_prefix("/models"));
    assert_ok(&env.all(&cat, &[]));
    let names = |model: &str| -> Vec<String> {
        read_layer(&Layout::read(&env.out().join(model)).blob)
            .toc
            .entries
            .iter()
            .map(|e| e.name.clone())
            .collect()
    };
    assert!(
        names("solo").contains(&"models/config.json".to_string()),
        "{:?}",
        names("solo")
    );
    assert!(names("acme/beta").iter().all(|n| !n.starts_with("models/")));
    // The same catalogue again: every model up to date, the prefixed one too.
    let r = report(&env.all(&cat, &[]));
    assert_eq!(statuses(&r), all_with(&GOOD, "skipped"));
    // Another prefix is another image: only that model is built again.
    let cat = env.catalogue(&with_prefix("/opt/ml/model"));
    let r = report(&env.all(&cat, &[]));
    let mut want = all_with(&GOOD, "skipped");
    want.insert("solo".into(), "built".into());
    assert_eq!(statuses(&r), want);
    let solo = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "solo")
        .unwrap();
    assert_eq!(solo["reason"], "built with other settings");
    assert!(names("solo").contains(&"opt/ml/model/config.json".to_string()));
}

#[test]
fn an_invalid_catalogue_reports_every_problem_and_downloads_nothing() {
    let env = Env::new();
    let cat = env.catalogue(&format!(
        "models:\n  - name: acme/alpha\n    sha: {SHA}\n  - name: acme/beta\n    sha: nope\n  - name: acme/alpha\n    sha: {SHA}\n    revision: main\n"
    ));
    let o = env.all(&cat, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let f = cat.display().to_string();
    assert!(
        err.contains(&format!("{f}:5: invalid commit sha \"nope\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:6: duplicate name \"acme/alpha\" (first at line 2)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:8: unknown key \"revision\"")),
        "{err}"
    );
    assert!(env.server.requests().is_empty());
    assert!(!env.out().exists());
    assert!(o.stdout.is_empty());
}

#[test]
fn the_shipped_catalogue_validates() {
    // An empty shard of the real catalogue would be network-free, but validation alone
    // is what matters here: every one of the 109 entries parses.
    let c = depotai::catalogue::Catalogue::load(Path::new("models/models.yaml")).unwrap();
    assert_eq!(c.entries.len(), 109);
    let names: BTreeSet<String> = c.entries.iter().map(|e| e.name.registry_path()).collect();
    assert_eq!(names.len(), 109);
}

#[test]
fn a_single_build_records_what_it_was_built_from_so_all_skips_it() {
    let env = Env::new();
    let o = env
        .cmd()
        .args([
            "build",
            "solo",
            "--sha",
            SHA,
            "--include",
            "*.json",
            "--quiet",
        ])
        .arg("--output")
        .arg(env.out().join("solo"))
        .output()
        .unwrap();
    assert_ok(&o);
    let cat = env.catalogue(&format!(
        "models:\n  - name: solo\n    sha: {SHA}\n    include: ['*.json']\n"
    ));
    env.server.clear_requests();
    let o = env.all(&cat, &[]);
    assert_ok(&o);
    assert_eq!(statuses(&report(&o)), all_with(&["solo"], "skipped"));
    assert!(env.server.requests().is_empty());
}

#[test]
fn delete_downloads_empties_the_cache_after_each_model() {
    let env = Env::new();
    let cat = env.catalogue(&good_catalogue(SHA));
    let o = env.all(&cat, &["--delete-downloads"]);
    assert_ok(&o);
    let r = report(&o);
    assert!(r["models"][0]["freed_bytes"].as_u64().unwrap() > 300_000);
    // No content is left: only each commit's kept listing (for offline builds) and the
    // empty lock files, which huggingface_hub leaves too (removing a lock file another
    // process may hold would let a third one lock a new file of that name).
    let mut listings = 0;
    for e in walkdir::WalkDir::new(env.cache()) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(env.cache())
            .unwrap()
            .to_str()
            .unwrap();
        if rel.starts_with(".locks/") && rel.ends_with(".lock") {
            assert_eq!(e.metadata().unwrap().len(), 0, "{rel}");
            continue;
        }
        if rel.ends_with(&format!("/.depotai/listings/{SHA}.json")) {
            listings += 1;
            continue;
        }
        assert!(
            !e.file_type().is_file() && !e.file_type().is_symlink(),
            "{} left in the cache",
            e.path().display()
        );
    }
    assert!(listings > 0);
}

#[test]
fn max_scratch_with_all_refuses_each_model_too_big_for_it_before_its_download() {
    let env = Env::new();
    let cat = env.catalogue(&good_catalogue(SHA));
    // alpha (~300 kB, in the cache and again in the layout) and beta (~100 kB, twice)
    // need more than 150 kB; Gamma (~50 kB) and solo fit.
    let o = env.all(&cat, &["--max-scratch", "150KB"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r = report(&o);
    let mut want = all_with(&["Org/Gamma", "solo"], "built");
    want.insert("acme/alpha".into(), "failed".into());
    want.insert("acme/beta".into(), "failed".into());
    assert_eq!(statuses(&r), want);
    let alpha = r["models"][0]["error"].as_str().unwrap();
    assert!(
        alpha.contains("more than --max-scratch 150000") && alpha.contains("in the Hub cache"),
        "{alpha}"
    );
    // Nothing of a refused model was downloaded or written.
    let fetched: Vec<_> = env.content_requests().into_iter().map(|r| r.path).collect();
    assert!(
        !fetched
            .iter()
            .any(|p| p.contains("acme/alpha") || p.contains("acme/beta")),
        "{fetched:#?}"
    );
    assert!(
        fetched.iter().any(|p| p.contains("Org/Gamma")),
        "{fetched:#?}"
    );
    assert!(!env.out().join("acme/alpha").exists());
    assert!(!env.out().join("acme/beta").exists());
    Layout::read(&env.out().join("org/gamma"));
    no_partials(&env.out());
}

/// Waits until `cond` holds, or panics after `secs`.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interrupt(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn ctrl_c_during_a_download_stops_cleanly_and_the_next_run_builds_the_rest() {
    let env = Env::new();
    env.server.inject(Fault::Stall {
        path: "weights/w.bin".into(),
        after_bytes: 10_000,
        times: 1000,
    });
    let cat = env.catalogue(&good_catalogue(SHA));
    let mut c = env.all_cmd(&cat, &[]);
    c.env("DEPOTAI_IDLE_TIMEOUT", "60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    wait_for(30, "the stalled download", || {
        env.server
            .requests()
            .iter()
            .any(|r| r.origin == Origin::Cdn && r.path.contains("w.bin"))
    });
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    interrupt(&child);
    let o = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let r = report(&o);
    let s = statuses(&r);
    assert_eq!(s["acme/beta"], "interrupted", "{s:?}");
    assert_eq!(s["Org/Gamma"], "interrupted");
    assert_eq!(s["solo"], "interrupted");
    assert!(stderr(&o).lines().last().unwrap().contains("interrupted"));
    assert!(!env.out().join("acme/beta").exists());
    no_partials(&env.out());
    // A window cut short is not kept (what the cache keeps is always verified, window
    // by window): the next run asks for it again, in a Range request like every one.
    env.server.clear_faults();
    env.server.clear_requests();
    let o = env.all(&cat, &[]);
    assert_ok(&o);
    let s = statuses(&report(&o));
    assert_eq!(s["acme/beta"], "built");
    let w: Vec<_> = env
        .server
        .requests()
        .into_iter()
        .filter(|r| r.origin == Origin::Cdn && r.path.contains("w.bin"))
        .collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].range.as_deref(), Some("bytes=0-99999"));
}

#[test]
fn ctrl_c_during_a_build_removes_the_staging_directory() {
    const SIZE: u64 = 400 << 20;
    let mut repos = repos();
    repos.push(Repo::new(
        "acme/big",
        SHA,
        vec![RepoFile::lfs(
            "big.safetensors",
            Content::Generated {
                size: SIZE,
                seed: 5,
            },
        )],
    ));
    let env = Env::with(repos);
    let cat = env.catalogue(&format!(
        "models:\n  - name: acme/big\n    sha: {SHA}\n  - name: solo\n    sha: {SHA}\n"
    ));
    let mut c = env.all_cmd(&cat, &["--compression-level", "12", "--threads", "1"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let acme = env.out().join("acme");
    let staging = || {
        fs::read_dir(&acme).ok().and_then(|d| {
            d.map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().contains(".big.partial-"))
        })
    };
    wait_for(120, "the build to start", || staging().is_some());
    interrupt(&child);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let s = statuses(&report(&o));
    assert_eq!(s["acme/big"], "interrupted", "{}", stderr(&o));
    assert!(report(&o)["models"][0]["error"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
    assert!(staging().is_none(), "staging directory removed");
    assert!(!acme.join("big").exists());
    no_partials(&env.out());
}

#[test]
fn the_example_workflow_is_valid_yaml_with_an_8_shard_matrix_that_streams_to_the_registry() {
    let text = fs::read_to_string(".github/workflows/catalogue.yml").unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    assert_eq!(docs.len(), 1);
    let build = &docs[0]["jobs"]["build"];
    let shards: Vec<i64> = build["strategy"]["matrix"]["shard"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(shards, (1..=8).collect::<Vec<_>>());
    assert_eq!(build["strategy"]["fail-fast"].as_bool(), Some(false));
    let steps = build["steps"].as_vec().unwrap();
    let step = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("depotai build --all models/models.yaml"))
        })
        .expect("a build --all step");
    let run = step["run"].as_str().unwrap();
    for flag in [
        "--shard ${{ matrix.shard }}/8",
        r#"--push "$REGISTRY""#,
        "--no-cache",
        "--json",
    ] {
        assert!(run.contains(flag), "{flag} missing in {run}");
    }
    // The registry credentials come from the environment; no second push step.
    assert!(step["env"]["DEPOTAI_REGISTRY_USER"].as_str().is_some());
    assert!(step["env"]["DEPOTAI_REGISTRY_PASSWORD"].as_str().is_some());
    assert!(!text.contains("skopeo copy"));
}

/// The run itself is the library's (`depotai::catalogue::run`): called without the
/// command line, it tells every job event with the model it belongs to, a `Finished`
/// event per model in catalogue order, and returns one report per model and the sums;
/// a second run of the same request skips every model with no Hub request.
#[test]
fn the_library_run_tells_each_models_events_and_returns_its_reports() {
    use depotai::catalogue::run::{run, RunEvent, RunRequest};
    use depotai::catalogue::Catalogue;
    use depotai::report::Outcome;
    use std::sync::Mutex;

    let env = Env::new();
    let catalogue = Catalogue::parse(&good_catalogue(SHA), "models.yaml").unwrap();
    let mut hub = depotai::source::hub::HubConfig::from_env();
    hub.endpoint = env.server.endpoint.clone();
    hub.cache_dir = env.cache();
    hub.token = None;
    hub.offline = false;
    let req = RunRequest {
        file: "models.yaml".into(),
        shard: None,
        force: false,
        output_root: env.out(),
        layer: depotai::layer::Options::default(),
        plan: depotai::plan::PlanOptions::default(),
        platforms: depotai::image::default_platforms(),
        hub,
        stream: depotai::source::hub::StreamOptions::default(),
        delete_downloads: false,
        max_scratch: None,
        registry: None,
        modelpack: false,
    };
    let seen: Mutex<Vec<String>> = Mutex::default();
    let on_event = |e: RunEvent<'_>| {
        let line = match e {
            RunEvent::Started { total } => format!("started {total}"),
            RunEvent::Building { entry, why, .. } => format!("building {} ({why})", entry.name),
            RunEvent::Job {
                entry,
                event: depotai::job::Event::Planned { files, .. },
                ..
            } => format!("planned {} ({files} files)", entry.name),
            RunEvent::Job { .. } => return,
            RunEvent::Finished {
                index,
                total,
                entry,
                report,
            } => format!(
                "finished {}/{total} {} {}",
                index + 1,
                entry.name,
                report.result.as_str()
            ),
        };
        seen.lock().unwrap().push(line);
    };
    let first = run(&catalogue, &req, &on_event).unwrap();
    let mut want = vec!["started 4".to_string()];
    for (i, (n, files)) in GOOD.iter().zip([3, 2, 2, 1]).enumerate() {
        want.push(format!("building {n} (not built yet)"));
        want.push(format!("planned {n} ({files} files)"));
        want.push(format!("finished {}/4 {n} built", i + 1));
    }
    assert_eq!(*seen.lock().unwrap(), want);
    let names: Vec<&str> = first
        .models
        .iter()
        .map(|m| m.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, GOOD);
    assert!(first.models.iter().all(|m| m.result == Outcome::Built
        && m.output.is_some()
        && m.layers.first().is_some_and(|l| l.number == 1)));
    assert_eq!((first.summary.models, first.summary.built), (4, 4));
    let stored: u64 = first.models.iter().map(|m| m.stored_bytes.unwrap()).sum();
    assert_eq!(first.summary.stored_bytes, stored);

    seen.lock().unwrap().clear();
    let before = env.server.requests().len();
    let again = run(&catalogue, &req, &on_event).unwrap();
    assert_eq!(env.server.requests().len(), before, "no Hub request");
    assert_eq!((again.summary.skipped, again.summary.built), (4, 0));
    assert_eq!(
        seen.lock().unwrap().len(),
        1 + 4,
        "{:?}",
        seen.lock().unwrap()
    );
    let index = |r: &depotai::report::RunReport| -> Vec<Option<String>> {
        r.models.iter().map(|m| m.index_digest.clone()).collect()
    };
    assert_eq!(index(&again), index(&first));
}
