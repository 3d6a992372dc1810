//! A lazy pull on a Kubernetes node: containerd (Debian's 1.6) with the stargz snapshotter
//! as its proxy plugin (`containerd-stargz-grpc`, our wrapper in interop/stargz-grpc) and
//! its CRI plugin pulling into that snapshotter with the snapshot annotations on, as a
//! node configured for lazy pulls has it. The image is pulled with the CRI call a kubelet
//! makes (`ImageService.PullImage`, by `cri-pull`), then the image's root file system is
//! mounted read-only from the snapshotter and one small file read: the registry (`depotai
//! serve`, or a `docker-registry` the image was pushed to) serves the layers' footers and
//! TOCs (a small layer whole), well under 1 % of the weights. Reading the weights' first
//! 4 KiB then fetches one chunk of them, on demand.
//!
//! Needs root, /dev/fuse, fusermount3, overlayfs, containerd + ctr and the Go wrapper
//! (`scripts/install-interop.sh --stargz`); without them the test prints SKIP, under
//! `CI=true` it fails. Runs its own containerd and snapshotter (temporary root, state and
//! sockets), both stopped and their mounts undone at the end.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use support::interop::{
    access_log_bytes, have, is_root, run_checked, skip_or_fail, stop_and_unmount, wait_until_ready,
    LoggedServe, Registry,
};
use support::*;

/// Tens of MB of incompressible weights, in a layer of their own (`--own-layer-above`).
const WEIGHTS_LEN: usize = (48 << 20) + 12_345;
/// depotai's default `--chunk-size`: a large file's unit of lazy fetching.
const CHUNK: u64 = 4 << 20;
/// The first bytes of the weights read through the mount (a safetensors header's size).
const HEADER_LEN: usize = 4096;
const CONFIG: &[u8] =
    br#"{"architectures": ["BertModel"], "hidden_size": 384, "model_type": "bert"}"#;

/// The CRI plugin's namespace: where a kubelet's images live.
const K8S: &str = "k8s.io";

/// The directory of `containerd-stargz-grpc` and `cri-pull`, built (or found in the
/// cache) by `scripts/install-interop.sh --stargz`; once per run, as the tests run at once
/// and two builds would race for the cache directory.
fn stargz_bin() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let o = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-interop.sh"))
            .arg("--stargz")
            .stderr(Stdio::inherit())
            .output()
            .ok()?;
        let out = String::from_utf8_lossy(&o.stdout);
        let dir = PathBuf::from(out.lines().last()?.trim());
        (o.status.success() && dir.join("containerd-stargz-grpc").is_file()).then_some(dir)
    })
    .clone()
}

/// Everything the node needs, or SKIP (a failure under CI=true).
fn have_lazy_node() -> Option<PathBuf> {
    if !have(&["containerd", "ctr", "fusermount3"]) {
        return None;
    }
    let overlay = fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"));
    if !is_root() || !Path::new("/dev/fuse").exists() || !overlay {
        skip_or_fail("the stargz snapshotter needs root, /dev/fuse and overlayfs");
        return None;
    }
    let bin = stargz_bin();
    if bin.is_none() {
        skip_or_fail("interop/stargz-grpc not built (run scripts/install-interop.sh --stargz)");
    }
    bin
}

