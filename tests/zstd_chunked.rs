//! `depotai build --format zstd-chunked`: the frames, TOC, tar-split, footer and
//! annotations, read back with code independent of the writer (the `zstd` crate's
//! decoder, the `tar` crate, `crc`'s CRC-64/GO-ISO, serde_json); reproducibility and the
//! golden digests; then the reference checker built on containers/storage, and a real
//! partial pull with podman from a local registry (both skipped without the tools, failed
//! under CI=true).

mod support;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::interop::{checker, have_tools, run_checked, skip_or_fail, Registry};
use support::*;

const CHUNK: usize = 64 * 1024;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const SKIPPABLE: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
const MODTIME: &str = "1970-01-01T00:00:00Z";
const CUR: &str = "io.github.containers.zstd-chunked.";
const OLD: &str = "io.containers.zstd-chunked.";

fn zstd_flags(extra: &[&'static str]) -> Vec<&'static str> {
    let mut f = vec!["--format", "zstd-chunked", "--quiet"];
    f.extend_from_slice(extra);
    f
}

fn long_over_255() -> String {
    format!(
        "{}/{}/{}.bin",
        "x".repeat(120),
        "y".repeat(120),
        "z".repeat(60)
    )
}

/// The edge cases: nested dirs, an empty file and an empty dir, exactly one chunk and one
/// byte over, names over 100 and over 255 bytes, non-ASCII names, an executable, a
/// symlink. Returns file path → content.
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
    add(
        &format!("{}/{}.json", "d".repeat(110), "f".repeat(90)),
        b"{}".to_vec(),
    );
    add(&long_over_255(), pseudo_random(1000, 4));
    add(
        "日本語/モデル.json",
        "{\"言語\": \"日本語\"}".as_bytes().to_vec(),
    );
    add("q&a <v1>.txt", b"html-ish name\n".to_vec());
    add("zeros.bin", vec![0u8; 3000]);
    add("bin/run.sh", b"#!/bin/sh\necho hi\n".to_vec());
    fs::set_permissions(root.join("bin/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    symlink("a/b/c/deep.txt", root.join("link-to-deep")).unwrap();
    files
}

// ---------------------------------------------------------------- reading a blob back

/// Keys of a JSON object in the order they appear.
struct KeyOrder(Vec<String>);

impl<'de> Deserialize<'de> for KeyOrder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeyOrder, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<KeyOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    m.next_value::<IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(KeyOrder(keys))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct TocKeys {
    entries: Vec<KeyOrder>,
}

/// One data frame: where it is in the blob and in the uncompressed stream.
#[derive(Debug)]
struct Frame {
    start: usize,
    end: usize,
    uncompressed_start: usize,
    has_checksum: bool,
}

/// A zstd:chunked layer taken apart.
struct Chunked {
    blob: Vec<u8>,
    annotations: BTreeMap<String, String>,
    /// Data frames, in order.
    frames: Vec<Frame>,
    /// The frames' content, concatenated: the tar stream.
    tar: Vec<u8>,
    manifest_compressed: Vec<u8>,
    manifest_json: Vec<u8>,
    toc: Value,
    tar_split_compressed: Vec<u8>,
    tar_split: Vec<Value>,
    footer: [u64; 7],
}

fn position(s: &str, n: usize) -> Vec<u64> {
    let v: Vec<u64> = s.split(':').map(|p| p.parse().unwrap()).collect();
    assert_eq!(v.len(), n, "{s}");
    v
}

/// The payload of the skippable frame whose payload starts at `off`.
fn skippable_at(blob: &[u8], off: usize, len: usize) -> Vec<u8> {
    assert_eq!(blob[off - 8..off - 4], SKIPPABLE, "skippable frame magic");
    assert_eq!(
        u32::from_le_bytes(blob[off - 4..off].try_into().unwrap()) as usize,
        len,
        "skippable frame length"
    );
    blob[off..off + len].to_vec()
}

fn read_chunked(layout: &Layout) -> Chunked {
    let desc = &layout.manifests[0]["layers"][0];
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(desc["annotations"].clone()).unwrap();
    let blob = layout.blob.clone();

    let mpos = position(&annotations[&format!("{CUR}manifest-position")], 4);
    let tpos = position(&annotations[&format!("{CUR}tarsplit-position")], 3);
    let (moff, mlen) = (mpos[0] as usize, mpos[1] as usize);
    let manifest_compressed = skippable_at(&blob, moff, mlen);
    let manifest_json = zstd::stream::decode_all(&manifest_compressed[..]).unwrap();
    assert_eq!(manifest_json.len() as u64, mpos[2]);
    let toc: Value = serde_json::from_slice(&manifest_json).unwrap();
    let tar_split_compressed = skippable_at(&blob, tpos[0] as usize, tpos[1] as usize);
    let ts = zstd::stream::decode_all(&tar_split_compressed[..]).unwrap();
    assert_eq!(ts.len() as u64, tpos[2]);
    assert!(ts.ends_with(b"\n"));
    let tar_split = ts
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();

    // The footer: the last 72 bytes, a skippable frame of 64.
    let f = &blob[blob.len() - 72..];
    assert_eq!(f[..4], SKIPPABLE);
    assert_eq!(f[4..8], [64, 0, 0, 0]);
    assert_eq!(&f[64..], b"GNUlInUx");
    let footer: [u64; 7] =
        std::array::from_fn(|i| u64::from_le_bytes(f[8 + 8 * i..16 + 8 * i].try_into().unwrap()));

    // Data frames from 0 to the manifest's skippable frame, one after the other.
    let data_end = moff - 8;
    let mut frames = Vec::new();
    let mut tar = Vec::new();
    let mut pos = 0;
    while pos < data_end {
        assert_eq!(blob[pos..pos + 4], ZSTD_MAGIC, "a zstd frame at {pos}");
        let len = zstd::zstd_safe::find_frame_compressed_size(&blob[pos..data_end])
            .unwrap_or_else(|e| panic!("frame at {pos}: {e}"));
        let content = zstd::stream::decode_all(&blob[pos..pos + len]).unwrap();
        frames.push(Frame {
            start: pos,
            end: pos + len,
            uncompressed_start: tar.len(),
            has_checksum: blob[pos + 4] & 0x04 != 0,
        });
        tar.extend_from_slice(&content);
        pos += len;
    }
    assert_eq!(
        pos, data_end,
        "data frames end where the manifest frame starts"
    );
    // The three skippable frames follow each other to the end of the blob.
    assert_eq!(tpos[0] as usize, moff + mlen + 8);
    assert_eq!(tpos[0] as usize + tpos[1] as usize + 72, blob.len());
    Chunked {
        blob,
        annotations,
        frames,
        tar,
        manifest_compressed,
        manifest_json,
        toc,
        tar_split_compressed,
        tar_split,
        footer,
    }
}

impl Chunked {
    fn frame_at(&self, off: u64) -> &Frame {
        self.frames
            .iter()
            .find(|f| f.start as u64 == off)
            .unwrap_or_else(|| panic!("no frame starts at {off}"))
    }

    /// What `[start, end)` of the blob decodes to on its own, as a partial pull reads it.
    fn decode_range(&self, start: u64, end: u64) -> Vec<u8> {
        zstd::stream::decode_all(&self.blob[start as usize..end as usize]).unwrap()
    }

    fn entries(&self) -> &Vec<Value> {
        self.toc["entries"].as_array().unwrap()
    }
}

/// Tar entries in stream order: (name, type, mode, size, link, payload start, data).
struct TarItem {
    name: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: Option<String>,
    payload_start: u64,
    data: Vec<u8>,
}

fn tar_items(stream: &[u8]) -> Vec<TarItem> {
    let mut ar = tar::Archive::new(stream);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let payload_start = e.raw_file_position();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        out.push(TarItem {
            name: e.path().unwrap().to_str().unwrap().to_string(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            size: e.size(),
            link: e
                .link_name()
                .unwrap()
                .map(|l| l.to_str().unwrap().to_string()),
            payload_start,
            data,
        });
    }
    out
}

fn crc64(bytes: &[u8]) -> u64 {
    crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO).checksum(bytes)
}

// ---------------------------------------------------------------- format

#[test]
fn frames_toc_tar_split_footer_and_annotations_describe_every_edge_case_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = edge_tree(&src);
    let out = tmp.path().join("out");
    assert_ok(&build(
        &src,
        "acme/edge-cases",
        &out,
        &zstd_flags(&["--chunk-size", "64KiB"]),
    ));
    let layout = Layout::read(&out);
    let z = read_chunked(&layout);

    // Annotations: both generations, agreeing; nothing of eStargz.
    let a = &z.annotations;
    assert_eq!(
        a.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "io.containers.zstd-chunked.manifest-checksum",
            "io.containers.zstd-chunked.manifest-position",
            "io.github.containers.zstd-chunked.manifest-checksum",
            "io.github.containers.zstd-chunked.manifest-position",
            "io.github.containers.zstd-chunked.tarsplit-position",
        ]
    );
    for k in ["manifest-checksum", "manifest-position"] {
        assert_eq!(a[&format!("{CUR}{k}")], a[&format!("{OLD}{k}")], "{k}");
    }
    assert_eq!(
        a[&format!("{CUR}manifest-checksum")],
        sha256(&z.manifest_compressed)
    );
    let mpos = position(&a[&format!("{CUR}manifest-position")], 4);
    let tpos = position(&a[&format!("{CUR}tarsplit-position")], 3);
    assert_eq!(mpos[3], 1, "manifest type CRFS");
    assert_eq!(z.footer[..3], mpos[..3], "footer: manifest position");
    assert_eq!(z.footer[3], 1, "footer: manifest type");
    assert_eq!(z.footer[4..], tpos[..], "footer: tar-split position");

    // The TOC: keys spelled and ordered as containers/storage writes them.
    let top: KeyOrder = serde_json::from_slice(&z.manifest_json).unwrap();
    assert_eq!(top.0, ["version", "entries", "tarSplitDigest"]);
    assert_eq!(z.toc["version"], 1);
    assert_eq!(
        z.toc["tarSplitDigest"].as_str().unwrap(),
        sha256(&z.tar_split_compressed)
    );
    let order = [
        "type",
        "name",
        "linkName",
        "mode",
        "size",
        "uid",
        "gid",
        "modtime",
        "accesstime",
        "changetime",
        "devMajor",
        "devMinor",
        "xattrs",
        "digest",
        "offset",
        "endOffset",
        "chunkSize",
        "chunkOffset",
        "chunkDigest",
        "chunkType",
    ];
    let keys: TocKeys = serde_json::from_slice(&z.manifest_json).unwrap();
    for (i, k) in keys.entries.iter().enumerate() {
        let idx: Vec<usize> =
            k.0.iter()
                .map(|k| {
                    order
                        .iter()
                        .position(|o| o == k)
                        .unwrap_or_else(|| panic!("key {k}"))
                })
                .collect();
        assert!(idx.windows(2).all(|w| w[0] < w[1]), "entry {i}: {:?}", k.0);
    }
    assert!(
        !String::from_utf8_lossy(&z.manifest_json).contains("\\u0026"),
        "names are not HTML-escaped"
    );

    // The tar stream: a plain tar, no landmark or TOC entry, two zero blocks at the end.
    assert_eq!(
        layout.configs[0]["rootfs"]["diff_ids"][0],
        sha256(&z.tar).as_str(),
        "diff ID is the sha256 of the tar"
    );
    assert_eq!(zstd::stream::decode_all(&z.blob[..]).unwrap(), z.tar);
    assert!(z.tar.ends_with(&[0u8; 1024]));
    assert_eq!(z.tar.len() % 512, 0);
    let items = tar_items(&z.tar);
    let last = items.last().unwrap();
    let content_end = last.payload_start as usize + last.size.div_ceil(512) as usize * 512;
    assert_eq!(
        z.tar.len(),
        content_end + 1024,
        "nothing but 1024 zeros after"
    );

    let non_chunk: Vec<&Value> = z
        .entries()
        .iter()
        .filter(|e| e["type"] != "chunk")
        .collect();
    assert_eq!(non_chunk.len(), items.len());
    for (e, t) in non_chunk.iter().zip(&items) {
        assert_eq!(e["name"], t.name.as_str());
        let kind = match t.kind {
            tar::EntryType::Regular => "reg",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            other => panic!("{other:?}"),
        };
        assert_eq!(e["type"], kind, "{}", t.name);
        assert_eq!(e["mode"].as_u64().unwrap_or(0), t.mode as u64, "{}", t.name);
        assert_eq!(e["size"].as_u64().unwrap_or(0), t.size, "{}", t.name);
        assert_eq!(e["linkName"].as_str(), t.link.as_deref(), "{}", t.name);
        assert_eq!((t.uid, t.gid, t.mtime), (0, 0, 0), "{}", t.name);
        assert_eq!(e["modtime"], MODTIME, "{}", t.name);
        for k in ["uid", "gid", "accesstime", "changetime", "xattrs"] {
            assert!(e.get(k).is_none(), "{}: {k}", t.name);
        }
        if let Some(bytes) = files.get(&t.name) {
            assert_eq!(&t.data, bytes, "{}", t.name);
        }
    }
    let dirs: Vec<&str> = items
        .iter()
        .filter(|t| t.kind == tar::EntryType::Directory)
        .map(|t| t.name.as_str())
        .collect();
    for d in ["a/", "a/b/", "a/b/c/", "bin/", "empty-dir/", "日本語/"] {
        assert!(dirs.contains(&d), "{d}");
    }
    let link = items.iter().find(|t| t.name == "link-to-deep").unwrap();
    assert_eq!(link.link.as_deref(), Some("a/b/c/deep.txt"));
    let run = non_chunk
        .iter()
        .find(|e| e["name"] == "bin/run.sh")
        .unwrap();
    assert_eq!(run["mode"], 0o755);

    // Every data frame carries a content checksum.
    assert!(z.frames.iter().all(|f| f.has_checksum));

    // Files: digest, offset at the frame that starts the payload, endOffset at the frame
    // right after it, chunks each a frame of their own.
    let entries = z.entries();
    for (path, bytes) in &files {
        let i = entries
            .iter()
            .position(|e| e["name"] == path.as_str())
            .unwrap_or_else(|| panic!("{path} in TOC"));
        let e = &entries[i];
        let item = items.iter().find(|t| &t.name == path).unwrap();
        if bytes.is_empty() {
            for k in ["digest", "offset", "endOffset", "chunkSize", "chunkDigest"] {
                assert!(e.get(k).is_none(), "empty file has no {k}");
            }
            continue;
        }
        assert_eq!(e["digest"], sha256(bytes).as_str(), "{path}");
        let (off, end) = (
            e["offset"].as_u64().unwrap(),
            e["endOffset"].as_u64().unwrap(),
        );
        assert_eq!(
            z.frame_at(off).uncompressed_start as u64,
            item.payload_start,
            "{path}: offset is the payload's first frame"
        );
        assert_eq!(
            z.frame_at(end).uncompressed_start as u64,
            item.payload_start + bytes.len() as u64,
            "{path}: endOffset is the frame right after the payload"
        );
        assert_eq!(
            z.decode_range(off, end),
            *bytes,
            "{path}: the range is the file"
        );
        let chunks: Vec<&Value> = std::iter::once(e)
            .chain(entries[i + 1..].iter().take_while(|c| c["type"] == "chunk"))
            .collect();
        let n = bytes.len().div_ceil(CHUNK);
        assert_eq!(chunks.len(), n, "{path} chunk count");
        if n == 1 {
            for k in ["chunkSize", "chunkOffset", "chunkDigest", "chunkType"] {
                assert!(e.get(k).is_none(), "{path}: a single chunk has no {k}");
            }
            continue;
        }
        for (k, c) in chunks.iter().enumerate() {
            let start = k * CHUNK;
            let want = &bytes[start..(start + CHUNK).min(bytes.len())];
            assert_eq!(c["name"], path.as_str());
            assert_eq!(c["chunkOffset"].as_u64().unwrap_or(0), start as u64);
            assert_eq!(c["chunkSize"].as_u64().unwrap(), want.len() as u64);
            assert_eq!(c["chunkDigest"], sha256(want).as_str());
            assert!(
                c.get("chunkType").is_none(),
                "data chunks have no chunkType"
            );
            let c_off = c["offset"].as_u64().unwrap();
            let c_end = chunks
                .get(k + 1)
                .map_or(end, |next| next["offset"].as_u64().unwrap());
            let f = z.frame_at(c_off);
            assert_eq!(f.end as u64, c_end, "{path}@{start}: one frame per chunk");
            assert_eq!(z.decode_range(c_off, c_end), want, "{path}@{start}");
            if k > 0 {
                for key in ["size", "mode", "digest", "endOffset", "modtime"] {
                    assert!(c.get(key).is_none(), "{path}@{start}: chunk with {key}");
                }
            }
        }
    }
    let one_over: Vec<&Value> = entries
        .iter()
        .filter(|e| e["name"] == "one-over.bin")
        .collect();
    assert_eq!(one_over.len(), 2);
    assert_eq!(one_over[1]["chunkSize"], 1);

    // The tar-split rebuilds the stream from the files, and says what tar-split says.
    let mut rebuilt = Vec::new();
    let mut names = Vec::new();
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    for (pos, line) in z.tar_split.iter().enumerate() {
        assert_eq!(line["position"], pos as u64);
        match line["type"].as_u64().unwrap() {
            2 => {
                assert!(line.get("name").is_none());
                rebuilt.extend_from_slice(&b64(&line["payload"]));
            }
            1 => {
                let name = line["name"].as_str().unwrap();
                names.push(name.to_string());
                let size = line["size"].as_u64().unwrap_or(0);
                let item = items.iter().find(|t| t.name == name).unwrap();
                assert_eq!(size, item.size, "{name}");
                if size == 0 {
                    assert!(line["payload"].is_null(), "{name}: no CRC when empty");
                    continue;
                }
                assert_eq!(
                    b64(&line["payload"]),
                    crc64(&item.data).to_be_bytes(),
                    "{name}"
                );
                // The content comes from the TOC range, as a partial pull has it.
                let e = non_chunk.iter().find(|e| e["name"] == name).unwrap();
                rebuilt.extend_from_slice(&z.decode_range(
                    e["offset"].as_u64().unwrap(),
                    e["endOffset"].as_u64().unwrap(),
                ));
            }
            t => panic!("tar-split type {t}"),
        }
    }
    assert_eq!(
        names,
        items.iter().map(|t| t.name.clone()).collect::<Vec<_>>()
    );
    assert_eq!(rebuilt, z.tar, "tar-split + files = the tar stream");
    let last = z.tar_split.last().unwrap();
    assert_eq!(
        (last["type"].as_u64(), last["payload"].as_str()),
        (Some(2), Some(""))
    );
    let eoa = &z.tar_split[z.tar_split.len() - 2];
    assert!(b64(&eoa["payload"]).ends_with(&[0u8; 1024]));
}

