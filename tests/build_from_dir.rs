//! `depotai build --from-dir`: what lands in the TOC, the tar stream and the OCI layout.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use support::*;

const CHUNK: usize = 64 * 1024;
const LONG_SPLITTABLE: &str = "long-dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff.json";

fn long_over_255() -> String {
    format!(
        "{}/{}/{}.bin",
        "x".repeat(120),
        "y".repeat(120),
        "z".repeat(60)
    )
}

/// Every edge case the issue lists, in one tree. Returns file path → content.
fn edge_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut add = |rel: &str, bytes: Vec<u8>| {
        write(root, rel, &bytes);
        files.insert(rel.to_string(), bytes);
    };
    add("config.json", br#"{"hidden_size": 64}"#.to_vec());
    add("a/b/c/deep.txt", b"nested\n".to_vec());
    add("empty.bin", Vec::new());
    add("one-chunk.bin", pseudo_random(CHUNK, 1));
    add("one-over.bin", pseudo_random(CHUNK + 1, 2));
    add("three-chunks.bin", pseudo_random(3 * CHUNK, 3));
    add(LONG_SPLITTABLE, b"{}".to_vec());
    add(&long_over_255(), pseudo_random(1000, 4));
    add(
        "日本語/モデル.json",
        "{\"言語\": \"日本語\"}".as_bytes().to_vec(),
    );
    add("bin/run.sh", b"#!/bin/sh\necho hi\n".to_vec());
    fs::set_permissions(root.join("bin/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    symlink("a/b/c/deep.txt", root.join("link-to-deep")).unwrap();
    files
}

fn chunk_flags() -> Vec<&'static str> {
    vec!["--chunk-size", "64KiB", "--quiet"]
}

#[test]
fn toc_tar_headers_and_digests_describe_every_edge_case_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = edge_tree(&src);
    let out = tmp.path().join("out");
    assert_ok(&build(&src, "acme/edge-cases", &out, &chunk_flags()));
    let layout = Layout::read(&out);
    let layer = read_layer(&layout.blob);

    // TOC order: landmark first, then sorted paths with their parents; chunks follow their file.
    let names: Vec<(&str, &str)> = layer
        .toc
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind.as_str()))
        .collect();
    assert_eq!(names[0], (".no.prefetch.landmark", "reg"));
    let non_chunk: Vec<&str> = names
        .iter()
        .filter(|(_, k)| *k != "chunk")
        .map(|(n, _)| *n)
        .collect();
    let mut sorted = non_chunk[1..].to_vec();
    sorted.sort_by_key(|n| n.trim_end_matches('/').as_bytes().to_vec());
    assert_eq!(non_chunk[1..], sorted[..], "entries sorted by path bytes");
    for dir in ["a/", "a/b/", "a/b/c/", "bin/", "empty-dir/", "日本語/", "long-dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/"] {
        let e = layer.toc.entries.iter().find(|e| e.name == dir).unwrap_or_else(|| panic!("{dir}"));
        assert_eq!((e.kind.as_str(), e.mode), ("dir", 0o755));
    }

    // Every file: size, mode, digest of the source bytes, and each chunk at a member start.
    for (path, bytes) in &files {
        let i = layer
            .toc
            .entries
            .iter()
            .position(|e| &e.name == path)
            .unwrap_or_else(|| panic!("{path} in TOC"));
        let e = &layer.toc.entries[i];
        assert_eq!(e.kind, "reg");
        assert_eq!(e.size, bytes.len() as u64, "{path}");
        assert_eq!(e.digest, sha256(bytes), "{path}");
        let want_mode = if path == "bin/run.sh" { 0o755 } else { 0o644 };
        assert_eq!(e.mode, want_mode, "{path}");
        if bytes.is_empty() {
            assert_eq!(
                (e.offset, e.chunk_digest.as_str()),
                (0, ""),
                "empty files have no payload"
            );
            continue;
        }
        let chunks: Vec<_> = std::iter::once(e)
            .chain(
                layer.toc.entries[i + 1..]
                    .iter()
                    .take_while(|c| c.kind == "chunk"),
            )
            .collect();
        assert_eq!(
            chunks.len(),
            bytes.len().div_ceil(CHUNK),
            "{path} chunk count"
        );
        for c in &chunks {
            let start = c.chunk_offset as usize;
            let end = (start + CHUNK).min(bytes.len());
            let want = &bytes[start..end];
            assert_eq!(c.chunk_digest, sha256(want), "{path}@{start}");
            // Go's quirk: chunkSize is written exactly when the chunk is a full chunk.
            let want_size = if want.len() == CHUNK { CHUNK as u64 } else { 0 };
            assert_eq!(c.chunk_size, want_size, "{path}@{start} chunkSize");
            let member = gunzip_member(&layout.blob, c.offset);
            assert_eq!(
                &member[..want.len()],
                want,
                "{path}@{start}: member starts with the chunk"
            );
        }
    }
    let one_over: Vec<_> = layer
        .toc
        .entries
        .iter()
        .filter(|e| e.name == "one-over.bin")
        .collect();
    assert_eq!(one_over.len(), 2);
    assert_eq!(
        (one_over[1].kind.as_str(), one_over[1].chunk_offset),
        ("chunk", CHUNK as u64)
    );
    let link = layer
        .toc
        .entries
        .iter()
        .find(|e| e.name == "link-to-deep")
        .unwrap();
    assert_eq!(
        (link.kind.as_str(), link.link_name.as_str(), link.mode),
        ("symlink", "a/b/c/deep.txt", 0o777)
    );

    // Offsets never decrease, and all lie before the TOC.
    let offsets: Vec<u64> = layer
        .toc
        .entries
        .iter()
        .filter(|e| e.offset > 0)
        .map(|e| e.offset)
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    assert!(*offsets.last().unwrap() < layer.toc_offset);

    // The tar stream: same order as the TOC, fixed metadata, payloads equal to the sources.
    let tar_names: Vec<&str> = layer.entries.iter().map(|e| e.path.as_str()).collect();
    let mut want_tar: Vec<&str> = non_chunk.clone();
    want_tar.push("stargz.index.json");
    assert_eq!(tar_names, want_tar);
    for e in &layer.entries {
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{}", e.path);
        assert!(e.uname.is_empty(), "{}: no user name", e.path);
        if let Some(bytes) = files.get(&e.path) {
            assert_eq!(&e.data, bytes, "{}", e.path);
            assert_eq!(e.kind, tar::EntryType::Regular);
        }
    }
    let landmark = &layer.entries[0];
    assert_eq!((landmark.data.as_slice(), landmark.mode), (&[0x0f][..], 0));
    let long = layer
        .entries
        .iter()
        .find(|e| e.path == long_over_255())
        .unwrap();
    assert_eq!(long.size, 1000);
    assert!(layer.decompressed.ends_with(&[0u8; 1024]));

    // The digests the metadata promises.
    assert_eq!(
        layout.layer_annotation("containerd.io/snapshot/stargz/toc.digest"),
        sha256(&layer.toc_json)
    );
    assert_eq!(
        layout.layer_annotation("io.containers.estargz.uncompressed-size"),
        layer.decompressed.len().to_string()
    );
    for cfg in &layout.configs {
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0],
            sha256(&layer.decompressed).as_str()
        );
        assert_eq!(cfg["created"], "1970-01-01T00:00:00Z");
    }
}