/// A node's image side: the stargz snapshotter and a containerd whose CRI plugin pulls
/// into it, each with its own root, state and socket under one temporary directory.
struct Node {
    containerd: Child,
    snapshotter: Child,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Node {
    /// `registry` is reached over plain HTTP, as a CRI registry mirror.
    fn start(bin: &Path, registry: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("depotai-lazy-node-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        // Prefetch and background fetch off: every byte fetched is one a reader asked for.
        fs::write(
            dir.path().join("stargz.json"),
            r#"{"noprefetch": true, "no_background_fetch": true}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
                 [proxy_plugins.stargz]\n  type = \"snapshot\"\n  address = \"{d}/stargz.sock\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"stargz\"\n  \
                 disable_snapshot_annotations = false\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{registry}\"]\n  \
                 endpoint = [\"http://{registry}\"]\n"
            ),
        )
        .unwrap();
        let spawn = |cmd: &mut Command, log: &str| {
            let log = fs::File::create(dir.path().join(log)).unwrap();
            cmd.stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
        };
        let snapshotter = spawn(
            Command::new(bin.join("containerd-stargz-grpc"))
                .arg("--address")
                .arg(dir.path().join("stargz.sock"))
                .arg("--root")
                .arg(dir.path().join("stargz"))
                .arg("--config")
                .arg(dir.path().join("stargz.json"))
                .args(["--log-level", "debug"]),
            "stargz.log",
        );
        let containerd = spawn(
            Command::new("containerd")
                .arg("--config")
                .arg(dir.path().join("config.toml")),
            "containerd.log",
        );
        let mut node = Node {
            containerd,
            snapshotter,
            dir,
            bin: bin.to_path_buf(),
        };
        let stargz_log = node.dir.path().join("stargz.log");
        wait_until_ready(
            &mut node.snapshotter,
            &move || fs::read_to_string(&stargz_log).unwrap_or_default(),
            "serving the stargz snapshotter",
            "containerd-stargz-grpc",
        );
        let containerd_log = node.dir.path().join("containerd.log");
        let log = move || fs::read_to_string(&containerd_log).unwrap_or_default();
        wait_until_ready(
            &mut node.containerd,
            &log,
            "containerd successfully booted",
            "containerd",
        );
        // The CRI service starts after the boot, in the background; before its streaming
        // server it answers "server is not initialized yet".
        wait_until_ready(
            &mut node.containerd,
            &log,
            "Start streaming server",
            "containerd's CRI plugin",
        );
        node
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", K8S]);
        c
    }

    /// `ImageService.PullImage` over the CRI socket: the image's id (its config digest).
    fn cri_pull(&self, image: &str) -> String {
        run_checked(
            Command::new(self.bin.join("cri-pull"))
                .arg("--endpoint")
                .arg(self.dir.path().join("containerd.sock"))
                .arg(image),
        )
        .trim()
        .to_string()
    }

    /// A read-only view of the committed snapshot `chain_id` (the image's top layer),
    /// mounted at a new directory with the mount command containerd gives for it: the
    /// overlay of the snapshotter's FUSE-mounted layers a container's root would stack on.
    fn mount_view(&self, chain_id: &str) -> PathBuf {
        let target = self.dir.path().join("mnt");
        fs::create_dir(&target).unwrap();
        let snapshots = |args: &[&str]| {
            let mut c = self.ctr();
            c.args(["snapshots", "--snapshotter", "stargz"]).args(args);
            c
        };
        // `ctr snapshots view` gives the view no `containerd.io/gc.root` label (`prepare`
        // does), so containerd's garbage collection, which the CRI pull's lease ending
        // schedules, may remove it before it is labelled: then view again.
        let mut attempts = Vec::new();
        let o = loop {
            run_checked(&mut snapshots(&["view", "depotai-view", chain_id]));
            let labelled = snapshots(&["label", "depotai-view", "containerd.io/gc.root=depotai"])
                .output()
                .unwrap();
            let o = snapshots(&["mounts"])
                .arg(&target)
                .arg("depotai-view")
                .output()
                .unwrap();
            if labelled.status.success() && o.status.success() {
                break o;
            }
            attempts.push(format!(
                "{}{}",
                String::from_utf8_lossy(&labelled.stderr),
                String::from_utf8_lossy(&o.stderr)
            ));
            assert!(
                attempts.len() < 3,
                "the view vanished 3 times: {attempts:?}\ncontainerd.log:\n{}",
                self.log("containerd.log")
            );
        };
        let mount = String::from_utf8_lossy(&o.stdout).into_owned();
        eprintln!("lazy node: {}", mount.trim());
        run_checked(Command::new("sh").args(["-c", mount.trim()]));
        target
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(self.dir.path().join("mnt"))
            .status();
        stop_and_unmount(&mut self.containerd, self.dir.path());
        // SIGTERM: the snapshotter unmounts its FUSE layers itself.
        stop_and_unmount(&mut self.snapshotter, self.dir.path());
    }
}

/// The image's chain id (the name of its top snapshot) from its config's diff ids.
fn chain_id(config: &Value) -> String {
    let mut chain = String::new();
    for d in config["rootfs"]["diff_ids"].as_array().unwrap() {
        let d = d.as_str().unwrap();
        chain = if chain.is_empty() {
            d.to_string()
        } else {
            sha256(format!("{chain} {d}").as_bytes())
        };
    }
    chain
}

/// The source model and its build under `tmp/out/acme/model` (two layers): the layout's
/// directory and the weights' bytes.
fn build_model(tmp: &Path) -> (PathBuf, Vec<u8>) {
    let src = tmp.join("src");
    write(&src, "config.json", CONFIG);
    let weights = pseudo_random(WEIGHTS_LEN, 42);
    write(&src, "model.safetensors", &weights);
    let out = tmp.join("out/acme/model");
    assert_ok(&build(
        &src,
        "acme/model",
        &out,
        &["--quiet", "--own-layer-above", "8MiB"],
    ));
    assert_eq!(
        Layout::read(&out).layer_digests.len(),
        2,
        "the weights in a layer of their own"
    );
    (out, weights)
}

/// Bytes of these blobs the registry sent so far, and the requests (its access log).
type ServedBytes<'a> = dyn Fn(&[String]) -> (u64, Vec<String>) + 'a;

/// The node pulls `registry/acme/model:latest` (built at `out`) with CRI, mounts it and
/// reads `config.json` and the weights' header, checking what `served` counts.
fn lazy_pull(bin: &Path, registry: &str, out: &Path, weights: &[u8], served: &ServedBytes<'_>) {
    let layout = Layout::read(out);
    let node = Node::start(bin, registry);
    let image = format!("{registry}/acme/model:latest");
    let id = node.cri_pull(&image);
    // This host's platform is the one pulled: its config is the image id CRI answers.
    let (manifest, config) = layout
        .manifests
        .iter()
        .zip(&layout.configs)
        .find(|(m, _)| m["config"]["digest"] == id.as_str())
        .unwrap_or_else(|| panic!("CRI answered {id}, no config of the image"));
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();

    // Each layer became a remote snapshot; none fell back to a download.
    let stargz_log = node.log("stargz.log");
    assert_eq!(
        stargz_log.matches("remote-snapshot-prepared=true").count(),
        layers.len(),
        "{stargz_log}"
    );
    assert!(!stargz_log.contains("remote-snapshot-prepared=false"));
    // containerd's content store holds the documents, not the layers.
    let content = run_checked(node.ctr().args(["content", "ls", "--quiet"]));
    for l in &layers {
        assert!(
            !content.contains(l.as_str()),
            "{l} was downloaded:\n{content}"
        );
    }
    let (pulled, _) = served(&layers);

    let mnt = node.mount_view(&chain_id(config));
    // The lazy mount shows the model's files only (the snapshotter hides eStargz's TOC and
    // landmark), the weights with their size from the TOC, none of their bytes read.
    let names: BTreeSet<String> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["config.json".to_string(), "model.safetensors".to_string()])
    );
    assert_eq!(
        fs::metadata(mnt.join("model.safetensors")).unwrap().len(),
        WEIGHTS_LEN as u64
    );
    assert_eq!(fs::read(mnt.join("config.json")).unwrap(), CONFIG);
    let err = fs::write(mnt.join("new-file"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS, got {err}");
    let (after_config, _) = served(&layers);

    // What a model server reads first, a safetensors header: its chunk alone comes on
    // demand from the weights layer.
    let mut header = vec![0u8; HEADER_LEN];
    fs::File::open(mnt.join("model.safetensors"))
        .unwrap()
        .read_exact(&mut header)
        .unwrap();
    assert_eq!(header, weights[..HEADER_LEN]);
    let (fetched, requests) = served(&layers);
    // On demand, and bounded by the chunk, not the file: the snapshotter fetches the TOC
    // chunk(s) the read touches, rounded out to its 50000-byte grid (here 3 ranges of
    // 2100000 bytes for the first 4 MiB chunk).
    assert!(
        fetched > after_config && fetched - after_config <= 2 * CHUNK,
        "reading the header fetched {} bytes:\n{}",
        fetched - after_config,
        requests.join("\n")
    );
    let per_layer: Vec<String> = layers
        .iter()
        .map(|d| {
            let size = Layout::blob_bytes(out, d).len();
            let got = served(std::slice::from_ref(d)).0;
            format!("{got} of {size}")
        })
        .collect();
    eprintln!(
        "lazy node: {pulled} bytes of the layers fetched at the CRI pull, {} more on reading \
         config.json: {:.3} % of the {WEIGHTS_LEN}-byte weights; then {} on reading the \
         weights' first {HEADER_LEN} bytes; per layer, bottom first: {}; {} requests:\n{}",
        after_config - pulled,
        after_config as f64 * 100.0 / WEIGHTS_LEN as f64,
        fetched - after_config,
        per_layer.join(", "),
        requests.len(),
        requests.join("\n")
    );
    // The pull and the small file: footers and TOCs, and the small layer whole.
    assert!(
        after_config * 100 < WEIGHTS_LEN as u64,
        "{after_config} bytes fetched, not under 1 % of the weights:\n{}",
        requests.join("\n")
    );
}

#[test]
fn a_cri_pull_into_the_stargz_snapshotter_from_depotai_serve_reads_config_json_fetching_under_1_percent_of_the_weights(
) {
    let Some(bin) = have_lazy_node() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (out, weights) = build_model(tmp.path());
    let serve = LoggedServe::start(&tmp.path().join("out"), tmp.path().join("serve.log"));
    lazy_pull(&bin, &serve.addr, &out, &weights, &|d| serve.blob_bytes(d));
}

#[test]
fn a_cri_pull_into_the_stargz_snapshotter_from_a_registry_reads_config_json_fetching_under_1_percent_of_the_weights(
) {
    let Some(bin) = have_lazy_node() else {
        return;
    };
    if !have(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (out, weights) = build_model(tmp.path());
    let reg = Registry::start_with(true);
    run_checked(
        depotai()
            .arg("push")
            .arg(&out)
            .arg(format!("{}/acme/model:latest", reg.addr))
            .args(["--insecure", "--quiet"])
            .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state")),
    );
    let before = reg.log().len();
    lazy_pull(&bin, &reg.addr, &out, &weights, &|d| {
        access_log_bytes(&reg.log()[before..], d)
    });
}
