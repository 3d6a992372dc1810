//! Helpers for tests that run tools we did not write (the reference checkers built from
//! `interop/checkers`, skopeo, docker-registry, podman…): skip with a message when a tool
//! is missing, fail under `CI=true`; run a command and insist it succeeds; a throwaway
//! registry.

use super::{depotai, sha256, Layout};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository's own reference checkers (`estargz-check`, `zstdchunked-check`), built
/// (or found in the cache) by `scripts/install-interop.sh --checkers`: their directory,
/// or `None` when they cannot be built here (no Go toolchain).
pub fn checkers_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let o = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-interop.sh"))
            .arg("--checkers")
            .stderr(Stdio::inherit())
            .output()
            .ok()?;
        let out = String::from_utf8_lossy(&o.stdout);
        let dir = PathBuf::from(out.lines().last()?.trim());
        (o.status.success() && dir.join("estargz-check").is_file()).then_some(dir)
    })
    .clone()
}

/// The `oras` command: on PATH, else built (or reused) by `scripts/install-interop.sh
/// --oras` from `interop/oras` (oras.land/oras v1.3.6). `None` (SKIP, or a failure under
/// `CI=true`) when neither gives one.
pub fn oras() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    let bin = BIN
        .get_or_init(|| {
            if missing_commands(&["oras"]).is_empty() {
                return Some(PathBuf::from("oras"));
            }
            let o = Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-interop.sh"))
                .arg("--oras")
                .stderr(Stdio::inherit())
                .output()
                .ok()?;
            let out = String::from_utf8_lossy(&o.stdout);
            let bin = PathBuf::from(out.lines().last()?.trim()).join("oras");
            (o.status.success() && bin.is_file()).then_some(bin)
        })
        .clone();
    if bin.is_none() {
        skip_or_fail("oras missing (run scripts/install-interop.sh --oras; needs Go)");
    }
    bin
}

/// A command running one of the reference checkers (see [`checkers_dir`]).
pub fn checker(name: &str) -> Command {
    Command::new(
        checkers_dir()
            .expect("the reference checkers (have_tools first)")
            .join(name),
    )
}

/// True when every command is on PATH and every named reference checker
/// (`estargz-check`, `zstdchunked-check`) is built. Otherwise prints `SKIP: …` and returns
/// false, or panics under `CI=true`.
pub fn have_tools(commands: &[&str], checkers: &[&str]) -> bool {
    let mut missing = missing_commands(commands);
    for c in checkers {
        if !checkers_dir().is_some_and(|d| d.join(c).is_file()) {
            missing.push(format!("{c} (interop/checkers; needs Go)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    skip_or_fail(&format!(
        "interop tools missing: {} (run scripts/install-interop.sh)",
        missing.join(", ")
    ));
    false
}

/// True when every command is on PATH (see [`have_tools`]).
pub fn have(commands: &[&str]) -> bool {
    have_tools(commands, &[])
}

/// True when every command is on PATH; otherwise, as [`have_tools`], SKIP (or a failure
/// under `CI=true`) with the script that installs them.
pub fn have_installed(commands: &[&str], installer: &str) -> bool {
    let missing = missing_commands(commands);
    if missing.is_empty() {
        return true;
    }
    skip_or_fail(&format!(
        "tools missing: {} (run {installer})",
        missing.join(", ")
    ));
    false
}

fn missing_commands(commands: &[&str]) -> Vec<String> {
    commands
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .map(|t| t.to_string())
        .collect()
}

/// Whether the tests run as root (what mounting daemons need).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

/// Waits (at most a minute) until `log()` holds `ready`, panicking with the log if the
/// daemon `child` (named `what`) exits first or never gets there.
pub fn wait_until_ready(child: &mut Child, log: &dyn Fn() -> String, ready: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log().contains(ready) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}):\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not start:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops a daemon that mounts things (buildkitd, containerd): SIGTERM, so it unmounts
/// what it can, SIGKILL only if it hangs; then whatever is still mounted under `dir`
/// (deepest first), so the directory can go.
pub fn stop_and_unmount(child: &mut Child, dir: &Path) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let root = dir.to_string_lossy().into_owned();
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&root))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").args(["-l", &m]).status();
    }
}