#[test]
fn layout_is_an_index_of_amd64_and_arm64_manifests_sharing_one_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "Depotai/Tiny-Model",
        &out,
        &["--quiet", "--tag", "v1"],
    ));
    let l = Layout::read(&out);
    assert_eq!(
        l.layout_index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    assert_eq!(
        l.layout_index["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        l.index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<String> = l.index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for (m, cfg) in l.manifests.iter().zip(&l.configs) {
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
        assert_eq!(m["layers"][0]["digest"].as_str().unwrap(), l.layer_digest);
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            m["layers"][0]["size"].as_u64().unwrap(),
            l.blob.len() as u64
        );
        assert_eq!(
            m["annotations"]["org.opencontainers.image.source"],
            "https://huggingface.co/Depotai/Tiny-Model"
        );
        assert_eq!(m["annotations"]["org.opencontainers.image.revision"], SHA);
        assert_eq!(cfg["os"], "linux");
    }
    assert_eq!(l.configs[0]["architecture"], "amd64");
    assert_eq!(l.configs[1]["architecture"], "arm64");
    // Only the blobs the image and its provenance reference are present.
    let blobs = fs::read_dir(out.join("blobs/sha256")).unwrap().count();
    assert_eq!(
        blobs,
        1 + 2 + 2 + 1 + 3,
        "layer, 2 configs, 2 manifests, index; provenance manifest, statement, empty config"
    );

    // --platform changes the set.
    let out2 = tmp.path().join("out2");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "depotai/tiny-model",
        &out2,
        &["--quiet", "--platform", "linux/arm64/v8"],
    ));
    let l2 = Layout::read(&out2);
    assert_eq!(l2.index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(l2.index["manifests"][0]["platform"]["variant"], "v8");
    assert_eq!(
        l2.layer_digest, l.layer_digest,
        "the layer does not depend on the platforms"
    );
}