#[test]
fn the_crc_is_go_crc64_iso() {
    // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ISO))
    assert_eq!(crc64(b"123456789"), 0xb90956c775a41001);
    assert_eq!(
        depotai::layer::zstd_chunked::crc64(b"123456789"),
        0xb90956c775a41001
    );
}

#[test]
fn same_bytes_with_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    edge_tree(&src);
    write(&src, "weights/big.bin", &pseudo_random(40 * CHUNK + 123, 9));
    let mut runs = Vec::new();
    for (i, threads) in ["1", "4", "8", "4"].iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        assert_ok(&build(
            &src,
            "acme/repro",
            &out,
            &zstd_flags(&["--chunk-size", "64KiB", "--threads", threads]),
        ));
        runs.push(
            walkdir::WalkDir::new(&out)
                .into_iter()
                .map(|e| e.unwrap())
                .filter(|e| e.file_type().is_file())
                .map(|e| {
                    (
                        e.path().strip_prefix(&out).unwrap().to_path_buf(),
                        fs::read(e.path()).unwrap(),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        );
    }
    assert!(runs[0].len() >= 7);
    for r in &runs[1..] {
        assert_eq!(r, &runs[0], "every file of the layout is byte-identical");
    }
}

#[test]
fn golden_digests_of_the_bundled_example_are_unchanged() {
    // If this fails after a dependency update, the zstd encoder's output changed: that
    // changes every published digest, so it must be a deliberate decision.
    let golden: Value =
        serde_json::from_slice(&fs::read("fixtures/tiny-model.zstd-chunked.golden.json").unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = build(
        Path::new("fixtures/tiny-model"),
        "depotai/tiny-model",
        &out,
        &["--format", "zstd-chunked", "--json"],
    );
    assert_ok(&o);
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["settings"]["format"], "zstd-chunked");
    assert_eq!(summary["index_digest"], golden["index_digest"]);
    for key in ["digest", "diff_id", "toc_digest", "size"] {
        assert_eq!(
            summary["layers"][0][key], golden["layer"][key],
            "layer.{key}"
        );
    }
    // The time zone and locale play no part.
    let out2 = tmp.path().join("out2");
    let o2 = depotai()
        .env("TZ", "Asia/Tokyo")
        .env("LC_ALL", "de_DE.UTF-8")
        .args([
            "build",
            "--from-dir",
            "fixtures/tiny-model",
            "--name",
            "depotai/tiny-model",
        ])
        .args([
            "--sha",
            SHA,
            "--format",
            "zstd-chunked",
            "--json",
            "--output",
        ])
        .arg(&out2)
        .output()
        .unwrap();
    assert_ok(&o2);
    let s2: Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(s2["index_digest"], golden["index_digest"]);
}

#[test]
fn layout_shares_one_tar_zstd_layer_between_platforms_and_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = build(
        Path::new("fixtures/tiny-model"),
        "depotai/tiny-model",
        &out,
        &["--format", "zstd-chunked", "--json"],
    );
    assert_ok(&o);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let l = Layout::read(&out);
    assert_eq!(s["layers"][0]["digest"].as_str().unwrap(), l.layer_digest);
    assert_eq!(
        s["layers"][0]["media_type"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(s["settings"]["compression_level"], 3);
    assert_eq!(s["files"], 9);
    assert_eq!(
        s["layers"][0]["toc_digest"].as_str().unwrap(),
        l.layer_annotation("io.github.containers.zstd-chunked.manifest-checksum")
    );
    assert_eq!(l.manifests.len(), 2);
    for m in &l.manifests {
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
        assert_eq!(m["layers"][0], l.manifests[0]["layers"][0]);
        assert!(m["layers"][0]["annotations"]
            .get("containerd.io/snapshot/stargz/toc.digest")
            .is_none());
    }
    let z = read_chunked(&l);
    assert_eq!(s["layers"][0]["uncompressed_size"], z.tar.len() as u64);
    // Each file decodes from its own range.
    for e in z.entries().iter().filter(|e| e.get("offset").is_some()) {
        let data = z.decode_range(
            e["offset"].as_u64().unwrap(),
            e["endOffset"].as_u64().unwrap(),
        );
        let name = e["name"].as_str().unwrap();
        assert_eq!(
            data,
            fs::read(Path::new("fixtures/tiny-model").join(name)).unwrap()
        );
    }
}

#[test]
fn chunk_sizes_that_are_not_a_multiple_of_512_give_valid_tars_in_both_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    // Three chunks of 66,536 bytes (the smallest chunk size plus 1,000) and a tail.
    let a = pseudo_random(200_000, 1);
    let b = pseudo_random(700, 2);
    write(&src, "a.bin", &a);
    write(&src, "b.bin", &b);
    for format in ["estargz", "zstd-chunked"] {
        let out = tmp.path().join(format);
        assert_ok(&build(
            &src,
            "acme/m",
            &out,
            &["--quiet", "--format", format, "--chunk-size", "66536"],
        ));
        let l = Layout::read(&out);
        let stream = if format == "estargz" {
            gunzip_all(&l.blob)
        } else {
            zstd::stream::decode_all(&l.blob[..]).unwrap()
        };
        assert_eq!(stream.len() % 512, 0, "{format}");
        let items = tar_items(&stream);
        let data: Vec<(&str, &[u8])> = items
            .iter()
            .filter(|t| t.name.ends_with(".bin"))
            .map(|t| (t.name.as_str(), t.data.as_slice()))
            .collect();
        assert_eq!(data, [("a.bin", &a[..]), ("b.bin", &b[..])], "{format}");
    }
}

#[test]
fn format_flags_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = Path::new("fixtures/tiny-model");
    let out = tmp.path().join("out");
    let fails = |extra: &[&str], msg: &str| {
        let o = build(fx, "acme/m", &out, extra);
        assert!(!o.status.success(), "{extra:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(msg), "{extra:?}: {err}");
    };
    fails(
        &["--format", "zstd-chunked", "--prefetch", "config.json"],
        "--prefetch applies to --format estargz only",
    );
    fails(
        &["--compression-level", "15"],
        "out of range for --format estargz",
    );
    let o = build(fx, "acme/m", &out, &["--format", "zstd"]);
    assert_eq!(o.status.code(), Some(2), "clap refuses an unknown format");
    // eStargz stays the default, and --format estargz names it.
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert_ok(&build(fx, "acme/m", &a, &["--quiet"]));
    assert_ok(&build(
        fx,
        "acme/m",
        &b,
        &["--quiet", "--format", "estargz"],
    ));
    assert_eq!(Layout::read(&a).index_digest, Layout::read(&b).index_digest);
    // zstd:chunked has no landmarks, so no name is reserved; levels up to 19 are fine.
    let src = tmp.path().join("src");
    write(&src, "stargz.index.json", b"{}");
    let c = tmp.path().join("c");
    assert_ok(&build(
        &src,
        "acme/m",
        &c,
        &zstd_flags(&["--compression-level", "19"]),
    ));
    let z = read_chunked(&Layout::read(&c));
    assert_eq!(z.entries()[0]["name"], "stargz.index.json");
}

// ---------------------------------------------------------------- reference checker

fn write_json(path: &Path, v: &Value) -> PathBuf {
    fs::write(path, serde_json::to_vec(v).unwrap()).unwrap();
    path.to_path_buf()
}

/// Runs the reference checker (`zstdchunked-check verify`) on the layer of `layout`, with the descriptor's
/// annotations, the config's diff ID and the manifest's digest.
fn verify(tmp: &Path, layout: &Layout, blob: &[u8], tag: &str) -> std::process::Output {
    let blob_path = tmp.join(format!("{tag}.blob"));
    fs::write(&blob_path, blob).unwrap();
    let ann = write_json(
        &tmp.join(format!("{tag}.annotations.json")),
        &layout.manifests[0]["layers"][0],
    );
    checker("zstdchunked-check")
        .arg("verify")
        .arg(&blob_path)
        .arg("--annotations")
        .arg(&ann)
        .arg("--diff-id")
        .arg(layout.configs[0]["rootfs"]["diff_ids"][0].as_str().unwrap())
        .arg("--digest")
        .arg(&layout.layer_digest)
        .arg("--require-tar-split")
        .output()
        .unwrap()
}

fn have_verifier() -> bool {
    have_tools(&[], &["zstdchunked-check"])
}

#[test]
fn reference_checker_passes_the_example_and_the_edge_case_tree() {
    if !have_verifier() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let edge = tmp.path().join("edge");
    edge_tree(&edge);
    let cases: [(&Path, Vec<&'static str>); 2] = [
        (Path::new("fixtures/tiny-model"), zstd_flags(&[])),
        (&edge, zstd_flags(&["--chunk-size", "64KiB"])),
    ];
    for (i, (src, flags)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        assert_ok(&build(src, "acme/zstd", &out, flags));
        let layout = Layout::read(&out);
        let o = verify(tmp.path(), &layout, &layout.blob, &format!("case{i}"));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "verify failed on {}:\n{stderr}",
            src.display()
        );
        let line: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(line["ok"], true);
        assert_eq!(line["annotation_keys"], "both");
        assert_eq!(line["footer"], "64-byte GNUlInUx");
        assert_eq!(line["tar_split"], true);
        assert_eq!(line["containers_storage_reader"]["ok"], true, "{line}");
        assert_eq!(line["frames_with_checksum"], line["frames"]);
        assert!(line.get("warnings").is_none(), "no warnings: {line}");
        let chunks = line["chunks"].as_u64().unwrap();
        assert!(chunks >= line["files"].as_u64().unwrap());
    }
}

#[test]
fn reference_checker_fails_corrupted_layers() {
    if !have_verifier() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "acme/m",
        &out,
        &zstd_flags(&[]),
    ));
    let layout = Layout::read(&out);
    let z = read_chunked(&layout);
    assert!(verify(tmp.path(), &layout, &layout.blob, "good")
        .status
        .success());

    // A byte flipped inside the payload of model.safetensors.
    let e = z
        .entries()
        .iter()
        .find(|e| e["name"] == "model.safetensors")
        .unwrap();
    let (off, end) = (
        e["offset"].as_u64().unwrap(),
        e["endOffset"].as_u64().unwrap(),
    );
    let mut bad = layout.blob.clone();
    bad[((off + end) / 2) as usize] ^= 0x40;
    let o = verify(tmp.path(), &layout, &bad, "flipped");
    assert!(!o.status.success(), "a flipped payload byte must fail");
    assert!(String::from_utf8_lossy(&o.stderr).contains("FAIL"));

    // A tar-split that no longer matches its digest in the TOC.
    let mut bad = layout.blob.clone();
    let tpos = position(
        &z.annotations["io.github.containers.zstd-chunked.tarsplit-position"],
        3,
    );
    bad[(tpos[0] + tpos[1] / 2) as usize] ^= 0x01;
    let o = verify(tmp.path(), &layout, &bad, "tarsplit");
    assert!(!o.status.success(), "a corrupted tar-split must fail");
    assert!(String::from_utf8_lossy(&o.stderr).contains("tar-split"));

    // The right blob with a wrong manifest checksum.
    let mut wrong = layout.manifests[0]["layers"][0].clone();
    for prefix in [CUR, OLD] {
        wrong["annotations"][format!("{prefix}manifest-checksum")] =
            Value::from(sha256(b"something else"));
    }
    let mut l2 = Layout::read(&out);
    l2.manifests[0]["layers"][0] = wrong;
    let o = verify(tmp.path(), &l2, &layout.blob, "wrongsum");
    assert!(!o.status.success(), "a wrong manifest checksum must fail");
    assert!(String::from_utf8_lossy(&o.stderr).contains("checksum mismatch"));
}

