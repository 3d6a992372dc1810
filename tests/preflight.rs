//! The check before a push (`remote::Client::check_push`): `push`, `build --from-dir …
//! --push`, `build ORG/MODEL --push` and `build --all --push` find out that the registry
//! would refuse them before the first Hub request, build or blob, and say so in one
//! line naming the registry, the cause and the fix: nothing listening, TLS to a
//! plain-HTTP port, a wrong password (401), a push that is denied (403, or 401 to the
//! upload with credentials the registry otherwise takes).
//!
//! The 401 and TLS cases need Debian's `docker-registry` (and `htpasswd`); without them
//! those tests say SKIP and pass (with `CI=true` they fail). The others need nothing.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::hostile::{Guard, Hostile, Reply};
use support::hub::{depotai_against, HubServer, Repo, RepoFile};
use support::interop::{have, Registry};
use support::*;

const MODEL: &str = "acme/m";

/// An address where nothing listens: a port the kernel just handed out, closed again.
fn nothing_listening() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// The tiny example model built into a layout under `dir`.
fn layout(dir: &Path) -> PathBuf {
    let out = dir.join("layout");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        MODEL,
        &out,
        &["--quiet"],
    ));
    out
}

/// `depotai ARGS` with no registry credentials but `creds`, and a private Docker config
/// and upload memory.
fn run(tmp: &Path, args: &[&str], creds: Option<(&str, &str)>) -> (Output, Duration) {
    let mut c = depotai();
    c.args(args)
        .env("DOCKER_CONFIG", tmp.join("docker-empty"))
        .env("DEPOTAI_UPLOAD_STATE", tmp.join("upload-state"))
        .env_remove("DEPOTAI_REGISTRY_USER")
        .env_remove("DEPOTAI_REGISTRY_PASSWORD");
    if let Some((u, p)) = creds {
        c.env("DEPOTAI_REGISTRY_USER", u)
            .env("DEPOTAI_REGISTRY_PASSWORD", p);
    }
    timed(&mut c)
}

fn timed(c: &mut Command) -> (Output, Duration) {
    let t = Instant::now();
    let o = c.output().unwrap();
    (o, t.elapsed())
}

