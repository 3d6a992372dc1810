//! `--prefix DIR`: every file of the model under one directory of every layer (KServe's
//! `oci+native://` mounts `/models`), in both formats, with the golden digests of the
//! bundled example, what `ls` and `get` see, the recorded setting, the refusals, and
//! the reference checkers on every layer of a prefixed image.

mod support;

use serde_json::Value;
use std::fs;
use std::path::Path;
use support::interop::{checker, have_tools, oci_check_under, run_checked};
use support::*;

const TINY: &str = "fixtures/tiny-model";

fn golden(name: &str) -> Value {
    serde_json::from_slice(&fs::read(Path::new("fixtures").join(name)).unwrap()).unwrap()
}

fn summary(o: &std::process::Output) -> Value {
    assert_ok(o);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_prefixed_example_keeps_its_golden_digests_in_both_formats() {
    let tmp = tempfile::tempdir().unwrap();
    for (flags, file) in [
        (
            &["--prefix", "/models"][..],
            "tiny-model.prefix.golden.json",
        ),
        (
            &["--prefix", "/models", "--format", "zstd-chunked"][..],
            "tiny-model.prefix.zstd-chunked.golden.json",
        ),
    ] {
        let out = tmp.path().join(file);
        let mut args = vec!["--json"];
        args.extend_from_slice(flags);
        let s = summary(&build(Path::new(TINY), "depotai/tiny-model", &out, &args));
        let g = golden(file);
        assert_eq!(s["index_digest"], g["index_digest"], "{file}");
        for key in ["digest", "diff_id", "toc_digest", "size"] {
            assert_eq!(s["layers"][0][key], g["layer"][key], "{file}: layer.{key}");
        }
    }
    // `/models/` names the same directory, and no prefix is the unprefixed golden.
    let s = summary(&build(
        Path::new(TINY),
        "depotai/tiny-model",
        &tmp.path().join("slash"),
        &["--json", "--prefix", "/models/"],
    ));
    assert_eq!(
        s["index_digest"],
        golden("tiny-model.prefix.golden.json")["index_digest"]
    );
    assert_ne!(
        s["index_digest"],
        golden("tiny-model.golden.json")["index_digest"]
    );
}

#[test]
fn every_file_lies_under_the_prefix_with_its_directories_and_the_landmark_stays_at_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_ok(&build(
        Path::new(TINY),
        "depotai/tiny-model",
        &out,
        &["--quiet", "--prefix", "/opt/ml/model"],
    ));
    let layer = read_layer(&Layout::read(&out).blob);
    let names: Vec<&str> = layer.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names[..5],
        [
            ".no.prefetch.landmark",
            "opt/",
            "opt/ml/",
            "opt/ml/model/",
            "opt/ml/model/1_Pooling/"
        ]
    );
    assert!(layer
        .toc
        .entries
        .iter()
        .all(|e| { e.name == ".no.prefetch.landmark" || e.name.starts_with("opt/") }));
    // The prefix's directories are written as the writer writes any parent.
    for e in &layer.entries[1..4] {
        assert_eq!(
            (e.kind, e.mode, e.uid, e.gid, e.mtime),
            (tar::EntryType::Directory, 0o755, 0, 0, 0),
            "{}",
            e.path
        );
    }
    // Every file of the model, byte for byte, at its path under the prefix.
    let mut files = 0;
    for e in layer
        .entries
        .iter()
        .filter(|e| e.kind == tar::EntryType::Regular)
    {
        if [".no.prefetch.landmark", "stargz.index.json"].contains(&e.path.as_str()) {
            continue;
        }
        let rel = e.path.strip_prefix("opt/ml/model/").unwrap();
        assert_eq!(
            e.data,
            fs::read(Path::new(TINY).join(rel)).unwrap(),
            "{rel}"
        );
        files += 1;
    }
    assert_eq!(files, 9);

    // --prefetch names the model's paths; the prefix's directories come first, the
    // landmark after the prefetched file.
    let pf = tmp.path().join("pf");
    assert_ok(&build(
        Path::new(TINY),
        "depotai/tiny-model",
        &pf,
        &[
            "--quiet",
            "--prefix",
            "/models",
            "--prefetch",
            "config.json",
        ],
    ));
    let layer = read_layer(&Layout::read(&pf).blob);
    let names: Vec<&str> = layer.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "models/",
            "models/config.json",
            ".prefetch.landmark",
            "models/1_Pooling/"
        ]
    );
}

