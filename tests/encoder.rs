//! `--encoder isal` and `--compression-level 0`: golden digests, the same bytes with any
//! thread count, what the layer says about its encoder, the refusal on CPUs where
//! ISA-L's bytes differ, and (with the interop tools) the reference eStargz verifier and
//! a buildah `COPY --from` reading such layers. ISA-L's own tests run on x86-64 with the
//! feature `isal` only.
// Without ISA-L (another CPU, or the feature `isal` off) its tests and their helpers are left out.
#![cfg_attr(
    not(all(target_arch = "x86_64", feature = "isal")),
    allow(unused_imports, dead_code)
)]

mod support;

use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::hub::{Content, HubServer, Repo, RepoFile};
use support::interop::{
    buildah_copies_tiny_model_files, checker, have, have_tools, run_checked, Registry,
};
use support::*;

const TINY: &str = "fixtures/tiny-model";
const ENCODER_ANNOTATION: &str = "dev.depotai.layer.encoder";

fn golden(name: &str) -> Value {
    serde_json::from_slice(&fs::read(format!("fixtures/{name}")).unwrap()).unwrap()
}

fn build_json(src: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut flags = vec!["--json"];
    flags.extend_from_slice(extra);
    let o = build(src, "depotai/tiny-model", out, &flags);
    assert_ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn assert_golden(summary: &Value, golden: &Value) {
    assert_eq!(summary["index_digest"], golden["index_digest"]);
    for key in ["digest", "diff_id", "toc_digest", "size"] {
        assert_eq!(
            summary["layers"][0][key], golden["layer"][key],
            "layer.{key}"
        );
    }
}

fn weights_tree(root: &Path) {
    write(
        root,
        "config.json",
        br#"{"model_type": "bert", "hidden_size": 384}"#,
    );
    write(root, "model.safetensors", &weights_like(3 << 20, 11));
    let vocab: String = (0..20_000).map(|i| format!("\"tok{i}\": {i},\n")).collect();
    write(root, "tokenizer.json", vocab.as_bytes());
    write(
        root,
        "1_Pooling/config.json",
        br#"{"pooling_mode_mean_tokens": true}"#,
    );
}

/// The tar stream's files (path, bytes) without the TOC, which holds offsets.
fn files_of(blob: &[u8]) -> Vec<(String, Vec<u8>)> {
    read_layer(blob)
        .entries
        .into_iter()
        .filter(|e| e.path != "stargz.index.json")
        .map(|e| (e.path, e.data))
        .collect()
}

// ISA-L is offered (and built) on x86-64 only.
#[cfg(all(target_arch = "x86_64", feature = "isal"))]
#[test]
fn isal_golden_digests_of_the_bundled_example_are_unchanged() {
    // If this fails after a dependency update, ISA-L's output changed: every image built
    // with --encoder isal would get new digests, so it must be a deliberate decision.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let s = build_json(Path::new(TINY), &out, &["--encoder", "isal"]);
    assert_golden(&s, &golden("tiny-model.isal.golden.json"));
    assert_eq!(s["settings"]["encoder"], "isal");
    assert_eq!(s["settings"]["compression_level"], 2);
    let l = Layout::read(&out);
    assert_eq!(l.layer_annotation(ENCODER_ANNOTATION), "isal-2");
    // Same files as libdeflate's layer; only the compressed bytes differ.
    let lib = tmp.path().join("lib");
    build_json(Path::new(TINY), &lib, &[]);
    let lib = Layout::read(&lib);
    assert_eq!(files_of(&l.blob), files_of(&lib.blob));
    assert_ne!(l.layer_digest, lib.layer_digest);
    // Every member starts with the header libdeflate writes at level 1.
    for e in read_layer(&l.blob)
        .toc
        .entries
        .iter()
        .filter(|e| e.offset > 0)
    {
        let at = e.offset as usize;
        assert_eq!(
            l.blob[at..at + 10],
            [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff],
            "{}",
            e.name
        );
    }
    // The default encoder's layer names no encoder: its bytes are as before.
    assert!(lib.manifests[0]["layers"][0]["annotations"]
        .get(ENCODER_ANNOTATION)
        .is_none());
}

#[test]
fn level_0_golden_digests_are_unchanged_and_every_member_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let s = build_json(Path::new(TINY), &out, &["--compression-level", "0"]);
    assert_golden(&s, &golden("tiny-model.level0.golden.json"));
    assert_eq!(s["settings"]["encoder"], "libdeflate");
    assert_eq!(s["settings"]["compression_level"], 0);
    let l = Layout::read(&out);
    let layer = read_layer(&l.blob);
    // Each member's first deflate block is a final stored block (BFINAL 1, BTYPE 00)
    // holding the member's bytes as they are: LEN and its complement follow.
    let mut offsets: Vec<u64> = layer.toc.entries.iter().map(|e| e.offset).collect();
    offsets.push(layer.toc_offset);
    offsets.retain(|&o| o > 0);
    offsets.dedup();
    assert!(offsets.len() >= 5, "{offsets:?}");
    for at in offsets {
        let m = &l.blob[at as usize..];
        assert_eq!(m[..10], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff]);
        assert_eq!(m[10] & 0b111, 0b001, "stored final block at {at}");
        let len = u16::from_le_bytes([m[11], m[12]]);
        let nlen = u16::from_le_bytes([m[13], m[14]]);
        assert_eq!(len, !nlen);
        assert_eq!(gunzip_member(&l.blob, at).len(), len as usize);
    }
    // Stored: the blob is the tar plus 23 bytes of framing per member, and the footer.
    assert!(l.blob.len() as u64 > s["layers"][0]["uncompressed_size"].as_u64().unwrap());
    assert_eq!(
        layer.decompressed.len() as u64,
        s["layers"][0]["uncompressed_size"]
    );
}