/// Exit status 1 and exactly `line` on stderr (a refusal is one line), nothing on stdout.
fn assert_refused(o: &Output, line: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err, format!("depotai: error: {line}\n"));
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// A Hub with the model, whose request log shows whether a build asked it anything.
fn hub() -> HubServer {
    HubServer::start(vec![Repo::new(
        MODEL,
        SHA,
        vec![
            RepoFile::regular("config.json", br#"{"model_type": "bert"}"#.to_vec()),
            RepoFile::regular("model.safetensors", pseudo_random(64 << 10, 3)),
        ],
    )])
}

/// `depotai build acme/m --sha SHA --push REF EXTRA…` against `server`.
fn build_from_hub(
    server: &HubServer,
    tmp: &Path,
    reference: &str,
    extra: &[&str],
    creds: Option<(&str, &str)>,
) -> (Output, Duration) {
    let mut c = depotai_against(server, &tmp.join("hf-home"));
    c.current_dir(tmp)
        .args(["build", MODEL, "--sha", SHA, "--push", reference])
        .args(extra)
        .env("DOCKER_CONFIG", tmp.join("docker-empty"))
        .env("DEPOTAI_UPLOAD_STATE", tmp.join("upload-state"))
        .env_remove("DEPOTAI_REGISTRY_USER")
        .env_remove("DEPOTAI_REGISTRY_PASSWORD");
    if let Some((u, p)) = creds {
        c.env("DEPOTAI_REGISTRY_USER", u)
            .env("DEPOTAI_REGISTRY_PASSWORD", p);
    }
    timed(&mut c)
}

#[test]
fn nothing_listening_fails_every_push_at_once_naming_the_address() {
    let tmp = tempfile::tempdir().unwrap();
    let out = layout(tmp.path());
    let addr = nothing_listening();
    let line = format!(
        "cannot push to http://{addr}/: connection refused (nothing listens there); start the registry or correct the address"
    );
    let reference = format!("{addr}/{MODEL}:latest");

    // `push`: no retry loop, so well within 2 s.
    let (o, took) = run(
        tmp.path(),
        &["push", out.to_str().unwrap(), &reference, "--insecure"],
        None,
    );
    assert_refused(&o, &line);
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // `build --from-dir --push`: refused before the build, so no layout is written.
    let never = tmp.path().join("never");
    let (o, took) = run(
        tmp.path(),
        &[
            "build",
            "--from-dir",
            "fixtures/tiny-model",
            "--name",
            MODEL,
            "--sha",
            SHA,
            "--output",
            never.to_str().unwrap(),
            "--push",
            &reference,
            "--insecure",
        ],
        None,
    );
    assert_refused(&o, &line);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        !never.exists(),
        "nothing is built for a push that cannot happen"
    );

    // `build ORG/MODEL --push`: the Hub is not asked anything.
    let server = hub();
    let (o, took) = build_from_hub(&server, tmp.path(), &reference, &["--insecure"], None);
    assert_refused(&o, &line);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[test]
fn a_denied_push_is_found_with_one_upload_session_before_any_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let out = layout(tmp.path());
    // Reads work (`/v2/` answers 200), opening an upload does not.
    let reg = Hostile::start();
    reg.route(
        &format!("/v2/{MODEL}/blobs/uploads/"),
        Reply::status(
            403,
            vec![("Content-Type".into(), "application/json".into())],
        ),
    );
    let reference = format!("{}/{MODEL}:latest", reg.addr);
    let line = format!(
        "cannot push to http://{}/: pushing to {MODEL} is denied (HTTP 403 to opening an upload); use credentials with push access to it",
        reg.addr
    );
    let (o, _) = run(
        tmp.path(),
        &["push", out.to_str().unwrap(), &reference, "--insecure"],
        None,
    );
    assert_refused(&o, &line);
    // The check and nothing else: no blob looked at or sent, no manifest put.
    assert_eq!(
        *reg.requests.lock().unwrap(),
        ["GET /v2/", &format!("POST /v2/{MODEL}/blobs/uploads/")]
    );

    reg.requests.lock().unwrap().clear();
    let server = hub();
    let (o, _) = build_from_hub(&server, tmp.path(), &reference, &["--insecure"], None);
    assert_refused(&o, &line);
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert_eq!(reg.requests.lock().unwrap().len(), 2);
}

#[test]
fn credentials_that_open_the_registry_but_not_an_upload_are_denied_not_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let out = layout(tmp.path());
    // Basic auth everywhere; the right credentials read, but an upload still answers 401.
    let reg = Hostile::start();
    reg.guard(Guard {
        wanted: format!(
            "Basic {}",
            depotai::remote::auth::base64_encode(b"alice:s3cret")
        ),
        challenge: r#"Basic realm="reg""#.into(),
        open: "/none".into(),
    });
    reg.route(
        &format!("/v2/{MODEL}/blobs/uploads/"),
        Reply::status(
            401,
            vec![("WWW-Authenticate".into(), r#"Basic realm="reg""#.into())],
        ),
    );
    let reference = format!("{}/{MODEL}:latest", reg.addr);
    let push = ["push", out.to_str().unwrap(), &reference, "--insecure"];
    let (o, _) = run(tmp.path(), &push, Some(("alice", "s3cret")));
    assert_refused(
        &o,
        &format!(
            "cannot push to http://{}/: pushing to {MODEL} is denied (HTTP 401 to opening an upload); use credentials with push access to it",
            reg.addr
        ),
    );
    // The wrong password fails at /v2/ already.
    let (o, _) = run(tmp.path(), &push, Some(("alice", "wrong")));
    assert_refused(
        &o,
        &format!(
            "cannot push to http://{}/: authentication failed (HTTP 401); check the username and password",
            reg.addr
        ),
    );
    assert!(!reg
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("HEAD ") || l.starts_with("PUT ")));
}

