//! `depotai build --all CATALOGUE --push PREFIX`: every model streamed from the Hub
//! emulator to a real registry (Debian's `docker-registry`) as it is built; a rerun on
//! a fresh machine skips an unchanged catalogue with one manifest request per model
//! (after the run's one check that the registry takes pushes) and no Hub request at all.
//!
//! A signal mid-stream ends the run at once, with 128 + the signal and no busy threads.
//!
//! Without `docker-registry` these tests say SKIP and pass; with `CI=true` they fail.

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::hub::{depotai_against, Content, Fault, HubServer, Origin, Repo, RepoFile};
use support::interop::{have, Registry};
use support::registry::Proxy;
use support::*;

const ALPHA_SHA: &str = "1111111111111111111111111111111111111111";
const BETA_SHA: &str = "2222222222222222222222222222222222222222";

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

fn run(server: &HubServer, home: &Path, catalogue: &Path, prefix: &str, extra: &[&str]) -> Value {
    let mut c = depotai_against(server, home);
    c.env("DEPOTAI_UPLOAD_STATE", home.join("upload-state"))
        .env_remove("DEPOTAI_REGISTRY_USER")
        .arg("build")
        .arg("--all")
        .arg(catalogue)
        .args([
            "--push",
            prefix,
            "--insecure",
            "--json",
            "--own-layer-above",
            "1MiB",
        ])
        .args(extra);
    let o = c.output().unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn statuses(report: &Value) -> Vec<(String, String, String)> {
    report["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["result"].as_str().unwrap().to_string(),
                m["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_catalogue_is_streamed_to_the_registry_and_a_fresh_rerun_skips_it_with_one_request_per_model() {
    if !have(&["docker-registry"]) {
        return;
    }
    let server = HubServer::start(vec![
        repo("acme/alpha", ALPHA_SHA, 1),
        repo("acme/beta", BETA_SHA, 2),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let catalogue = tmp.path().join("models.yaml");
    std::fs::write(
        &catalogue,
        format!(
            "models:\n  - name: acme/alpha\n    sha: {ALPHA_SHA}\n  - name: acme/beta\n    sha: {BETA_SHA}\n    tag: v2\n"
        ),
    )
    .unwrap();
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let prefix = format!("{}/mirror", proxy.addr);

    let first = run(
        &server,
        &tmp.path().join("run1"),
        &catalogue,
        &prefix,
        &["--no-cache"],
    );
    assert_eq!(
        statuses(&first),
        [
            (
                "acme/alpha".into(),
                "pushed".into(),
                "not in the registry".into()
            ),
            (
                "acme/beta".into(),
                "pushed".into(),
                "not in the registry".into()
            )
        ]
    );
    assert_eq!(first["summary"]["pushed"], 2);
    // Bounded disk: nothing of either model stayed on this machine.
    assert!(!tmp.path().join("run1/hub").exists());
    let alpha_index = first["models"][0]["index_digest"].clone();

    // A fresh machine (new HF_HOME, no upload memory): one GET of each tag, nothing else.
    server.clear_requests();
    proxy.take_requests();
    let second = run(&server, &tmp.path().join("run2"), &catalogue, &prefix, &[]);
    assert_eq!(
        statuses(&second),
        [
            ("acme/alpha".into(), "skipped".into(), "up to date".into()),
            ("acme/beta".into(), "skipped".into(), "up to date".into())
        ]
    );
    assert_eq!(second["models"][0]["index_digest"], alpha_index);
    assert_eq!(server.requests().len(), 0, "no Hub request at all");
    let reqs = proxy.take_requests();
    // Once for the run, the check that the registry takes pushes (an upload session
    // opened and cancelled); then one GET of each tag.
    assert_eq!(reqs.len(), 5, "{reqs:#?}");
    assert_eq!(
        reqs[..2],
        [
            "GET /v2/ HTTP/1.1",
            "POST /v2/mirror/acme/alpha/blobs/uploads/ HTTP/1.1"
        ]
    );
    assert!(
        reqs[2].starts_with("DELETE /v2/mirror/acme/alpha/blobs/uploads/"),
        "{reqs:#?}"
    );
    assert_eq!(
        reqs[3..],
        [
            "GET /v2/mirror/acme/alpha/manifests/latest HTTP/1.1",
            "GET /v2/mirror/acme/beta/manifests/v2 HTTP/1.1"
        ]
    );

    // Other settings: the tags are stale and both models are streamed again.
    let third = run(
        &server,
        &tmp.path().join("run3"),
        &catalogue,
        &prefix,
        &["--no-cache", "--chunk-size", "1MiB"],
    );
    assert_eq!(
        statuses(&third),
        [
            (
                "acme/alpha".into(),
                "pushed".into(),
                "built with other settings".into()
            ),
            (
                "acme/beta".into(),
                "pushed".into(),
                "built with other settings".into()
            )
        ]
    );
    assert_ne!(third["models"][0]["index_digest"], alpha_index);
}

/// CPU seconds `pid` has used so far (utime + stime of /proc/PID/stat).
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
// The child is reaped by `wait4`, for its resource usage, not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn a_signal_mid_stream_ends_build_all_push_within_two_seconds_with_no_busy_threads() {
    if !have(&["docker-registry"]) {
        return;
    }
    let reg = Registry::start();
    for (signal, status) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let server = HubServer::start(vec![
            repo("acme/alpha", ALPHA_SHA, 1),
            repo("acme/beta", BETA_SHA, 2),
        ]);
        // The weights stall after 100 kB (for a minute): the job waits mid-stream.
        server.inject(Fault::Stall {
            path: "model.safetensors".into(),
            after_bytes: 100_000,
            times: 1000,
        });
        let tmp = tempfile::tempdir().unwrap();
        let catalogue = tmp.path().join("models.yaml");
        std::fs::write(
            &catalogue,
            format!("models:\n  - name: acme/alpha\n    sha: {ALPHA_SHA}\n  - name: acme/beta\n    sha: {BETA_SHA}\n"),
        )
        .unwrap();
        let mut c = depotai_against(&server, &tmp.path().join("hf-home"));
        c.env("DEPOTAI_UPLOAD_STATE", tmp.path().join("upload-state"))
            .env("DEPOTAI_IDLE_TIMEOUT", "60")
            .env_remove("DEPOTAI_REGISTRY_USER")
            .args(["build", "--all"])
            .arg(&catalogue)
            .args([
                "--push",
                &format!("{}/mirror", reg.addr),
                "--insecure",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let pid = child.id() as i32;
        let t = Instant::now();
        while !server
            .requests()
            .iter()
            .any(|r| r.origin == Origin::Cdn && r.path.contains("model.safetensors"))
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the stream never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        let before = cpu_seconds(pid);
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let sent = Instant::now();
        // Reaped with its resource usage: the CPU time of every thread, to the end.
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
            assert!(
                sent.elapsed() < Duration::from_secs(2),
                "still running 2 s after signal {signal}; CPU since: {:.2}s",
                cpu_seconds(pid) - before
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{:?}",
            sent.elapsed()
        );
        assert_eq!(code, status, "exit status after signal {signal}");
        assert!(
            cpu - before < 0.2,
            "{:.2} CPU seconds between the signal and the exit",
            cpu - before
        );
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let report: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
        assert_eq!(
            statuses(&report)
                .into_iter()
                .map(|(n, s, _)| (n, s))
                .collect::<Vec<_>>(),
            [
                ("acme/alpha".to_string(), "interrupted".to_string()),
                ("acme/beta".to_string(), "interrupted".to_string())
            ],
            "{err}"
        );
        assert!(err.lines().last().unwrap().contains("interrupted"), "{err}");
        // Nothing was tagged.
        let mut s = std::net::TcpStream::connect(&reg.addr).unwrap();
        write!(
            s,
            "HEAD /v2/mirror/acme/alpha/manifests/latest HTTP/1.0\r\nHost: {}\r\n\r\n",
            reg.addr
        )
        .unwrap();
        let mut head = String::new();
        s.read_to_string(&mut head).unwrap();
        assert!(head.starts_with("HTTP/1.0 404"), "{head}");
    }
}