// ISA-L is offered (and built) on x86-64 only.
#[cfg(all(target_arch = "x86_64", feature = "isal"))]
#[test]
fn isal_output_is_identical_with_one_and_several_threads_and_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    weights_tree(&src);
    let mut digests = Vec::new();
    for level in ["1", "2"] {
        let mut runs = Vec::new();
        for threads in ["1", "2", "4"] {
            let out = tmp.path().join(format!("out-{level}-{threads}"));
            let s = build_json(
                &src,
                &out,
                &[
                    "--encoder",
                    "isal",
                    "--compression-level",
                    level,
                    "--chunk-size",
                    "256KiB",
                    "--threads",
                    threads,
                ],
            );
            runs.push((
                s["index_digest"].clone(),
                fs::read(Layout::read(&out).dir.join("index.json")).unwrap(),
            ));
            if threads == "1" {
                let l = Layout::read(&out);
                assert!(read_layer(&l.blob).toc.entries.len() >= 16);
                digests.push((
                    level,
                    s["layers"][0]["digest"].clone(),
                    s["layers"][0]["size"].clone(),
                ));
            }
        }
        assert!(
            runs.iter().all(|r| r == &runs[0]),
            "level {level}: same bytes with 1, 2 and 4 threads"
        );
    }
    // Pinned, like the bundled example: larger members, where ISA-L's block splitting
    // and its fall-back to stored blocks both matter.
    let g = golden("tiny-model.isal.golden.json");
    for (level, digest, size) in digests {
        let want = &g["weights_like"][format!("level{level}")];
        assert_eq!(&digest, &want["digest"], "level {level}");
        assert_eq!(&size, &want["size"], "level {level}");
    }
    // And the files read back are the source's.
    let l = Layout::read(&tmp.path().join("out-2-4"));
    let files = files_of(&l.blob);
    let model = files
        .iter()
        .find(|(p, _)| p == "model.safetensors")
        .unwrap();
    assert_eq!(model.1, fs::read(src.join("model.safetensors")).unwrap());
}

fn refused(extra: &[&str], cpu: &str) -> (Option<i32>, String, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut c = depotai();
    c.env("DEPOTAI_FORCE_CPU", cpu).arg("build").args(extra);
    if !extra.contains(&"--all") {
        c.args([
            "--from-dir",
            TINY,
            "--name",
            "acme/m",
            "--sha",
            SHA,
            "--output",
        ])
        .arg(&out);
    }
    let o = c.output().unwrap();
    (
        o.status.code(),
        String::from_utf8(o.stderr).unwrap(),
        out,
        tmp,
    )
}

