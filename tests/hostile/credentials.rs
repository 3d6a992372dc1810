//! Credentials stay with their registry, and secrets are never printed (issue 22,
//! cases 1, 2 and 12). A registry that redirects a blob read, or hands out an upload
//! Location, to a second origin which challenges with a Bearer realm of its own must
//! not get the registry's user, password or token sent there, nor the second origin's
//! token sent back; a realm on plain HTTP elsewhere gets nothing; a user and password in
//! `HF_ENDPOINT`, and tokens in a URL's query, never reach a message.

use super::{assert_refused, config, files_under};
use crate::support::hostile::{depotai_bounded_env, estargz_layer, Guard, Hostile, Reply};
use crate::support::hub::{depotai_against, HubServer, Repo, RepoFile};
use depotai::remote::auth::base64_encode;
use serde_json::{json, Value};
use std::path::Path;

const USER: &str = "bob";
const PASSWORD: &str = "hunter2-PASS";
/// The token the registry's own realm hands out.
const REG_TOKEN: &str = "REG-TOKEN-7f3a";
/// The token the second origin's realm would hand out.
const OTHER_TOKEN: &str = "OTHER-TOKEN-c91e";
/// A storage host's signature in the redirect's query.
const SIGNATURE: &str = "SIGNED-5e2d";

fn basic() -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{USER}:{PASSWORD}").as_bytes())
    )
}

/// A registry that wants `Bearer REG_TOKEN`, issued by its own `/token` realm.
fn registry() -> Hostile {
    let reg = Hostile::start();
    reg.route(
        "/token",
        Reply::json(
            json!({ "token": REG_TOKEN }).to_string().into_bytes(),
            "application/json",
        ),
    );
    reg.guard(Guard {
        wanted: format!("Bearer {REG_TOKEN}"),
        challenge: format!(r#"Bearer realm="http://{}/token",service="reg""#, reg.addr),
        open: "/token".into(),
    });
    reg
}

/// A second origin that challenges every request with a Bearer realm of its own.
fn challenging_origin() -> Hostile {
    let other = Hostile::start();
    other.route(
        "/token",
        Reply::json(
            json!({ "token": OTHER_TOKEN }).to_string().into_bytes(),
            "application/json",
        ),
    );
    other.guard(Guard {
        wanted: format!("Bearer {OTHER_TOKEN}"),
        challenge: format!(
            r#"Bearer realm="http://{}/token",service="other""#,
            other.addr
        ),
        open: "/token".into(),
    });
    other
}

/// `depotai ARGS --insecure` with the registry credentials in the environment, in a
/// fresh directory.
fn run_with_credentials(args: &[&str]) -> ((std::process::Output, Option<u64>), tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let o = depotai_bounded_env(
        cwd.path(),
        args,
        &[
            ("DEPOTAI_REGISTRY_USER", USER),
            ("DEPOTAI_REGISTRY_PASSWORD", PASSWORD),
        ],
    );
    (o, cwd)
}

/// The second origin was sent none of the registry's secrets: no `Authorization` at all,
/// no password, no Basic value, no registry token, and its realm was never asked.
fn assert_saw_no_secrets(other: &Hostile) {
    let heads = other.heads();
    assert!(!heads.is_empty(), "the second origin was reached");
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        assert!(!lower.contains("authorization"), "{head}");
        for secret in [
            PASSWORD,
            &basic(),
            REG_TOKEN,
            &base64_encode(PASSWORD.as_bytes()),
        ] {
            assert!(
                !head.contains(secret),
                "{secret} sent to the second origin: {head}"
            );
        }
        assert!(
            !head.starts_with("GET /token"),
            "its realm was asked: {head}"
        );
    }
}

/// The registry got its credentials at its own realm (so they were in play) and never
/// the second origin's token.
fn assert_registry_kept_its_own(reg: &Hostile) {
    let heads = reg.heads();
    let to_realm: Vec<&String> = heads
        .iter()
        .filter(|h| h.starts_with("GET /token"))
        .collect();
    assert!(!to_realm.is_empty(), "the registry's realm was asked");
    for h in to_realm {
        assert!(h.contains(&basic()), "the realm got the credentials: {h}");
    }
    assert!(heads
        .iter()
        .any(|h| h.contains(&format!("Bearer {REG_TOKEN}"))));
    assert!(!heads.iter().any(|h| h.contains(OTHER_TOKEN)));
}

/// stderr holds none of the secrets, in any form.
fn assert_no_secret_printed(text: &str) {
    for secret in [PASSWORD, &basic(), REG_TOKEN, OTHER_TOKEN, SIGNATURE] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
}

