//! An image mounted as Kubernetes mounts an image volume (`volumes[].image`, and
//! KServe's `oci+native://`, which mounts it with `subPath: models`): containerd (Debian's
//! `containerd` and `ctr`, from `scripts/install-interop.sh`) pulls it over plain HTTP
//! from `depotai serve` and from a `docker-registry` it was pushed to, unpacks it into
//! its snapshotter and mounts it read-only, as the kubelet's CRI call does; the mounted
//! tree is the model's files byte for byte, under `--prefix` when there is one. The
//! eStargz metadata files (`stargz.index.json`, `.no.prefetch.landmark`) are listed
//! apart: a plain mount shows them at the root, never under the prefix.
//!
//! Needs root (containerd mounts); runs its own containerd with a temporary root, state
//! directory and socket. Without the tools the tests print SKIP, under `CI=true` they fail.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use support::interop::{
    have, is_root, run_checked, skip_or_fail, stop_and_unmount, tree, wait_until_ready, Registry,
};
use support::*;

const TINY: &str = "fixtures/tiny-model";

/// eStargz's own root entries: what a plain (non-lazy) mount shows beside the files.
const ESTARGZ_METADATA: [&str; 3] = [
    ".no.prefetch.landmark",
    ".prefetch.landmark",
    "stargz.index.json",
];

/// containerd and ctr, and root; else SKIP (a failure under CI=true).
fn have_containerd(extra: &[&str]) -> bool {
    let mut tools = vec!["containerd", "ctr"];
    tools.extend_from_slice(extra);
    if !have(&tools) {
        return false;
    }
    let root = is_root();
    if !root {
        skip_or_fail("containerd mounts snapshots: the image volume test needs root");
    }
    root
}

/// A containerd of our own: temporary root, state and socket, the CRI plugin off (no
/// CNI here; `ctr` drives the same pull, unpack and snapshot mount the CRI plugin does
/// for an image volume). Stopped, and its mounts undone, on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("depotai-containerd-")
            .tempdir()
            .unwrap();
        let d = dir.path().display();
        fs::write(
            dir.path().join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n"
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd");
        let mut c = Containerd { child, dir };
        let log_path = c.dir.path().join("containerd.log");
        let log = move || fs::read_to_string(&log_path).unwrap_or_default();
        wait_until_ready(
            &mut c.child,
            &log,
            "containerd successfully booted",
            "containerd",
        );
        c
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", "depotai"]);
        c
    }

    /// Pulls `image` over plain HTTP, unpacked into `snapshotter`, and mounts it
    /// read-only at a new directory: what the kubelet asks of the runtime for an image
    /// volume.
    fn pull_and_mount(&self, image: &str, snapshotter: &str) -> PathBuf {
        run_checked(self.ctr().args([
            "image",
            "pull",
            "--plain-http",
            "--snapshotter",
            snapshotter,
            image,
        ]));
        let n = fs::read_dir(self.dir.path()).unwrap().count();
        let target = self.dir.path().join(format!("mnt{n}"));
        fs::create_dir(&target).unwrap();
        run_checked(
            self.ctr()
                .args(["image", "mount", "--snapshotter", snapshotter, image])
                .arg(&target),
        );
        target
    }

    fn unmount(&self, target: &Path) {
        run_checked(self.ctr().args(["image", "unmount", "--rm"]).arg(target));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        stop_and_unmount(&mut self.child, self.dir.path());
    }
}

/// overlayfs, as a kubelet's containerd uses, where this kernel has it; else native
/// (plain directories, the same tree).
fn snapshotter() -> &'static str {
    let fs = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        "overlayfs"
    } else {
        "native"
    }
}

/// One image to mount: how it is built and where its files must appear.
struct Case {
    repo: &'static str,
    /// `--prefix` as given (empty: none).
    prefix: &'static str,
    format: &'static str,
}

