//! `depotai build ORG/MODEL --sha S --push REF` streamed from the Hub emulator into a
//! real registry (Debian's `docker-registry`): the same digests as a layout build, no
//! layout and (with `--no-cache`) no cache written, a corrupted byte re-fetched, two
//! failing the job with nothing tagged, a killed push resumed, a disk quota respected.
//!
//! Without `docker-registry` these tests say SKIP and pass; with `CI=true` they fail.

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::hub::{depotai_against, Content, Fault, HubServer, Repo, RepoFile};
use support::interop::{have, skip_or_fail, Registry};
use support::registry::Proxy;
use support::*;

const MODEL: &str = "acme/streamed";
const MIB: u64 = 1 << 20;
const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

fn repo_files(shard_mib: u64) -> Vec<RepoFile> {
    vec![
        RepoFile::regular("config.json", br#"{"model_type": "llama"}"#.to_vec()),
        RepoFile::regular("tokenizer.json", pseudo_random(200 << 10, 5)),
        // Incompressible, so its layer is about as big as the file.
        RepoFile::lfs(
            SHARD1,
            Content::Bytes(pseudo_random((shard_mib * MIB + 77) as usize, 1)),
        ),
        RepoFile::lfs(
            SHARD2,
            Content::Generated {
                size: 2 * MIB + 5,
                seed: 2,
            },
        ),
    ]
}

struct Env {
    tmp: tempfile::TempDir,
    server: HubServer,
    files: Vec<RepoFile>,
}

impl Env {
    fn new(shard_mib: u64) -> Env {
        let files = repo_files(shard_mib);
        Env {
            tmp: tempfile::tempdir().unwrap(),
            server: HubServer::start(vec![Repo::new(MODEL, SHA, files.clone())]),
            files,
        }
    }

    fn hf_home(&self) -> PathBuf {
        self.tmp.path().join("hf-home")
    }

    /// `depotai build acme/streamed --sha SHA --own-layer-above 1MiB EXTRA…`, run in
    /// the temporary directory (so a default `out/` would land there).
    fn build(&self, extra: &[&str]) -> Command {
        let mut c = depotai_against(&self.server, &self.hf_home());
        c.current_dir(self.tmp.path())
            .env("DEPOTAI_UPLOAD_STATE", self.tmp.path().join("upload-state"))
            .env_remove("DEPOTAI_REGISTRY_USER")
            .args(["build", MODEL, "--sha", SHA, "--own-layer-above", "1MiB"])
            .args(extra);
        c
    }

    /// The same files built with `--from-dir` into a layout: the reference digests.
    fn layout_build(&self) -> Value {
        let dir = self.tmp.path().join("plain");
        for f in &self.files {
            write(&dir, &f.path, &f.content.read(0, f.content.len() as usize));
        }
        let mut c = depotai();
        c.args(["build", "--from-dir"])
            .arg(&dir)
            .args(["--name", MODEL, "--sha", SHA, "--own-layer-above", "1MiB"])
            .arg("--output")
            .arg(self.tmp.path().join("reference"))
            .arg("--json");
        json_of(&c.output().unwrap())
    }
}

fn json_of(o: &Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn layer_digests(v: &Value) -> Vec<String> {
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The digest the registry reports for `repo:tag` (HEAD), or the status if not 200.
fn registry_manifest(addr: &str, repo: &str, tag: &str) -> Result<String, u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "HEAD /v2/{repo}/manifests/{tag} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/vnd.oci.image.index.v1+json\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp[9..12].parse().unwrap();
    if status != 200 {
        return Err(status);
    }
    Ok(resp
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_string())
        })
        .unwrap())
}

