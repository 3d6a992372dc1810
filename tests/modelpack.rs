//! `--modelpack`: the CNCF ModelPack twin (model-spec v0.0.7) of a Hub build, checked
//! by a validator written from the spec's text (docs/spec.md, docs/config.md,
//! docs/annotations.md), not from our writer: in a layout, pushed to `docker-registry`
//! (and pulled back by `oras`), and pushed to a registry that refuses a referrer whose
//! subject is an image index (as ECR does), where the referrers go to each platform
//! manifest and `verify` and `inspect` still find them.
//!
//! Without `docker-registry` or `oras` those parts say SKIP and pass; with `CI=true` they
//! fail.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use support::forgetful::{Forgetful, Options};
use support::hub::{depotai_against, Content, Fault, HubServer, Repo, RepoFile};
use support::interop::{have, Registry};
use support::*;

const MODEL: &str = "acme/packed";
const MIB: u64 = 1 << 20;

fn repo_files() -> Vec<RepoFile> {
    vec![
        RepoFile::regular("config.json", br#"{"model_type": "llama"}"#.to_vec()),
        RepoFile::regular("tokenizer.json", pseudo_random(100 << 10, 5)),
        RepoFile::regular("README.md", b"# packed\n".to_vec()),
        RepoFile::regular("1_Pooling/config.json", b"{}".to_vec()),
        RepoFile::regular("empty.txt", Vec::new()),
        RepoFile::regular("notes.xyz", b"what is this".to_vec()),
        RepoFile::regular("modeling_packed.py", b"import torch\n".to_vec()),
        RepoFile::lfs(
            "model-00001-of-00002.safetensors",
            Content::Bytes(pseudo_random((2 * MIB + 77) as usize, 1)),
        ),
        RepoFile::lfs(
            "model-00002-of-00002.safetensors",
            Content::Generated {
                size: MIB + 5,
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
    fn new() -> Env {
        let files = repo_files();
        Env {
            tmp: tempfile::tempdir().unwrap(),
            server: HubServer::start(vec![Repo::new(MODEL, SHA, files.clone())]),
            files,
        }
    }

    fn depotai(&self) -> Command {
        let mut c = depotai_against(&self.server, &self.tmp.path().join("hf-home"));
        c.current_dir(self.tmp.path())
            .env("DEPOTAI_UPLOAD_STATE", self.tmp.path().join("upload-state"))
            .env_remove("DEPOTAI_REGISTRY_USER");
        c
    }

    /// `depotai build acme/packed --sha SHA --own-layer-above 1MiB --modelpack EXTRA…`.
    fn build(&self, extra: &[&str]) -> Command {
        let mut c = self.depotai();
        c.args(["build", MODEL, "--sha", SHA, "--own-layer-above", "1MiB"])
            .args(["--modelpack", "--json"])
            .args(extra);
        c
    }

    fn bytes(&self, path: &str) -> Vec<u8> {
        let f = self.files.iter().find(|f| f.path == path).unwrap();
        f.content.read(0, f.content.len() as usize)
    }

    /// The sha256 the Hub emulator publishes for an LFS file (its `X-Linked-Etag`
    /// and LFS pointer), else the sha256 of a regular file's bytes.
    fn hub_sha256(&self, path: &str) -> String {
        let f = self.files.iter().find(|f| f.path == path).unwrap();
        if f.lfs {
            format!("sha256:{}", f.content.sha256_hex())
        } else {
            sha256(&self.bytes(path))
        }
    }
}

fn json_of(o: &Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// The layer media types model-spec v0.0.7 lists, by kind, for unarchived files.
const RAW_TYPES: [&str; 5] = [
    "application/vnd.cncf.model.weight.v1.raw",
    "application/vnd.cncf.model.weight.config.v1.raw",
    "application/vnd.cncf.model.doc.v1.raw",
    "application/vnd.cncf.model.code.v1.raw",
    "application/vnd.cncf.model.dataset.v1.raw",
];

/// Checks a twin against model-spec v0.0.7 and against the Hub: the manifest's
/// `mediaType`, `artifactType` and config media type as spec.md requires them; every
/// layer raw, of a listed kind, annotated with `org.cncf.model.filepath` (annotations.md)
/// and `org.opencontainers.image.title` (what oras writes), its digest the Hub's sha256
/// of that file and its size the file's; the config (config.md) with `descriptor`
/// (`name`, `revision` = the commit, `sourceURL`, no `createdAt`), a `config` object and
/// `modelfs` `{type: layers, diffIds}` whose diff IDs are the layers' digests in order;
/// and `subject` the image index. Returns the path of each layer.
fn check_twin(env: &Env, manifest: &Value, config: &[u8], index_digest: &str) -> Vec<String> {
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.cncf.model.config.v1+json"
    );
    assert_eq!(manifest["config"]["digest"], sha256(config));
    assert_eq!(manifest["config"]["size"], config.len());
    assert_eq!(manifest["subject"]["digest"], index_digest);

    let cfg: Value = serde_json::from_slice(config).unwrap();
    let keys: Vec<&String> = cfg.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["config", "descriptor", "modelfs"],
        "the schema's three"
    );
    assert_eq!(cfg["descriptor"]["name"], MODEL);
    assert_eq!(cfg["descriptor"]["revision"], SHA);
    assert_eq!(
        cfg["descriptor"]["sourceURL"],
        format!("https://huggingface.co/{MODEL}")
    );
    assert!(
        cfg["descriptor"].get("createdAt").is_none(),
        "no creation time: {cfg}"
    );
    assert!(cfg["config"].is_object());
    assert_eq!(cfg["modelfs"]["type"], "layers");

    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = cfg["modelfs"]["diffIds"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len());
    let mut paths = Vec::new();
    for (l, diff_id) in layers.iter().zip(diff_ids) {
        let path = l["annotations"]["org.cncf.model.filepath"]
            .as_str()
            .unwrap_or_else(|| panic!("a layer without org.cncf.model.filepath: {l}"));
        assert_eq!(l["annotations"]["org.opencontainers.image.title"], path);
        let media_type = l["mediaType"].as_str().unwrap();
        assert!(RAW_TYPES.contains(&media_type), "{path}: {media_type}");
        assert_eq!(l["digest"], env.hub_sha256(path), "{path}");
        assert_eq!(l["size"], env.bytes(path).len(), "{path}");
        // An unarchived layer's content is the file: its diff ID is its digest.
        assert_eq!(*diff_id, l["digest"], "{path}");
        paths.push(path.to_string());
    }
    let mut want: Vec<String> = env.files.iter().map(|f| f.path.clone()).collect();
    want.sort();
    assert_eq!(paths, want, "every file, once, in path order");
    paths
}

fn layer_of<'a>(manifest: &'a Value, path: &str) -> &'a Value {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"]["org.cncf.model.filepath"] == path)
        .unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
}

/// Bytes of each file the Hub emulator sent (resolve and CDN answers with a body).
fn served_bytes(server: &HubServer) -> BTreeMap<String, u64> {
    let mut by_file = BTreeMap::new();
    for r in server.requests() {
        if r.method == "GET" && (r.status == 200 || r.status == 206) {
            if let Some(p) = r.file_path() {
                *by_file.entry(p).or_default() += r.body_len;
            }
        }
    }
    by_file
}

#[test]
fn a_layout_twin_has_a_raw_layer_per_file_whose_digest_is_the_hubs_sha256_and_each_file_is_read_once(
) {
    let env = Env::new();
    let out = env.tmp.path().join("layout");
    let built = json_of(
        &env.build(&["--no-cache", "--tag", "v1", "--output"])
            .arg(&out)
            .output()
            .unwrap(),
    );
    let index_digest = built["index_digest"].as_str().unwrap();
    let twin_digest = built["modelpack"]["digest"].as_str().unwrap();
    assert_eq!(built["modelpack"]["tag"], "v1-modelpack");

    // index.json names the twin by its own ref name, with its artifactType.
    let top: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let entry = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["digest"] == twin_digest)
        .expect("the twin is in index.json");
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "v1-modelpack"
    );
    assert_eq!(
        entry["artifactType"],
        "application/vnd.cncf.model.manifest.v1+json"
    );

    let manifest: Value = serde_json::from_slice(&blob(&out, twin_digest)).unwrap();
    let config = blob(&out, manifest["config"]["digest"].as_str().unwrap());
    check_twin(&env, &manifest, &config, index_digest);
    // Each raw blob in the layout is the file, byte for byte (the empty one too).
    for f in &env.files {
        let l = layer_of(&manifest, &f.path);
        assert_eq!(
            blob(&out, l["digest"].as_str().unwrap()),
            env.bytes(&f.path),
            "{}",
            f.path
        );
    }
    // Kinds as the spec names them; an unknown one is a weights configuration, marked.
    let kind = |p: &str| {
        layer_of(&manifest, p)["mediaType"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(kind("model-00001-of-00002.safetensors"), RAW_TYPES[0]);
    assert_eq!(kind("config.json"), RAW_TYPES[1]);
    assert_eq!(kind("README.md"), RAW_TYPES[2]);
    assert_eq!(kind("modeling_packed.py"), RAW_TYPES[3]);
    assert_eq!(kind("notes.xyz"), RAW_TYPES[1]);
    assert_eq!(
        layer_of(&manifest, "notes.xyz")["annotations"]["org.cncf.model.file.mediatype.untested"],
        "true"
    );
    assert!(layer_of(&manifest, "config.json")["annotations"]
        .get("org.cncf.model.file.mediatype.untested")
        .is_none());

    // The raw copies were teed from the one read of each file: the Hub sent each file's
    // bytes exactly once.
    let served = served_bytes(&env.server);
    for f in env.files.iter().filter(|f| !f.content.is_empty()) {
        assert_eq!(served.get(&f.path), Some(&f.content.len()), "{}", f.path);
    }

    // A second build gives the same twin, and without --modelpack there is none (and
    // the index records the setting, so it differs).
    let again = json_of(
        &env.build(&["--no-cache", "--tag", "v1", "--output"])
            .arg(env.tmp.path().join("again"))
            .output()
            .unwrap(),
    );
    assert_eq!(again["modelpack"]["digest"], twin_digest);
    assert_eq!(again["index_digest"], index_digest);
    let mut plain = env.depotai();
    plain
        .args([
            "build",
            MODEL,
            "--sha",
            SHA,
            "--own-layer-above",
            "1MiB",
            "--json",
        ])
        .args(["--no-cache", "--tag", "v1", "--output"])
        .arg(env.tmp.path().join("plain"));
    let plain = json_of(&plain.output().unwrap());
    assert!(plain.get("modelpack").is_none());
    assert_ne!(plain["index_digest"], index_digest);
}

fn registry_get(addr: &str, path: &str, accept: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&resp[9..12]).parse().unwrap();
    (status, resp[head_end + 4..].to_vec())
}

