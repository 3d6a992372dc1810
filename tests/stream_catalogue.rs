//! `depotai build --all CATALOGUE --push PREFIX`: every model streamed from the Hub
//! emulator to a real registry (Debian's `docker-registry`) as it is built; a rerun on
//! a fresh machine skips an unchanged catalogue with one manifest request per model
//! (after the run's one check that the registry takes pushes) and no Hub request at all.
//!
//! Without `docker-registry` these tests say SKIP and pass; with `CI=true` they fail.

mod support;

use serde_json::Value;
use std::path::Path;
use support::hub::{depotai_against, Content, HubServer, Repo, RepoFile};
use support::interop::{have, Registry};
use support::registry::Proxy;
use support::*;

const ALPHA_SHA: &str = "1111111111111111111111111111111111111111";
const BETA_SHA: &str = "2222222222222222222222222222222222222222";

fn repo(id: &str, sha: &str, seed: u64) -> Repo {
    Repo::new(
        id,
        sha,
        vec![
            RepoFile::regular(
                "config.json",
                format!("{{\"name\": \"{id}\"}}").into_bytes(),
            ),
            RepoFile::lfs(
                "model.safetensors",
                Content::Bytes(pseudo_random(3 << 20, seed)),
            ),
        ],
    )
}

fn run(server: &HubServer, home: &Path, catalogue: &Path, prefix: &str, extra: &[&str]) -> Value {
    let mut c = depotai_against(server, home);
    c.env("DEPOTAI_UPLOAD_STATE", home.join("upload-state"))
        .env_remove("DEPOTAI_REGISTRY_USER")
        .arg("build")
        .arg("--all")
        .arg(catalogue)
        .args([
            "--push",
            prefix,
            "--insecure",
            "--json",
            "--own-layer-above",
            "1MiB",
        ])
        .args(extra);
    let o = c.output().unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn statuses(report: &Value) -> Vec<(String, String, String)> {
    report["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
                m["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_catalogue_is_streamed_to_the_registry_and_a_fresh_rerun_skips_it_with_one_request_per_model() {
    if !have(&["docker-registry"]) {
        return;
    }
    let server = HubServer::start(vec![
        repo("acme/alpha", ALPHA_SHA, 1),
        repo("acme/beta", BETA_SHA, 2),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = tmp.path().join("models.yaml");
    std::fs::write(
        &catalogue,
        format!(
            "models:\n  - name: acme/alpha\n    sha: {ALPHA_SHA}\n  - name: acme/beta\n    sha: {BETA_SHA}\n    tag: v2\n"
        ),
    )
    .unwrap();
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let prefix = format!("{}/mirror", proxy.addr);

    let first = run(
        &server,
        &tmp.path().join("run1"),
        &catalogue,
        &prefix,
        &["--no-cache"],
    );
    assert_eq!(
        statuses(&first),
        [
            (
                "acme/alpha".into(),
                "built".into(),
                "not in the registry".into()
            ),
            (
                "acme/beta".into(),
                "built".into(),
                "not in the registry".into()
            )
        ]
    );
    assert_eq!(first["counts"]["built"], 2);
    // Bounded disk: nothing of either model stayed on this machine.
    assert!(!tmp.path().join("run1/hub").exists());
    let alpha_index = first["models"][0]["index_digest"].clone();

    // A fresh machine (new HF_HOME, no upload memory): one GET of each tag, nothing else.
    server.clear_requests();
    proxy.take_requests();
    let second = run(&server, &tmp.path().join("run2"), &catalogue, &prefix, &[]);
    assert_eq!(
        statuses(&second),
        [
            ("acme/alpha".into(), "skipped".into(), "up to date".into()),
            ("acme/beta".into(), "skipped".into(), "up to date".into())
        ]
    );
    assert_eq!(second["models"][0]["index_digest"], alpha_index);
    assert_eq!(server.requests().len(), 0, "no Hub request at all");
    let reqs = proxy.take_requests();
    // Once for the run, the check that the registry takes pushes (an upload session
    // opened and cancelled); then one GET of each tag.
    assert_eq!(reqs.len(), 5, "{reqs:#?}");
    assert_eq!(
        reqs[..2],
        [
            "GET /v2/ HTTP/1.1",
            "POST /v2/mirror/acme/alpha/blobs/uploads/ HTTP/1.1"
        ]
    );
    assert!(
        reqs[2].starts_with("DELETE /v2/mirror/acme/alpha/blobs/uploads/"),
        "{reqs:#?}"
    );
    assert_eq!(
        reqs[3..],
        [
            "GET /v2/mirror/acme/alpha/manifests/latest HTTP/1.1",
            "GET /v2/mirror/acme/beta/manifests/v2 HTTP/1.1"
        ]
    );

    // Other settings: the tags are stale and both models are streamed again.
    let third = run(
        &server,
        &tmp.path().join("run3"),
        &catalogue,
        &prefix,
        &["--no-cache", "--chunk-size", "1MiB"],
    );
    assert_eq!(
        statuses(&third),
        [
            (
                "acme/alpha".into(),
                "built".into(),
                "built with other settings".into()
            ),
            (
                "acme/beta".into(),
                "built".into(),
                "built with other settings".into()
            )
        ]
    );
    assert_ne!(third["models"][0]["index_digest"], alpha_index);
}
