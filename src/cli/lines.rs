//! What a finished build says: one line on stderr, the same on a terminal and in a CI
//! log (`--quiet` and `--json` leave it out): the result, the model, where it went, the
//! index digest, files and layers, bytes stored (and sent), and the time. Every build
//! path prints it from here, so a CI log reads the same whichever path ran.

use depotai::units::human_bytes;

/// One finished build.
pub(super) struct Finished<'a> {
    /// `built`, `pushed` or `skipped`.
    pub result: &'a str,
    pub name: &'a str,
    /// A layout directory or a registry reference.
    pub dest: &'a str,
    pub index: &'a str,
    /// Files and layers of the image and the bytes of its layers, when it was built.
    pub built: Option<(u64, usize, u64)>,
    /// Bytes uploaded to the registry.
    pub sent: Option<u64>,
    pub seconds: f64,
}

impl Finished<'_> {
    pub(super) fn line(&self) -> String {
        let mut parts = vec![format!("index {}", self.index)];
        match self.built {
            Some((files, layers, stored)) => {
                let s = |n: u64, one: &str, many: &str| {
                    format!("{n} {}", if n == 1 { one } else { many })
                };
                parts.push(format!(
                    "{} in {}",
                    s(files, "file", "files"),
                    s(layers as u64, "layer", "layers")
                ));
                parts.push(format!("{} stored", human_bytes(stored)));
            }
            None => parts.push("up to date (same commit and settings; --force rebuilds)".into()),
        }
        if let Some(sent) = self.sent {
            parts.push(format!("{} sent", human_bytes(sent)));
        }
        parts.push(format!("{:.1}s", self.seconds));
        format!(
            "{} {} -> {}: {}",
            self.result,
            self.name,
            self.dest,
            parts.join(", ")
        )
    }

    /// Prints the line unless the command was asked to be quiet or to speak JSON.
    pub(super) fn say(&self, quiet: bool) {
        if !quiet {
            eprintln!("{}", self.line());
        }
    }
}

/// What a build says when layer `n` failed and is built once more (the job's retry).
pub(super) fn retrying(n: usize, error: &depotai::pipeline::BuildError) -> String {
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

    #[test]
    fn a_finished_build_is_one_line_with_digest_files_bytes_and_time() {
        let built = Finished {
            result: "built",
            name: "acme/m",
            dest: "out/acme/m",
            index: "sha256:ab",
            built: Some((1, 1, 1536)),
            sent: None,
            seconds: 0.31,
        };
        assert_eq!(
            built.line(),
            "built acme/m -> out/acme/m: index sha256:ab, 1 file in 1 layer, 1.5 KiB stored, 0.3s"
        );
        let pushed = Finished {
            result: "pushed",
            dest: "reg.example/acme/m:v1",
            built: Some((7, 3, 3 << 30)),
            sent: Some(1 << 30),
            seconds: 12.0,
            ..built
        };
        assert_eq!(
            pushed.line(),
            "pushed acme/m -> reg.example/acme/m:v1: index sha256:ab, 7 files in 3 layers, 3.0 GiB stored, 1.0 GiB sent, 12.0s"
        );
        let skipped = Finished {
            result: "skipped",
            built: None,
            sent: None,
            seconds: 0.04,
            ..pushed
        };
        assert_eq!(
            skipped.line(),
            "skipped acme/m -> reg.example/acme/m:v1: index sha256:ab, up to date (same commit and settings; --force rebuilds), 0.0s"
        );
    }
}