// ---------------------------------------------------------------- podman partial pull

/// Whether this machine can mount overlayfs: the kernel's, or else fuse-overlayfs (then
/// its path, for storage.conf's mount_program).
fn overlay_support(dir: &Path) -> Result<Option<String>, String> {
    let (l, u, w, m) = (dir.join("l"), dir.join("u"), dir.join("w"), dir.join("m"));
    for d in [&l, &u, &w, &m] {
        fs::create_dir_all(d).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    );
    let kernel = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&m)
        .output();
    if kernel.as_ref().is_ok_and(|o| o.status.success()) {
        let _ = Command::new("umount").arg(&m).status();
        return Ok(None);
    }
    let kernel_err = match kernel {
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => e.to_string(),
    };
    let fuse = Command::new("sh")
        .args(["-c", "command -v fuse-overlayfs"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match fuse {
        Some(p) if Path::new("/dev/fuse").exists() => Ok(Some(p)),
        _ => Err(format!(
            "overlayfs cannot be mounted here (kernel: {kernel_err}; no fuse-overlayfs with /dev/fuse), and containers/storage partial pulls need the overlay driver"
        )),
    }
}

/// Responses to GETs of `digest` in a registry access log: (status, bytes) each.
fn blob_responses(log: &str, digest: &str) -> Vec<(u16, u64)> {
    let needle = format!("/blobs/{digest} ");
    log.lines()
        .filter(|l| l.contains("\"GET ") && l.contains(&needle))
        .map(|l| {
            let after = &l[l
                .find("HTTP/1.1\" ")
                .or_else(|| l.find("HTTP/2.0\" "))
                .unwrap()
                + 10..];
            let mut it = after.split_whitespace();
            (
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap_or(0),
            )
        })
        .collect()
}

/// The tree under `root`: path → ("file", content, executable) / ("dir") / ("link", target).
fn snapshot(root: &Path) -> BTreeMap<String, (String, Vec<u8>, bool)> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let md = e.path().symlink_metadata().unwrap();
            let v = if md.file_type().is_symlink() {
                let t = fs::read_link(e.path()).unwrap();
                (
                    "link".into(),
                    t.to_string_lossy().as_bytes().to_vec(),
                    false,
                )
            } else if md.is_dir() {
                ("dir".into(), Vec::new(), false)
            } else {
                (
                    "file".into(),
                    fs::read(e.path()).unwrap(),
                    md.permissions().mode() & 0o111 != 0,
                )
            };
            (rel, v)
        })
        .collect()
}

