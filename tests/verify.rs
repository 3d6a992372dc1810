//! Provenance and `verify` (issue: prove where an image came from): every build stores
//! an in-toto statement with a SLSA provenance v1 predicate as a referrer of its index;
//! `push` attaches it (fallback tag on registries without the referrers API); `serve`
//! lists it; `inspect` shows it; `verify` rebuilds from the Hub and names the first
//! difference.

mod support;

use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use support::hub::{
    depotai_against, generated_bytes, Content, Fault, HubServer, Origin, Repo, RepoFile,
};
use support::interop::{have, run_checked, skip_or_fail, Registry};
use support::*;

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHARD: u64 = 2 << 20;
const SHARD2: &str = "model-00002-of-00002.safetensors";

fn files(shard2_seed: u64) -> Vec<RepoFile> {
    vec![
        RepoFile::regular("README.md", "# a model\n"),
        RepoFile::regular("config.json", r#"{"model_type": "llama"}"#),
        RepoFile::lfs(
            "model-00001-of-00002.safetensors",
            Content::Generated {
                size: SHARD,
                seed: 1,
            },
        ),
        RepoFile::lfs(
            SHARD2,
            Content::Generated {
                size: SHARD,
                seed: shard2_seed,
            },
        ),
    ]
}

fn hub() -> HubServer {
    HubServer::start(vec![Repo::new("acme/model", SHA_A, files(2))])
}

fn json_of(o: &Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// `depotai build acme/model --sha A --own-layer-above 1MiB --output OUT`.
fn build_from_hub(server: &HubServer, tmp: &Path, out: &Path) -> Value {
    json_of(
        &depotai_against(server, &tmp.join("hf"))
            .args(["build", "acme/model", "--sha", SHA_A, "--json"])
            .args(["--own-layer-above", "1MiB", "--output"])
            .arg(out)
            .output()
            .unwrap(),
    )
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap()
}

/// The statement of the layout's provenance referrer, and the referrer's digest.
fn statement(layout: &Path) -> (Value, Vec<u8>, String) {
    let top = read_json(&layout.join("index.json"));
    let r = &top["manifests"][1];
    assert_eq!(r["artifactType"], "application/vnd.in-toto+json");
    let digest = r["digest"].as_str().unwrap().to_string();
    let m: Value = serde_json::from_slice(&blob(layout, &digest)).unwrap();
    assert_eq!(m["subject"]["digest"], top["manifests"][0]["digest"]);
    assert_eq!(
        m["subject"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let bytes = blob(layout, m["layers"][0]["digest"].as_str().unwrap());
    (serde_json::from_slice(&bytes).unwrap(), bytes, digest)
}

/// The python of `scripts/install-pytools.sh` (in-toto's own bindings), if it can be had.
fn pytools() -> Option<PathBuf> {
    let o = Command::new("bash")
        .arg("scripts/install-pytools.sh")
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    if !o.status.success() {
        skip_or_fail("scripts/install-pytools.sh failed (in-toto-attestation from PyPI)");
        return None;
    }
    Some(PathBuf::from(String::from_utf8(o.stdout).ok()?.trim()))
}

#[test]
fn the_layout_holds_a_deterministic_provenance_that_in_totos_bindings_accept() {
    let server = hub();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let s = build_from_hub(&server, tmp.path(), &out);
    let (st, bytes, referrer) = statement(&out);
    let index = s["index_digest"].as_str().unwrap();
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(st["subject"][0]["name"], "acme/model");
    assert_eq!(st["subject"][0]["digest"]["sha256"], &index[7..]);
    let def = &st["predicate"]["buildDefinition"];
    assert_eq!(def["externalParameters"]["model"], "acme/model");
    assert_eq!(def["externalParameters"]["revision"], SHA_A);
    assert_eq!(
        def["externalParameters"]["settings"]["own_layer_above"],
        1 << 20
    );
    let deps = def["resolvedDependencies"].as_array().unwrap();
    assert_eq!(
        deps[0],
        serde_json::json!({"uri": format!("git+https://huggingface.co/acme/model@{SHA_A}"),
                           "digest": {"gitCommit": SHA_A}, "name": "acme/model"})
    );
    let shard = deps.iter().find(|d| d["name"] == SHARD2).unwrap();
    assert_eq!(
        shard["uri"],
        format!("https://huggingface.co/acme/model/resolve/{SHA_A}/model%2D00002%2Dof%2D00002%2Esafetensors")
    );
    assert_eq!(
        shard["digest"]["sha256"],
        sha256_hex(&generated_bytes(2, 0, SHARD as usize))
    );
    assert_eq!(shard["annotations"]["size"], SHARD);
    let readme = deps.iter().find(|d| d["name"] == "README.md").unwrap();
    assert_eq!(readme["digest"]["sha256"], sha256_hex(b"# a model\n"));
    assert!(readme["digest"]["gitBlob"].is_string(), "{readme}");
    let byproducts = st["predicate"]["runDetails"]["byproducts"]
        .as_array()
        .unwrap();
    let layers = s["layers"].as_array().unwrap();
    assert_eq!(byproducts.len(), layers.len());
    for (b, l) in byproducts.iter().zip(layers) {
        assert_eq!(
            format!("sha256:{}", b["digest"]["sha256"].as_str().unwrap()),
            l["digest"]
        );
        assert_eq!(b["annotations"]["role"], l["role"]);
    }
    // No time, host or path in it: a second build writes the same bytes.
    let again = tmp.path().join("again");
    build_from_hub(&server, tmp.path(), &again);
    let (_, bytes2, referrer2) = statement(&again);
    assert_eq!(bytes, bytes2);
    assert_eq!(referrer, referrer2);

    // inspect shows it.
    let o = depotai().args(["inspect"]).arg(&out).output().unwrap();
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "hub       https://huggingface.co/acme/model/tree/{SHA_A}"
        )),
        "{text}"
    );
    assert!(text.contains(SHARD2), "{text}");
    let j = json_of(
        &depotai()
            .args(["inspect", "--json"])
            .arg(&out)
            .output()
            .unwrap(),
    );
    assert_eq!(j["name"], "acme/model");
    assert_eq!(j["sha"], SHA_A);
    assert_eq!(j["index_digest"], index);
    assert_eq!(j["provenance"]["files"].as_array().unwrap().len(), 4);
    assert_eq!(j["files"], 4);
    assert_eq!(j["layers"].as_array().unwrap().len(), 3);
    assert_eq!(j["settings"]["layers"], "per-file");

    // in-toto's own bindings accept the statement and the SLSA predicate.
    let Some(python) = pytools() else { return };
    let path = tmp.path().join("statement.json");
    fs::write(&path, &bytes).unwrap();
    let line = run_checked(
        Command::new(python)
            .arg("tests/tools/validate_provenance.py")
            .arg(&path),
    );
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["dependencies"], 5, "the commit and four files: {line}");
    assert_eq!(v["byproducts"], 3);
}