fn model_dirs(hf_home: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(hf_home.join("hub"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_hub_layout_build_a_from_dir_build_a_streamed_push_and_verify_give_one_index_digest() {
    if !have(&["docker-registry"]) {
        return;
    }
    let env = Env::new(3);
    let reg = Registry::start();
    let reference = format!("{}/acme/streamed:v1", reg.addr);
    let o = env
        .build(&["--push", &reference, "--insecure", "--no-cache", "--json"])
        .output()
        .unwrap();
    let pushed = json_of(&o);
    let want = env.layout_build();
    assert_eq!(pushed["index_digest"], want["index_digest"]);
    assert_eq!(layer_digests(&pushed), layer_digests(&want));
    assert_eq!(
        layer_digests(&want).len(),
        3,
        "two shards of their own + small files"
    );
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v1").unwrap(),
        want["index_digest"].as_str().unwrap()
    );
    // The provenance went up after the image, listed under the referrers fallback tag
    // (the CNCF registry 2.8 has no referrers API).
    let index_hex = want["index_digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    assert!(registry_manifest(&reg.addr, "acme/streamed", &format!("sha256-{index_hex}")).is_ok());
    // Every layer went up in this run, each as the digest the layout has.
    let uploaded: Vec<String> = pushed["push"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(uploaded, layer_digests(&want));
    // No layout and, with --no-cache, nothing of the model on disk.
    assert!(!env.tmp.path().join("out").exists());
    assert_eq!(pushed.get("output"), None, "no layout was written");
    assert_eq!(model_dirs(&env.hf_home()), Vec::<PathBuf>::new());
    let content: u64 = env.files.iter().map(|f| f.content.len()).sum();
    assert_eq!(pushed["downloaded_bytes"], content);

    // `build ORG/MODEL` into a layout (through the cache) is the same image.
    let out = env.tmp.path().join("hub-layout");
    let hub = json_of(
        &env.build(&["--json", "--output"])
            .arg(&out)
            .output()
            .unwrap(),
    );
    assert_eq!(hub["index_digest"], want["index_digest"]);
    assert_eq!(
        Layout::read(&out).index_digest,
        want["index_digest"].as_str().unwrap()
    );
    // And `verify` of the pushed image rebuilds that very index from the Hub.
    let mut c = depotai_against(&env.server, &env.hf_home());
    c.env_remove("DEPOTAI_REGISTRY_USER")
        .args(["verify", &reference, "--insecure", "--json"]);
    let verified = json_of(&c.output().unwrap());
    assert_eq!(verified["result"], "verified", "{verified}");
    assert_eq!(verified["index_digest"], want["index_digest"]);
    assert_eq!(
        verified["verify"]["rebuilt_index_digest"],
        want["index_digest"]
    );
}

#[test]
fn output_with_push_writes_the_layout_too_and_fills_the_cache_without_no_cache() {
    if !have(&["docker-registry"]) {
        return;
    }
    let env = Env::new(3);
    let reg = Registry::start();
    let reference = format!("{}/acme/streamed:v1", reg.addr);
    let out = env.tmp.path().join("both");
    let o = env
        .build(&["--push", &reference, "--insecure", "--json", "--output"])
        .arg(&out)
        .output()
        .unwrap();
    let pushed = json_of(&o);
    let layout = Layout::read(&out);
    assert_eq!(
        layout.index_digest,
        pushed["index_digest"].as_str().unwrap()
    );
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v1").unwrap(),
        layout.index_digest
    );
    assert!(out.join("depotai-build.json").is_file());
    // The cache holds one verified copy of each file, as Python tools expect.
    let snap = env
        .hf_home()
        .join("hub/models--acme--streamed/snapshots")
        .join(SHA);
    for f in &env.files {
        assert_eq!(
            std::fs::read(snap.join(&f.path)).unwrap(),
            f.content.read(0, f.content.len() as usize),
            "{}",
            f.path
        );
    }
}

#[test]
fn a_corrupted_byte_is_fetched_again_and_the_layer_rebuilt_to_the_right_image() {
    if !have(&["docker-registry"]) {
        return;
    }
    let env = Env::new(3);
    env.server.inject(Fault::WrongBytes {
        path: SHARD1.into(),
        times: 1,
    });
    let reg = Registry::start();
    let reference = format!("{}/acme/streamed:v1", reg.addr);
    let o = env
        .build(&["--push", &reference, "--insecure", "--no-cache", "--json"])
        .output()
        .unwrap();
    let pushed = json_of(&o);
    assert_eq!(pushed["refetched"], serde_json::json!([SHARD1]));
    let want = env.layout_build();
    assert_eq!(pushed["index_digest"], want["index_digest"]);
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v1").unwrap(),
        want["index_digest"].as_str().unwrap()
    );
}

#[test]
fn two_corruptions_fail_the_build_with_nothing_tagged() {
    if !have(&["docker-registry"]) {
        return;
    }
    let env = Env::new(3);
    env.server.inject(Fault::WrongBytes {
        path: SHARD1.into(),
        times: 2,
    });
    let reg = Registry::start();
    let reference = format!("{}/acme/streamed:v1", reg.addr);
    let o = env
        .build(&["--push", &reference, "--insecure", "--no-cache", "--quiet"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{SHARD1}: sha256 mismatch")),
        "stderr: {err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v1"),
        Err(404)
    );
}

/// The offset of the one remembered unfinished upload in `state`, if any.
fn pending_offset(state: &Path) -> Option<u64> {
    std::fs::read_dir(state)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pending"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter_map(|v| v["offset"].as_u64())
        .max()
}

#[test]
fn a_push_killed_midway_is_resumed_by_a_rerun_with_the_same_digests() {
    if !have(&["docker-registry"]) {
        return;
    }
    let env = Env::new(12);
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let reference = format!("{}/acme/streamed:v1", proxy.addr);
    let state = env.tmp.path().join("upload-state");
    // 1 MiB PATCHes: the big shard's layer (the first) takes a dozen.
    let args = [
        "--push",
        &reference,
        "--insecure",
        "--no-cache",
        "--json",
        "--jobs",
        "1",
        "--connections",
        "1",
        "--push-chunk-size",
        "1MiB",
    ];
    // The proxy drops the connection of the fourth PATCH before the registry sees it,
    // so the registry holds exactly three chunks; the process is killed right then,
    // while it waits to ask the registry how much it has.
    proxy
        .cut_patch
        .store(4, std::sync::atomic::Ordering::SeqCst);
    let mut child = env.build(&args).stdout(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy.cut_done.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the upload did not start: {:?} {:?}",
            child.try_wait(),
            proxy.take_requests()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let held = pending_offset(&state).unwrap();
    assert_eq!(held, 3 * MIB);
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v1"),
        Err(404)
    );

    env.server.clear_faults();
    let o = env.build(&args).output().unwrap();
    let pushed = json_of(&o);
    let want = env.layout_build();
    assert_eq!(pushed["index_digest"], want["index_digest"]);
    assert_eq!(layer_digests(&pushed), layer_digests(&want));
    let big = &pushed["push"]["blobs"][0];
    assert_eq!(big["resumed_from"], held, "{pushed}");
    assert_eq!(
        big["sent"].as_u64().unwrap(),
        big["size"].as_u64().unwrap() - held
    );
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v1").unwrap(),
        want["index_digest"].as_str().unwrap()
    );
}

#[test]
fn max_scratch_refuses_a_build_that_would_fill_the_disk_before_any_download() {
    let env = Env::new(3);
    let o = env
        .build(&["--max-scratch", "1MiB", "--output", "out"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("more than --max-scratch 1048576")
            && err.contains("in the Hub cache")
            && err.contains("--no-cache"),
        "{err}"
    );
    assert!(
        !env.server
            .requests()
            .iter()
            .any(|r| r.path.contains("/resolve/")),
        "nothing was downloaded"
    );
}

/// A tmpfs of `mib` MiB at `dir` (root only); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_model_larger_than_the_disk_streams_into_the_registry_with_no_cache() {
    if !have(&["docker-registry"]) {
        return;
    }
    // 24 MiB of model, 4 MiB of disk for everything depotai may write.
    let env = Env::new(22);
    let disk = env.tmp.path().join("small-disk");
    let Some(_fs) = Tmpfs::mount(&disk, 4) else {
        skip_or_fail("cannot mount a tmpfs (needs root) for the disk quota test");
        return;
    };
    let reg = Registry::start();
    let reference = format!("{}/acme/streamed:v1", reg.addr);
    let on_small_disk = |extra: &[&str]| {
        let mut c = depotai_against(&env.server, &disk.join("hf-home"));
        c.current_dir(&disk)
            .env("DEPOTAI_UPLOAD_STATE", disk.join("upload-state"))
            .env("TMPDIR", &disk)
            .args(["build", MODEL, "--sha", SHA, "--own-layer-above", "1MiB"])
            .args(["--push", &reference, "--insecure", "--quiet"])
            .args(extra);
        c.output().unwrap()
    };
    // With the cache, the model does not fit: the disk is really that small.
    let o = on_small_disk(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v1"),
        Err(404)
    );
    let _ = std::fs::remove_dir_all(disk.join("hf-home"));

    // Streamed with --no-cache it goes through, and matches the layout build.
    let o = on_small_disk(&["--no-cache", "--json"]);
    let pushed = json_of(&o);
    let want = env.layout_build();
    assert_eq!(pushed["index_digest"], want["index_digest"]);
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v1").unwrap(),
        want["index_digest"].as_str().unwrap()
    );
}