/// Reports a test that cannot run here: `SKIP` normally, a failure under `CI=true`.
pub fn skip_or_fail(msg: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
}

/// Runs `cmd`, panics with its output unless it succeeds; returns stdout + stderr.
pub fn run_checked(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{cmd:?} failed:\n{out}");
    out
}

/// Builds `FROM scratch` + two `COPY --from=IMAGE` lines of the tiny example's files with
/// buildah (vfs, chroot isolation) under `work`, unpacks the result with umoci, and
/// checks each copied file against `fixture` byte for byte.
pub fn buildah_copies_tiny_model_files(image: &str, fixture: &Path, work: &Path) {
    let ctx = work.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nCOPY --from={image} /model.safetensors /1_Pooling/config.json /\nCOPY --from={image} /modèle-überblick.txt /docs/\n"),
    )
    .unwrap();
    let store = work.join("store");
    let buildah = |args: &[&str]| {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args);
        c
    };
    run_checked(
        buildah(&[
            "build",
            "--isolation",
            "chroot",
            "--tls-verify=false",
            "-t",
            "localhost/copied:latest",
        ])
        .arg(&ctx),
    );
    let copied = work.join("copied");
    run_checked(
        buildah(&["push", "localhost/copied:latest"])
            .arg(format!("oci:{}:latest", copied.display())),
    );
    let rootfs = work.join("rootfs");
    run_checked(
        Command::new("umoci")
            .args(["raw", "unpack", "--image"])
            .arg(format!("{}:latest", copied.display()))
            .arg(&rootfs),
    );
    for (inside, source) in [
        ("model.safetensors", "model.safetensors"),
        ("config.json", "1_Pooling/config.json"),
        ("docs/modèle-überblick.txt", "modèle-überblick.txt"),
    ] {
        assert_eq!(
            fs::read(rootfs.join(inside)).unwrap(),
            fs::read(fixture.join(source)).unwrap(),
            "{inside}"
        );
    }
    // Let buildah's vfs store (root-owned files) be removed with the tempdir.
    let _ = buildah(&["rm", "--all"]).output();
    let _ = buildah(&["rmi", "--all", "--force"]).output();
}

/// A throwaway CNCF distribution registry (Debian's `docker-registry`) on 127.0.0.1,
/// killed on drop; optionally with an access log (`log()`) or htpasswd basic auth.
pub struct Registry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

#[derive(Default)]
pub struct RegistryOptions<'a> {
    pub access_log: bool,
    pub basic: Option<(&'a str, &'a str)>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_opts(RegistryOptions::default())
    }

    /// With an access log: every request is logged to `log_path()`.
    pub fn start_with(access_log: bool) -> Registry {
        Registry::start_opts(RegistryOptions {
            access_log,
            ..Default::default()
        })
    }

    /// Asking for htpasswd basic auth with these credentials.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::start_opts(RegistryOptions {
            basic: Some((user, password)),
            ..Default::default()
        })
    }

    pub fn start_opts(opts: RegistryOptions<'_>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut auth = String::new();
        if let Some((u, p)) = opts.basic {
            let o = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd");
            assert!(o.status.success());
            let f = dir.path().join("htpasswd");
            fs::write(&f, &o.stdout).unwrap();
            auth = format!(
                "auth: {{htpasswd: {{realm: depotai-test, path: {}}}}}\n",
                f.display()
            );
        }
        let cfg = dir.path().join("config.yml");
        fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: {}}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n{auth}",
                !opts.access_log,
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(&addr) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut resp = String::new();
                let _ = s.read_to_string(&mut resp);
                let status = resp.get(9..12).unwrap_or_default();
                if resp.starts_with("HTTP/1.") && (status == "200" || status == "401") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry { child, addr, dir }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The access log so far, one line per request.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The on-disk data file of a blob (`sha256:…`).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Every path under `root` (relative, sorted) with what it is: a file's bytes, a symlink's
/// target, or a directory.
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("symlink -> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                format!("file {}", sha256(&fs::read(&p).unwrap()))
            };
            out.insert(rel, what);
        }
    }
    out
}

