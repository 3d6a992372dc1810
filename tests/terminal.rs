//! What a person sees on a terminal: `depotai build` from the Hub emulator run on a
//! pseudo-terminal, its output fed to a terminal emulator (`vt100`), and the screen
//! read as a person would: the bars' totals before the first byte, a stall, a resumed
//! download, lines that never wrap, the upload bar, and what Ctrl-C leaves.

mod support;

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::forgetful::Forgetful;
use support::hub::{Content, Fault, HubServer, Repo, RepoFile};
use support::SHA;

const MODEL: &str = "acme/terminal";
const MIB: u64 = 1 << 20;
const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

fn shard1() -> Content {
    Content::Generated {
        size: 6 * MIB,
        seed: 11,
    }
}

fn repo() -> Repo {
    Repo::new(
        MODEL,
        SHA,
        vec![
            RepoFile::regular("config.json", br#"{"model_type": "llama"}"#.to_vec()),
            RepoFile::lfs(SHARD1, shard1()),
            RepoFile::lfs(
                SHARD2,
                Content::Generated {
                    size: 3 * MIB,
                    seed: 12,
                },
            ),
        ],
    )
}

/// Every file's body stops before its first byte (and stays stopped: the idle timeout
/// is longer than any test).
fn stall_everything(server: &HubServer) {
    server.inject(Fault::Stall {
        path: "*".into(),
        after_bytes: 0,
        times: 1000,
    });
}

/// A command on a pseudo-terminal of `cols` columns, and the screen it draws.
struct Term {
    screen: Arc<Mutex<vt100::Parser>>,
    /// The first screen on which a line ran past the right edge into the next row.
    wrapped: Arc<Mutex<Option<String>>>,
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    _master: Box<dyn MasterPty + Send>,
}

impl Term {
    fn spawn(server: &HubServer, hf_home: &Path, cols: u16, args: &[&str]) -> Term {
        let rows = 24;
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal");
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_depotai"));
        cmd.args(args);
        for k in [
            "HF_TOKEN",
            "HF_HUB_OFFLINE",
            "HF_HUB_CACHE",
            "HF_TOKEN_PATH",
        ] {
            cmd.env_remove(k);
        }
        cmd.env("HF_ENDPOINT", &server.endpoint);
        cmd.env("HF_HOME", hf_home);
        cmd.env("DEPOTAI_RETRY_BASE", "0.05");
        // A stalled body stays stalled for the whole test.
        cmd.env("DEPOTAI_IDLE_TIMEOUT", "60");
        cmd.env("DEPOTAI_CONNECT_TIMEOUT", "2");
        cmd.env("DEPOTAI_UPLOAD_STATE", hf_home.join("uploads"));
        cmd.env("TERM", "xterm");
        cmd.cwd(hf_home.parent().unwrap());
        let child = pair.slave.spawn_command(cmd).expect("spawn depotai");
        // Only the child holds the terminal now: its exit ends the reads below.
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let wrapped = Arc::new(Mutex::new(None));
        let (s, w) = (screen.clone(), wrapped.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut p = s.lock().unwrap();
                p.process(&buf[..n]);
                let sc = p.screen();
                let mut w = w.lock().unwrap();
                if w.is_none() && (0..rows).any(|r| sc.row_wrapped(r)) {
                    *w = Some(sc.contents());
                }
            }
        });
        Term {
            screen,
            wrapped,
            child,
            writer,
            _master: pair.master,
        }
    }

    /// The screen's rows, trailing blanks left out.
    fn rows(&self) -> Vec<String> {
        let p = self.screen.lock().unwrap();
        let cols = p.screen().size().1;
        p.screen()
            .rows(0, cols)
            .map(|r| r.trim_end().to_string())
            .collect()
    }

    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits (at most 20 s) for a row that `want` accepts, and returns it.
    fn row(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self.rows().into_iter().find(|r| want(r)) {
                return r;
            }
            assert!(
                Instant::now() < until,
                "no {what} on the screen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types Ctrl-C (the terminal sends SIGINT to the command).
    fn ctrl_c(&mut self) {
        self.writer.write_all(b"\x03").unwrap();
        self.writer.flush().unwrap();
    }

    /// The exit status, within `secs`.
    fn exit_code(&mut self, secs: u64) -> u32 {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // The last output is read before the screen is looked at.
                std::thread::sleep(Duration::from_millis(200));
                return s.exit_code();
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("still running after {secs}s:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wrapped(&self) -> Option<String> {
        self.wrapped.lock().unwrap().clone()
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

struct Env {
    tmp: tempfile::TempDir,
    server: HubServer,
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
            server: HubServer::start(vec![repo()]),
        }
    }

    fn hf_home(&self) -> PathBuf {
        self.tmp.path().join("hf-home")
    }

    /// `depotai build MODEL --sha SHA EXTRA...` on a terminal `cols` wide.
    fn build(&self, cols: u16, extra: &[&str]) -> Term {
        let out = self.tmp.path().join("out/acme/terminal");
        let mut args = vec!["build", MODEL, "--sha", SHA, "--output"];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        Term::spawn(&self.server, &self.hf_home(), cols, &args)
    }
}

/// The row of the bar labelled `label`.
fn bar<'a>(rows: &'a [String], label: &str) -> Option<&'a String> {
    rows.iter().find(|r| r.starts_with(label))
}

