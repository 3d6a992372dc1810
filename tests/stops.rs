//! SIGINT and SIGTERM for every command, sent by `kill(2)` to the real binary while it
//! is mid-work (a stalled Hub download, a stalled registry connection, a slow
//! compression): the process is gone within 2 s, uses under 0.2 s of CPU between the
//! signal and its exit (its resource usage from `wait4`), leaves no partial output (a
//! layout's `.NAME.partial-PID`, a `get`'s `.partial`, a tag), exits with 128 + the
//! signal and says, on one line, which signal stopped it and what was left unfinished.
//! A second signal ends a stop at once. A rerun after a stopped push goes on whatever
//! the earlier run left in the registry: a session holding other bytes, a remembered
//! layer that is other bytes.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::forgetful::Forgetful;
use support::hub::{depotai_against, Content, Dtype, Fault, HubServer, Origin, Repo, RepoFile};
use support::*;

const ALPHA: &str = "1111111111111111111111111111111111111111";
const BETA: &str = "2222222222222222222222222222222222222222";

/// Two files: a config, and weights that a stall keeps half-downloaded.
fn repo(id: &str, sha: &str, seed: u64) -> Repo {
    Repo::new(
        id,
        sha,
        vec![
            RepoFile::regular(
                "config.json",
                format!("{{\"name\": \"{id}\"}}").into_bytes(),
            ),
            RepoFile::lfs(
                "model.safetensors",
                Content::Bytes(pseudo_random(3 << 20, seed)),
            ),
        ],
    )
}

/// A Hub whose weights stall after 100 kB (for a minute).
fn stalling_hub() -> HubServer {
    let server = HubServer::start(vec![
        repo("acme/alpha", ALPHA, 1),
        repo("acme/beta", BETA, 2),
    ]);
    server.inject(Fault::Stall {
        path: "model.safetensors".into(),
        after_bytes: 100_000,
        times: 1000,
    });
    server
}

/// CPU seconds `pid` has used so far (utime + stime of /proc/PID/stat, every thread).
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime is field 14.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// How a process ended after a signal.
struct Stopped {
    code: i32,
    /// CPU seconds of every thread between the signal and the exit.
    cpu: f64,
    took: Duration,
    stdout: String,
    stderr: String,
}