// Without the cargo feature, ISA-L is not compiled in (a plain `cargo install` needs no
// nasm): the encoder is refused up front with how to get it, and nothing is written.
#[cfg(all(target_arch = "x86_64", not(feature = "isal")))]
#[test]
fn without_the_isal_feature_the_encoder_is_refused_with_how_to_get_it() {
    let (code, err, out, _t) = refused(&["--encoder", "isal"], "native");
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "depotai: error: --encoder isal is not in this build of depotai: build it with the cargo feature `isal` (`cargo install --path . --features isal`; ISA-L needs nasm and autotools, see scripts/setup-build-deps.sh)\n"
    );
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn isal_is_refused_up_front_on_cpus_whose_output_differs() {
    let generic = "depotai: error: --encoder isal needs an x86-64 CPU with SSE4.2: without it ISA-L's output differs, so the digests would not be reproducible (use --encoder libdeflate)\n";
    let (code, err, out, _t) = refused(&["--encoder", "isal"], "generic");
    assert_eq!((code, err.as_str()), (Some(1), generic));
    assert!(!out.exists(), "nothing is written");
    let (code, err, _, _t) = refused(&["--encoder", "isal"], "arm64");
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "depotai: error: --encoder isal runs on x86-64 only: ISA-L's output on aarch64 differs, so the digests would not be reproducible (use --encoder libdeflate)\n"
    );
    // build --all refuses before it reads the catalogue (or downloads anything).
    let (code, err, _, _t) = refused(
        &["--all", "/nonexistent/models.yaml", "--encoder", "isal"],
        "generic",
    );
    assert_eq!((code, err.as_str()), (Some(1), generic));
    // libdeflate's bytes are the same on every CPU: never refused.
    let (code, err, out, _t) = refused(&["--quiet"], "generic");
    assert_eq!((code, err.as_str()), (Some(0), ""));
    assert_eq!(
        Layout::read(&out).layer_digest,
        golden("tiny-model.golden.json")["layer"]["digest"]
    );
    let (code, err, _, _t) = refused(&["--encoder", "isal"], "pentium");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("DEPOTAI_FORCE_CPU=\"pentium\" is not one of native, generic, arm64"),
        "{err}"
    );
}

#[test]
fn encoder_flags_and_levels_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let fails = |extra: &[&str], msg: &str| {
        let o = build(Path::new(TINY), "acme/m", &out, extra);
        assert_eq!(o.status.code(), Some(1), "{extra:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.trim_end(),
            format!("depotai: error: {msg}"),
            "{extra:?}"
        );
    };
    fails(
        &["--encoder", "isal", "--compression-level", "3"],
        "--compression-level 3 is out of range for --format estargz with --encoder isal (1 to 2)",
    );
    fails(
        &["--encoder", "isal", "--compression-level", "0"],
        "--compression-level 0 is out of range for --format estargz with --encoder isal (1 to 2)",
    );
    fails(
        &["--encoder", "isal", "--format", "zstd-chunked"],
        "--encoder isal applies to --format estargz only: zstd:chunked is compressed with zstd",
    );
    fails(
        &["--format", "zstd-chunked", "--compression-level", "0"],
        "--compression-level 0 is out of range for --format zstd-chunked (1 to 19)",
    );
    fails(
        &["--compression-level", "13"],
        "--compression-level 13 is out of range for --format estargz with --encoder libdeflate (0 to 12)",
    );
    let o = build(Path::new(TINY), "acme/m", &out, &["--encoder", "zlib"]);
    assert_eq!(o.status.code(), Some(2), "clap refuses an unknown encoder");
    assert!(!out.exists());
    // --encoder libdeflate is the default, spelled out.
    let a = build_json(
        Path::new(TINY),
        &tmp.path().join("a"),
        &["--encoder", "libdeflate"],
    );
    assert_golden(&a, &golden("tiny-model.golden.json"));
    assert_eq!(a["settings"]["encoder"], "libdeflate");
    let z = build_json(
        Path::new(TINY),
        &tmp.path().join("z"),
        &["--format", "zstd-chunked"],
    );
    assert_eq!(z["settings"]["encoder"], "zstd");
}