/// The end-to-end check of a layout with tools we did not write; returns one line per
/// step passed and panics, with the tool's output, at the first failure:
/// 1 oci-image-tool validates the layout; 2 skopeo reads the tagged index byte for byte;
/// 3 a push to a registry and 4 a pull back (skopeo, --all --preserve-digests) change no
/// blob; 5 umoci unpacks the linux/amd64 image, 6 whose tree equals `source` (eStargz's own
/// root entries aside); 7 estargz-check verifies every layer against the manifest, the
/// config and the annotations.
pub fn oci_check(layout: &Path, source: &Path, work: &Path) -> Vec<String> {
    oci_check_under(layout, source, work, "")
}

/// [`oci_check`] of an image built with `--prefix /PREFIX`: step 6 finds `source` under
/// `PREFIX` (relative, e.g. `models`) and nothing else beside eStargz's root entries.
pub fn oci_check_under(layout: &Path, source: &Path, work: &Path, prefix: &str) -> Vec<String> {
    let mut report = Vec::new();
    let tagged = Layout::read(layout);
    let tag = tagged.layout_index["manifests"][0]["annotations"]
        ["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap()
        .to_string();

    let v = Command::new("oci-image-tool")
        .args(["validate", "--type", "imageLayout"])
        .arg(layout)
        .output()
        .unwrap();
    if v.status.success() {
        report.push("1 oci-image-tool validate --type imageLayout".to_string());
    } else {
        // Debian's oci-image-tool (1.0.0-rc) has no imageLayout type; "image" detects a layout.
        assert!(
            String::from_utf8_lossy(&v.stderr).contains("unimplemented"),
            "oci-image-tool: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        run_checked(
            Command::new("oci-image-tool")
                .args(["validate", "--type", "image", "--ref"])
                .arg(format!("name={tag}"))
                .arg(layout),
        );
        report.push("1 oci-image-tool validate --type image".to_string());
    }

    let oci_ref = format!("oci:{}:{tag}", layout.display());
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &oci_ref])
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(
        sha256(&raw.stdout),
        tagged.index_digest,
        "skopeo inspect --raw"
    );
    report.push("2 skopeo inspect --raw == the tagged index".to_string());

    let reg = Registry::start();
    let remote = format!("docker://{}/test/model:latest", reg.addr);
    let copy = ["copy", "-q", "--all", "--preserve-digests"];
    run_checked(
        Command::new("skopeo")
            .args(copy)
            .arg("--dest-tls-verify=false")
            .args([&oci_ref, &remote]),
    );
    let raw = run_checked(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &remote,
    ]));
    assert_eq!(sha256(raw.as_bytes()), tagged.index_digest, "pushed index");
    report.push("3 push: the registry serves the same index digest".to_string());

    let rt = work.join("roundtrip");
    run_checked(
        Command::new("skopeo")
            .args(copy)
            .arg("--src-tls-verify=false")
            .arg(&remote)
            .arg(format!("oci:{}:latest", rt.display())),
    );
    let mut blobs = vec![tagged.index_digest.clone()];
    for m in tagged.index["manifests"].as_array().unwrap() {
        let md = m["digest"].as_str().unwrap();
        let man = json(&blob_path(layout, md));
        blobs.push(md.to_string());
        blobs.push(man["config"]["digest"].as_str().unwrap().to_string());
        for l in man["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
    }
    for d in &blobs {
        assert_eq!(
            fs::read(blob_path(&rt, d)).unwrap(),
            fs::read(blob_path(layout, d)).unwrap(),
            "{d} after the round trip"
        );
    }
    report.push(format!(
        "4 round trip: {} blobs byte-identical",
        blobs.len()
    ));

    // umoci wants a manifest, not an index: tag the amd64 one in the round-tripped layout.
    let amd64 = tagged.index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap_or(&tagged.index["manifests"][0])
        .clone();
    let mut idx = json(&rt.join("index.json"));
    let mut desc = amd64.clone();
    desc.as_object_mut().unwrap().remove("platform");
    desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "amd64"});
    idx["manifests"].as_array_mut().unwrap().push(desc);
    fs::write(rt.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    let rootfs = work.join("rootfs");
    run_checked(
        Command::new("umoci")
            .args(["raw", "unpack", "--image"])
            .arg(format!("{}:amd64", rt.display()))
            .arg(&rootfs),
    );
    report.push("5 umoci raw unpack".to_string());

    let mut got = tree(&rootfs);
    for reserved in [
        ".prefetch.landmark",
        ".no.prefetch.landmark",
        "stargz.index.json",
    ] {
        got.remove(reserved);
    }
    if !prefix.is_empty() {
        // Only the prefix's directories beside the root entries; the files below it.
        let inside = |k: &str| {
            k == prefix
                || k.starts_with(&format!("{prefix}/"))
                || prefix.starts_with(&format!("{k}/"))
        };
        let above: Vec<&String> = got.keys().filter(|k| !inside(k)).collect();
        assert!(above.is_empty(), "outside --prefix /{prefix}: {above:?}");
        got = tree(&rootfs.join(prefix));
    }
    assert_eq!(got, tree(source), "unpacked tree vs source");
    report.push(format!("6 unpacked tree == source ({} paths)", got.len()));

    let man = json(&blob_path(layout, amd64["digest"].as_str().unwrap()));
    let cfg = json(&blob_path(
        layout,
        man["config"]["digest"].as_str().unwrap(),
    ));
    for (i, l) in man["layers"].as_array().unwrap().iter().enumerate() {
        let digest = l["digest"].as_str().unwrap();
        let ann = &l["annotations"];
        let out = run_checked(
            checker("estargz-check")
                .arg("verify")
                .arg(blob_path(layout, digest))
                .args(["--digest", digest])
                .args([
                    "--toc-digest",
                    ann["containerd.io/snapshot/stargz/toc.digest"]
                        .as_str()
                        .unwrap(),
                ])
                .args(["--diff-id", cfg["rootfs"]["diff_ids"][i].as_str().unwrap()])
                .args([
                    "--uncompressed-size",
                    ann["io.containers.estargz.uncompressed-size"]
                        .as_str()
                        .unwrap(),
                ]),
        );
        let line: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(line["ok"], true, "{out}");
        report.push(format!(
            "7.{i} estargz-check: {} files, {} chunks",
            line["files"], line["chunks"]
        ));
    }
    report
}

