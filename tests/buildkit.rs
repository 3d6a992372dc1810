//! The headline, proven with the real consumer: BuildKit (`buildkitd` + `buildctl`, built by
//! `scripts/install-buildkit.sh`) with its OCI worker on the stargz snapshotter builds
//! `FROM scratch` + `COPY --link --from=<image> /config.json /` and fetches the layers'
//! footers and TOCs and that one file's chunks, not the ≥ 64 MiB weights next to it; from
//! `depotai serve` and from a `docker-registry` the image was pushed to. Then a COPY of
//! the whole image equals the source tree byte for byte.
//!
//! Needs root, /dev/fuse, runc and fusermount3 (Debian's runc and fuse3) and the BuildKit
//! binaries; without them the tests print SKIP, under `CI=true` they fail.

mod support;

use depotai::layer::estargz::Toc;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;
use support::interop::{
    access_log_bytes, have, is_root, run_checked, skip_or_fail, stop_and_unmount, tree,
    wait_until_ready, LoggedServe, Registry,
};
use support::registry::Proxy;
use support::*;

/// The issue's allowance on top of the TOCs + footers + the file's chunks.
const SLACK: u64 = 64 << 10;

/// The stargz snapshotter fetches a blob in pieces of this size, aligned to multiples of
/// it (`[worker.oci.stargzSnapshotter.blob] chunk_size`). With its default, 50000
/// (stargz-snapshotter's fs/remote/resolver.go), rounding a region out to that grid can
/// cost up to ~100 kB per layer, more than the issue's 64 KiB; 16 KiB keeps it under.
const FETCH_CHUNK: u64 = 16 << 10;
const DEFAULT_FETCH_CHUNK: u64 = 50_000;

/// The BuildKit binaries' directory, if `scripts/install-buildkit.sh` built them.
fn buildkit_bin() -> Option<PathBuf> {
    let o = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-buildkit.sh"))
        .arg("--print")
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    (o.status.success() && dir.join("buildkitd").is_file()).then_some(dir)
}

/// Everything the test needs, or SKIP (a failure under CI=true).
fn have_buildkit(extra: &[&str]) -> Option<PathBuf> {
    let mut tools = vec!["runc", "fusermount3"];
    tools.extend_from_slice(extra);
    if !have(&tools) {
        return None;
    }
    let root = is_root();
    if !root || !Path::new("/dev/fuse").exists() {
        skip_or_fail("BuildKit's stargz snapshotter needs root and /dev/fuse");
        return None;
    }
    let bin = buildkit_bin();
    if bin.is_none() {
        skip_or_fail("BuildKit not built (run scripts/install-buildkit.sh)");
    }
    bin
}

/// A `buildkitd` of our own: a fresh root and socket, the OCI worker on the stargz
/// snapshotter with prefetch and background fetch off (so every byte fetched is one a
/// build asked for), plain HTTP for the given registries, debug log (the snapshotter's
/// `remote-snapshot-prepared=` lines are debug). Stopped, and its mounts undone, on drop.
struct Buildkitd {
    child: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Buildkitd {
    fn start(bin: &Path, http_registries: &[&str], fetch_chunk: u64) -> Buildkitd {
        let dir = tempfile::Builder::new()
            .prefix("depotai-buildkit-")
            .tempdir()
            .unwrap();
        let mut cfg = format!(
            "[worker.oci]\n  enabled = true\n  snapshotter = \"stargz\"\n  gc = false\n\
             [worker.oci.stargzSnapshotter]\n  noprefetch = true\n  no_background_fetch = true\n\
             [worker.oci.stargzSnapshotter.blob]\n  chunk_size = {fetch_chunk}\n\
             [worker.containerd]\n  enabled = false\n",
        );
        for r in http_registries {
            cfg.push_str(&format!("[registry.\"{r}\"]\n  http = true\n"));
        }
        fs::write(dir.path().join("buildkitd.toml"), cfg).unwrap();
        let log = fs::File::create(dir.path().join("buildkitd.log")).unwrap();
        let child = Command::new(bin.join("buildkitd"))
            .arg("--debug")
            .arg("--config")
            .arg(dir.path().join("buildkitd.toml"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--addr")
            .arg(format!(
                "unix://{}",
                dir.path().join("buildkitd.sock").display()
            ))
            .arg("--oci-worker-snapshotter=stargz")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("buildkitd");
        let mut d = Buildkitd {
            child,
            dir,
            bin: bin.to_path_buf(),
        };
        let log_path = d.dir.path().join("buildkitd.log");
        let log = move || fs::read_to_string(&log_path).unwrap_or_default();
        wait_until_ready(&mut d.child, &log, "running server on", "buildkitd");
        d
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("buildkitd.log")).unwrap_or_default()
    }

    /// `buildctl build` with the built-in Dockerfile frontend (no `# syntax=` line, so no
    /// frontend image is pulled), the result exported to `dest`.
    fn build(&self, dockerfile: &str, dest: &Path) -> String {
        let ctx = tempfile::tempdir().unwrap();
        fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
        let out = Command::new(self.bin.join("buildctl"))
            .arg("--addr")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("buildkitd.sock").display()
            ))
            .args([
                "build",
                "--progress",
                "plain",
                "--frontend",
                "dockerfile.v0",
            ])
            .arg("--local")
            .arg(format!("context={}", ctx.path().display()))
            .arg("--local")
            .arg(format!("dockerfile={}", ctx.path().display()))
            .arg("--output")
            .arg(format!("type=local,dest={}", dest.display()))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "buildctl build failed:\n{text}\n--- buildkitd log:\n{}",
            self.log()
        );
        text
    }
}