#[test]
fn a_catalogue_push_to_a_refusing_registry_stops_before_the_first_model() {
    let tmp = tempfile::tempdir().unwrap();
    let server = hub();
    let catalogue = tmp.path().join("models.yaml");
    std::fs::write(
        &catalogue,
        format!(
            "models:\n  - name: {MODEL}\n    sha: {SHA}\n  - name: acme/other\n    sha: {SHA}\n"
        ),
    )
    .unwrap();
    let addr = nothing_listening();
    let mut c = depotai_against(&server, &tmp.path().join("hf-home"));
    c.current_dir(tmp.path())
        .arg("build")
        .arg("--all")
        .arg(&catalogue)
        .args(["--push", &format!("{addr}/mirror"), "--insecure", "--json"])
        .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"))
        .env_remove("DEPOTAI_REGISTRY_USER");
    let (o, took) = timed(&mut c);
    // One line for the run, not a failure per model (and no report of models).
    assert_refused(
        &o,
        &format!("cannot push to http://{addr}/: connection refused (nothing listens there); start the registry or correct the address"),
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[test]
fn wrong_or_missing_credentials_are_refused_by_the_check_with_the_fix() {
    if !have(&["docker-registry", "htpasswd"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("docker-empty")).unwrap();
    let out = layout(tmp.path());
    let reg = Registry::start_with_auth("alice", "s3cret");
    let reference = format!("{}/{MODEL}:latest", reg.addr);
    let push = ["push", out.to_str().unwrap(), &reference, "--insecure"];

    let (o, _) = run(tmp.path(), &push, Some(("alice", "wrong")));
    assert_refused(
        &o,
        &format!(
            "cannot push to http://{}/: authentication failed (HTTP 401); check the username and password",
            reg.addr
        ),
    );
    let (o, _) = run(tmp.path(), &push, None);
    assert_refused(
        &o,
        &format!(
            "cannot push to http://{}/: authentication failed (HTTP 401); no credentials: pass --username with --password-stdin, set DEPOTAI_REGISTRY_USER and DEPOTAI_REGISTRY_PASSWORD, or log in with docker login",
            reg.addr
        ),
    );

    // A streamed build with the wrong password asks the Hub nothing.
    let server = hub();
    let (o, _) = build_from_hub(
        &server,
        tmp.path(),
        &reference,
        &["--insecure"],
        Some(("alice", "wrong")),
    );
    assert_refused(
        &o,
        &format!(
            "cannot push to http://{}/: authentication failed (HTTP 401); check the username and password",
            reg.addr
        ),
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    // The right password passes the check and the push (through `--password-stdin`,
    // read once for the check and the push).
    let mut c = depotai();
    c.args(push)
        .args(["--json", "--username", "alice", "--password-stdin"])
        .env("DOCKER_CONFIG", tmp.path().join("docker-empty"))
        .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"s3cret\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_ok(&o);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        report["index_digest"],
        Layout::read(&out).index_digest.as_str()
    );
}

#[test]
fn tls_to_a_plain_http_registry_is_named_as_such_at_once() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = layout(tmp.path());
    let reg = Registry::start();
    // No --insecure: HTTPS to a port that speaks plain HTTP.
    let (o, took) = run(
        tmp.path(),
        &[
            "push",
            out.to_str().unwrap(),
            &format!("{}/{MODEL}", reg.addr),
        ],
        None,
    );
    assert_refused(
        &o,
        &format!(
            "cannot push to https://{}/: the TLS handshake failed: that port speaks plain HTTP; pass --insecure to push over plain HTTP",
            reg.addr
        ),
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