/// `depotai serve`, its access log on a file: the address and the log's path.
pub struct LoggedServe {
    child: Child,
    pub addr: String,
    log: PathBuf,
}

impl LoggedServe {
    pub fn start(root: &Path, log: PathBuf) -> LoggedServe {
        let mut child = depotai()
            .args(["serve", "--root"])
            .arg(root)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .expect("serve prints its address")
            .to_string();
        LoggedServe { child, addr, log }
    }

    /// Body bytes of the GETs of these blobs, from the access log
    /// (`PEER "METHOD PATH VERSION" STATUS BYTES DURATION`).
    pub fn blob_bytes(&self, digests: &[String]) -> (u64, Vec<String>) {
        access_log_bytes(&fs::read_to_string(&self.log).unwrap(), digests)
    }
}

impl Drop for LoggedServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sums the size field (the one after the status) of access-log lines that GET one of
/// these blobs. Both depotai serve's log and the distribution registry's (Apache combined
/// format) put `"GET PATH HTTP/1.1" STATUS BYTES` on the line.
pub fn access_log_bytes(log: &str, digests: &[String]) -> (u64, Vec<String>) {
    let lines: Vec<String> = log
        .lines()
        .filter(|l| {
            l.contains("\"GET /v2/") && digests.iter().any(|d| l.contains(&format!("/blobs/{d}")))
        })
        .map(str::to_string)
        .collect();
    let bytes = lines
        .iter()
        .map(|l| {
            let after = l.split("HTTP/1.1\" ").nth(1).expect("status after request");
            let mut f = after.split_whitespace();
            let _status = f.next();
            f.next()
                .and_then(|b| b.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no byte count in {l:?}"))
        })
        .sum();
    (bytes, lines)
}