/// Sends `signal` to `child` and reaps it with its resource usage (not `Child::wait`:
/// `wait4` gives the CPU time of every thread to the end). Panics if it still runs 2 s
/// after the signal or was ended by a signal rather than exiting.
#[allow(clippy::zombie_processes)]
fn stop(mut child: Child, signal: i32) -> Stopped {
    let pid = child.id() as i32;
    // Both pipes drained as the process writes, so a full pipe never holds it up.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let before = cpu_seconds(pid);
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let sent = Instant::now();
    let (code, cpu) = loop {
        let mut st = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut st, libc::WNOHANG, &mut ru) };
        if r == pid {
            assert!(
                libc::WIFEXITED(st),
                "ended by a signal, not by exiting: {st}"
            );
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            break (libc::WEXITSTATUS(st), secs(ru.ru_utime) + secs(ru.ru_stime));
        }
        if sent.elapsed() > Duration::from_secs(2) {
            let used = cpu_seconds(pid) - before;
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("still running 2 s after signal {signal}; {used:.2} CPU seconds since");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = sent.elapsed();
    Stopped {
        code,
        cpu: cpu - before,
        took,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

impl Stopped {
    /// Gone within 2 s, with 128 + the signal, under 0.2 CPU seconds after it, and its
    /// last line naming the signal and `what` was left unfinished.
    fn assert_clean(&self, signal: i32, what: &str) {
        let (code, name) = match signal {
            libc::SIGTERM => (143, "SIGTERM"),
            _ => (130, "SIGINT"),
        };
        // Shown with --nocapture: the figures the README quotes.
        eprintln!(
            "exit {} in {:?}, {:.3} CPU seconds after the signal\n{}",
            self.code, self.took, self.cpu, self.stderr
        );
        assert!(self.took < Duration::from_secs(2), "{:?}", self.took);
        assert_eq!(self.code, code, "{}", self.stderr);
        assert!(
            self.cpu < 0.2,
            "{:.3} CPU seconds after the signal",
            self.cpu
        );
        let last = self.stderr.lines().last().unwrap_or_default();
        let want = format!("depotai: stopped by {name}: {what}");
        assert!(
            last.starts_with(&want),
            "{last:?} does not start with {want:?}\n{}",
            self.stderr
        );
        assert!(!self.stderr.contains("error"), "{}", self.stderr);
    }
}

/// Waits until `cond` holds, or panics after `secs`.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the Hub has been asked for the weights (and has stalled them).
fn wait_for_stall(server: &HubServer) {
    wait_for(60, "the stalled download", || {
        server
            .requests()
            .iter()
            .any(|r| r.origin == Origin::Cdn && r.path.contains("model.safetensors"))
    });
    std::thread::sleep(Duration::from_millis(300));
}

/// Every entry under `dir`, relative, sorted (hidden ones too).
fn entries(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(dir)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

fn piped(c: &mut Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn hub_cmd(server: &HubServer, tmp: &Path) -> Command {
    let mut c = depotai_against(server, &tmp.join("hf-home"));
    c.env("DEPOTAI_UPLOAD_STATE", tmp.join("upload-state"))
        .env("DEPOTAI_IDLE_TIMEOUT", "60")
        .env_remove("DEPOTAI_REGISTRY_USER")
        .current_dir(tmp);
    c
}

// ------------------------------------------------------------- build --from-dir

/// 48 MiB of weights compressed at level 12 in 64 KiB chunks on one thread: seconds of
/// work, each chunk a few milliseconds (what is in flight when the signal comes).
fn slow_dir_build(tmp: &Path, extra: &[&str]) -> Child {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    Content::weights(48 << 20, 7, Dtype::Bf16)
        .write_file(&src.join("model.safetensors"))
        .unwrap();
    write(&src, "config.json", b"{}");
    let mut c = depotai();
    c.current_dir(tmp)
        .env("DEPOTAI_UPLOAD_STATE", tmp.join("upload-state"))
        .env_remove("DEPOTAI_REGISTRY_USER")
        .args([
            "build",
            "--from-dir",
            "src",
            "--name",
            "acme/m",
            "--sha",
            SHA,
        ])
        .args([
            "--compression-level",
            "12",
            "--chunk-size",
            "64KiB",
            "--threads",
            "1",
        ])
        .args(extra);
    let child = piped(&mut c);
    // Mid-layer: the staging directory holds part of the weights' layer.
    wait_for(60, "the layer being written", || {
        entries(&tmp.join("out/acme")).iter().any(|e| {
            e.contains(".m.partial-") && e.ends_with(".partial") && {
                let p = tmp.join("out/acme").join(e);
                std::fs::metadata(p).is_ok_and(|m| m.len() > 100_000)
            }
        })
    });
    child
}

#[test]
fn a_build_from_a_directory_stops_mid_layer_and_removes_its_staging_directory() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let tmp = tempfile::tempdir().unwrap();
        let child = slow_dir_build(tmp.path(), &[]);
        let s = stop(child, signal);
        s.assert_clean(signal, "building acme/m from src: ");
        assert!(
            s.stderr.contains("of 48.0 MiB read; no layout written"),
            "{}",
            s.stderr
        );
        assert_eq!(entries(&tmp.path().join("out")), ["acme"], "left behind");
    }
}

#[test]
fn a_build_from_a_directory_with_push_stops_before_anything_is_tagged() {
    let reg = Forgetful::start();
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!("{}/acme/m:v1", reg.addr);
    let child = slow_dir_build(tmp.path(), &["--push", &reference, "--insecure"]);
    let s = stop(child, libc::SIGTERM);
    s.assert_clean(libc::SIGTERM, "building acme/m from src: ");
    assert_eq!(entries(&tmp.path().join("out")), ["acme"]);
    assert_eq!(reg.tag("acme/m", "v1"), None);
    // Only the check before the build reached the registry: no blob went up.
    assert!(reg.blobs().is_empty(), "{:?}", reg.blobs().keys());
}

// ------------------------------------------------------------- build ORG/MODEL

#[test]
fn a_hub_build_into_a_layout_stops_mid_download_and_leaves_no_staging_directory() {
    for (signal, extra) in [(libc::SIGINT, None), (libc::SIGTERM, Some("--no-cache"))] {
        let server = stalling_hub();
        let tmp = tempfile::tempdir().unwrap();
        let mut c = hub_cmd(&server, tmp.path());
        c.args(["build", "acme/alpha", "--sha", ALPHA]).args(extra);
        let child = piped(&mut c);
        wait_for_stall(&server);
        let s = stop(child, signal);
        s.assert_clean(
            signal,
            &format!("building acme/alpha at {ALPHA}: 0 of 1 layers made, "),
        );
        assert!(
            s.stderr.contains("of 3.0 MiB read; no layout written"),
            "{}",
            s.stderr
        );
        assert_eq!(entries(&tmp.path().join("out")), ["acme"], "{extra:?}");
        // --no-cache: no model byte touched the disk, before or after the signal.
        if extra.is_some() {
            let blobs = tmp.path().join("hf-home/hub/models--acme--alpha/blobs");
            assert_eq!(entries(&blobs), Vec::<String>::new());
        }
    }
}

#[test]
fn a_streamed_push_from_the_hub_stops_with_nothing_tagged() {
    let reg = Forgetful::start();
    let server = stalling_hub();
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!("{}/mirror/alpha:v1", reg.addr);
    let mut c = hub_cmd(&server, tmp.path());
    c.args([
        "build",
        "acme/alpha",
        "--sha",
        ALPHA,
        "--push",
        &reference,
        "--insecure",
    ]);
    let child = piped(&mut c);
    wait_for_stall(&server);
    let s = stop(child, libc::SIGINT);
    s.assert_clean(
        libc::SIGINT,
        &format!("building acme/alpha at {ALPHA}: 0 of 1 layers made"),
    );
    assert!(
        s.stderr.contains(&format!("nothing tagged at {reference}")),
        "{}",
        s.stderr
    );
    assert_eq!(reg.tag("mirror/alpha", "v1"), None);
    assert_eq!(entries(&tmp.path().join("out")), Vec::<String>::new());
}

// ------------------------------------------------------------- build --all

fn catalogue(tmp: &Path) -> PathBuf {
    let p = tmp.join("models.yaml");
    std::fs::write(
        &p,
        format!("models:\n  - name: acme/alpha\n    sha: {ALPHA}\n  - name: acme/beta\n    sha: {BETA}\n"),
    )
    .unwrap();
    p
}

#[test]
fn build_all_into_layouts_and_to_a_registry_stops_and_reports_every_model_interrupted() {
    let reg = Forgetful::start();
    let prefix = format!("{}/mirror", reg.addr);
    for (signal, push) in [(libc::SIGTERM, None), (libc::SIGINT, Some(prefix.as_str()))] {
        let server = stalling_hub();
        let tmp = tempfile::tempdir().unwrap();
        let cat = catalogue(tmp.path());
        let mut c = hub_cmd(&server, tmp.path());
        c.args(["build", "--all"]).arg(&cat);
        if let Some(p) = push {
            c.args(["--push", p, "--insecure"]);
        }
        let child = piped(&mut c);
        wait_for_stall(&server);
        let s = stop(child, signal);
        s.assert_clean(
            signal,
            "2 models: 0 built, 0 skipped, 0 failed, 2 interrupted; ",
        );
        // The table says what did not finish, model by model.
        let rows: Vec<&str> = s
            .stderr
            .lines()
            .filter(|l| l.starts_with("acme/"))
            .collect();
        assert_eq!(rows.len(), 2, "{}", s.stderr);
        assert!(rows.iter().all(|r| r.contains(" interrupted ")), "{rows:?}");
        assert!(rows[1].ends_with("not started: interrupted"), "{rows:?}");
        // Into layouts, the output's parent was made before the first model; nothing
        // else is left. To a registry, no layout was asked for.
        let left = if push.is_some() {
            vec![]
        } else {
            vec!["acme".to_string()]
        };
        assert_eq!(entries(&tmp.path().join("out")), left, "{push:?}");
    }
    assert_eq!(reg.tag("mirror/acme/alpha", "latest"), None);
}

// ------------------------------------------------------------- push

/// A TCP proxy that forwards until `limit` bytes have gone one way (`up`: client to
/// server), then forwards nothing more and holds the connections open: a transfer that
/// stalls midway.
struct Staller {
    addr: String,
    stalled: Arc<AtomicBool>,
}

impl Staller {
    fn start(upstream: &str, limit: u64, up: bool) -> Staller {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stalled = Arc::new(AtomicBool::new(false));
        let moved = Arc::new(AtomicU64::new(0));
        let (flag, upstream) = (stalled.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { continue };
                let server = TcpStream::connect(&upstream).unwrap();
                for (from, to, counted) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap(), up),
                    (server, client, !up),
                ] {
                    let (flag, moved) = (flag.clone(), moved.clone());
                    std::thread::spawn(move || pipe(from, to, counted, limit, &flag, &moved));
                }
            }
        });
        Staller { addr, stalled }
    }
}

fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    counted: bool,
    limit: u64,
    stalled: &AtomicBool,
    moved: &AtomicU64,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if stalled.load(Ordering::SeqCst) {
            // Silence, with the sockets open, until the test ends.
            std::thread::sleep(Duration::from_secs(120));
            return;
        }
        let Ok(n) = from.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        if counted && moved.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > limit {
            stalled.store(true, Ordering::SeqCst);
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A small layout: one 6 MiB layer of noise (so its upload takes several PATCHes).
fn noise_layout(tmp: &Path) -> PathBuf {
    let src = tmp.join("src");
    write(&src, "model.safetensors", &pseudo_random(6 << 20, 3));
    let out = tmp.join("layout");
    assert_ok(&build(&src, "acme/m", &out, &[]));
    out
}

#[test]
fn push_stops_mid_upload_with_nothing_tagged_and_says_how_many_blobs_went_up() {
    let reg = Forgetful::start();
    let proxy = Staller::start(&reg.addr, 2 << 20, true);
    let tmp = tempfile::tempdir().unwrap();
    let layout = noise_layout(tmp.path());
    let reference = format!("{}/acme/m:v1", proxy.addr);
    let mut c = depotai();
    c.env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"))
        .env_remove("DEPOTAI_REGISTRY_USER")
        .arg("push")
        .arg(&layout)
        .args([&reference, "--insecure", "--push-chunk-size", "1MiB"]);
    let child = piped(&mut c);
    wait_for(30, "the upload to stall", || {
        proxy.stalled.load(Ordering::SeqCst)
    });
    std::thread::sleep(Duration::from_millis(200));
    let s = stop(child, libc::SIGTERM);
    s.assert_clean(
        libc::SIGTERM,
        &format!("pushing {} to {reference}: ", layout.display()),
    );
    assert!(
        s.stderr.contains(
            "blobs in the registry, nothing tagged (a rerun resumes the unfinished uploads)"
        ),
        "{}",
        s.stderr
    );
    assert_eq!(reg.tag("acme/m", "v1"), None);
}

// ------------------------------------------------------------- get

#[test]
fn get_stops_mid_file_and_leaves_neither_the_file_nor_its_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = tmp.path().join("src");
    write(&src, "model.safetensors", &pseudo_random(6 << 20, 4));
    assert_ok(&build(
        &src,
        "acme/m",
        &root.join("acme/m"),
        &["--chunk-size", "256KiB"],
    ));
    let mut serve = piped(
        depotai()
            .args(["serve", "--quiet", "--addr", "127.0.0.1:0", "--root"])
            .arg(&root),
    );
    let mut line = String::new();
    BufReader::new(serve.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let upstream = line.trim().rsplit_once("http://").unwrap().1.to_string();
    // The TOC comes through; the weights' chunks stall after 2 MiB.
    let proxy = Staller::start(&upstream, 2 << 20, false);
    let out = tmp.path().join("got");
    std::fs::create_dir_all(&out).unwrap();
    let reference = format!("{}/acme/m", proxy.addr);
    let mut c = depotai();
    c.args(["get", &reference, "/model.safetensors", "--insecure", "-o"])
        .arg(out.join("model.safetensors"));
    let child = piped(&mut c);
    wait_for(30, "the download to stall", || {
        proxy.stalled.load(Ordering::SeqCst)
    });
    wait_for(10, "the .partial", || {
        entries(&out) == ["model.safetensors.partial"]
    });
    let s = stop(child, libc::SIGINT);
    s.assert_clean(
        libc::SIGINT,
        &format!("getting /model.safetensors from {reference}:latest: "),
    );
    assert_eq!(entries(&out), Vec::<String>::new());
    let _ = serve.kill();
    let _ = serve.wait();
}

// ------------------------------------------------------------- verify

#[test]
fn verify_stops_mid_rebuild_without_a_verdict() {
    let server = HubServer::start(vec![repo("acme/alpha", ALPHA, 1)]);
    let tmp = tempfile::tempdir().unwrap();
    let o = hub_cmd(&server, tmp.path())
        .args(["build", "acme/alpha", "--sha", ALPHA])
        .output()
        .unwrap();
    assert_ok(&o);
    server.inject(Fault::Stall {
        path: "model.safetensors".into(),
        after_bytes: 100_000,
        times: 1000,
    });
    server.clear_requests();
    let mut c = hub_cmd(&server, tmp.path());
    c.args(["verify", "out/acme/alpha"]);
    let child = piped(&mut c);
    wait_for_stall(&server);
    let s = stop(child, libc::SIGTERM);
    s.assert_clean(
        libc::SIGTERM,
        &format!("rebuilding acme/alpha at {ALPHA}: not finished, nothing compared"),
    );
    assert!(!s.stdout.contains("verified"), "{}", s.stdout);
    assert!(!s.stderr.contains("does not match"), "{}", s.stderr);
}

// ------------------------------------------------------------- serve

#[test]
fn serve_stops_on_either_signal_with_its_status_and_a_line() {
    let tmp = tempfile::tempdir().unwrap();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let mut child = piped(
            depotai()
                .args(["serve", "--quiet", "--addr", "127.0.0.1:0", "--root"])
                .arg(tmp.path()),
        );
        let mut line = String::new();
        let mut r = BufReader::new(child.stdout.take().unwrap());
        r.read_line(&mut line).unwrap();
        let addr = line.trim().rsplit_once("http://").unwrap().1.to_string();
        // A client that keeps its connection open, idle.
        let mut idle = TcpStream::connect(&addr).unwrap();
        write!(idle, "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        child.stdout = None;
        let s = stop(child, signal);
        s.assert_clean(
            signal,
            &format!(
                "serving {} on http://{addr}: no new connections taken",
                tmp.path().display()
            ),
        );
        assert!(TcpStream::connect(&addr).is_err());
    }
}

// ------------------------------------------------------------- the rerun after a stop

/// Path and query of `url` (an absolute upload Location, or already a path).
fn path_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/').unwrap()..],
        None => url,
    }
}

