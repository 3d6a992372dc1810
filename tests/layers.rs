//! The layer plan (issue: layers that registries accept and new revisions reuse): one
//! eStargz layer per large file, the small files in one layer on top, a cap on the
//! number of layers, and `--max-layer-size` refused before anything is downloaded.
//!
//! Tests use small thresholds (`--own-layer-above 1MiB` or `16KiB`) so the same rules
//! run on small, quick fixtures.

mod support;

use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Output;
use std::sync::atomic::Ordering;
use support::hub::{depotai_against, Content, HubServer, Repo, RepoFile};
use support::interop::{checker, have, have_tools, oci_check, run_checked, Registry};
use support::registry::Proxy;
use support::*;

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SHA_C: &str = "cccccccccccccccccccccccccccccccccccccccc";
const SHA_OTHER: &str = "dddddddddddddddddddddddddddddddddddddddd";
const SHARD: u64 = 2 << 20;

fn json_of(o: &Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn digests(summary: &Value) -> Vec<String> {
    summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A three-shard model: `readme` and the seed of shard 2 vary between commits.
fn shards(readme: &str, shard2_seed: u64) -> Vec<RepoFile> {
    vec![
        RepoFile::regular("README.md", readme),
        RepoFile::regular("config.json", r#"{"model_type": "llama"}"#),
        RepoFile::lfs(
            "model-00001-of-00003.safetensors",
            Content::Generated {
                size: SHARD,
                seed: 1,
            },
        ),
        RepoFile::lfs(
            "model-00002-of-00003.safetensors",
            Content::Generated {
                size: SHARD,
                seed: shard2_seed,
            },
        ),
        RepoFile::lfs(
            "model-00003-of-00003.safetensors",
            Content::Generated {
                size: SHARD + 7,
                seed: 3,
            },
        ),
    ]
}

/// The Hub with `acme/model` at three commits (B changes only the README, C only shard
/// 2) and `other/model`, which shares shard 1 with it.
fn hub() -> HubServer {
    let mut repo = Repo::new("acme/model", SHA_A, shards("# v1\n", 2));
    repo.commits.push((SHA_B.into(), shards("# v2\n", 2)));
    repo.commits.push((SHA_C.into(), shards("# v1\n", 22)));
    let other = Repo::new(
        "other/model",
        SHA_OTHER,
        vec![
            RepoFile::regular("README.md", "another model"),
            RepoFile::lfs(
                "model-00001-of-00003.safetensors",
                Content::Generated {
                    size: SHARD,
                    seed: 1,
                },
            ),
        ],
    );
    HubServer::start(vec![repo, other])
}

fn build_from_hub(server: &HubServer, tmp: &Path, model: &str, sha: &str, extra: &[&str]) -> Value {
    let out = tmp.join(format!("out-{}-{sha}", model.replace('/', "-")));
    let o = depotai_against(server, &tmp.join("hf"))
        .args([
            "build",
            model,
            "--sha",
            sha,
            "--json",
            "--own-layer-above",
            "1MiB",
        ])
        .arg("--output")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    json_of(&o)
}

#[test]
fn large_file_layers_are_the_same_across_commits_and_models() {
    let server = hub();
    let tmp = tempfile::tempdir().unwrap();
    let a = build_from_hub(&server, tmp.path(), "acme/model", SHA_A, &[]);
    let b = build_from_hub(&server, tmp.path(), "acme/model", SHA_B, &[]);
    let c = build_from_hub(&server, tmp.path(), "acme/model", SHA_C, &[]);
    let (da, db, dc) = (digests(&a), digests(&b), digests(&c));
    assert_eq!(da.len(), 4, "three shards and the small files: {a:#}");
    let roles: Vec<&str> = a["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors",
            "small files"
        ]
    );
    assert_eq!(
        a["layers"][3]["files"],
        serde_json::json!(["README.md", "config.json"])
    );
    // Only the README changed: every large-file layer is the same.
    assert_eq!(da[..3], db[..3]);
    assert_ne!(da[3], db[3]);
    assert_ne!(a["index_digest"], b["index_digest"]);
    // Only shard 2 changed: only its layer differs (the small files are as in A).
    assert_eq!([&da[0], &da[2], &da[3]], [&dc[0], &dc[2], &dc[3]]);
    assert_ne!(da[1], dc[1]);
    // Another model, another commit, the same weights file: the same layer.
    let other = build_from_hub(&server, tmp.path(), "other/model", SHA_OTHER, &[]);
    assert_eq!(digests(&other)[0], da[0]);
}

/// `depotai push LAYOUT REF --json` through the counting proxy; the proxy's upload
/// byte count for this push.
fn push_counted(proxy: &Proxy, layout: &Path, reference: &str) -> (Value, u64) {
    let before = proxy.up_bytes.load(Ordering::SeqCst);
    let o = depotai()
        .arg("push")
        .arg(layout)
        .arg(reference)
        .args(["--insecure", "--json"])
        .env_remove("DEPOTAI_REGISTRY_USER")
        .env(
            "DEPOTAI_UPLOAD_STATE",
            layout.with_extension("upload-state"),
        )
        .output()
        .unwrap();
    let v = json_of(&o);
    (v, proxy.up_bytes.load(Ordering::SeqCst) - before)
}

/// The digest of the provenance statement a layout holds beside its image.
/// The blobs of the provenance referrer of `layout`: its statement and its config (which
/// names its subject, so every image has its own).
fn provenance_blobs(layout: &Path) -> [String; 2] {
    let top: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let referrer = &top["manifests"][1]["digest"].as_str().unwrap()[7..];
    let m: Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(referrer)).unwrap())
            .unwrap();
    [
        m["layers"][0]["digest"].as_str().unwrap().to_string(),
        m["config"]["digest"].as_str().unwrap().to_string(),
    ]
}

