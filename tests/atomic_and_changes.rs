//! Failures midway leave no half-written image, and files that change while they are
//! read are caught.

mod support;

use depotai::image::default_platforms;
use depotai::layer::Options;
use depotai::layer::{Contents, Entry, EntryKind};
use depotai::pipeline::{build_image, BuildError, BuildRequest};
use depotai::source::DirSource;
use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use support::*;

fn request(out: &Path) -> BuildRequest {
    BuildRequest {
        name: "acme/m".parse().unwrap(),
        sha: SHA.parse().unwrap(),
        tag: "latest".into(),
        output: out.to_path_buf(),
        platforms: default_platforms(),
        expected_digests: Default::default(),
        index_annotations: Default::default(),
        plan: Default::default(),
        record: None,
        modelpack: false,
        layer: Options {
            chunk_size: 64 << 10,
            threads: 2,
            ..Default::default()
        },
    }
}

/// Serves `size` bytes per file but fails (or ends early) after `fail_after` bytes.
struct Flaky {
    fail_after: u64,
    short: bool,
}

struct FlakyReader {
    left: u64,
    short: bool,
}

impl Read for FlakyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return if self.short {
                Ok(0)
            } else {
                Err(io::Error::other("disk on fire"))
            };
        }
        let n = buf.len().min(self.left as usize);
        buf[..n].fill(7);
        self.left -= n as u64;
        Ok(n)
    }
}

impl Contents for Flaky {
    fn open(&self, _path: &str) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(FlakyReader {
            left: self.fail_after,
            short: self.short,
        }))
    }
}

fn big_entry() -> Vec<Entry> {
    vec![Entry {
        path: "w.bin".into(),
        kind: EntryKind::File {
            size: 300_000,
            executable: false,
        },
    }]
}

fn siblings(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_read_error_midway_leaves_the_previous_image_untouched_and_no_partial_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("img");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "acme/m",
        &out,
        &["--quiet"],
    ));
    let before = fs::read(out.join("index.json")).unwrap();

    let err = build_image(
        big_entry(),
        &Flaky {
            fail_after: 150_000,
            short: false,
        },
        &request(&out),
        &|_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert!(err.to_string().contains("w.bin"), "names the file: {err}");
    assert_eq!(fs::read(out.join("index.json")).unwrap(), before);
    Layout::read(&out); // still a complete, consistent image
    assert_eq!(siblings(tmp.path()), ["img"]);
}

#[test]
fn a_file_that_shrinks_while_read_fails_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("img");
    let err = build_image(
        big_entry(),
        &Flaky {
            fail_after: 299_999,
            short: true,
        },
        &request(&out),
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, BuildError::Layer(_)));
    assert!(
        err.to_string().contains("changed while it was read"),
        "{err}"
    );
    assert!(
        siblings(tmp.path()).is_empty(),
        "{:?}",
        siblings(tmp.path())
    );
}

#[test]
fn a_directory_file_modified_after_the_scan_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "a.txt", b"hello");
    write(&src, "b.bin", &pseudo_random(5000, 1));
    let (entries, contents) = DirSource::scan(&src).unwrap().into_entries();
    // Same length, different bytes and mtime: only the metadata check can see it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(src.join("b.bin"), pseudo_random(5000, 2)).unwrap();
    let err = build_image(
        entries,
        &contents,
        &request(&tmp.path().join("img")),
        &|_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("b.bin"), "{err}");
    assert!(err.to_string().contains("changed"), "{err}");
    assert!(!tmp.path().join("img").exists());
}

#[test]
fn progress_reports_every_content_byte_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (entries, contents) = DirSource::scan(Path::new("fixtures/tiny-model"))
        .unwrap()
        .into_entries();
    let total = depotai::layer::content_size(&entries);
    let seen = AtomicU64::new(0);
    let report = build_image(
        entries,
        &contents,
        &request(&tmp.path().join("img")),
        &|n| {
            seen.fetch_add(n, Ordering::Relaxed);
        },
    )
    .unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), total);
    assert_eq!(report.content_bytes(), total);
}

#[test]
fn leftovers_of_a_killed_build_are_cleaned_up_by_the_next_build() {
    let tmp = tempfile::tempdir().unwrap();
    // A pid that cannot be running: above the kernel's pid_max limit.
    let stale = tmp.path().join(".img.partial-4294967");
    fs::create_dir_all(stale.join("blobs/sha256")).unwrap();
    let out = tmp.path().join("img");
    assert_ok(&build(
        Path::new("fixtures/tiny-model"),
        "acme/m",
        &out,
        &["--quiet"],
    ));
    assert_eq!(siblings(tmp.path()), ["img"]);
}