#[test]
fn the_totals_are_on_the_screen_before_the_first_byte_and_no_line_wraps() {
    let env = Env::new();
    stall_everything(&env.server);
    // Narrower than the title (the output path is long): it is cut, not wrapped.
    let cols = 60;
    let mut t = env.build(cols, &[]);
    let download = t.row("download bar", |r| r.starts_with("download"));
    // No byte has arrived (every body is stalled), yet the totals are the listing's.
    assert!(download.contains("0 B / 9.0 MiB"), "download: {download:?}");
    let compress = t.row("compression bar", |r| r.starts_with("compress"));
    assert!(compress.contains("0 B / 9.0 MiB"), "compress: {compress:?}");
    // The title, once planned, is longer than the width: it is cut.
    t.row("the title cut to the width", |r| {
        r.starts_with("acme/terminal into ") && r.ends_with('…')
    });
    let rows = t.rows();
    for r in &rows {
        assert!(r.chars().count() < usize::from(cols), "{r:?} fills the row");
    }
    assert_eq!(t.wrapped(), None, "a line wrapped");
    t.ctrl_c();
    assert_eq!(t.exit_code(10), 130);
}

#[test]
fn a_stalled_download_says_stalled_and_for_how_long_not_its_last_rate() {
    let env = Env::new();
    // The first shard stops after 1 MiB; the rest arrives.
    env.server.inject(Fault::Stall {
        path: SHARD1.into(),
        after_bytes: MIB,
        times: 1,
    });
    let mut t = env.build(100, &[]);
    let download = t.row("a stalled download", |r| {
        r.starts_with("download") && r.contains("stalled 4s")
    });
    // 1 MiB of the first shard, the second shard and the config; no rate, no time left.
    assert!(download.contains("4.0 MiB / 9.0 MiB"), "{download:?}");
    assert!(
        !download.contains("/s") && !download.contains("eta"),
        "{download:?}"
    );
    t.ctrl_c();
    assert_eq!(t.exit_code(10), 130);
}