impl Drop for Buildkitd {
    fn drop(&mut self) {
        stop_and_unmount(&mut self.child, self.dir.path());
    }
}

/// A model with a small config, a file in a directory, and ≥ 64 MiB of incompressible
/// weights.
fn model(root: &Path) {
    write(
        root,
        "config.json",
        br#"{"architectures": ["BertModel"], "hidden_size": 384, "model_type": "bert"}"#,
    );
    write(root, "tokenizer/vocab.txt", b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n");
    write(
        root,
        "model.safetensors",
        &pseudo_random((64 << 20) + 12_345, 42),
    );
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    Layout::blob_bytes(layout, digest)
}

/// The linux/amd64 image's layers (digest, blob), in order.
fn amd64_layers(layout: &Path) -> Vec<(String, Vec<u8>)> {
    let idx = json(&layout.join("index.json"));
    let index: Value = serde_json::from_slice(&blob(
        layout,
        idx["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .expect("a linux/amd64 manifest");
    let man: Value = serde_json::from_slice(&blob(layout, m["digest"].as_str().unwrap())).unwrap();
    man["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"].as_str().unwrap().to_string();
            let b = blob(layout, &d);
            (d, b)
        })
        .collect()
}

/// What a lazy COPY of `file` needs: every layer's TOC and footer (from the TOC's offset
/// to the end) and the compressed bytes of the file's chunks (from its offset to the next
/// entry's, or to the TOC). Returns those two sums and the most the snapshotter fetches
/// for them: the same regions rounded out to its `grid_size` grid, plus the 2-byte probe
/// (`Range: bytes=0-1`) it sends to learn each blob's size.
fn lazy_budget(layers: &[(String, Vec<u8>)], file: &str, grid_size: u64) -> (u64, u64, u64) {
    let (mut tocs, mut chunks, mut grid) = (0u64, 0u64, 0u64);
    for (_, b) in layers {
        let len = b.len() as u64;
        let (toc_offset, toc, _): (u64, Toc, Vec<u8>) = toc_of(b);
        tocs += len - toc_offset;
        let mut regions = vec![(toc_offset, len)];
        if let Some(e) = toc.entries.iter().find(|e| e.name == file) {
            let next = toc
                .entries
                .iter()
                .map(|x| x.offset)
                .filter(|&o| o > e.offset)
                .min()
                .unwrap_or(toc_offset);
            chunks += next - e.offset;
            regions.push((e.offset, next));
        }
        let blocks: std::collections::BTreeSet<u64> = regions
            .iter()
            .flat_map(|&(a, z)| a / grid_size..=(z - 1) / grid_size)
            .collect();
        grid += 2 + blocks
            .iter()
            .map(|i| ((i + 1) * grid_size).min(len) - i * grid_size)
            .sum::<u64>();
    }
    assert!(chunks > 0, "{file} is in no layer");
    (tocs, chunks, grid)
}

/// buildkitd's verdict on the lazy pull: each layer prepared as a remote snapshot
/// (`remote-snapshot-prepared=true`, the stargz snapshotter's own log key), none failed
/// (a `=false` means a fallback to a full pull).
fn assert_remote_snapshots(bk: &Buildkitd, layers: usize) {
    let log = bk.log();
    let prepared = log.matches("remote-snapshot-prepared=true").count();
    assert_eq!(
        log.matches("remote-snapshot-prepared=false").count(),
        0,
        "a layer fell back to a full pull:\n{log}"
    );
    assert_eq!(
        prepared, layers,
        "one remote snapshot per layer expected:\n{log}"
    );
}

/// Bytes served for these blobs so far, and the requests' log lines.
type Served<'a> = dyn Fn(&[String]) -> (u64, Vec<String>) + 'a;

/// Where a source file is in an image built with `--prefix /PREFIX` (`prefix` relative,
/// empty for none): its TOC name.
fn in_image(prefix: &str, file: &str) -> String {
    if prefix.is_empty() {
        file.to_string()
    } else {
        format!("{prefix}/{file}")
    }
}

/// The single-file COPY from `image` (whose layout is `layout`, built from `src` under
/// `prefix`) on a buildkitd fetching `fetch_chunk` bytes at a time, checked against
/// `served` (bytes of the layers served so far, with the requests, read after the
/// build). Returns the bytes fetched.
#[allow(clippy::too_many_arguments)]
fn copy_one_file(
    bk: &Buildkitd,
    image: &str,
    src: &Path,
    layout: &Path,
    prefix: &str,
    work: &Path,
    fetch_chunk: u64,
    served: &Served,
) -> u64 {
    let layers = amd64_layers(layout);
    let digests: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    let image_size: u64 = layers.iter().map(|(_, b)| b.len() as u64).sum();
    let file = in_image(prefix, "config.json");
    let (tocs, chunks, grid) = lazy_budget(&layers, &file, fetch_chunk);

    let t0 = Instant::now();
    let one = work.join("one");
    bk.build(
        &format!("FROM scratch\nCOPY --link --from={image} /{file} /\n"),
        &one,
    );
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(
        tree(&one),
        BTreeMap::from([(
            "config.json".to_string(),
            format!(
                "file {}",
                sha256(&fs::read(src.join("config.json")).unwrap())
            )
        )])
    );
    assert_eq!(
        fs::read(one.join("config.json")).unwrap(),
        fs::read(src.join("config.json")).unwrap()
    );
    assert_remote_snapshots(bk, layers.len());
    let (fetched, requests) = served(&digests);
    eprintln!(
        "buildkit: COPY /{file} from {image}: {fetched} bytes of the layers fetched \
         ({} layer(s), {image_size} bytes; TOCs+footers {tocs}, file chunks {chunks}, \
         those rounded out to the {fetch_chunk}-byte fetch grid {grid}) in {secs:.1} s",
        layers.len()
    );
    let log = requests.join("\n");
    // What the snapshotter's design predicts: nothing beyond the grid's pieces.
    assert!(
        fetched <= grid,
        "fetched {fetched} bytes, more than the {grid} bytes of the fetch grid:\n{log}"
    );
    assert!(fetched >= tocs, "fetched {fetched} < the TOCs {tocs}?");
    // The weights were not fetched: no request reaches past the file's own region into
    // the ≥ 64 MiB one (any such piece would also break the grid bound above).
    assert!(fetched < 1 << 20, "{fetched} bytes:\n{log}");
    if fetch_chunk == FETCH_CHUNK {
        // The issue's bound, which a 16 KiB grid keeps.
        assert!(
            fetched <= tocs + chunks + SLACK,
            "fetched {fetched} bytes, more than TOCs+footers {tocs} + chunks {chunks} + {SLACK}:\n{log}"
        );
    }
    fetched
}

/// The whole image COPYed: the source tree under `prefix`, byte for byte.
fn copy_everything(bk: &Buildkitd, image: &str, src: &Path, prefix: &str, work: &Path) {
    let all = work.join("all");
    bk.build(
        &format!("FROM scratch\nCOPY --link --from={image} / /\n"),
        &all,
    );
    // The snapshotter hides eStargz's own root entries (landmark, TOC): the tree is the
    // source's, byte for byte, under the prefix and nothing beside it.
    let top: Vec<String> = tree(&all)
        .into_keys()
        .filter(|k| !k.contains('/'))
        .collect();
    let want_top = prefix.split('/').next().filter(|p| !p.is_empty());
    if let Some(p) = want_top {
        assert_eq!(top, [p], "only the prefix at the root");
    }
    let files = all.join(prefix);
    assert_eq!(tree(&files), tree(src));
    assert_eq!(
        fs::read(files.join("model.safetensors")).unwrap(),
        fs::read(src.join("model.safetensors")).unwrap()
    );
}

fn build_model(tmp: &Path, flags: &[&str]) -> (PathBuf, PathBuf) {
    let src = tmp.join("src");
    model(&src);
    let out = tmp.join("out/acme/model");
    let mut args = vec!["--quiet"];
    args.extend_from_slice(flags);
    assert_ok(&build(&src, "acme/model", &out, &args));
    (src, out)
}

/// Against `depotai serve`: the image built with `flags` (with `--prefix /PREFIX` when
/// `prefix` is not empty) has `want_layers` layers.
fn serve_case(flags: &[&str], prefix: &str, want_layers: usize) {
    let Some(bin) = have_buildkit(&[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = format!("/{prefix}");
    let mut flags = flags.to_vec();
    if !prefix.is_empty() {
        flags.extend(["--prefix", &dir]);
    }
    let (src, out) = build_model(tmp.path(), &flags);
    assert_eq!(amd64_layers(&out).len(), want_layers);
    let serve = LoggedServe::start(&tmp.path().join("out"), tmp.path().join("serve.log"));
    let bk = Buildkitd::start(&bin, &[&serve.addr], FETCH_CHUNK);
    let work = tmp.path().join("work");
    let image = format!("{}/acme/model", serve.addr);
    copy_one_file(&bk, &image, &src, &out, prefix, &work, FETCH_CHUNK, &|d| {
        serve.blob_bytes(d)
    });
    copy_everything(&bk, &image, &src, prefix, &work);
}

/// The default build: the ≥ 64 MiB weights in a layer of their own, the rest on top.
#[test]
fn buildkit_copies_one_file_from_depotai_serve_fetching_only_its_chunks() {
    serve_case(&[], "", 2);
}

/// `--prefix /models` (KServe's layout): `COPY --link --from=… /models/config.json /`
/// fetches no more than the same COPY from an unprefixed image.
#[test]
fn buildkit_copies_models_config_json_from_a_prefixed_image_fetching_only_its_chunks() {
    serve_case(&[], "models", 2);
}

#[test]
fn buildkit_copies_one_file_from_a_single_layer_image_fetching_only_its_chunks() {
    serve_case(&["--layers", "single"], "", 1);
}

/// The same COPY on a builder with the snapshotter's default fetch size (what
/// `--oci-worker-snapshotter=stargz` alone gives): still only the TOCs and the file's
/// region, each rounded out to the 50000-byte grid.
#[test]
fn buildkit_with_the_default_fetch_size_fetches_only_the_grid_pieces_of_the_file() {
    let Some(bin) = have_buildkit(&[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = build_model(tmp.path(), &[]);
    let serve = LoggedServe::start(&tmp.path().join("out"), tmp.path().join("serve.log"));
    let bk = Buildkitd::start(&bin, &[&serve.addr], DEFAULT_FETCH_CHUNK);
    let image = format!("{}/acme/model", serve.addr);
    let work = tmp.path().join("work");
    copy_one_file(
        &bk,
        &image,
        &src,
        &out,
        "",
        &work,
        DEFAULT_FETCH_CHUNK,
        &|d| serve.blob_bytes(d),
    );
}

#[test]
fn buildkit_copies_one_file_from_a_registry_it_was_pushed_to_fetching_only_its_chunks() {
    let Some(bin) = have_buildkit(&["docker-registry"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src, out) = build_model(tmp.path(), &[]);
    assert_eq!(amd64_layers(&out).len(), 2);
    let reg = Registry::start_with(true);
    run_checked(
        depotai()
            .arg("push")
            .arg(&out)
            .arg(format!("{}/acme/model:latest", reg.addr))
            .args(["--insecure", "--quiet"])
            .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state")),
    );
    // BuildKit pulls through a counting proxy: besides the registry's access log (bytes
    // per blob), the total of everything sent back, headers and manifests included.
    let proxy = Proxy::start(&reg.addr);
    let log_before = reg.log().len();
    let bk = Buildkitd::start(&bin, &[&proxy.addr], FETCH_CHUNK);
    let work = tmp.path().join("work");
    let down_before = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst);
    let image = format!("{}/acme/model", proxy.addr);
    copy_one_file(&bk, &image, &src, &out, "", &work, FETCH_CHUNK, &|d| {
        let down = proxy.down_bytes.load(std::sync::atomic::Ordering::SeqCst) - down_before;
        let (layers, lines) = access_log_bytes(&reg.log()[log_before..], d);
        eprintln!("buildkit: the proxy sent {down} bytes in all (documents and headers included)");
        // Documents (index, manifest, config) and HTTP headers on top of the layers'
        // bytes stay well under the allowance too.
        assert!(down < layers + SLACK, "{down} bytes through the proxy");
        (layers, lines)
    });
    copy_everything(&bk, &image, &src, "", &work);
}