/// An image whose blob reads the registry redirects (307) to `other`'s `/storage/blob`
/// with a signed query.
fn redirected_image(reg: &Hostile, other: &Hostile) -> (String, crate::support::hostile::Layer) {
    let layer = estargz_layer(&[config()], |_, _| {});
    let r = reg.manifest("acme/m", &layer.manifest());
    reg.route(
        &format!("/v2/acme/m/blobs/{}", layer.digest),
        Reply::status(
            307,
            vec![(
                "Location".into(),
                format!(
                    "http://{}/storage/blob?X-Amz-Signature={SIGNATURE}&digest={}",
                    other.addr, layer.digest
                ),
            )],
        ),
    );
    (r, layer)
}

#[test]
fn a_blob_read_redirected_to_an_origin_that_challenges_fails_without_sending_it_any_credential() {
    let (reg, other) = (registry(), challenging_origin());
    let (r, _) = redirected_image(&reg, &other);
    let want = format!(
        "http://{}/storage/blob?X-Amz-Signature=***&digest=sha256:",
        other.addr
    );
    for args in [
        vec!["ls", r.as_str(), "--insecure"],
        vec![
            "get",
            r.as_str(),
            "/config.json",
            "--insecure",
            "-o",
            "out/c",
        ],
    ] {
        let (o, cwd) = run_with_credentials(&args);
        assert_refused(&o, cwd.path(), &want);
        let err = String::from_utf8_lossy(&o.0.stderr);
        assert!(
            err.contains(
                "HTTP 401 from a server the registry sent us to; registry credentials go only to the registry and to the token realm its own 401 names"
            ),
            "{err}"
        );
        assert_no_secret_printed(&err);
    }
    assert_saw_no_secrets(&other);
    assert_registry_kept_its_own(&reg);
}

#[test]
fn a_blob_read_redirected_to_a_storage_host_succeeds_without_the_registrys_credentials() {
    let reg = registry();
    let storage = Hostile::start();
    let (r, layer) = redirected_image(&reg, &storage);
    storage.route("/storage/blob", Reply::blob(layer.blob.clone()));
    let (o, cwd) = run_with_credentials(&["get", &r, "/config.json", "--insecure", "-o", "c"]);
    let err = String::from_utf8_lossy(&o.0.stderr);
    assert_eq!(o.0.status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read(cwd.path().join("c")).unwrap(), config().1);
    // The redirect was followed as given (the signature is the storage host's own
    // authorisation) and the registry's Authorization stayed behind.
    let heads = storage.heads();
    assert!(heads
        .iter()
        .all(|h| h.contains(&format!("X-Amz-Signature={SIGNATURE}"))));
    assert_saw_no_secrets(&storage);
    assert_registry_kept_its_own(&reg);
}

#[test]
fn an_upload_location_on_an_origin_that_challenges_gets_no_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    crate::support::assert_ok(&crate::support::build(
        Path::new("fixtures/tiny-model"),
        "acme/m",
        &layout,
        &["--quiet"],
    ));
    let (reg, other) = (registry(), challenging_origin());
    reg.route(
        "/v2/acme/m/blobs/uploads/",
        Reply::status(
            202,
            vec![(
                "Location".into(),
                format!("http://{}/upload/1?_state=STATE-{SIGNATURE}", other.addr),
            )],
        ),
    );
    let reference = format!("{}/acme/m:latest", reg.addr);
    let (o, _cwd) = run_with_credentials(&[
        "push",
        layout.to_str().unwrap(),
        &reference,
        "--insecure",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.0.stderr);
    assert_eq!(o.0.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "http://{}/upload/1?_state=***&digest=sha256%3A",
            other.addr
        )),
        "{err}"
    );
    assert!(
        err.contains("HTTP 401 from a server the registry sent us to"),
        "{err}"
    );
    assert_no_secret_printed(&err);
    assert!(o.0.stdout.is_empty(), "no --json report of a failed push");
    // The upload went there (a PUT with the blob), without any credential.
    assert!(other
        .heads()
        .iter()
        .any(|h| h.starts_with("PUT /upload/1?")));
    assert_saw_no_secrets(&other);
    assert_registry_kept_its_own(&reg);
}

