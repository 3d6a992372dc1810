//! A byte progress bar on a terminal; silence otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `total` bytes, shown only when stderr is a terminal and not `quiet`.
    pub fn bytes(total: u64, message: &str, quiet: bool) -> Progress {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        Progress { bar: Some(bar) }
    }

    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Download progress: a bar per file and one in total on a terminal, plain lines in CI
/// logs, nothing with `--quiet`.
pub fn downloads(
    total_hint: Option<u64>,
    quiet: bool,
) -> std::sync::Arc<dyn depotai::source::hub::FetchProgress> {
    use std::sync::Arc;
    if quiet {
        return Arc::new(depotai::source::hub::Silent);
    }
    if std::io::stderr().is_terminal() {
        let multi = indicatif::MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(total_hint.unwrap_or(0)));
        total.set_style(
            ProgressStyle::with_template(
                "total [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        return Arc::new(Bars {
            multi,
            total,
            files: std::sync::Mutex::new(std::collections::HashMap::new()),
        });
    }
    Arc::new(Lines)
}

struct Bars {
    multi: indicatif::MultiProgress,
    total: ProgressBar,
    files: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>>,
}

impl depotai::source::hub::FetchProgress for Bars {
    fn begin(&self, path: &str, size: u64, resumed_from: u64) {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:40!} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(path.to_string());
        bar.set_position(resumed_from);
        self.total.inc_length(size - resumed_from.min(size));
        let old = self
            .files
            .lock()
            .expect("not poisoned")
            .insert(path.to_string(), bar);
        if let Some(old) = old {
            old.finish_and_clear();
        }
    }
    fn advance(&self, path: &str, bytes: u64) {
        if let Some(b) = self.files.lock().expect("not poisoned").get(path) {
            b.inc(bytes);
        }
        self.total.inc(bytes);
    }
    fn done(&self, path: &str) {
        if let Some(b) = self.files.lock().expect("not poisoned").remove(path) {
            b.finish_and_clear();
        }
    }
    fn retry(&self, path: &str, why: &str) {
        let _ = self.multi.println(format!("retrying {path}: {why}"));
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.total.finish_and_clear();
    }
}

/// One line per event, for logs.
struct Lines;

impl depotai::source::hub::FetchProgress for Lines {
    fn begin(&self, path: &str, size: u64, resumed_from: u64) {
        if resumed_from > 0 {
            eprintln!("downloading {path} ({size} bytes, resuming at {resumed_from})");
        } else {
            eprintln!("downloading {path} ({size} bytes)");
        }
    }
    fn advance(&self, _: &str, _: u64) {}
    fn done(&self, path: &str) {
        eprintln!("downloaded {path}");
    }
    fn retry(&self, path: &str, why: &str) {
        eprintln!("retrying {path}: {why}");
    }
}
