//! What a finished unit says without `--json`: one line on stderr, the same on a
//! terminal and in a CI log, rendered from the unit's report (the one `--json` prints):
//! the result, the model, where it went, the index digest, files and layers, bytes
//! stored and sent, and the time. `build`, `build --all` and `push` print it from here,
//! and a run of several units ends with one [`summary_line`]. `--quiet` keeps only
//! failures (errors).

use depotai::report::{ImageReport, Outcome, Summary};
use depotai::units::human_bytes;

/// One finished unit.
pub(super) struct Finished<'a>(pub &'a ImageReport);

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Finished<'_> {
    pub(super) fn line(&self) -> String {
        let r = self.0;
        let name = r.name.as_deref().unwrap_or("image");
        let dest = match (&r.push, &r.output) {
            (Some(p), _) => format!(" -> {}", p.reference),
            (None, Some(o)) => format!(" -> {o}"),
            (None, None) => String::new(),
        };
        let mut parts = Vec::new();
        if let Some(index) = &r.index_digest {
            parts.push(format!("index {index}"));
        }
        match r.result {
            Outcome::Failed | Outcome::Interrupted => {
                parts.push(r.error.clone().unwrap_or_else(|| r.result.as_str().into()))
            }
            Outcome::Skipped => {
                parts.push("up to date (same commit and settings; --force rebuilds)".into())
            }
            _ => {
                if let (Some(files), false) = (r.files, r.layers.is_empty()) {
                    parts.push(format!(
                        "{} in {}",
                        count(files, "file", "files"),
                        count(r.layers.len() as u64, "layer", "layers")
                    ));
                }
                if let Some(stored) = r.stored_bytes {
                    parts.push(format!("{} stored", human_bytes(stored)));
                }
            }
        }
        if let Some(sent) = r.uploaded_bytes.filter(|_| r.result == Outcome::Pushed) {
            parts.push(format!("{} sent", human_bytes(sent)));
            if let Some(skipped) = r.skipped_bytes.filter(|&s| s > 0) {
                parts.push(format!("{} already there", human_bytes(skipped)));
            }
        }
        parts.push(format!("{:.1}s", r.seconds));
        format!("{} {name}{dest}: {}", r.result.as_str(), parts.join(", "))
    }

    /// Prints the line: always for a failure, else unless the command is quiet.
    pub(super) fn say(&self, quiet: bool) {
        let failed = matches!(self.0.result, Outcome::Failed | Outcome::Interrupted);
        if failed || !quiet {
            eprintln!("{}", self.line());
        }
    }
}

/// The last line of a run of several units (`noun`: `model`, `image`): how many ended
/// which way, the bytes stored and sent, and the time.
pub(super) fn summary_line(noun: &str, s: &Summary) -> String {
    let mut counts = Vec::new();
    for (n, what) in [
        (s.built, "built"),
        (s.pushed, "pushed"),
        (s.skipped, "skipped"),
        (s.failed, "failed"),
        (s.interrupted, "interrupted"),
    ] {
        // Built, skipped and failed always: a CI log greps for them.
        if n > 0 || matches!(what, "built" | "skipped" | "failed") {
            counts.push(format!("{n} {what}"));
        }
    }
    let mut bytes = vec![format!("{} stored", human_bytes(s.stored_bytes))];
    if s.pushed > 0 || s.uploaded_bytes > 0 {
        bytes.push(format!("{} sent", human_bytes(s.uploaded_bytes)));
    }
    format!(
        "{}: {}; {} in {:.1}s",
        count(s.models as u64, noun, &format!("{noun}s")),
        counts.join(", "),
        bytes.join(", "),
        s.seconds
    )
}

/// What a build says when layer `n` failed and is built once more (the job's retry).
/// (`n` counts from 0, as the job does; the line numbers layers from 1.)
pub(super) fn retrying(n: usize, error: &depotai::pipeline::BuildError) -> String {
    let n = n + 1;
    if depotai::job::upload_started_over(error) {
        // Not a failure: an interrupted run's upload is abandoned and started over.
        return format!(
            "layer {n}: the registry's unfinished upload from an earlier run held other bytes; uploading it again from the start"
        );
    }
    format!("layer {n}: {error}; fetching its files again and building it once more")
}

#[cfg(test)]
mod tests {
    use super::*;
    use depotai::report::{LayerReport, PushedReport};

    fn layer(number: usize) -> LayerReport {
        LayerReport {
            number,
            ..LayerReport::default()
        }
    }

    #[test]
    fn a_finished_unit_is_one_line_with_digest_files_bytes_and_time() {
        let mut built = ImageReport::new(Outcome::Built);
        built.name = Some("acme/m".into());
        built.output = Some("out/acme/m".into());
        built.index_digest = Some("sha256:ab".into());
        built.files = Some(1);
        built.layers = vec![layer(1)];
        built.stored_bytes = Some(1536);
        built.seconds = 0.31;
        assert_eq!(
            Finished(&built).line(),
            "built acme/m -> out/acme/m: index sha256:ab, 1 file in 1 layer, 1.5 KiB stored, 0.3s"
        );
        let mut pushed = built.clone();
        pushed.result = Outcome::Pushed;
        pushed.output = None;
        pushed.push = Some(PushedReport {
            reference: "reg.example/acme/m:v1".into(),
            digest: "sha256:ab".into(),
            blobs: Vec::new(),
            resumed: None,
            resumed_bytes: 0,
            requests: None,
            referrers: Vec::new(),
        });
        pushed.files = Some(7);
        pushed.layers = vec![layer(1), layer(2), layer(3)];
        pushed.stored_bytes = Some(3 << 30);
        pushed.uploaded_bytes = Some(1 << 30);
        pushed.skipped_bytes = Some(2 << 30);
        pushed.seconds = 12.0;
        assert_eq!(
            Finished(&pushed).line(),
            "pushed acme/m -> reg.example/acme/m:v1: index sha256:ab, 7 files in 3 layers, 3.0 GiB stored, 1.0 GiB sent, 2.0 GiB already there, 12.0s"
        );
        let mut skipped = pushed.clone();
        skipped.result = Outcome::Skipped;
        skipped.seconds = 0.04;
        assert_eq!(
            Finished(&skipped).line(),
            "skipped acme/m -> reg.example/acme/m:v1: index sha256:ab, up to date (same commit and settings; --force rebuilds), 0.0s"
        );
        let mut failed = ImageReport::new(Outcome::Failed);
        failed.name = Some("acme/m".into());
        failed.output = None;
        failed.error = Some("the Hub has no commit 01 of acme/m".into());
        failed.seconds = 1.26;
        assert_eq!(
            Finished(&failed).line(),
            "failed acme/m: the Hub has no commit 01 of acme/m, 1.3s"
        );
    }

    #[test]
    fn a_run_ends_with_counts_bytes_and_time() {
        let s = Summary {
            models: 3,
            pushed: 1,
            skipped: 1,
            failed: 1,
            uploaded_bytes: 2048,
            stored_bytes: 4096,
            seconds: 2.34,
            ..Summary::default()
        };
        assert_eq!(
            summary_line("model", &s),
            "3 models: 0 built, 1 pushed, 1 skipped, 1 failed; 4.0 KiB stored, 2.0 KiB sent in 2.3s"
        );
        let one = Summary {
            models: 1,
            built: 1,
            stored_bytes: 1536,
            seconds: 0.5,
            ..Summary::default()
        };
        assert_eq!(
            summary_line("image", &one),
            "1 image: 1 built, 0 skipped, 0 failed; 1.5 KiB stored in 0.5s"
        );
    }
}