/// A podman with its own storage.conf (overlay, partial pulls on), in `dir`.
struct Podman {
    conf: PathBuf,
    dir: PathBuf,
}

impl Podman {
    fn new(dir: &Path, mount_program: Option<&str>) -> Podman {
        fs::create_dir_all(dir).unwrap();
        let mut conf = format!(
            "[storage]\ndriver = \"overlay\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n[storage.options]\npull_options = {{enable_partial_images = \"true\"}}\n",
            dir.join("run").display(),
            dir.join("root").display()
        );
        if let Some(p) = mount_program {
            conf.push_str(&format!(
                "[storage.options.overlay]\nmount_program = \"{p}\"\n"
            ));
        }
        let path = dir.join("storage.conf");
        fs::write(&path, conf).unwrap();
        Podman {
            conf: path,
            dir: dir.to_path_buf(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_STORAGE_CONF", &self.conf);
        c
    }

    /// Pulls `image`; returns podman's debug log.
    fn pull(&self, image: &str) -> String {
        run_checked(
            self.cmd()
                .args(["--log-level=debug", "pull", "--tls-verify=false"])
                .arg(image),
        )
    }

    /// The image's files, read through `podman image mount`.
    fn files(&self, image: &str) -> BTreeMap<String, (String, Vec<u8>, bool)> {
        let mnt = run_checked(self.cmd().args(["image", "mount", image]));
        let mnt = PathBuf::from(mnt.lines().last().unwrap().trim());
        let snap = snapshot(&mnt);
        run_checked(self.cmd().args(["image", "unmount", image]));
        snap
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["image", "unmount", "--all"]).output();
        // Overlay mounts left under the store, deepest first.
        if let Ok(mounts) = fs::read_to_string("/proc/mounts") {
            let mut ours: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|m| m.starts_with(&*self.dir.to_string_lossy()))
                .collect();
            ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in ours {
                let _ = Command::new("umount").args(["-l", m]).status();
            }
        }
    }
}

