//! Shared helpers for the integration tests: running the binary, generating fixture
//! trees, and reading back what a build wrote with code independent of the writer
//! (flate2 for gzip, the `tar` crate for the tar stream).
#![allow(dead_code)]

pub mod forgetful;
pub mod hostile;
pub mod hub;
pub mod interop;
pub mod registry;

use depotai::layer::estargz::{parse_footer, Toc, FOOTER_SIZE};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

pub fn depotai() -> Command {
    Command::new(env!("CARGO_BIN_EXE_depotai"))
}

/// Runs `depotai build --from-dir DIR --name NAME --sha SHA --output OUT EXTRA...`.
pub fn build(dir: &Path, name: &str, out: &Path, extra: &[&str]) -> Output {
    let mut c = depotai();
    c.arg("build")
        .arg("--from-dir")
        .arg(dir)
        .args(["--name", name, "--sha", SHA, "--output"])
        .arg(out)
        .args(extra);
    c.output().expect("run depotai")
}

/// `depotai serve --root ROOT --quiet` on a free port, stopped on drop.
pub struct Served {
    pub child: std::process::Child,
    /// `127.0.0.1:PORT`, as it printed it.
    pub addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn serve(root: &Path) -> Served {
    use std::io::BufRead;
    let mut child = depotai()
        .arg("serve")
        .arg("--root")
        .arg(root)
        .args(["--addr", "127.0.0.1:0", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .rsplit_once("http://")
        .unwrap_or_else(|| panic!("depotai serve did not start: {first:?}"))
        .1
        .trim_end_matches('/')
        .to_string();
    Served { child, addr }
}

pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "depotai failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// Deterministic pseudo-random bytes (xorshift), so generated fixtures are the same everywhere.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Weight-like bytes that compress a little, as real ones do: bf16 values whose
/// exponent byte takes few values and whose mantissa byte is noise. Deterministic, so
/// their digests can be pinned.
pub fn weights_like(len: usize, seed: u64) -> Vec<u8> {
    let noise = pseudo_random(len, seed);
    let mut out = Vec::with_capacity(len);
    for pair in noise.chunks(2) {
        out.push(pair[0]);
        if pair.len() == 2 {
            out.push(0x3c + (pair[1] % 5));
        }
    }
    out
}

pub fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// An OCI layout read back from disk.
pub struct Layout {
    pub dir: PathBuf,
    pub layout_index: Value,
    pub index: Value,
    pub index_digest: String,
    pub manifests: Vec<Value>,
    pub configs: Vec<Value>,
    /// The bottom layer (the only one of a single-layer image).
    pub layer_digest: String,
    pub blob: Vec<u8>,
    /// Every layer of the first manifest, bottom first.
    pub layer_digests: Vec<String>,
}

impl Layout {
    pub fn blob_bytes(dir: &Path, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let bytes = fs::read(dir.join("blobs/sha256").join(hex)).expect("blob present");
        assert_eq!(sha256(&bytes), digest, "blob content matches its name");
        bytes
    }

    pub fn read(dir: &Path) -> Layout {
        let layout_index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("oci-layout")).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let index_digest = layout_index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let index: Value = serde_json::from_slice(&Self::blob_bytes(dir, &index_digest)).unwrap();
        let mut manifests = Vec::new();
        let mut configs = Vec::new();
        for m in index["manifests"].as_array().unwrap() {
            let man: Value =
                serde_json::from_slice(&Self::blob_bytes(dir, m["digest"].as_str().unwrap()))
                    .unwrap();
            let cfg: Value = serde_json::from_slice(&Self::blob_bytes(
                dir,
                man["config"]["digest"].as_str().unwrap(),
            ))
            .unwrap();
            manifests.push(man);
            configs.push(cfg);
        }
        let layer_digest = manifests[0]["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let blob = Self::blob_bytes(dir, &layer_digest);
        let layer_digests = manifests[0]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        Layout {
            dir: dir.to_path_buf(),
            layout_index,
            index,
            index_digest,
            manifests,
            configs,
            layer_digest,
            blob,
            layer_digests,
        }
    }

    /// The blob of layer `n` (bottom first).
    pub fn layer_blob(&self, n: usize) -> Vec<u8> {
        Self::blob_bytes(&self.dir, &self.layer_digests[n])
    }

    pub fn layer_annotation(&self, key: &str) -> String {
        self.manifests[0]["layers"][0]["annotations"][key]
            .as_str()
            .unwrap_or_else(|| panic!("layer annotation {key}"))
            .to_string()
    }
}

/// One tar entry as the `tar` crate reads it.
#[derive(Debug)]
pub struct TarEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub uname: Vec<u8>,
    pub size: u64,
    pub link: Option<String>,
    pub data: Vec<u8>,
}

/// What an eStargz blob holds, read without our writer's help.
pub struct Layer {
    pub decompressed: Vec<u8>,
    pub toc_offset: u64,
    pub toc: Toc,
    pub toc_json: Vec<u8>,
    pub entries: Vec<TarEntry>,
}

pub fn gunzip_all(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut out)
        .expect("blob is valid multi-member gzip");
    out
}

/// Decompresses exactly one gzip member starting at `offset`.
pub fn gunzip_member(blob: &[u8], offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&blob[offset as usize..])
        .read_to_end(&mut out)
        .expect("a gzip member starts at this offset");
    out
}

/// The TOC through the footer, as a lazy reader gets it: without decompressing the
/// payload. Returns the TOC offset, the TOC and its JSON bytes.
pub fn toc_of(blob: &[u8]) -> (u64, Toc, Vec<u8>) {
    let footer = &blob[blob.len() - FOOTER_SIZE..];
    let toc_offset = parse_footer(footer).expect("eStargz footer");
    assert!(
        gunzip_member(footer, 0).is_empty(),
        "footer is an empty member"
    );
    // The TOC member holds the TOC tar entry and the end-of-archive blocks.
    let toc_tar = gunzip_member(&blob[..blob.len() - FOOTER_SIZE], toc_offset);
    let mut ar = tar::Archive::new(&toc_tar[..]);
    let mut first = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.path().unwrap().to_str().unwrap(), "stargz.index.json");
    let mut toc_json = Vec::new();
    first.read_to_end(&mut toc_json).unwrap();
    let toc = Toc::from_json(&toc_json).expect("TOC parses");
    (toc_offset, toc, toc_json)
}

pub fn read_layer(blob: &[u8]) -> Layer {
    let (toc_offset, toc, toc_json) = toc_of(blob);

    let decompressed = gunzip_all(blob);
    let mut entries = Vec::new();
    let mut ar = tar::Archive::new(&decompressed[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        entries.push(TarEntry {
            path: e.path().unwrap().to_str().unwrap().to_string(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            uname: h.username_bytes().map(|b| b.to_vec()).unwrap_or_default(),
            size: e.size(),
            link: e
                .link_name()
                .unwrap()
                .map(|l| l.to_str().unwrap().to_string()),
            data,
        });
    }
    Layer {
        decompressed,
        toc_offset,
        toc,
        toc_json,
        entries,
    }
}