#[test]
fn a_rerun_after_a_stopped_push_starts_over_an_upload_the_registry_holds_other_bytes_for() {
    rerun_after_a_stopped_push(false, &[]);
    rerun_after_a_stopped_push(false, &["--no-cache"]);
    rerun_after_a_stopped_push(true, &[]);
}

/// A streamed push (`build ORG/MODEL --push`, or `build --all --push` when `all`)
/// stopped mid-upload, the session it leaves given other bytes, then run again.
fn rerun_after_a_stopped_push(all: bool, extra: &[&str]) {
    let reg = Forgetful::start();
    // A file the layer reads before the weights, which stall: its bytes make PATCHes
    // that are acknowledged and remembered, then the upload waits for the weights.
    let alpha = Repo::new(
        "acme/alpha",
        ALPHA,
        vec![
            RepoFile::regular("aaa.bin", pseudo_random(512 << 10, 9)),
            RepoFile::lfs(
                "model.safetensors",
                Content::Bytes(pseudo_random(3 << 20, 1)),
            ),
        ],
    );
    let server = HubServer::start(vec![alpha]);
    server.inject(Fault::Stall {
        path: "model.safetensors".into(),
        after_bytes: 100_000,
        times: 1000,
    });
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("upload-state");
    let cat = tmp.path().join("models.yaml");
    let entry = format!("models:\n  - name: acme/alpha\n    sha: {ALPHA}\n    tag: v1\n");
    std::fs::write(&cat, entry).unwrap();
    let prefix = format!("{}/mirror", reg.addr);
    let reference = format!("{prefix}/acme/alpha:v1");
    let what: Vec<&str> = match all {
        true => vec!["build", "--all", cat.to_str().unwrap(), "--push", &prefix],
        false => vec!["build", "acme/alpha", "--sha", ALPHA, "--push", &reference],
    };
    let args = [
        "--insecure",
        "--chunk-size",
        "64KiB",
        "--push-chunk-size",
        "64KiB",
    ];
    // Small Range windows: the weights reach the layer before the stall.
    let run = || {
        let mut c = hub_cmd(&server, tmp.path());
        c.env("DEPOTAI_STREAM_WINDOW", "128KiB")
            .args(&what)
            .args(args)
            .args(extra);
        c
    };
    let child = piped(&mut run());
    let pending = || -> Option<serde_json::Value> {
        let e = entries(&state)
            .into_iter()
            .find(|e| e.ends_with(".pending"))?;
        serde_json::from_slice(&std::fs::read(state.join(e)).ok()?).ok()
    };
    wait_for(60, "an acknowledged PATCH", || {
        pending().is_some_and(|p| p["offset"].as_u64() > Some(0))
    });
    wait_for_stall(&server);
    let stopped = match all {
        true => "1 model: 0 built, 0 skipped, 0 failed, 1 interrupted",
        false => "building acme/alpha at ",
    };
    stop(child, libc::SIGINT).assert_clean(libc::SIGINT, stopped);
    let p = pending().unwrap();

    // The session the rerun will find now holds, past the remembered offset, bytes
    // that are not the layer's (as after a PATCH of other bytes cut midway): nothing
    // can check them before the closing PUT, which the registry refuses.
    let offset = p["offset"].as_u64().unwrap();
    let mut s = TcpStream::connect(&reg.addr).unwrap();
    write!(
        s,
        "PATCH {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Range: {offset}-{}\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
        path_of(p["location"].as_str().unwrap()),
        reg.addr,
        offset + 999
    )
    .unwrap();
    s.write_all(&[0xEE; 1000]).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    server.clear_faults();
    let o = run().output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_ok(&o);
    // Said as what it is, a fresh start of that upload, not as a failure.
    let note = "layer 1: the registry's unfinished upload from an earlier run held other bytes; uploading it again from the start";
    assert_eq!(
        err.lines().filter(|l| l.ends_with(note)).count(),
        1,
        "{err}"
    );
    assert!(
        !err.contains("run again") && !err.contains("error"),
        "{err}"
    );
    // The stale session was refused at its PUT, once; the layer went up afresh and the
    // tag points at the image.
    assert_eq!(reg.digest_mismatches(), 1, "{err}");
    let tag = reg.tag("mirror/acme/alpha", "v1").expect("tagged");
    let done = match all {
        true => "1 model: 0 built, 1 pushed, 0 skipped, 0 failed; ".to_string(),
        false => format!("pushed acme/alpha -> {reference}: index {tag}"),
    };
    assert!(err.contains(&done), "{err}");
    assert!(pending().is_none(), "{:?}", entries(&state));
}