/// `depotai push LAYOUT REF --insecure --quiet`, which must succeed.
fn push_quiet(layout: &Path, reference: &str) {
    assert_ok(
        &depotai()
            .arg("push")
            .arg(layout)
            .arg(reference)
            .args(["--insecure", "--quiet"])
            .output()
            .unwrap(),
    );
}

fn uploaded(push: &Value) -> Vec<String> {
    push["push"]["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["action"] == "uploaded")
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pushing_a_new_revision_uploads_only_the_layers_that_changed() {
    if !have(&["docker-registry"]) {
        return;
    }
    let server = hub();
    let tmp = tempfile::tempdir().unwrap();
    let a = build_from_hub(&server, tmp.path(), "acme/model", SHA_A, &[]);
    let b = build_from_hub(&server, tmp.path(), "acme/model", SHA_B, &[]);
    let c = build_from_hub(&server, tmp.path(), "acme/model", SHA_C, &[]);
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let reference = format!("{}/acme/model:latest", proxy.addr);
    let path = |v: &Value| Path::new(v["output"].as_str().unwrap()).to_path_buf();

    let (_, first_bytes) = push_counted(&proxy, &path(&a), &reference);
    let total: u64 = a["stored_bytes"].as_u64().unwrap();
    assert!(first_bytes > total, "{first_bytes} <= {total}");

    // README changed: only the small-files layer and the documents go up.
    let (pb, b_bytes) = push_counted(&proxy, &path(&b), &reference);
    let small = &b["layers"][3];
    let mut want = vec![small["digest"].as_str().unwrap().to_string()];
    want.extend(
        b["config_digests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string()),
    );
    // And the new commit's provenance statement and its referrer's config.
    want.extend(provenance_blobs(&path(&b)));
    let mut got = uploaded(&pb);
    got.sort();
    want.sort();
    want.dedup();
    assert_eq!(got, want, "{pb:#}");
    let small_size = small["size"].as_u64().unwrap();
    assert!(
        b_bytes < small_size + 64 * 1024,
        "{b_bytes} bytes on the wire for a {small_size}-byte layer and documents"
    );
    eprintln!(
        "README change: {b_bytes} bytes uploaded of a {total}-byte image (first push {first_bytes})"
    );

    // Shard 2 changed: its layer (and the documents), not the small files (as in A).
    let (pc, c_bytes) = push_counted(&proxy, &path(&c), &reference);
    let got = uploaded(&pc);
    let changed = c["layers"][1]["digest"].as_str().unwrap();
    assert!(got.iter().any(|d| d == changed), "{pc:#}");
    for unchanged in [0, 2, 3] {
        let d = c["layers"][unchanged]["digest"].as_str().unwrap();
        assert!(
            !got.iter().any(|g| g == d),
            "layer {unchanged} re-sent: {pc:#}"
        );
    }
    let shard_layer = c["layers"][1]["size"].as_u64().unwrap();
    assert!(c_bytes < shard_layer + 64 * 1024, "{c_bytes}");
}

/// The bundled example with `model.safetensors` (16 KiB) in a layer of its own.
const PER_FILE_16K: [&str; 2] = ["--own-layer-above", "16KiB"];

fn layout_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path().strip_prefix(dir).unwrap().display().to_string(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_multi_layer_image_is_the_same_for_any_thread_count_and_matches_its_golden_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new("fixtures/tiny-model");
    let mut runs = Vec::new();
    for (i, threads) in ["1", "4", "4"].iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let mut flags = vec!["--json", "--threads", threads];
        flags.extend(PER_FILE_16K);
        let s = json_of(&build(fixture, "depotai/tiny-model", &out, &flags));
        runs.push((s, layout_files(&out)));
    }
    for (s, files) in &runs[1..] {
        assert_eq!(s["index_digest"], runs[0].0["index_digest"]);
        assert_eq!(files, &runs[0].1, "byte-identical layouts");
    }
    let s = &runs[0].0;
    let l = Layout::read(&tmp.path().join("out0"));
    assert_eq!(l.layer_digests.len(), 2);
    // The bottom layer holds the weights and nothing else but the landmark.
    let bottom = read_layer(&l.layer_blob(0));
    let names: Vec<&str> = bottom.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names,
        [
            ".no.prefetch.landmark",
            "model.safetensors",
            "stargz.index.json"
        ]
    );
    let top = read_layer(&l.layer_blob(1));
    assert!(top
        .entries
        .iter()
        .any(|e| e.path == "1_Pooling/config.json"));
    assert!(!top.entries.iter().any(|e| e.path == "model.safetensors"));
    // Each layer's annotations and diff ID are its own.
    for (n, layer) in l.manifests[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let blob = l.layer_blob(n);
        let toc = read_layer(&blob);
        assert_eq!(
            layer["annotations"]["containerd.io/snapshot/stargz/toc.digest"],
            sha256(&toc.toc_json).as_str()
        );
        assert_eq!(
            l.configs[0]["rootfs"]["diff_ids"][n],
            sha256(&toc.decompressed).as_str()
        );
    }

    let golden: Value =
        serde_json::from_slice(&fs::read("fixtures/tiny-model.per-file.golden.json").unwrap())
            .unwrap();
    assert_eq!(s["index_digest"], golden["index_digest"], "{s:#}");
    for (n, g) in golden["layers"].as_array().unwrap().iter().enumerate() {
        for key in ["role", "digest", "diff_id", "toc_digest", "size"] {
            assert_eq!(s["layers"][n][key], g[key], "layers[{n}].{key}");
        }
    }
}

#[test]
fn single_mode_keeps_the_one_layer_image_of_the_bundled_example() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new("fixtures/tiny-model");
    let single = json_of(&build(
        fixture,
        "depotai/tiny-model",
        &tmp.path().join("single"),
        &["--json", "--layers", "single", "--own-layer-above", "1K"],
    ));
    let golden: Value =
        serde_json::from_slice(&fs::read("fixtures/tiny-model.golden.json").unwrap()).unwrap();
    // The same layer; the index differs only in its io.depotai.settings annotation,
    // which records the other --layers settings.
    for key in ["digest", "diff_id", "toc_digest", "size"] {
        assert_eq!(single["layers"][0][key], golden["layer"][key], "{key}");
    }
    assert_ne!(single["index_digest"], golden["index_digest"]);
    assert_eq!(single["layers"].as_array().unwrap().len(), 1);
    assert_eq!(single["layers"][0]["role"], "all files");
}