fn layout_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn same_input_gives_identical_bytes_twice_and_with_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    edge_tree(&src);
    // Enough chunks that parallel workers really finish out of order.
    write(&src, "weights/big.bin", &pseudo_random(40 * CHUNK + 123, 9));
    let mut runs = Vec::new();
    for (i, threads) in ["1", "4", "8", "4"].iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let mut flags = chunk_flags();
        flags.extend(["--threads", threads]);
        assert_ok(&build(&src, "acme/repro", &out, &flags));
        runs.push(layout_files(&out));
    }
    assert!(runs[0].len() >= 7);
    for r in &runs[1..] {
        assert_eq!(r, &runs[0], "every file of the layout is byte-identical");
    }
}

#[test]
fn golden_digests_of_the_bundled_example_are_unchanged() {
    // If this fails after a dependency update, the deflate encoder's output changed:
    // that changes every published digest, so it must be a deliberate decision.
    let golden: serde_json::Value =
        serde_json::from_slice(&fs::read("fixtures/tiny-model.golden.json").unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = build(
        Path::new("fixtures/tiny-model"),
        "depotai/tiny-model",
        &out,
        &["--json"],
    );
    assert_ok(&o);
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["index_digest"], golden["index_digest"]);
    for key in ["digest", "diff_id", "toc_digest", "size"] {
        assert_eq!(
            summary["layers"][0][key], golden["layer"][key],
            "layer.{key}"
        );
    }
}

#[test]
fn json_summary_reports_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = build(
        Path::new("fixtures/tiny-model"),
        "depotai/tiny-model",
        &out,
        &["--json"],
    );
    assert_ok(&o);
    assert!(
        o.stderr.is_empty(),
        "no progress output when not a terminal"
    );
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let l = Layout::read(&out);
    assert_eq!(s["index_digest"].as_str().unwrap(), l.index_digest);
    assert_eq!(s["layers"][0]["digest"].as_str().unwrap(), l.layer_digest);
    assert_eq!(
        s["layers"][0]["size"].as_u64().unwrap(),
        l.blob.len() as u64
    );
    assert_eq!(s["files"], 9);
    assert_eq!(s["image"], "depotai/tiny-model");
    assert!(s["seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn prefetch_puts_listed_files_first_then_the_prefetch_landmark() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "depotai/tiny-model",
        &out,
        &[
            "--quiet",
            "--prefetch",
            "tokenizer.json",
            "1_Pooling/config.json",
        ],
    ));
    let layer = read_layer(&Layout::read(&out).blob);
    let names: Vec<&str> = layer.toc.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "tokenizer.json",
            "1_Pooling/",
            "1_Pooling/config.json",
            ".prefetch.landmark"
        ]
    );
    assert!(!names.contains(&".no.prefetch.landmark"));
    assert_eq!(names.iter().filter(|n| **n == "tokenizer.json").count(), 1);
}