// ------------------------------------------------------------- a second signal

#[test]
fn a_second_signal_ends_a_stop_that_is_still_waiting_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = tmp.path().join("src");
    write(&src, "model.safetensors", &pseudo_random(16 << 20, 5));
    assert_ok(&build(&src, "acme/m", &root.join("acme/m"), &[]));
    let layer = Layout::read(&root.join("acme/m")).layer_digest;
    let mut child = piped(
        depotai()
            .args(["serve", "--quiet", "--addr", "127.0.0.1:0", "--root"])
            .arg(&root),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit_once("http://").unwrap().1.to_string();
    // A download whose client stops reading: the first signal's graceful stop waits
    // for it (--shutdown-grace, 10 s).
    let mut slow = TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "GET /v2/acme/m/blobs/{layer} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 4096];
    let _ = slow.read(&mut head).unwrap();
    let pid = child.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the download is still owed"
    );
    let s = stop(child, libc::SIGINT);
    // At once, with the second signal's status, and nothing more said.
    assert!(s.took < Duration::from_millis(500), "{:?}", s.took);
    assert_eq!(s.code, 130, "{}", s.stderr);
    assert!(!s.stderr.contains("stopped by"), "{}", s.stderr);
}

#[test]
fn a_stop_during_the_check_before_a_push_says_nothing_was_sent() {
    // A registry that takes the connection and never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let held: Vec<TcpStream> = l.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let server = HubServer::start(vec![repo("acme/alpha", ALPHA, 1)]);
    let tmp = tempfile::tempdir().unwrap();
    let mut c = hub_cmd(&server, tmp.path());
    c.args([
        "build",
        "acme/alpha",
        "--sha",
        ALPHA,
        "--insecure",
        "--push",
    ])
    .arg(format!("{addr}/mirror/alpha"));
    let child = piped(&mut c);
    std::thread::sleep(Duration::from_millis(500));
    let s = stop(child, libc::SIGTERM);
    s.assert_clean(
        libc::SIGTERM,
        &format!("checking that {addr} takes a push: nothing sent"),
    );
    // Stopped before the first Hub request.
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn a_finished_layer_an_earlier_run_remembered_as_other_bytes_is_uploaded_again() {
    let reg = Forgetful::start();
    let server = HubServer::start(vec![repo("acme/alpha", ALPHA, 1)]);
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("upload-state");
    let reference = format!("{}/mirror/acme/alpha:v1", reg.addr);
    let run = || {
        hub_cmd(&server, tmp.path())
            .args([
                "build",
                "acme/alpha",
                "--sha",
                ALPHA,
                "--insecure",
                "--force",
            ])
            .args(["--push", &reference])
            .output()
            .unwrap()
    };
    assert_ok(&run());
    let index = reg.tag("mirror/acme/alpha", "v1").unwrap();
    // The one layer's record, made to name another blob the registry has: a rerun
    // finds it there, builds the layer into a digest only, and gets other bytes.
    let done: Vec<String> = entries(&state)
        .into_iter()
        .filter(|e| e.ends_with(".done"))
        .collect();
    assert_eq!(done.len(), 1, "{:?}", entries(&state));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join(&done[0])).unwrap()).unwrap();
    let layer = record["digest"].as_str().unwrap().to_string();
    let (other, seen) = reg.blobs().into_iter().find(|(d, _)| *d != layer).unwrap();
    let forged = serde_json::json!({"digest": other, "size": seen.size});
    std::fs::write(state.join(&done[0]), forged.to_string()).unwrap();
    let uploads = reg.blobs()[&layer].uploads;

    let o = run();
    assert_ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    let note = "layer 1: the registry's unfinished upload from an earlier run held other bytes; uploading it again from the start";
    assert_eq!(err.lines().filter(|l| *l == note).count(), 1, "{err}");
    // Uploaded afresh, and the same image tagged again.
    assert_eq!(reg.blobs()[&layer].uploads, uploads + 1, "{err}");
    assert_eq!(reg.tag("mirror/acme/alpha", "v1"), Some(index));
}