#[test]
fn a_second_push_of_the_same_layers_verifies_them_but_sends_none_again() {
    if !have(&["docker-registry"]) {
        return;
    }
    let env = Env::new(3);
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let first_ref = format!("{}/acme/streamed:v1", proxy.addr);
    let first = json_of(
        &env.build(&["--push", &first_ref, "--insecure", "--no-cache", "--json"])
            .output()
            .unwrap(),
    );
    proxy.take_requests();
    // Another tag, same layers: each is rebuilt from verified files and checked against
    // what the registry holds, and no blob byte goes up again.
    let second_ref = format!("{}/acme/streamed:v2", proxy.addr);
    let second = json_of(
        &env.build(&["--push", &second_ref, "--insecure", "--no-cache", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(second["index_digest"], first["index_digest"]);
    assert_eq!(second["uploaded_bytes"], 0);
    for l in second["push"]["blobs"].as_array().unwrap() {
        assert_eq!(l["sent"], 0, "{l}");
    }
    let reqs = proxy.take_requests();
    assert!(!reqs.iter().any(|r| r.starts_with("PATCH ")), "{reqs:?}");
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v2").unwrap(),
        first["index_digest"].as_str().unwrap()
    );
}

#[test]
fn a_second_push_of_an_unchanged_image_is_skipped_with_one_manifest_request_and_force_rebuilds() {
    if !have(&["docker-registry"]) {
        return;
    }
    let env = Env::new(3);
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let reference = format!("{}/acme/streamed:v1", proxy.addr);
    let push = |extra: &[&str]| {
        let mut args = vec!["--push", &reference, "--insecure", "--no-cache", "--json"];
        args.extend_from_slice(extra);
        json_of(&env.build(&args).output().unwrap())
    };
    let first = push(&[]);
    assert_eq!(first["result"], "pushed");
    assert_eq!(first["reason"], "not in the registry");

    // Same commit, same settings: after the check that the registry takes the push (an
    // upload session opened and cancelled), one manifest request, nothing asked of the
    // Hub.
    env.server.clear_requests();
    proxy.take_requests();
    let second = push(&[]);
    assert_eq!(second["result"], "skipped", "{second}");
    assert_eq!(second["reason"], "up to date");
    assert_eq!(second["index_digest"], first["index_digest"]);
    assert_eq!(second["uploaded_bytes"], 0);
    let reqs = proxy.take_requests();
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    assert_eq!(
        reqs[..2],
        [
            "GET /v2/ HTTP/1.1",
            "POST /v2/acme/streamed/blobs/uploads/ HTTP/1.1"
        ]
    );
    assert!(reqs[2].starts_with("DELETE /v2/acme/streamed/blobs/uploads/"));
    assert_eq!(reqs[3], "GET /v2/acme/streamed/manifests/v1 HTTP/1.1");
    assert_eq!(env.server.requests().len(), 0, "no Hub request at all");
    // Without --json the skip is one line, on a terminal or in a CI log alike.
    let o = env
        .build(&["--push", &reference, "--insecure", "--no-cache"])
        .output()
        .unwrap();
    assert_ok(&o);
    let err = String::from_utf8(o.stderr).unwrap();
    let (line, seconds) = err.trim_end().rsplit_once(", ").unwrap();
    assert_eq!(
        line,
        format!(
            "skipped {MODEL} -> {reference}: index {}, up to date (same commit and settings; --force rebuilds)",
            first["index_digest"].as_str().unwrap()
        )
    );
    assert!(seconds.ends_with('s'), "{err}");
    proxy.take_requests();

    // --force builds it again (from the Hub), to the same image.
    let forced = push(&["--force"]);
    assert_eq!(forced["result"], "pushed");
    assert_eq!(forced["reason"], "--force");
    assert_eq!(forced["index_digest"], first["index_digest"]);
    assert!(
        env.server
            .requests()
            .iter()
            .any(|r| r.path.contains(SHARD1)),
        "--force reads the files"
    );
    assert!(!proxy
        .take_requests()
        .iter()
        .any(|r| r.starts_with("GET /v2/acme/streamed/manifests/v1 ")));

    // Other settings: the tag is stale, and says why.
    let other = push(&["--chunk-size", "1MiB"]);
    assert_eq!(other["result"], "pushed");
    assert_eq!(other["reason"], "built with other settings");
    assert_ne!(other["index_digest"], first["index_digest"]);
    assert_eq!(
        registry_manifest(&reg.addr, "acme/streamed", "v1").unwrap(),
        other["index_digest"].as_str().unwrap()
    );
}