#[test]
fn default_output_is_out_slash_lowercased_name() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = std::env::current_dir().unwrap().join("fixtures/tiny-model");
    let o = depotai()
        .current_dir(tmp.path())
        .args([
            "build",
            "--name",
            "ACME/Tiny.Model",
            "--sha",
            SHA,
            "--quiet",
            "--from-dir",
        ])
        .arg(&fixture)
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(tmp.path().join("out/acme/tiny.model/index.json").is_file());
}

#[test]
fn an_8_gib_file_gets_a_pax_size_record_and_is_chunked() {
    // A sparse file: no disk used, and zeros compress fast, so this takes seconds.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let size: u64 = (8 << 30) + 5;
    let f = fs::File::create(src.join("huge.bin")).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    write(&src, "config.json", b"{}");
    let out = tmp.path().join("out");
    assert_ok(&build(
        &src,
        "acme/huge",
        &out,
        &["--quiet", "--chunk-size", "64MiB"],
    ));
    let l = Layout::read(&out);
    // The 8 GiB file has the bottom layer to itself; config.json is in the one above.
    assert_eq!(l.layer_digests.len(), 2);
    // Walk the tar headers inside the decompressed stream without holding 8 GiB.
    let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(&l.blob[..]));
    let mut seen = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("huge.bin") {
            assert_eq!(e.size(), size);
            let pax: Vec<(String, String)> = e
                .pax_extensions()
                .unwrap()
                .expect("a PAX header")
                .map(|r| {
                    let r = r.unwrap();
                    (r.key().unwrap().to_string(), r.value().unwrap().to_string())
                })
                .collect();
            assert_eq!(pax, [("size".to_string(), size.to_string())]);
            seen = true;
        }
    }
    assert!(seen);
    // Read the TOC via footer without decompressing everything again.
    let (_, toc, _) = toc_of(&l.blob);
    let huge: Vec<_> = toc
        .entries
        .iter()
        .filter(|e| e.name == "huge.bin")
        .collect();
    assert_eq!(
        huge.len(),
        129,
        "128 full chunks of 64 MiB and a 5-byte tail"
    );
    assert_eq!(huge[0].size, size);
    assert_eq!(huge[128].chunk_offset, 8 << 30);
    assert_eq!(huge[128].chunk_digest, sha256(&[0u8; 5]));
    assert_eq!(huge[1].chunk_digest, sha256(&vec![0u8; 64 << 20]));
}

#[test]
fn a_build_says_one_line_with_its_digest_where_ci_reads_it_and_nothing_with_quiet() {
    // stderr is a pipe here, as in a CI log: the line is printed all the same.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = build(
        Path::new("fixtures/tiny-model"),
        "depotai/tiny-model",
        &out,
        &[],
    );
    assert_ok(&o);
    let err = String::from_utf8(o.stderr).unwrap();
    let (line, seconds) = err.trim_end().rsplit_once(", ").unwrap();
    assert_eq!(
        line,
        format!(
            "built depotai/tiny-model -> {}: index sha256:0f72e7f342c06ad0bfdd62af8b82381bab6079d6654c32ddbd264742b046c63e, 9 files in 1 layer, 17.6 KiB stored",
            out.display()
        )
    );
    assert!(
        seconds.ends_with('s') && seconds[..seconds.len() - 1].parse::<f64>().is_ok(),
        "{seconds}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    let out2 = tmp.path().join("out2");
    let o = build(
        Path::new("fixtures/tiny-model"),
        "depotai/tiny-model",
        &out2,
        &["--quiet"],
    );
    assert_ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "", "--quiet: nothing");
}