// ISA-L is offered (and built) on x86-64 only.
#[cfg(all(target_arch = "x86_64", feature = "isal"))]
#[test]
fn the_encoder_is_recorded_so_changing_it_rebuilds_and_keeping_it_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HubServer::start(vec![Repo::new(
        "acme/alpha",
        SHA,
        vec![
            RepoFile::regular("config.json", r#"{"model_type":"alpha"}"#),
            RepoFile::lfs(
                "model.safetensors",
                Content::Bytes(weights_like(300_000, 1)),
            ),
        ],
    )]);
    let cat = tmp.path().join("models.yaml");
    fs::write(
        &cat,
        format!("models:\n  - name: acme/alpha\n    sha: {SHA}\n"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let all = |extra: &[&str]| -> Value {
        let o = support::hub::depotai_against(&server, &tmp.path().join("hf-home"))
            .args(["build", "--all"])
            .arg(&cat)
            .arg("--output")
            .arg(&out)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap();
        assert_ok(&o);
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        r["models"][0].clone()
    };
    let record = || -> Value {
        serde_json::from_slice(&fs::read(out.join("acme/alpha/depotai-build.json")).unwrap())
            .unwrap()
    };
    let m = all(&[]);
    assert_eq!(m["result"], "built");
    assert_eq!(record()["settings"]["encoder"], "libdeflate");
    let m = all(&["--encoder", "isal"]);
    assert_eq!(
        (&m["result"], &m["reason"]),
        (&"built".into(), &"built with other settings".into())
    );
    assert_eq!(record()["settings"]["encoder"], "isal");
    assert_eq!(record()["settings"]["compression_level"], 2);
    let l = Layout::read(&out.join("acme/alpha"));
    assert_eq!(l.layer_annotation(ENCODER_ANNOTATION), "isal-2");
    assert_eq!(m["layers"][0]["digest"], l.layer_digest.as_str());
    let m = all(&["--encoder", "isal"]);
    assert_eq!(
        (&m["result"], &m["reason"]),
        (&"skipped".into(), &"up to date".into())
    );
    let m = all(&["--encoder", "isal", "--compression-level", "1"]);
    assert_eq!(m["reason"], "built with other settings");
    assert_eq!(
        Layout::read(&out.join("acme/alpha")).layer_annotation(ENCODER_ANNOTATION),
        "isal-1"
    );
}

// ---------------------------------------------------------------- interop

// ISA-L is offered (and built) on x86-64 only.
#[cfg(all(target_arch = "x86_64", feature = "isal"))]
#[test]
fn reference_verifier_accepts_isal_and_level_0_layers() {
    if !have_tools(&[], &["estargz-check"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    weights_tree(&src);
    let cases: [(&Path, &[&str]); 4] = [
        (Path::new(TINY), &["--encoder", "isal"]),
        (Path::new(TINY), &["--compression-level", "0"]),
        (
            &src,
            &[
                "--encoder",
                "isal",
                "--compression-level",
                "1",
                "--chunk-size",
                "256KiB",
            ],
        ),
        (
            &src,
            &["--compression-level", "0", "--chunk-size", "256KiB"],
        ),
    ];
    for (i, (dir, flags)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        build_json(dir, &out, flags);
        let l = Layout::read(&out);
        let blob = tmp.path().join(format!("{i}.blob"));
        fs::write(&blob, &l.blob).unwrap();
        let o = run_checked(checker("estargz-check").arg("verify").arg(&blob));
        let line: Value = serde_json::from_str(o.lines().find(|l| l.starts_with('{')).unwrap())
            .unwrap_or_else(|e| panic!("{flags:?}: {e}: {o}"));
        assert_eq!(
            line["toc_digest"],
            l.layer_annotation("containerd.io/snapshot/stargz/toc.digest")
                .as_str(),
            "{flags:?}"
        );
        assert_eq!(
            line["diff_id"], l.configs[0]["rootfs"]["diff_ids"][0],
            "{flags:?}"
        );
    }
}

// ISA-L is offered (and built) on x86-64 only.
#[cfg(all(target_arch = "x86_64", feature = "isal"))]
#[test]
fn buildah_copies_files_from_isal_and_level_0_layers_byte_for_byte() {
    if !have(&["buildah", "skopeo", "umoci", "docker-registry"]) {
        return;
    }
    let fixture = Path::new(TINY);
    let reg = Registry::start();
    for (name, flags) in [
        ("acme/isal", &["--encoder", "isal"][..]),
        ("acme/stored", &["--compression-level", "0"][..]),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut f = vec!["--quiet"];
        f.extend_from_slice(flags);
        assert_ok(&build(fixture, name, &out, &f));
        let image = format!("{}/{name}:latest", reg.addr);
        run_checked(
            Command::new("skopeo")
                .args([
                    "copy",
                    "-q",
                    "--all",
                    "--preserve-digests",
                    "--dest-tls-verify=false",
                ])
                .arg(format!("oci:{}:latest", out.display()))
                .arg(format!("docker://{image}")),
        );
        buildah_copies_tiny_model_files(&image, fixture, tmp.path());
    }
}