#[test]
fn more_large_files_than_the_cap_share_layers_by_path_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..7 {
        write(&src, &format!("shard-{i}.bin"), &pseudo_random(70 << 10, i));
    }
    write(&src, "config.json", b"{}");
    let flags = ["--json", "--own-layer-above", "64KiB", "--max-layers", "4"];
    let s = json_of(&build(&src, "acme/many", &tmp.path().join("a"), &flags));
    let layers = s["layers"].as_array().unwrap();
    assert!(layers.len() <= 4, "{s:#}");
    assert_eq!(layers.last().unwrap()["role"], "small files");
    for l in &layers[..layers.len() - 1] {
        let role = l["role"].as_str().unwrap();
        let g: usize = role
            .strip_prefix("large-file group ")
            .unwrap_or_else(|| panic!("{role}"))
            .parse()
            .unwrap();
        for f in l["files"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            if f.ends_with(".landmark") {
                continue;
            }
            assert_eq!(depotai::plan::group_of(f, 3), g, "{f}");
        }
    }
    // One file changes: one layer changes.
    write(&src, "shard-3.bin", &pseudo_random(70 << 10, 99));
    let t = json_of(&build(&src, "acme/many", &tmp.path().join("b"), &flags));
    let (a, b) = (digests(&s), digests(&t));
    assert_eq!(a.len(), b.len());
    assert_eq!(a.iter().zip(&b).filter(|(x, y)| x != y).count(), 1);

    let o = build(
        &src,
        "acme/many",
        &tmp.path().join("c"),
        &["--max-layers", "1"],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--max-layers"), "{err}");
}