#[test]
fn ls_and_get_name_the_files_under_the_prefix_and_the_record_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_ok(&build(
        Path::new(TINY),
        "depotai/tiny-model",
        &out,
        &["--quiet", "--prefix", "/models", "--format", "zstd-chunked"],
    ));
    let ls = depotai().arg("ls").arg(&out).output().unwrap();
    assert_ok(&ls);
    let listing = String::from_utf8(ls.stdout).unwrap();
    assert!(listing.contains("85 B  /models/config.json\n"), "{listing}");
    assert!(!listing.contains(" /config.json"), "{listing}");
    let got = tmp.path().join("config.json");
    let o = depotai()
        .arg("get")
        .arg(&out)
        .arg("/models/config.json")
        .arg("-o")
        .arg(&got)
        .output()
        .unwrap();
    assert_ok(&o);
    assert_eq!(
        fs::read(&got).unwrap(),
        fs::read(Path::new(TINY).join("config.json")).unwrap()
    );
    let o = depotai()
        .arg("get")
        .arg(&out)
        .arg("/config.json")
        .arg("-o")
        .arg(tmp.path().join("nothing"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));

    // The provenance records the prefix with the settings (its files keep the Hub's
    // names); an unprefixed build's settings have no such key, so their digest on the
    // index is what it was before --prefix existed.
    let plain = tmp.path().join("plain");
    assert_ok(&build(
        Path::new(TINY),
        "depotai/tiny-model",
        &plain,
        &["--quiet"],
    ));
    let settings_of = |dir: &Path| {
        statement(dir)["predicate"]["buildDefinition"]["externalParameters"]["settings"].clone()
    };
    assert_eq!(settings_of(&out)["prefix"], "models");
    assert!(settings_of(&plain).get("prefix").is_none());
    let names: Vec<Value> = statement(&out)["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert!(names.contains(&Value::from("config.json")), "{names:?}");
    let settings =
        |dir: &Path| Layout::read(dir).index["annotations"]["io.depotai.settings"].clone();
    assert_ne!(settings(&out), settings(&plain));
}

#[test]
fn a_relative_dotted_or_reserved_prefix_is_refused_in_one_line_with_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    for (prefix, says) in [
        ("", "--prefix \"\" is not absolute: name the directory the files go under in the image, such as /models"),
        ("models", "--prefix \"models\" is not absolute: name the directory the files go under in the image, such as /models"),
        ("/models/../etc", "--prefix \"/models/../etc\" is not a directory an image may hold: empty, '.' or '..' component"),
        ("//models", "--prefix \"//models\" is not a directory an image may hold: absolute name"),
        ("/", "--prefix \"/\" is not a directory an image may hold: empty name"),
        ("/.wh.models", "--prefix \"/.wh.models\" is not a directory an image may hold: whiteout name"),
        ("/stargz.index.json/m", "--prefix \"/stargz.index.json/m\" starts with a name eStargz keeps at the root of every layer"),
    ] {
        let out = tmp.path().join("out");
        let o = build(Path::new(TINY), "acme/m", &out, &["--prefix", prefix]);
        assert_eq!(o.status.code(), Some(1), "{prefix}");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{prefix}: {err}");
        assert!(err.contains(says), "{prefix}: {err}");
        assert!(!out.exists(), "{prefix}: nothing written");
    }
}

