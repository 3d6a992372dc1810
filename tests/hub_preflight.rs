//! The check before `verify`'s rebuild (`source::hub::check`): one request for the
//! commit's metadata, with no retry, finds out that the Hub cannot serve the rebuild and
//! says so in one line naming the Hub, the cause and the fix: nothing listening, TLS to
//! a plain-HTTP port, a refused token, an unknown repository or commit. The Hub's log
//! shows that nothing but that one request was made.
//!
//! The layouts verified here are built from the Hub emulator; the rebuild is then asked
//! of another endpoint, or of a Hub without the model or the commit.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};
use support::hub::{depotai_against, HubServer, Repo, RepoFile};
use support::*;

const MODEL: &str = "acme/m";
const OTHER_SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn files() -> Vec<RepoFile> {
    vec![
        RepoFile::regular("config.json", br#"{"model_type": "bert"}"#.to_vec()),
        RepoFile::regular("model.safetensors", pseudo_random(64 << 10, 3)),
    ]
}

/// An address where nothing listens: a port the kernel just handed out, closed again.
fn nothing_listening() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// `acme/m` at `SHA` built from `server` into a layout under `tmp`.
fn layout(server: &HubServer, tmp: &Path) -> PathBuf {
    let out = tmp.join("layout");
    assert_ok(
        &depotai_against(server, &tmp.join("hf-build"))
            .args(["build", MODEL, "--sha", SHA, "--quiet", "--output"])
            .arg(&out)
            .output()
            .unwrap(),
    );
    out
}

/// `depotai verify LAYOUT` against `server`'s endpoint or `endpoint`, with the default
/// retry timing (a retry loop would show in the time taken), and the time it took.
fn verify(
    server: &HubServer,
    tmp: &Path,
    out: &Path,
    endpoint: Option<&str>,
    token: Option<&str>,
) -> (Output, Duration) {
    let mut c = depotai_against(server, &tmp.join("hf-verify"));
    c.arg("verify").arg(out).env_remove("DEPOTAI_RETRY_BASE");
    if let Some(e) = endpoint {
        c.env("HF_ENDPOINT", e);
    }
    if let Some(t) = token {
        c.env("HF_TOKEN", t);
    }
    let t = Instant::now();
    let o = c.output().unwrap();
    (o, t.elapsed())
}

/// Exit status 1 and exactly `line` on stderr, after the rebuild's context; nothing on
/// stdout.
fn assert_refused(o: &Output, line: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!("depotai: error: rebuilding {MODEL} at {SHA}: {line}\n")
    );
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Every request `server` logged, as `METHOD PATH`.
fn log(server: &HubServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[test]
fn verify_with_nothing_listening_at_the_hub_fails_at_once_naming_the_endpoint() {
    let server = HubServer::start(vec![Repo::new(MODEL, SHA, files())]);
    let tmp = tempfile::tempdir().unwrap();
    let out = layout(&server, tmp.path());
    let addr = nothing_listening();
    let (o, took) = verify(
        &server,
        tmp.path(),
        &out,
        Some(&format!("http://{addr}")),
        None,
    );
    assert_refused(
        &o,
        &format!("cannot read from the Hub at http://{addr}: connection refused (nothing listens there); start the Hub or correct HF_ENDPOINT"),
    );
    // Before the check, the default retries (0.5 s doubling, 8 tries) took about a minute.
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// A plain-HTTP server that answers whatever arrives with `400 Bad Request` at once, as
/// one does to a TLS ClientHello; its address.
fn plain_http_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    addr
}

#[test]
fn verify_against_tls_on_a_plain_http_hub_says_the_handshake_failed() {
    let server = HubServer::start(vec![Repo::new(MODEL, SHA, files())]);
    let tmp = tempfile::tempdir().unwrap();
    let out = layout(&server, tmp.path());
    let https = format!("https://{}", plain_http_server());
    let (o, took) = verify(&server, tmp.path(), &out, Some(&https), None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let head = format!(
        "depotai: error: rebuilding {MODEL} at {SHA}: cannot read from the Hub at {https}: the TLS handshake failed ("
    );
    assert!(err.starts_with(&head), "{err}");
    assert!(
        err.ends_with(
            "); check HF_ENDPOINT (http:// for a plain-HTTP mirror) and the Hub's certificate\n"
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_refused_token_an_unknown_model_or_commit_costs_one_request_and_is_named() {
    let revision = format!("GET /api/models/{MODEL}/revision/{SHA}");
    let server = HubServer::start(vec![Repo::new(MODEL, SHA, files())]);
    let tmp = tempfile::tempdir().unwrap();
    let out = layout(&server, tmp.path());

    // A token the Hub does not know.
    server.clear_requests();
    let (o, _) = verify(&server, tmp.path(), &out, None, Some("hf_not_a_token"));
    assert_refused(
        &o,
        &format!("cannot read from the Hub at {}: the token from HF_TOKEN or the token file is refused (HTTP 401); fix or unset it", server.endpoint),
    );
    assert_eq!(log(&server), [revision.as_str()]);

    // A Hub without the model (it answers 401 RepoNotFound to an anonymous request).
    let empty = HubServer::start(vec![Repo::new("acme/other", SHA, files())]);
    let (o, _) = verify(&empty, tmp.path(), &out, None, None);
    assert_refused(
        &o,
        &format!("cannot read from the Hub at {}: model {MODEL} not found (HTTP 401) (if it is private or gated, set HF_TOKEN to a token that can read it)", empty.endpoint),
    );
    assert_eq!(log(&empty), [revision.as_str()]);

    // The model, but not at the image's commit.
    let moved = HubServer::start(vec![Repo::new(MODEL, OTHER_SHA, files())]);
    let (o, took) = verify(&moved, tmp.path(), &out, None, None);
    assert_refused(
        &o,
        &format!("cannot read from the Hub at {}: commit {SHA} not found in {MODEL} (HTTP 404); check the image's revision or --sha", moved.endpoint),
    );
    assert_eq!(log(&moved), [revision.as_str()]);
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // And the Hub that has it: checked, listed, rebuilt, verified.
    server.clear_requests();
    let (o, _) = verify(&server, tmp.path(), &out, None, None);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("verified sha256:"));
    let asked = log(&server);
    assert_eq!(asked[0], revision, "{asked:?}");
    assert!(
        asked[1..].iter().any(|r| r.contains("/tree/")),
        "the listing follows the check: {asked:?}"
    );
}

#[test]
fn verify_against_a_hub_name_that_does_not_resolve_says_dns() {
    let server = HubServer::start(vec![Repo::new(MODEL, SHA, files())]);
    let tmp = tempfile::tempdir().unwrap();
    let out = layout(&server, tmp.path());
    // `.invalid` never resolves (RFC 6761). No time bound: a resolver that cannot be
    // reached answers only after its own timeout.
    let (o, _) = verify(
        &server,
        tmp.path(),
        &out,
        Some("http://hub.depotai.invalid"),
        None,
    );
    assert_refused(
        &o,
        "cannot read from the Hub at http://hub.depotai.invalid: the host name hub.depotai.invalid does not resolve (DNS); check HF_ENDPOINT",
    );
}