#[test]
fn a_layout_verifies_and_a_file_the_hub_serves_differently_is_named_with_its_layer() {
    let server = hub();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    build_from_hub(&server, tmp.path(), &out);
    let verify = |extra: &[&str]| {
        depotai_against(&server, &tmp.path().join("hf-verify"))
            .arg("verify")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = json_of(&verify(&["--json"]));
    assert_eq!(ok["result"], "verified", "{ok:#}");
    assert_eq!(ok["verify"]["claim_from"], "provenance (layout)");
    assert_eq!(ok["layers"].as_array().unwrap().len(), 3);
    // Streamed: nothing went into the cache it was given.
    assert!(!tmp.path().join("hf-verify/hub").exists());
    let o = verify(&[]);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("verified sha256:"));

    // The Hub now serves one changed byte of shard 2 at the same commit.
    server.inject(Fault::WrongBytes {
        path: SHARD2.into(),
        times: 1000,
    });
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        // Layers are numbered from 1: shard 2 is in the second.
        err.contains(&format!("file {SHARD2} (layer 2: {SHARD2}) differs")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let o = verify(&["--json"]);
    assert_eq!(o.status.code(), Some(1));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["result"], "failed");
    assert_eq!(j["verify"]["difference"]["kind"], "file");
    assert_eq!(j["verify"]["difference"]["path"], SHARD2);
    assert_eq!(j["verify"]["difference"]["layer"], 2);
}