#[test]
fn a_token_realm_on_plain_http_at_another_host_is_refused_before_it_is_asked() {
    let reg = Hostile::start();
    let realm_host = Hostile::start();
    // `localhost` is another host than `127.0.0.1`, whatever the port.
    let port = realm_host.addr.rsplit_once(':').unwrap().1;
    let realm = format!("http://localhost:{port}/token");
    reg.guard(Guard {
        wanted: format!("Bearer {REG_TOKEN}"),
        challenge: format!(r#"Bearer realm="{realm}?account={USER}",service="reg""#),
        open: "/token".into(),
    });
    let r = format!("{}/acme/m:latest", reg.addr);
    let (o, cwd) = run_with_credentials(&["ls", &r, "--insecure"]);
    assert_refused(
        &o,
        cwd.path(),
        &format!(
            "bearer realm {realm}?account=*** of http://{}/ is not HTTPS: credentials go over plain HTTP only to the registry's own host, and only with --insecure",
            reg.addr
        ),
    );
    assert!(realm_host.heads().is_empty(), "{:?}", realm_host.heads());
}

#[test]
fn a_reference_with_a_user_and_password_is_refused_without_printing_them() {
    let (o, cwd) = run_with_credentials(&["ls", &format!("{USER}:{PASSWORD}@127.0.0.1:9/acme/m")]);
    assert_refused(
        &o,
        cwd.path(),
        "invalid image reference \"***@127.0.0.1:9/acme/m\": a reference names no user or password; pass --username with --password-stdin",
    );
    assert_no_secret_printed(&String::from_utf8_lossy(&o.0.stderr));
}

// ---- HF_ENDPOINT ----

const HUB_SHA: &str = "2222222222222222222222222222222222222222";

/// `HF_ENDPOINT` with `bob:PASSWORD@` written into it.
fn with_userinfo(endpoint: &str) -> String {
    endpoint.replacen("://", &format!("://{USER}:{PASSWORD}@"), 1)
}

/// `depotai ARGS` against `server` with `HF_ENDPOINT` = `endpoint`.
fn hub_run(
    server: &HubServer,
    endpoint: &str,
    args: &[&str],
) -> (std::process::Output, tempfile::TempDir) {
    let cwd = tempfile::tempdir().unwrap();
    let mut c = depotai_against(server, &cwd.path().join("hf-home"));
    let o = c
        .args(args)
        .current_dir(cwd.path())
        .env("HOME", cwd.path())
        .env("HF_ENDPOINT", endpoint)
        .output()
        .unwrap();
    (o, cwd)
}

fn hub() -> HubServer {
    HubServer::start(vec![Repo::new(
        "acme/model",
        HUB_SHA,
        vec![RepoFile::regular("config.json", "{}\n")],
    )])
}

#[test]
fn hf_endpoint_credentials_go_to_the_hub_only_and_never_into_a_message() {
    let server = hub();
    let (o, cwd) = hub_run(
        &server,
        &with_userinfo(&server.endpoint),
        &["build", "acme/model", "--sha", HUB_SHA, "--output", "out/m"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    // The emulator, like the Hub, refuses Basic auth: the model is "not found".
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "model acme/model not found on {} (",
            server.endpoint
        )),
        "{err}"
    );
    assert_no_secret_printed(&err);
    assert!(!err.contains(&format!("{USER}:")), "{err}");
    assert!(files_under(&cwd.path().join("out")).is_empty());
    // They went to the Hub, as Basic auth, and only there.
    let requests = server.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.authorization.as_deref(), Some(basic().as_str()), "{r:?}");
        assert!(!r.path.contains(PASSWORD), "{r:?}");
    }
}

#[test]
fn hf_endpoint_credentials_stay_out_of_an_unreachable_hubs_message_and_the_json_report() {
    let server = hub();
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let endpoint = format!("http://{USER}:{PASSWORD}@{closed}");
    let (o, _cwd) = hub_run(
        &server,
        &endpoint,
        &["build", "acme/model", "--sha", HUB_SHA, "--output", "out/m"],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("http://{closed}/api/models/acme/model")),
        "{err}"
    );
    assert!(err.contains("connection failed"), "{err}");
    assert_no_secret_printed(&err);
    assert!(!err.contains(&format!("{USER}:")), "{err}");

    // `build --all --json`: the failure is in the report, redacted.
    let cwd = tempfile::tempdir().unwrap();
    let cat = cwd.path().join("models.yaml");
    std::fs::write(
        &cat,
        format!("models:\n  - name: acme/model\n    sha: {HUB_SHA}\n    tagAs: latest\n"),
    )
    .unwrap();
    let (o, _cwd) = hub_run(
        &server,
        &endpoint,
        &[
            "build",
            "--all",
            cat.to_str().unwrap(),
            "--output",
            "out",
            "--json",
        ],
    );
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(1), "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let error = report["models"][0]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("http://{closed}/api/models/acme/model")),
        "{error}"
    );
    assert_no_secret_printed(&out);
    assert_no_secret_printed(&err);
    assert!(!out.contains(&format!("{USER}:")), "{out}");
}
