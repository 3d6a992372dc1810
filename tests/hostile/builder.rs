//! The builder refuses what readers refuse, sees only what is inside the directory it
//! is given, and keeps its memory bounded (issue 22, items 2, 3 and 6). Every refusal
//! is one line naming the file and the rule, exit status 1, and nothing written: no
//! image, no staging directory.

use super::support::hostile::depotai_bounded;
use super::support::hub::{depotai_against, HubServer, Repo, RepoFile};
use super::support::SHA;
use super::HUB_SHA;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;

/// A fresh working directory; on tmpfs when there is one, since some cases make
/// hundreds of thousands of names.
fn workdir() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// A working directory with a model in `m/` holding `config.json`.
fn model() -> tempfile::TempDir {
    let cwd = workdir();
    fs::create_dir(cwd.path().join("m")).unwrap();
    fs::write(cwd.path().join("m/config.json"), b"{}").unwrap();
    cwd
}

/// `depotai build --from-dir m --name acme/m --sha SHA ARGS` in `cwd`, under the 512 MiB
/// address-space limit, with its peak RSS.
fn build(cwd: &Path, args: &[&str]) -> (Output, Option<u64>) {
    let mut a = vec!["build", "--from-dir", "m", "--name", "acme/m", "--sha", SHA];
    a.extend_from_slice(args);
    depotai_bounded(cwd, &a)
}