#[test]
fn a_resumed_download_is_announced_with_where_it_goes_on() {
    let env = Env::new();
    // An earlier run's partial download of the first shard: 2 MiB of it.
    let blobs = env.hf_home().join("hub/models--acme--terminal/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let content = shard1();
    std::fs::write(
        blobs.join(format!("{}.incomplete", content.sha256_hex())),
        content.read(0, 2 * MIB as usize),
    )
    .unwrap();
    let mut t = env.build(100, &[]);
    let note = t.row("a resume note", |r| r.starts_with("resuming "));
    assert_eq!(note, format!("resuming {SHARD1} at 2.0 MiB of 6.0 MiB"));
    assert_eq!(t.exit_code(30), 0, "{}", t.text());
    // Done: the bars are gone, the note stays above the result line.
    let rows: Vec<String> = t.rows().into_iter().filter(|r| !r.is_empty()).collect();
    assert!(
        rows.iter()
            .all(|r| bar(std::slice::from_ref(r), "download").is_none()
                && bar(std::slice::from_ref(r), "compress").is_none()),
        "{rows:?}"
    );
    // The result line (long: it wraps, as a printed line may) comes after the note.
    let result = rows
        .iter()
        .position(|r| r.starts_with("built acme/terminal -> "));
    let noted = rows.iter().position(|r| *r == note);
    assert!(
        matches!((noted, result), (Some(a), Some(b)) if a < b),
        "{rows:?}"
    );
    // Only the rest of the shard was asked for.
    let ranges: Vec<String> = env
        .server
        .requests()
        .into_iter()
        .filter(|r| r.file_path().as_deref() == Some(SHARD1))
        .filter_map(|r| r.range.clone())
        .collect();
    assert!(
        ranges.iter().all(|r| !r.starts_with("bytes=0-")),
        "{ranges:?}"
    );
}

#[test]
fn a_resumed_download_is_left_out_of_the_download_total() {
    let env = Env::new();
    stall_everything(&env.server);
    let blobs = env.hf_home().join("hub/models--acme--terminal/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let content = shard1();
    std::fs::write(
        blobs.join(format!("{}.incomplete", content.sha256_hex())),
        content.read(0, 2 * MIB as usize),
    )
    .unwrap();
    let mut t = env.build(100, &[]);
    let download = t.row("download bar", |r| r.starts_with("download"));
    assert!(download.contains("0 B / 7.0 MiB"), "{download:?}");
    let compress = t.row("compression bar", |r| r.starts_with("compress"));
    assert!(compress.contains("/ 9.0 MiB"), "{compress:?}");
    t.ctrl_c();
    assert_eq!(t.exit_code(10), 130);
}

#[test]
fn pushing_shows_an_upload_bar_with_an_estimated_total_from_the_start() {
    let env = Env::new();
    let registry = Forgetful::start();
    stall_everything(&env.server);
    let reference = format!("{}/acme/terminal:v1", registry.addr);
    let mut t = Term::spawn(
        &env.server,
        &env.hf_home(),
        100,
        &[
            "build",
            MODEL,
            "--sha",
            SHA,
            "--push",
            &reference,
            "--insecure",
        ],
    );
    let upload = t.row("upload bar", |r| r.starts_with("upload"));
    // The compressed size is not known before the layers are made: the content's, marked.
    assert!(upload.contains("0 B / ~9.0 MiB"), "{upload:?}");
    let rows = t.rows();
    let order: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.split(' ').next())
        .filter(|w| ["download", "compress", "upload"].contains(w))
        .collect();
    assert_eq!(order, ["download", "compress", "upload"], "{rows:?}");
    t.ctrl_c();
    assert_eq!(t.exit_code(10), 130);
}

#[test]
fn ctrl_c_takes_the_bars_away_and_leaves_the_interrupted_line() {
    let env = Env::new();
    stall_everything(&env.server);
    let mut t = env.build(100, &[]);
    t.row("download bar", |r| r.starts_with("download"));
    t.ctrl_c();
    assert_eq!(t.exit_code(10), 130);
    let rows = t.rows();
    for label in ["download", "compress"] {
        assert!(bar(&rows, label).is_none(), "a bar is left: {rows:?}");
    }
    // The stop's one line (it may wrap: it is printed after the bars are gone) is last.
    let from = rows
        .iter()
        .rposition(|r| r.starts_with("depotai: "))
        .unwrap_or_else(|| panic!("no line from depotai: {rows:?}"));
    let said = rows[from..].concat();
    assert!(
        said.starts_with("depotai: stopped by SIGINT: building acme/terminal")
            && said.trim_end().ends_with("no layout written"),
        "{rows:?}"
    );
}

#[test]
fn build_all_shows_the_run_above_the_current_models_bars() {
    let tmp = tempfile::tempdir().unwrap();
    const SECOND_SHA: &str = "1111111111111111111111111111111111111111";
    let second = Repo::new(
        "acme/second",
        SECOND_SHA,
        vec![RepoFile::lfs(
            "weights.safetensors",
            Content::Generated {
                size: 5 * MIB,
                seed: 13,
            },
        )],
    );
    let server = HubServer::start(vec![repo(), second]);
    // The first model builds; the second stays before its first byte.
    server.inject(Fault::Stall {
        path: "weights.safetensors".into(),
        after_bytes: 0,
        times: 1000,
    });
    let catalogue = tmp.path().join("models.yaml");
    std::fs::write(
        &catalogue,
        format!("models:\n  - name: {MODEL}\n    sha: {SHA}\n  - name: acme/second\n    sha: {SECOND_SHA}\n"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let mut t = Term::spawn(
        &server,
        &tmp.path().join("hf-home"),
        100,
        &[
            "build",
            "--all",
            catalogue.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let run = t.row("the run's line", |r| r.contains("model 2 of 2"));
    assert!(
        run.starts_with(&format!(
            "{}: model 2 of 2; 1 built, 0 skipped, 0 failed so far; ",
            catalogue.display()
        )),
        "{run:?}"
    );
    let download = t.row("the second model's download", |r| {
        r.starts_with("download") && r.contains("0 B / 5.0 MiB")
    });
    let title = t.row("the second model's title", |r| {
        r == "[2/2] acme/second: 1 file, 5.0 MiB, 1 layer"
    });
    let rows = t.rows();
    let at = |want: &str| {
        rows.iter()
            .position(|r| r == want)
            .unwrap_or_else(|| panic!("no {want:?}: {rows:?}"))
    };
    let (run_at, title_at, bar_at) = (at(&run), at(&title), at(&download));
    assert!(run_at < title_at && title_at < bar_at, "{rows:?}");
    // The first model's result line stays above the bars.
    assert!(
        rows[..run_at]
            .iter()
            .any(|r| r.starts_with("built acme/terminal -> ")),
        "{rows:?}"
    );
    t.ctrl_c();
    assert_eq!(t.exit_code(10), 130);
}

#[test]
fn without_a_terminal_nothing_is_drawn_and_a_resume_is_still_said() {
    let env = Env::new();
    let blobs = env.hf_home().join("hub/models--acme--terminal/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let content = shard1();
    std::fs::write(
        blobs.join(format!("{}.incomplete", content.sha256_hex())),
        content.read(0, 2 * MIB as usize),
    )
    .unwrap();
    let out = env.tmp.path().join("out/acme/terminal");
    let o = support::hub::depotai_against(&env.server, &env.hf_home())
        .args(["build", MODEL, "--sha", SHA, "--output"])
        .arg(&out)
        .output()
        .unwrap();
    support::assert_ok(&o);
    let err = String::from_utf8(o.stderr).unwrap();
    // No escape sequences, no carriage returns, no bar: plain lines for a log.
    assert!(
        !err.contains('\x1b') && !err.contains('\r') && !err.contains("download"),
        "{err:?}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!("resuming {SHARD1} at 2.0 MiB of 6.0 MiB"),
        "{err}"
    );
    // Then the result (its wording is the result lines' business).
    assert!(
        lines[1..].iter().any(|l| l.contains("acme/terminal")),
        "{err}"
    );
}

#[test]
fn a_stalled_build_on_a_terminal_uses_almost_no_cpu() {
    let env = Env::new();
    stall_everything(&env.server);
    let mut t = env.build(100, &[]);
    t.row("a stalled download", |r| {
        r.starts_with("download") && r.contains("stalled")
    });
    let pid = t.child.process_id().unwrap();
    // utime + stime, in clock ticks (100 a second on Linux).
    let ticks = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = ticks() - before;
    // The redraws (4 a second) and the job's transfer ticker (10 a second) only.
    assert!(used <= 10, "{used} ticks of CPU in 3 s while stalled");
    t.ctrl_c();
    assert_eq!(t.exit_code(10), 130);
}