/// The in-toto statement of the provenance referrer in `layout`.
fn statement(layout: &Path) -> Value {
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let referrer = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/vnd.in-toto+json")
        .expect("a provenance referrer");
    let manifest: Value = serde_json::from_slice(&Layout::blob_bytes(
        layout,
        referrer["digest"].as_str().unwrap(),
    ))
    .unwrap();
    serde_json::from_slice(&Layout::blob_bytes(
        layout,
        manifest["layers"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap()
}

/// `zstdchunked-check verify` of layer `i` of the first manifest of `layout`.
fn zstd_verify(tmp: &Path, layout: &Layout, i: usize) -> String {
    let desc = &layout.manifests[0]["layers"][i];
    let digest = desc["digest"].as_str().unwrap();
    let blob = tmp.join(format!("layer{i}.blob"));
    fs::write(&blob, layout.layer_blob(i)).unwrap();
    let ann = tmp.join(format!("layer{i}.annotations.json"));
    fs::write(&ann, serde_json::to_vec(&desc["annotations"]).unwrap()).unwrap();
    run_checked(
        checker("zstdchunked-check")
            .arg("verify")
            .arg(&blob)
            .arg("--annotations")
            .arg(&ann)
            .args([
                "--diff-id",
                layout.configs[0]["rootfs"]["diff_ids"][i].as_str().unwrap(),
            ])
            .args(["--digest", digest, "--require-tar-split"]),
    )
}

#[test]
fn reference_checkers_pass_every_layer_of_a_prefixed_image_in_both_formats() {
    if !have_tools(
        &["skopeo", "umoci", "docker-registry", "oci-image-tool"],
        &["estargz-check", "zstdchunked-check"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // model.safetensors (16 KiB) gets a layer of its own: two layers to check.
    let per_file = [
        "--quiet",
        "--prefix",
        "/models",
        "--own-layer-above",
        "8KiB",
    ];
    let out = tmp.path().join("estargz");
    assert_ok(&build(Path::new(TINY), "acme/prefixed", &out, &per_file));
    let work = tmp.path().join("check");
    fs::create_dir_all(&work).unwrap();
    let report = oci_check_under(&out, Path::new(TINY), &work, "models");
    assert_eq!(report.len(), 8, "{report:#?}");
    assert!(
        report[5].starts_with("6 unpacked tree == source"),
        "{report:#?}"
    );
    assert!(report[6].starts_with("7.0 estargz-check"), "{report:#?}");
    assert!(report[7].starts_with("7.1 estargz-check"), "{report:#?}");

    let out = tmp.path().join("zstd");
    let mut flags = per_file.to_vec();
    flags.extend(["--format", "zstd-chunked"]);
    assert_ok(&build(Path::new(TINY), "acme/prefixed", &out, &flags));
    let layout = Layout::read(&out);
    assert_eq!(layout.layer_digests.len(), 2);
    for i in 0..2 {
        let said = zstd_verify(tmp.path(), &layout, i);
        let line: Value = serde_json::from_str(said.lines().next().unwrap()).unwrap();
        assert_eq!(line["ok"], true, "layer {i}: {said}");
        assert_eq!(line["tar_split"], true, "layer {i}: {said}");
        // containers/storage applied the layer through ranged reads, as podman does.
        assert_eq!(
            line["containers_storage_reader"]["ok"], true,
            "layer {i}: {said}"
        );
    }
}

#[test]
fn a_hub_build_under_a_prefix_records_it_and_verify_rebuilds_the_same_image() {
    use support::hub::{depotai_against, Content, HubServer, Repo, RepoFile};
    const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let server = HubServer::start(vec![Repo::new(
        "acme/model",
        SHA_A,
        vec![
            RepoFile::regular("config.json", r#"{"model_type": "llama"}"#),
            RepoFile::lfs(
                "model.safetensors",
                Content::Generated {
                    size: 2 << 20,
                    seed: 1,
                },
            ),
        ],
    )]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let built = summary(
        &depotai_against(&server, &tmp.path().join("hf"))
            .args(["build", "acme/model", "--sha", SHA_A, "--json"])
            .args([
                "--own-layer-above",
                "1MiB",
                "--prefix",
                "/models",
                "--output",
            ])
            .arg(&out)
            .output()
            .unwrap(),
    );
    let record: Value =
        serde_json::from_slice(&fs::read(out.join("depotai-build.json")).unwrap()).unwrap();
    assert_eq!(record["settings"]["prefix"], "models");
    // The weights' own layer holds them under the prefix too.
    let ls = depotai().arg("ls").arg(&out).output().unwrap();
    assert_ok(&ls);
    let listing = String::from_utf8(ls.stdout).unwrap();
    assert!(
        listing.contains(" /models/model.safetensors\n"),
        "{listing}"
    );
    assert!(listing.contains(" /models/config.json\n"), "{listing}");

    // verify reads the prefix from the provenance's settings and rebuilds the same bytes.
    let o = depotai_against(&server, &tmp.path().join("hf-verify"))
        .arg("verify")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    let v = summary(&o);
    assert_eq!(v["result"], "verified", "{v:#}");
    assert_eq!(v["layers"].as_array().unwrap().len(), 2, "{v:#}");
    assert_eq!(
        Layout::read(&out).index_digest,
        built["index_digest"].as_str().unwrap()
    );
}