fn push(layout: &Path, reference: &str) -> Value {
    json_of(
        &depotai()
            .arg("push")
            .arg(layout)
            .arg(reference)
            .args(["--insecure", "--json"])
            .env_remove("DEPOTAI_REGISTRY_USER")
            .output()
            .unwrap(),
    )
}

fn skopeo_copy(from: &str, to: &str) {
    run_checked(Command::new("skopeo").args([
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{from}"),
        &format!("docker://{to}"),
    ]));
}

#[test]
fn a_pushed_image_verifies_and_still_does_after_skopeo_copies_it_to_another_registry() {
    if !have(&["docker-registry", "skopeo"]) {
        return;
    }
    let server = hub();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let s = build_from_hub(&server, tmp.path(), &out);
    let index = s["index_digest"].as_str().unwrap();
    let (_, _, referrer) = statement(&out);
    let a = Registry::start();
    let reference = format!("{}/acme/model:latest", a.addr);
    let p = push(&out, &reference);
    // docker-registry 2.8 has no referrers API: the spec's fallback tag lists it.
    let fallback = format!("sha256-{}", &index[7..]);
    assert_eq!(p["push"]["referrers"][0]["digest"], referrer.as_str());
    assert_eq!(p["push"]["referrers"][0]["referrers_api"], false);
    assert_eq!(p["push"]["referrers"][0]["fallback_tag"], fallback.as_str());
    // skopeo reads the fallback tag: an index naming the referrer.
    let raw = run_checked(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/acme/model:{fallback}", a.addr),
    ]));
    let fallback_index: Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(fallback_index["manifests"][0]["digest"], referrer.as_str());
    assert_eq!(
        fallback_index["manifests"][0]["artifactType"],
        "application/vnd.in-toto+json"
    );
    // Pushing again adds nothing to the fallback index.
    push(&out, &reference);
    let raw = run_checked(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/acme/model:{fallback}", a.addr),
    ]));
    let again: Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(again["manifests"].as_array().unwrap().len(), 1);

    let verify = |reference: &str, extra: &[&str]| {
        depotai_against(&server, &tmp.path().join("hf-verify"))
            .args(["verify", reference, "--insecure", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let v = json_of(&verify(&reference, &[]));
    assert_eq!(v["result"], "verified", "{v:#}");
    assert_eq!(
        v["verify"]["claim_from"],
        format!("provenance (fallback tag {fallback})").as_str()
    );
    assert_eq!(v["index_digest"], index);

    // skopeo copies the image (not its referrers) to another registry: it verifies from
    // its annotations and the settings it was built with.
    let b = Registry::start();
    let copied = format!("{}/mirror/model:latest", b.addr);
    skopeo_copy(&reference, &copied);
    let o = verify(&copied, &[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the default settings give other layers"
    );
    let v = json_of(&verify(&copied, &["--setting", "own_layer_above=1MiB"]));
    assert_eq!(v["result"], "verified", "{v:#}");
    assert_eq!(v["verify"]["claim_from"], "annotations and settings");
    // (skopeo 1.9 cannot copy the fallback tag's index with --preserve-digests: "Manifest
    // list must be converted to type application/vnd.oci.image.index.v1+json", so the
    // mirror has no provenance and the settings are given.)
}

#[test]
fn a_registry_serving_a_different_layer_fails_verify_naming_that_layer() {
    if !have(&["docker-registry"]) {
        return;
    }
    let server = hub();
    let tmp = tempfile::tempdir().unwrap();
    build_from_hub(&server, tmp.path(), &tmp.path().join("good"));
    // The same files but shard 2, built as the same model and commit: a valid eStargz
    // image whose layer 2 is another one.
    let src = tmp.path().join("src");
    write(&src, "README.md", b"# a model\n");
    write(&src, "config.json", br#"{"model_type": "llama"}"#);
    write(
        &src,
        "model-00001-of-00002.safetensors",
        &generated_bytes(1, 0, SHARD as usize),
    );
    write(&src, SHARD2, &generated_bytes(9, 0, SHARD as usize));
    let bad = tmp.path().join("bad");
    let o = depotai()
        .args(["build", "--from-dir"])
        .arg(&src)
        .args(["--name", "acme/model", "--sha", SHA_A, "--quiet"])
        .args(["--own-layer-above", "1MiB", "--output"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_ok(&o);
    // Without its own provenance, the image is judged by its annotations.
    let mut top = read_json(&bad.join("index.json"));
    top["manifests"].as_array_mut().unwrap().truncate(1);
    fs::write(bad.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let reg = Registry::start();
    let reference = format!("{}/acme/model:latest", reg.addr);
    push(&bad, &reference);
    let o = depotai_against(&server, &tmp.path().join("hf-verify"))
        .args([
            "verify",
            &reference,
            "--insecure",
            "--setting",
            "own_layer_above=1MiB",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "layer 2 ({SHARD2}) differs: the image has sha256:"
        )),
        "{err}"
    );
}

/// One GET over plain HTTP/1.1: status, headers (lowercased names) and body.
fn http_get(addr: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

#[test]
fn serve_answers_the_referrers_api_with_artifact_type_filtering() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = root.join("acme/tiny-model");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "acme/tiny-model",
        &out,
        &["--quiet"],
    ));
    let l = Layout::read(&out);
    let (_, _, referrer) = statement(&out);
    let mut child = depotai()
        .args(["serve", "--quiet", "--addr", "127.0.0.1:0", "--root"])
        .arg(&root)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    let addr = first
        .trim()
        .rsplit_once("http://")
        .unwrap()
        .1
        .trim_end_matches('/')
        .to_string();
    let base = format!("/v2/acme/tiny-model/referrers/{}", l.index_digest);

    let (status, headers, body) = http_get(&addr, &base);
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/vnd.oci.image.index.v1+json"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], referrer.as_str());
    assert_eq!(
        v["manifests"][0]["artifactType"],
        "application/vnd.in-toto+json"
    );
    assert_eq!(
        v["manifests"][0]["annotations"]["in-toto.io/predicate-type"],
        "https://slsa.dev/provenance/v1"
    );

    let (_, headers, body) = http_get(
        &addr,
        &format!("{base}?artifactType=application%2Fvnd.in-toto%2Bjson"),
    );
    assert!(headers
        .iter()
        .any(|(k, v)| k == "oci-filters-applied" && v == "artifactType"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    let (_, _, body) = http_get(&addr, &format!("{base}?artifactType=application%2Fexample"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 0);
    // Another digest has no referrers; a malformed one is refused.
    let other = format!("/v2/acme/tiny-model/referrers/{}", l.layer_digest);
    let (status, _, body) = http_get(&addr, &other);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["manifests"],
        serde_json::json!([])
    );
    let (status, _, _) = http_get(&addr, "/v2/acme/tiny-model/referrers/sha256:nope");
    assert_eq!(status, 400);
    // The referrer and its statement are served like any blob of the image.
    let (status, _, body) = http_get(&addr, &format!("/v2/acme/tiny-model/manifests/{referrer}"));
    assert_eq!(status, 200);
    assert_eq!(sha256(&body), referrer);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn verify_fetches_a_file_that_fails_its_check_once_more_as_a_build_does() {
    let server = hub();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    build_from_hub(&server, tmp.path(), &out);
    // One bad answer for shard 2: the rebuild runs the build's job, which fetches the file
    // again and rebuilds its layer (a rebuild of its own would report a difference).
    server.inject(Fault::WrongBytes {
        path: SHARD2.into(),
        times: 1,
    });
    server.clear_requests();
    let v = json_of(
        &depotai_against(&server, &tmp.path().join("hf-verify"))
            .args(["verify", "--json"])
            .arg(&out)
            .output()
            .unwrap(),
    );
    assert_eq!(v["result"], "verified", "{v:#}");
    assert_eq!(v["verify"]["difference"], Value::Null);
    let from_cdn = |path: &str| {
        server
            .requests()
            .iter()
            .filter(|r| r.origin == Origin::Cdn && r.method == "GET")
            .filter(|r| r.file_path().as_deref() == Some(path))
            .count()
    };
    assert_eq!(from_cdn(SHARD2), 2, "{:?}", server.requests());
    assert_eq!(from_cdn("model-00001-of-00002.safetensors"), 1);
    // Both shards, shard 2 twice, and the two small files; nothing kept in the cache.
    let small = ("# a model\n".len() + r#"{"model_type": "llama"}"#.len()) as u64;
    assert_eq!(v["downloaded_bytes"], 3 * SHARD + small, "{v:#}");
    assert!(!tmp.path().join("hf-verify/hub").exists());
}