#[test]
fn a_plan_past_the_registry_limit_is_refused_before_any_download() {
    let server = hub();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = depotai_against(&server, &tmp.path().join("hf"))
        .args([
            "build",
            "acme/model",
            "--sha",
            SHA_A,
            "--max-layer-size",
            "2MB",
        ])
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("model-00001-of-00003.safetensors is 2.0 MiB (2097152 bytes), larger than the registry's layer limit of 1.9 MiB (2000000 bytes)"),
        "{err}"
    );
    assert!(err.contains("cannot be published"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let fetched: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/resolve/"))
        .map(|r| r.path)
        .collect();
    assert!(fetched.is_empty(), "no file was downloaded: {fetched:?}");
    assert!(!out.exists());

    // Small files over the limit: the message names the layer and what to change.
    let src = tmp.path().join("src");
    for i in 0..3 {
        write(&src, &format!("part-{i}.txt"), &pseudo_random(40 << 10, i));
    }
    let o = build(
        &src,
        "acme/m",
        &tmp.path().join("o2"),
        &["--max-layer-size", "100KiB"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the small files layer would hold 120.0 KiB (122880 bytes), more than the layer limit of 100.0 KiB (102400 bytes); lower --own-layer-above"),
        "{err}"
    );
    assert!(!tmp.path().join("o2").exists());
}

#[test]
fn multi_layer_layout_passes_oci_check_and_every_layer_the_reference_verifier() {
    if !have_tools(
        &["skopeo", "umoci", "oci-image-tool", "docker-registry"],
        &["estargz-check"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let fixture = Path::new("fixtures/tiny-model");
    let mut flags = vec!["--quiet"];
    flags.extend(PER_FILE_16K);
    assert_ok(&build(fixture, "acme/interop", &out, &flags));
    assert_eq!(Layout::read(&out).layer_digests.len(), 2);
    let work = tmp.path().join("check");
    fs::create_dir_all(&work).unwrap();
    let report = oci_check(&out, fixture, &work);
    assert_eq!(
        report.len(),
        8,
        "one line per step, two layers: {report:#?}"
    );
    assert!(report[6].starts_with("7.0 estargz-check"), "{report:#?}");
    assert!(report[7].starts_with("7.1 estargz-check"), "{report:#?}");
}

#[test]
fn zstd_chunked_layers_of_a_multi_layer_image_pass_the_reference_checker() {
    if !have_tools(&[], &["zstdchunked-check"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut flags = vec!["--quiet", "--format", "zstd-chunked"];
    flags.extend(PER_FILE_16K);
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "acme/z",
        &out,
        &flags,
    ));
    let l = Layout::read(&out);
    assert_eq!(l.layer_digests.len(), 2);
    for (n, desc) in l.manifests[0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let blob = tmp.path().join(format!("{n}.blob"));
        fs::write(&blob, l.layer_blob(n)).unwrap();
        let ann = tmp.path().join(format!("{n}.annotations.json"));
        fs::write(&ann, serde_json::to_vec(desc).unwrap()).unwrap();
        let line = run_checked(
            checker("zstdchunked-check")
                .arg("verify")
                .arg(&blob)
                .arg("--annotations")
                .arg(&ann)
                .arg("--diff-id")
                .arg(l.configs[0]["rootfs"]["diff_ids"][n].as_str().unwrap())
                .arg("--digest")
                .arg(&l.layer_digests[n])
                .arg("--require-tar-split"),
        );
        assert!(line.contains(r#""ok":true"#), "layer {n}: {line}");
    }
}

#[test]
fn buildah_copies_files_from_a_large_file_layer_and_from_the_small_files_layer() {
    if !have(&["docker-registry", "buildah", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let fixture = Path::new("fixtures/tiny-model");
    let mut flags = vec!["--quiet"];
    flags.extend(PER_FILE_16K);
    assert_ok(&build(fixture, "acme/tiny-model", &out, &flags));
    let reg = Registry::start();
    let reference = format!("{}/acme/tiny-model:v1", reg.addr);
    push_quiet(&out, &reference);
    // model.safetensors comes from the bottom layer, the others from the top one.
    support::interop::buildah_copies_tiny_model_files(&reference, fixture, &tmp.path().join("b"));
}

#[test]
fn ls_merges_every_layer_and_get_reads_only_the_layer_holding_the_file() {
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "config.json", br#"{"hidden_size": 384}"#);
    write(&src, "weights/a.bin", &pseudo_random(3 << 20, 1));
    write(&src, "weights/b.bin", &pseudo_random(3 << 20, 2));
    write(&src, "weights/notes.txt", b"small file beside the weights");
    let out = tmp.path().join("out");
    let s = json_of(&build(
        &src,
        "acme/m",
        &out,
        &["--json", "--own-layer-above", "1MiB"],
    ));
    assert_eq!(s["layers"].as_array().unwrap().len(), 3);
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let reference = format!("{}/acme/m:v1", proxy.addr);
    push_quiet(&out, &reference);

    let ls = json_of(
        &depotai()
            .args(["ls", &reference, "--insecure", "--json"])
            .output()
            .unwrap(),
    );
    let names: Vec<&str> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            ".no.prefetch.landmark",
            "config.json",
            "weights",
            "weights/a.bin",
            "weights/b.bin",
            "weights/notes.txt"
        ],
        "each path once, from every layer"
    );
    assert_eq!(ls["layers"].as_array().unwrap().len(), 3);
    // The layout it was pushed from lists the same, merged the same way, from disk.
    let local = json_of(&depotai().args(["ls", "--json"]).arg(&out).output().unwrap());
    assert_eq!(local["entries"], ls["entries"]);
    assert_eq!(local["layers"], ls["layers"]);

    for (path, layer) in [("weights/b.bin", 1), ("weights/notes.txt", 2)] {
        let dest = tmp.path().join(path.replace('/', "-"));
        let before = proxy.down_bytes.load(Ordering::SeqCst);
        let got = json_of(
            &depotai()
                .args(["get", &reference, path, "--insecure", "--json", "-o"])
                .arg(&dest)
                .output()
                .unwrap(),
        );
        assert_eq!(fs::read(&dest).unwrap(), fs::read(src.join(path)).unwrap());
        let from: Vec<&str> = got["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(from, [s["layers"][layer]["digest"].as_str().unwrap()]);
        // No byte of another layer's payload: TOCs and footers plus this file.
        let down = proxy.down_bytes.load(Ordering::SeqCst) - before;
        let file = fs::metadata(src.join(path)).unwrap().len();
        assert!(down < file + 128 * 1024, "{path}: {down} bytes for {file}");
        // And from the layout: the same bytes, from the same one layer.
        let dest = tmp.path().join(format!("local-{}", path.replace('/', "-")));
        let local = json_of(
            &depotai()
                .args(["get", "--json", "-o"])
                .arg(&dest)
                .arg(&out)
                .arg(path)
                .output()
                .unwrap(),
        );
        assert_eq!(fs::read(&dest).unwrap(), fs::read(src.join(path)).unwrap());
        assert_eq!(local["layers"], got["layers"]);
        assert!(local["fetched_bytes"].as_u64().unwrap() < file + 128 * 1024);
    }
}