const CASES: [Case; 3] = [
    Case {
        repo: "acme/plain",
        prefix: "",
        format: "estargz",
    },
    Case {
        repo: "acme/kserve",
        prefix: "/models",
        format: "estargz",
    },
    Case {
        repo: "acme/kserve-zstd",
        prefix: "/models",
        format: "zstd-chunked",
    },
];

/// Builds every case under `root/<repo>`, two layers each (model.safetensors alone).
fn build_cases(root: &Path) {
    for c in &CASES {
        let mut flags = vec!["--quiet", "--format", c.format, "--own-layer-above", "8KiB"];
        if !c.prefix.is_empty() {
            flags.extend(["--prefix", c.prefix]);
        }
        assert_ok(&build(Path::new(TINY), c.repo, &root.join(c.repo), &flags));
        assert_eq!(Layout::read(&root.join(c.repo)).layer_digests.len(), 2);
    }
}

/// Mounts `registry/<repo>` of every case and compares the tree with the model's files:
/// under the prefix, byte for byte, with nothing else but eStargz's metadata files at the
/// root. Returns one line per case, for the log.
fn mount_every_case(ctd: &Containerd, registry: &str) -> Vec<String> {
    let snap = snapshotter();
    let mut report = Vec::new();
    for c in &CASES {
        let image = format!("{registry}/{}:latest", c.repo);
        let mnt = ctd.pull_and_mount(&image, snap);
        let mut got = tree(&mnt);
        let metadata: Vec<String> = ESTARGZ_METADATA
            .iter()
            .filter(|m| got.remove(**m).is_some())
            .map(|m| m.to_string())
            .collect();
        // The plain mount shows each layer's eStargz root entries (the top layer's win);
        // zstd:chunked keeps its metadata after the tar stream, out of the tree.
        let want_metadata: &[&str] = match c.format {
            "estargz" => &[".no.prefetch.landmark", "stargz.index.json"],
            _ => &[],
        };
        assert_eq!(metadata, want_metadata, "{image}");
        let rel = c.prefix.trim_start_matches('/');
        let files: BTreeMap<String, String> = if rel.is_empty() {
            got
        } else {
            assert_eq!(got.remove(rel).as_deref(), Some("dir"), "{image}");
            got.into_iter()
                .map(|(k, v)| {
                    let under = k.strip_prefix(&format!("{rel}/")).unwrap_or_else(|| {
                        panic!("{image}: {k} is outside the prefix {}", c.prefix)
                    });
                    (under.to_string(), v)
                })
                .collect()
        };
        assert_eq!(files, tree(Path::new(TINY)), "{image}: the model's files");
        // Byte for byte, beyond the hashes `tree` compares.
        let config = mnt.join(rel).join("config.json");
        assert_eq!(
            fs::read(&config).unwrap(),
            fs::read(Path::new(TINY).join("config.json")).unwrap()
        );
        // Read-only, as an image volume is.
        let err = fs::write(mnt.join(rel).join("new-file"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(30), "{image}: EROFS, got {err}");
        ctd.unmount(&mnt);
        report.push(format!(
            "{image} ({}, {snap}): {} paths under /{rel}, metadata {metadata:?}",
            c.format,
            files.len()
        ));
    }
    report
}

#[test]
fn containerd_mounts_images_from_depotai_serve_with_exactly_the_models_files() {
    if !have_containerd(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_cases(&root);
    let serve = serve(&root);
    let ctd = Containerd::start();
    for line in mount_every_case(&ctd, &serve.addr) {
        eprintln!("containerd: {line}");
    }
}

#[test]
fn containerd_mounts_images_pushed_to_a_registry_with_exactly_the_models_files() {
    if !have_containerd(&["docker-registry"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_cases(&root);
    let reg = Registry::start();
    for c in &CASES {
        run_checked(
            depotai()
                .arg("push")
                .arg(root.join(c.repo))
                .arg(format!("{}/{}:latest", reg.addr, c.repo))
                .args(["--insecure", "--quiet"])
                .env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state")),
        );
    }
    let ctd = Containerd::start();
    for line in mount_every_case(&ctd, &reg.addr) {
        eprintln!("containerd: {line}");
    }
}