fn push(layout: &Path, image: &str) {
    run_checked(
        Command::new("skopeo")
            .args([
                "copy",
                "-q",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{image}")),
    );
}

#[test]
fn podman_partial_pull_fetches_only_ranges_and_gets_the_files() {
    if !have_tools(&["skopeo", "podman", "docker-registry", "mount"], &[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mount_program = match overlay_support(&tmp.path().join("probe")) {
        Ok(p) => p,
        Err(why) => return skip_or_fail(&why),
    };
    let src = tmp.path().join("src");
    edge_tree(&src);
    write(
        &src,
        "weights/model.safetensors",
        &pseudo_random(2 << 20, 7),
    );
    let out = tmp.path().join("out");
    assert_ok(&build(
        &src,
        "acme/partial",
        &out,
        &zstd_flags(&["--chunk-size", "256KiB"]),
    ));
    let layout = Layout::read(&out);
    let reg = Registry::start_with(true);
    let image = format!("{}/acme/partial:latest", reg.addr);
    push(&out, &image);
    let pushed_lines = reg.log().lines().count();

    let podman = Podman::new(&tmp.path().join("store"), mount_program.as_deref());
    let log = podman.pull(&image);
    let pull_log: String = reg
        .log()
        .lines()
        .skip(pushed_lines)
        .collect::<Vec<_>>()
        .join("\n");
    let responses = blob_responses(&pull_log, &layout.layer_digest);
    assert!(
        log.contains("Retrieved partial blob"),
        "podman did not do a partial pull:\n{}",
        log.lines()
            .filter(|l| l.contains("partial"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        responses.len() >= 2 && responses.iter().all(|(status, _)| *status == 206),
        "the layer must be fetched with Range requests (206) only: {responses:?}\n{pull_log}"
    );
    eprintln!(
        "partial pull of a {}-byte layer: {} requests, all 206: {responses:?}",
        layout.blob.len(),
        responses.len()
    );
    assert_eq!(
        podman.files(&image),
        snapshot(&src),
        "pulled files equal the source"
    );

    // A second image with one small file changed: only what is new is fetched.
    let src2 = tmp.path().join("src2");
    edge_tree(&src2);
    write(
        &src2,
        "weights/model.safetensors",
        &pseudo_random(2 << 20, 7),
    );
    write(&src2, "config.json", br#"{"hidden_size": 128}"#);
    let out2 = tmp.path().join("out2");
    assert_ok(&build(
        &src2,
        "acme/partial",
        &out2,
        &zstd_flags(&["--chunk-size", "256KiB"]),
    ));
    let layout2 = Layout::read(&out2);
    let image2 = format!("{}/acme/partial:v2", reg.addr);
    push(&out2, &image2);
    let before = reg.log().lines().count();
    let log2 = podman.pull(&image2);
    let pull_log2: String = reg
        .log()
        .lines()
        .skip(before)
        .collect::<Vec<_>>()
        .join("\n");
    let responses2 = blob_responses(&pull_log2, &layout2.layer_digest);
    assert!(log2.contains("Retrieved partial blob"));
    assert!(
        responses2.iter().all(|(status, _)| *status == 206),
        "{responses2:?}"
    );
    let fetched: u64 = responses2.iter().map(|(_, n)| n).sum();
    eprintln!(
        "second image, one file changed: {fetched} of {} bytes fetched: {responses2:?}",
        layout2.blob.len()
    );
    assert!(
        fetched < layout2.blob.len() as u64 / 10,
        "fetched {fetched} of {} bytes",
        layout2.blob.len()
    );
    assert_eq!(podman.files(&image2), snapshot(&src2));
}

#[test]
fn an_8_gib_file_gets_a_pax_size_record_and_is_chunked() {
    // A sparse file: no disk used, and zeros compress fast.
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
        &zstd_flags(&["--chunk-size", "64MiB"]),
    ));
    let l = Layout::read(&out);
    let desc = &l.manifests[0]["layers"][0];
    let mpos = position(
        desc["annotations"]["io.github.containers.zstd-chunked.manifest-position"]
            .as_str()
            .unwrap(),
        4,
    );
    let manifest = skippable_at(&l.blob, mpos[0] as usize, mpos[1] as usize);
    let toc: Value =
        serde_json::from_slice(&zstd::stream::decode_all(&manifest[..]).unwrap()).unwrap();
    let huge: Vec<&Value> = toc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "huge.bin")
        .collect();
    assert_eq!(huge.len(), 129, "128 chunks of 64 MiB and a 5-byte tail");
    assert_eq!(huge[0]["size"], size);
    assert_eq!(huge[128]["chunkOffset"], 8u64 << 30);
    assert_eq!(huge[128]["chunkSize"], 5);
    assert_eq!(huge[128]["chunkDigest"], sha256(&[0u8; 5]).as_str());
    assert_eq!(
        huge[1]["chunkDigest"],
        sha256(&vec![0u8; 64 << 20]).as_str()
    );
    // The last chunk's frame, read on its own.
    let last = huge[128]["offset"].as_u64().unwrap() as usize;
    let end = huge[0]["endOffset"].as_u64().unwrap() as usize;
    assert_eq!(
        zstd::stream::decode_all(&l.blob[last..end]).unwrap(),
        [0u8; 5]
    );
    // The tar stream, decoded as it streams, has the PAX size record.
    let dec = zstd::stream::read::Decoder::new(&l.blob[..]).unwrap();
    let mut ar = tar::Archive::new(dec);
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
}