/// Refused as the builder must: exit status 1, one line on stderr with every one of
/// `wants`, no panic, and nothing beside the model: no `out/`, no staging directory.
fn assert_refused(run: &(Output, Option<u64>), cwd: &Path, wants: &[&str]) {
    let (o, peak) = run;
    let err = String::from_utf8_lossy(&o.stderr);
    if let Some(kib) = peak {
        eprintln!("peak RSS {kib} KiB: {}", err.trim());
    }
    assert_eq!(o.status.code(), Some(1), "exit status; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("depotai: error: "), "{err}");
    for want in wants {
        assert!(err.contains(want), "wanted {want:?} in: {err}");
    }
    for bad in ["panicked", "memory allocation", "RUST_BACKTRACE"] {
        assert!(!err.contains(bad), "{bad}: {err}");
    }
    let mut left: Vec<String> = fs::read_dir(cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["m"], "nothing but the model in {}", cwd.display());
}

fn summary(o: &Output) -> Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every file name in every layer of a `--json` summary.
fn files_of(s: &Value) -> Vec<String> {
    s["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["files"].as_array().unwrap().clone())
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

/// `n` names under `m/many/`, hard links to a few files: cheap to make by the
/// hundred thousand.
fn many_links(cwd: &Path, n: usize) {
    let dir = cwd.join("m/many");
    fs::create_dir_all(&dir).unwrap();
    let mut source = dir.join("x");
    for i in 0..n {
        // ext4 allows 65,000 links to one inode.
        if i % 60_000 == 0 {
            source = dir.join(format!("x{}", i / 60_000));
            fs::write(&source, b"tiny\n").unwrap();
        }
        let sub = dir.join(format!("{:03}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir(&sub).unwrap();
        }
        fs::hard_link(&source, sub.join(format!("{i:06}"))).unwrap();
    }
}

/// A sparse file: as large as a test needs, without the disk.
fn sparse(path: &Path, size: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::File::create(path).unwrap().set_len(size).unwrap();
}

#[test]
fn a_symlink_that_climbs_out_through_a_link_to_its_own_directory_is_refused() {
    let cwd = model();
    let m = cwd.path().join("m");
    symlink(".", m.join("s")).unwrap();
    // Read as text it stays inside (eight directories down, eight up); on disk each `s`
    // is the directory itself, so it climbs eight levels above the model.
    symlink(
        "s/s/s/s/s/s/s/s/../../../../../../../../etc/passwd",
        m.join("t"),
    )
    .unwrap();
    assert_refused(
        &build(cwd.path(), &[]),
        cwd.path(),
        &[
            "symlink m/t points outside the model directory (s/s/s/s/s/s/s/s/../../../../../../../../etc/passwd)",
            "copy the file in or remove the link",
        ],
    );
    fs::remove_file(m.join("t")).unwrap();
    symlink("b", m.join("a")).unwrap();
    symlink("a", m.join("b")).unwrap();
    assert_refused(
        &build(cwd.path(), &[]),
        cwd.path(),
        &["symlink m/a does not resolve within 40 links (a loop?); remove the link"],
    );
    // Through the same link, a target that stays inside is kept as a link.
    fs::remove_file(m.join("a")).unwrap();
    fs::remove_file(m.join("b")).unwrap();
    symlink("s/s/s/config.json", m.join("u")).unwrap();
    let s = summary(&build(cwd.path(), &["--json", "--output", "out/m"]).0);
    assert_eq!(files_of(&s), ["config.json"]);
    let layout = super::support::Layout::read(&cwd.path().join("out/m"));
    let (_, toc, _) = super::support::toc_of(&layout.blob);
    let links: Vec<(&str, &str)> = toc
        .entries
        .iter()
        .filter(|e| e.kind == "symlink")
        .map(|e| (e.name.as_str(), e.link_name.as_str()))
        .collect();
    assert_eq!(links, [("s", "."), ("u", "s/s/s/config.json")]);
}

#[test]
fn whiteout_names_are_refused_before_anything_is_written() {
    for name in [".wh.w.bin", "sub/.wh..wh..opq"] {
        let cwd = model();
        let path = cwd.path().join("m").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"").unwrap();
        assert_refused(
            &build(cwd.path(), &[]),
            cwd.path(),
            &[
                &format!("m/{name} has a name no image may hold (whiteout name: a component starting with '.wh.' hides files when a runtime unpacks the layer); rename it"),
            ],
        );
    }
}

#[test]
fn names_with_control_characters_or_backslashes_are_refused_naming_the_file() {
    for (name, shown, rule) in [
        ("a\nb", "a\\nb", "control character in the name"),
        (
            "a\u{1b}[31mb",
            "a\\u{1b}[31mb",
            "control character in the name",
        ),
        ("a\tb", "a\\tb", "control character in the name"),
        ("a\u{7f}b", "a\\u{7f}b", "control character in the name"),
        ("a\\b", "a\\b", "backslash in the name"),
    ] {
        let cwd = model();
        fs::write(cwd.path().join("m").join(name), b"x").unwrap();
        assert_refused(
            &build(cwd.path(), &[]),
            cwd.path(),
            &[&format!(
                "m/{shown} has a name no image may hold ({rule}); rename it"
            )],
        );
    }
}

#[test]
fn a_chunk_size_outside_64_kib_to_64_mib_is_refused_before_anything_is_read() {
    let cwd = model();
    // 4 bytes (a typo for 4MiB) once cut a 4 MiB file into a million members.
    fs::write(cwd.path().join("m/w.bin"), vec![7u8; 4 << 20]).unwrap();
    for (flag, shown) in [("4", "4"), ("65535", "65535"), ("128MiB", "134217728")] {
        let run = build(cwd.path(), &["--chunk-size", flag]);
        assert_refused(
            &run,
            cwd.path(),
            &[&format!("--chunk-size {shown} (bytes) is out of range: use 64KiB to 64MiB (a size takes a unit, e.g. 4MiB)")],
        );
        assert!(run.1.is_none_or(|kib| kib < 64 << 10), "{:?}", run.1);
    }
}

#[test]
fn rebuilding_a_directory_into_its_default_output_gives_the_same_image_each_time() {
    let cwd = model();
    let m = cwd.path().join("m");
    fs::write(m.join("tokenizer.json"), b"{\"v\": 1}").unwrap();
    // A staging directory of a build still running (PID 1 is always alive) is no input
    // either.
    let staging = m.join("out/acme/.m.partial-1");
    fs::create_dir_all(staging.join("blobs/sha256")).unwrap();
    fs::write(staging.join("blobs/sha256/half"), b"half a layer").unwrap();
    let mut digests = Vec::new();
    for _ in 0..3 {
        let (o, _) = depotai_bounded(
            &m,
            &[
                "build",
                "--from-dir",
                ".",
                "--name",
                "acme/m",
                "--sha",
                SHA,
                "--json",
            ],
        );
        let s = summary(&o);
        assert_eq!(s["output"], "out/acme/m");
        assert_eq!(files_of(&s), ["config.json", "tokenizer.json"]);
        digests.push((
            s["index_digest"].as_str().unwrap().to_string(),
            s["layers"][0]["digest"].as_str().unwrap().to_string(),
            s["layers"][0]["size"].as_u64().unwrap(),
        ));
    }
    assert!(m.join("out/acme/m/index.json").is_file());
    assert_eq!(digests[0], digests[1]);
    assert_eq!(digests[1], digests[2]);
    // The same files elsewhere, without any output beside them: the same image.
    let other = model();
    fs::write(other.path().join("m/tokenizer.json"), b"{\"v\": 1}").unwrap();
    let s = summary(&build(other.path(), &["--json"]).0);
    assert_eq!(s["index_digest"].as_str().unwrap(), digests[0].0);
}

#[test]
fn a_directory_with_more_entries_than_a_toc_holds_is_refused_while_walking() {
    let cwd = model();
    // config.json, many/, 5 sources, 263 directories and the links: past 262,144.
    many_links(cwd.path(), 262_144);
    let run = build(cwd.path(), &[]);
    assert_refused(
        &run,
        cwd.path(),
        &["m holds more than 262144 files, directories and links, the most one layer's TOC holds (readers refuse more); leave files out or split the model"],
    );
    // The walk stops at the limit, before the layer's memory is spent.
    let kib = run.1.expect("/usr/bin/time");
    assert!(kib < 256 << 10, "{kib} KiB");
}

#[test]
fn a_file_with_more_chunks_than_a_toc_holds_is_refused_naming_it() {
    let cwd = model();
    // 16 GiB in 64 KiB chunks is 262,144 TOC entries, and eStargz adds its landmark.
    sparse(&cwd.path().join("m/w.bin"), 16 << 30);
    assert_refused(
        &build(cwd.path(), &["--chunk-size", "64KiB"]),
        cwd.path(),
        &["\"w.bin\": the layer's TOC would pass 262144 entries here, the most a reader accepts (one per file, directory and symlink, and one per --chunk-size chunk of a large file); use fewer files or a larger --chunk-size"],
    );
}

#[test]
fn a_layer_whose_toc_would_pass_50_mib_is_refused_naming_the_file() {
    let cwd = model();
    // Every chunk's TOC entry repeats the file's name: 3,514 bytes of it, 20,000
    // times, is about 74 MiB of TOC.
    let deep = format!("{}/w.bin", vec!["d".repeat(250); 14].join("/"));
    sparse(&cwd.path().join("m").join(&deep), 20_000 << 16);
    let shown: String = deep.chars().take(200).collect();
    assert_refused(
        &build(cwd.path(), &["--chunk-size", "64KiB"]),
        cwd.path(),
        &[
            &format!(
                "\"{shown}…\": the layer's TOC would pass 50.0 MiB here, the most a reader accepts"
            ),
            "use fewer files, shorter names or a larger --chunk-size",
        ],
    );
}

#[test]
fn a_zstd_chunked_layer_whose_tar_split_would_pass_50_mib_is_refused() {
    let cwd = model();
    // About 1.5 KiB of tar-split per small file (its 512-byte header and padding, in
    // base64): 40,000 files pass 50 MiB.
    many_links(cwd.path(), 40_000);
    assert_refused(
        &build(cwd.path(), &["--format", "zstd-chunked"]),
        cwd.path(),
        &[
            "the layer's zstd:chunked tar-split would pass 50.0 MiB here",
            "use fewer files or --format estargz",
        ],
    );
}

#[test]
fn memory_per_file_stays_flat_and_small() {
    // Two directories of small files, 10,000 and 30,000: the peak grows by what a
    // file costs (its walk entry, its record, its TOC entry and their copies), and that
    // cost stays small enough that the most small files one layer can carry fit in
    // 256 MiB: a TOC entry of a small file is at least 276 bytes, so a 50 MiB TOC holds
    // about 190,000 (a directory with more is refused before its layer is built).
    let mut peaks = Vec::new();
    for n in [10_000, 30_000] {
        let cwd = model();
        many_links(cwd.path(), n);
        let (o, kib) = build(cwd.path(), &["--quiet", "--threads", "2"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let Some(kib) = kib else {
            eprintln!("SKIP: no /usr/bin/time");
            return;
        };
        peaks.push(kib);
    }
    let per_file = (peaks[1] - peaks[0]) as f64 * 1024.0 / 20_000.0;
    eprintln!("peak RSS {peaks:?} KiB: {per_file:.0} bytes per file");
    assert!(per_file < 1536.0, "{per_file:.0} bytes per file");
    let at_limit = peaks[0] as f64 * 1024.0 + per_file * (190_000 - 10_000) as f64;
    assert!(
        at_limit < (256 << 20) as f64,
        "{at_limit:.0} bytes at 190,000 files"
    );
}

#[test]
fn a_hub_listing_with_whiteout_or_control_names_is_refused_before_any_download() {
    let server = HubServer::start(vec![Repo::new(
        "acme/model",
        HUB_SHA,
        vec![
            RepoFile::regular("config.json", "{}"),
            RepoFile::regular(".wh.w.bin", "hidden"),
            RepoFile::regular("sub/.wh..wh..opq", ""),
            RepoFile::regular("a\u{1b}[31mb.txt", "red"),
        ],
    )]);
    let cwd = workdir();
    let o = depotai_against(&server, &cwd.path().join("hf-home"))
        .args(["build", "acme/model", "--sha", HUB_SHA, "--output", "out/m"])
        .current_dir(cwd.path())
        .env("HOME", cwd.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let whiteout = "(whiteout name: a component starting with '.wh.' hides files when a runtime unpacks the layer)";
    for want in [
        "acme/model lists unsafe file names, refusing to download anything: ",
        &format!("\".wh.w.bin\" {whiteout}"),
        &format!("\"sub/.wh..wh..opq\" {whiteout}"),
        "\"a\\u{1b}[31mb.txt\" (control character in the name)",
    ] {
        assert!(err.contains(want), "wanted {want:?} in {err}");
    }
    let downloads: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.contains("/resolve/"))
        .collect();
    assert_eq!(downloads, Vec::<String>::new());
    assert!(!cwd.path().join("out").exists());
}