#[test]
fn a_pushed_twin_is_tagged_and_a_referrer_and_oras_pull_writes_exactly_the_models_files() {
    if !have(&["docker-registry"]) {
        return;
    }
    let env = Env::new();
    let reg = Registry::start();
    let reference = format!("{}/acme/packed:v1", reg.addr);
    let pushed = json_of(
        &env.build(&["--push", &reference, "--insecure", "--no-cache"])
            .output()
            .unwrap(),
    );
    let index_digest = pushed["index_digest"].as_str().unwrap();
    let twin_digest = pushed["modelpack"]["digest"].as_str().unwrap();
    // Found by name: its own tag.
    let (status, bytes) = registry_get(
        &reg.addr,
        "/v2/acme/packed/manifests/v1-modelpack",
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(status, 200);
    assert_eq!(sha256(&bytes), twin_digest);
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let (_, config) = registry_get(
        &reg.addr,
        &format!("/v2/acme/packed/blobs/{config_digest}"),
        "*/*",
    );
    check_twin(&env, &manifest, &config, index_digest);
    // Found from the image: listed as a referrer (the fallback tag, on a registry
    // without the referrers API), on the index.
    let referrers = pushed["push"]["referrers"].as_array().unwrap();
    let twin = referrers
        .iter()
        .find(|r| r["digest"] == twin_digest)
        .unwrap();
    assert_eq!(twin["subject"], index_digest);
    assert_eq!(twin["subject_kind"], "index");
    assert_eq!(twin["tag"], "v1-modelpack");
    let (_, fallback) = registry_get(
        &reg.addr,
        &format!(
            "/v2/acme/packed/manifests/sha256-{}",
            index_digest.strip_prefix("sha256:").unwrap()
        ),
        "application/vnd.oci.image.index.v1+json",
    );
    let fallback: Value = serde_json::from_slice(&fallback).unwrap();
    assert!(fallback["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["digest"] == twin_digest
            && d["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"));
    // The registry holds each raw layer as the file, byte for byte.
    for f in env.files.iter().filter(|f| !f.content.is_empty()) {
        let d = env.hub_sha256(&f.path);
        assert_eq!(
            std::fs::read(reg.blob_data(&d)).unwrap(),
            env.bytes(&f.path),
            "{}",
            f.path
        );
    }

    // `verify` rebuilds the twin too, and `inspect` names where it is.
    let mut c = env.depotai();
    c.args(["verify", &reference, "--insecure", "--json"]);
    let verified = json_of(&c.output().unwrap());
    assert_eq!(verified["result"], "verified", "{verified}");
    let mut c = env.depotai();
    c.args(["inspect", &reference, "--insecure", "--json"]);
    let inspected = json_of(&c.output().unwrap());
    assert_eq!(inspected["modelpack"]["digest"], twin_digest);
    assert_eq!(
        inspected["modelpack"]["found"],
        format!(
            "fallback tag sha256-{}",
            index_digest.strip_prefix("sha256:").unwrap()
        )
    );

    // `push` of a layout built with --modelpack tags the twin beside the pushed tag
    // (the layout's own tag is v1, the push's v2) and lists it as a referrer.
    let out = env.tmp.path().join("layout");
    json_of(
        &env.build(&["--no-cache", "--tag", "v1", "--output"])
            .arg(&out)
            .output()
            .unwrap(),
    );
    let mut c = env.depotai();
    c.arg("push")
        .arg(&out)
        .arg(format!("{}/acme/copied:v2", reg.addr))
        .args(["--insecure", "--json"]);
    let copied = json_of(&c.output().unwrap());
    let referrer = copied["push"]["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["digest"] == twin_digest)
        .unwrap_or_else(|| panic!("{copied}"));
    assert_eq!(referrer["tag"], "v2-modelpack");
    let (status, bytes) = registry_get(
        &reg.addr,
        "/v2/acme/copied/manifests/v2-modelpack",
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(status, 200);
    assert_eq!(sha256(&bytes), twin_digest);

    // oras, a client that knows nothing of depotai, pulls the twin by its tag and
    // writes exactly the model's files.
    let Some(oras) = support::interop::oras() else {
        return;
    };
    let pulled = env.tmp.path().join("pulled");
    let o = Command::new(oras)
        .args(["pull", "--plain-http", "-o"])
        .arg(&pulled)
        .arg(format!("{}/acme/packed:v1-modelpack", reg.addr))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "oras pull: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let want_dir = env.tmp.path().join("want");
    for f in &env.files {
        write(&want_dir, &f.path, &env.bytes(&f.path));
    }
    assert_eq!(
        support::interop::tree(&pulled),
        support::interop::tree(&want_dir)
    );
}

#[test]
fn a_registry_refusing_a_referrer_of_an_index_gets_them_on_each_platform_manifest_after_one_probe()
{
    let env = Env::new();
    let reg = Forgetful::start_opts(Options {
        refuse_index_subject: true,
        ..Options::default()
    });
    let reference = format!("{}/acme/packed:v1", reg.addr);
    let pushed = json_of(
        &env.build(&["--push", &reference, "--insecure", "--no-cache"])
            .output()
            .unwrap(),
    );
    let manifests: Vec<String> = pushed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(manifests.len(), 2, "linux/amd64 and linux/arm64");
    // The provenance and the twin, each on both platform manifests.
    let referrers = pushed["push"]["referrers"].as_array().unwrap();
    assert_eq!(referrers.len(), 4, "{referrers:?}");
    for r in referrers {
        assert_eq!(r["subject_kind"], "manifest", "{r}");
        assert!(manifests.iter().any(|m| r["subject"] == m.as_str()), "{r}");
        assert_eq!(r["referrers_api"], true, "{r}");
    }
    let kinds: Vec<&str> = referrers
        .iter()
        .map(|r| r["artifact_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "application/vnd.in-toto+json",
            "application/vnd.in-toto+json",
            "application/vnd.cncf.model.manifest.v1+json",
            "application/vnd.cncf.model.manifest.v1+json"
        ]
    );
    // One refusal: the first referrer probed, the rest went to the manifests at once.
    let refused: Vec<String> = reg
        .requests()
        .iter()
        .filter(|r| r.status == 405)
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    // The twin's tag names the linux/amd64 copy.
    let tagged = reg.tag("acme/packed", "v1-modelpack").unwrap();
    assert!(referrers
        .iter()
        .any(|r| r["digest"] == tagged.as_str() && r["subject"] == manifests[0].as_str()));

    // verify and inspect find the provenance (and the twin) on a platform manifest.
    let mut c = env.depotai();
    c.args(["verify", &reference, "--insecure", "--json"]);
    let verified = json_of(&c.output().unwrap());
    assert_eq!(verified["result"], "verified", "{verified}");
    assert_eq!(
        verified["verify"]["claim_from"],
        "provenance (referrers API of the linux/amd64 manifest)"
    );
    let mut c = env.depotai();
    c.args(["inspect", &reference, "--insecure", "--json"]);
    let inspected = json_of(&c.output().unwrap());
    assert_eq!(
        inspected["provenance"]["from"],
        "referrers API of the linux/amd64 manifest"
    );
    assert_eq!(inspected["modelpack"]["digest"], tagged.as_str());
    assert_eq!(inspected["name"], MODEL);
}

#[test]
fn a_tag_too_long_for_the_twins_is_refused_in_one_line_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-model");
    let tag = "t".repeat(119);
    let o = build(
        &fixture,
        "depotai/tiny-model",
        &out,
        &["--modelpack", "--tag", &tag],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&format!("{tag}-modelpack")), "{err}");
    assert!(err.contains("at most 118"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no .partial left"
    );
}

#[test]
fn build_all_with_modelpack_makes_each_twin_skips_it_when_whole_and_rebuilds_without_it_or_a_raw_blob(
) {
    let env = Env::new();
    let catalogue = env.tmp.path().join("models.yaml");
    std::fs::write(
        &catalogue,
        format!("models:\n  - name: {MODEL}\n    sha: {SHA}\n"),
    )
    .unwrap();
    let all = |extra: &[&str]| {
        let mut c = env.depotai();
        c.args(["build", "--all"])
            .arg(&catalogue)
            .args(["--own-layer-above", "1MiB", "--json", "--output"])
            .arg(env.tmp.path().join("out"))
            .args(extra);
        let report = json_of(&c.output().unwrap());
        let m = &report["models"][0];
        (
            m["result"].as_str().unwrap().to_string(),
            m["reason"].as_str().unwrap_or_default().to_string(),
        )
    };
    let layout = env.tmp.path().join("out/acme/packed");
    let twin = || -> Option<Value> {
        let top: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        top["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["artifactType"] == "application/vnd.cncf.model.manifest.v1+json")
            .cloned()
    };
    assert_eq!(all(&["--modelpack"]).0, "built");
    let entry = twin().expect("the twin is in the layout");
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "latest-modelpack"
    );
    assert_eq!(
        all(&["--modelpack"]),
        ("skipped".into(), "up to date".into())
    );
    // A raw layer gone from the layout: not whole, built again.
    let manifest: Value =
        serde_json::from_slice(&blob(&layout, entry["digest"].as_str().unwrap())).unwrap();
    let weights = layer_of(&manifest, "model-00002-of-00002.safetensors")["digest"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(layout.join("blobs/sha256").join(&weights[7..])).unwrap();
    let (status, reason) = all(&["--modelpack"]);
    assert_eq!(status, "built");
    assert!(
        reason.contains(&format!("sha256/{} is missing", &weights[7..])),
        "{reason}"
    );
    assert!(layout.join("blobs/sha256").join(&weights[7..]).is_file());
    // Without --modelpack the settings differ: built again, with no twin.
    assert_eq!(
        all(&[]),
        ("built".into(), "built with other settings".into())
    );
    assert!(twin().is_none());
}

#[test]
fn a_corrupted_byte_in_a_pushed_file_fails_its_raw_upload_and_the_refetch_sends_the_right_one() {
    let env = Env::new();
    let shard = "model-00001-of-00002.safetensors";
    env.server.inject(Fault::WrongBytes {
        path: shard.into(),
        times: 1,
    });
    let reg = Forgetful::start();
    let reference = format!("{}/acme/packed:v1", reg.addr);
    let pushed = json_of(
        &env.build(&["--push", &reference, "--insecure", "--no-cache"])
            .output()
            .unwrap(),
    );
    assert_eq!(pushed["refetched"], serde_json::json!([shard]));
    // The raw upload of the corrupted bytes was closed with the Hub's sha256 and refused
    // by the registry; the one after the refetch went in.
    assert_eq!(reg.digest_mismatches(), 1);
    let want = env.hub_sha256(shard);
    assert!(reg.blobs().contains_key(&want), "{want}");
    assert_eq!(
        reg.tag("acme/packed", "v1-modelpack").as_deref(),
        pushed["modelpack"]["digest"].as_str()
    );
}

#[test]
fn verify_names_a_twin_that_is_missing_or_not_the_rebuilds() {
    let env = Env::new();
    let out = env.tmp.path().join("layout");
    let built = json_of(
        &env.build(&["--no-cache", "--output"])
            .arg(&out)
            .output()
            .unwrap(),
    );
    let twin_digest = built["modelpack"]["digest"].as_str().unwrap().to_string();
    let verify = || {
        let mut c = env.depotai();
        c.arg("verify").arg(&out);
        c.output().unwrap()
    };
    let o = verify();
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("verified "));

    // A twin whose weights are called a dataset: another document, named.
    let index_json = out.join("index.json");
    let original = std::fs::read(&index_json).unwrap();
    let mut manifest: Value = serde_json::from_slice(&blob(&out, &twin_digest)).unwrap();
    manifest["layers"][0]["mediaType"] = "application/vnd.cncf.model.dataset.v1.raw".into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let forged = sha256(&bytes);
    std::fs::write(out.join("blobs/sha256").join(&forged[7..]), &bytes).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    std::fs::write(
        &index_json,
        text.replace(&twin_digest, &forged).replace(
            &format!("\"size\":{}", blob(&out, &twin_digest).len()),
            &format!("\"size\":{}", bytes.len()),
        ),
    )
    .unwrap();
    let o = verify();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "the ModelPack twin differs: the image has {forged}, the rebuild gives {twin_digest}"
        )),
        "{err}"
    );

    // No twin at all, though the settings say there is one.
    let mut top: Value = serde_json::from_slice(&original).unwrap();
    top["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["digest"] != twin_digest.as_str());
    std::fs::write(&index_json, serde_json::to_vec(&top).unwrap()).unwrap();
    let o = verify();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "the ModelPack twin differs: the image has none, the rebuild gives {twin_digest}"
        )),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
