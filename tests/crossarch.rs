//! The cross-architecture promise: depotai's layers have the same bytes on aarch64 as on
//! x86-64. `scripts/crossarch.sh` compiles `interop/crossarch/members.c` against the exact
//! C sources the pinned crates build (libdeflate 1.26.1 from libdeflate-sys, zstd 1.5.7
//! from zstd-sys 2.0.16) natively and, with Debian's cross compiler, for aarch64; the
//! aarch64 build runs under qemu-user. Fed the uncompressed members of depotai's own
//! layers (the bundled example and a generated 12 MiB model), both builds must give the
//! same compressed bytes at every level offered, and the native build must give exactly
//! the members depotai wrote, so its digests stand for the layers'.

mod support;

use depotai::layer::{estargz, zstd_chunked, Format};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use support::interop::{have_installed, skip_or_fail};
use support::{assert_ok, build, sha256_hex, weights_like, write};

const TINY: &str = "fixtures/tiny-model";

/// The directory holding `members-native` and `members-aarch64`, built (or found in the
/// cache) by `scripts/crossarch.sh --build`; `None` after a SKIP when the tools are absent.
fn drivers() -> Option<PathBuf> {
    if !have_installed(
        &["cc", "aarch64-linux-gnu-gcc", "qemu-aarch64"],
        "scripts/crossarch.sh",
    ) {
        return None;
    }
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| {
            let o = Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/crossarch.sh"))
                .arg("--build")
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/crossarch.sh");
            let out = String::from_utf8_lossy(&o.stdout);
            let dir = PathBuf::from(out.lines().last()?.trim());
            (o.status.success() && dir.join("members-aarch64").is_file()).then_some(dir)
        })
        .clone();
    if dir.is_none() {
        skip_or_fail(
            "scripts/crossarch.sh --build could not build the drivers (its error is above)",
        );
    }
    dir
}

/// Two files, 12 MiB: weight-like bytes in three 4 MiB chunks (the last one 2 MiB) and
/// tokenizer-like text in one, so both the near-incompressible and the very repetitive
/// paths of each encoder run.
fn generated_model(root: &Path) {
    write(root, "model.safetensors", &weights_like(10 << 20, 7));
    let mut vocab: String = (0..200_000)
        .map(|i| format!("\"tok{i}\": {i},\n"))
        .collect();
    vocab.truncate(2 << 20);
    write(root, "tokenizer.json", vocab.as_bytes());
}

/// One unit the encoder made, and what it holds uncompressed.
struct Member {
    raw: Vec<u8>,
    compressed: Vec<u8>,
}

/// What the encoder made in one layer: `members`, in blob order (eStargz: every gzip
/// member but the footer, the TOC's included; zstd:chunked: every frame before the
/// manifest, then the manifest), and zstd:chunked's tar-split (a streaming frame).
struct Encoded {
    members: Vec<Member>,
    tar_split: Option<Member>,
}

/// Walks an eStargz blob's gzip members with flate2, which stops at each member's end.
fn estargz_members(blob: &[u8]) -> Encoded {
    let end = blob.len() - estargz::FOOTER_SIZE;
    let mut rest = &blob[..end];
    let mut members = Vec::new();
    while !rest.is_empty() {
        let mut raw = Vec::new();
        let mut gz = flate2::bufread::GzDecoder::new(rest);
        gz.read_to_end(&mut raw).expect("a gzip member");
        let after = gz.into_inner();
        let len = rest.len() - after.len();
        members.push(Member {
            raw,
            compressed: rest[..len].to_vec(),
        });
        rest = after;
    }
    Encoded {
        members,
        tar_split: None,
    }
}

/// Walks a zstd:chunked blob's frames up to the manifest's skippable frame (the footer
/// says where), then takes the manifest and the tar-split.
fn zstd_chunked_members(blob: &[u8]) -> Encoded {
    let footer = zstd_chunked::parse_footer(&blob[blob.len() - zstd_chunked::FOOTER_FRAME_SIZE..])
        .expect("a zstd:chunked footer");
    let frame = |compressed: &[u8]| Member {
        raw: zstd::stream::decode_all(compressed).expect("a zstd frame"),
        compressed: compressed.to_vec(),
    };
    let at = |offset: u64, len: u64| &blob[offset as usize..(offset + len) as usize];
    // The manifest's skippable frame header (8 bytes) ends the members.
    let mut rest = &blob[..footer.manifest_offset as usize - 8];
    let mut members = Vec::new();
    while !rest.is_empty() {
        let len = zstd::zstd_safe::find_frame_compressed_size(rest).expect("a zstd frame");
        members.push(frame(&rest[..len]));
        rest = &rest[len..];
    }
    members.push(frame(at(footer.manifest_offset, footer.manifest_len)));
    Encoded {
        members,
        tar_split: Some(frame(at(footer.tar_split_offset, footer.tar_split_len))),
    }
}

/// Builds `src` as one layer in `format` at `level` and takes it apart.
fn encoded(src: &Path, format: Format, level: i32, work: &Path) -> Encoded {
    let out = work.join("layout");
    let o = build(
        src,
        "crossarch/model",
        &out,
        &[
            "--layers",
            "single",
            "--format",
            format.name(),
            "--compression-level",
            &level.to_string(),
        ],
    );
    assert_ok(&o);
    let blob = support::Layout::read(&out).blob;
    fs::remove_dir_all(&out).unwrap();
    match format {
        Format::Estargz => estargz_members(&blob),
        Format::ZstdChunked => zstd_chunked_members(&blob),
    }
}

/// Writes each member's uncompressed bytes to a file of its own under `dir`, in order.
fn member_files(dir: &Path, members: &[&Member]) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let p = dir.join(format!("{i:05}"));
            fs::write(&p, &m.raw).unwrap();
            p
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Arch {
    Native,
    Aarch64,
}

/// One line of the driver: a member's sizes and the sha256 of its compressed bytes.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    codec: String,
    level: i32,
    file: usize,
    in_len: usize,
    out_len: usize,
    sha256: String,
}

/// Runs the driver built for `arch` (the aarch64 one under qemu-aarch64) and parses its
/// lines.
fn run_driver(drivers: &Path, arch: Arch, args: &[String], files: &[PathBuf]) -> Vec<Line> {
    let mut cmd = match arch {
        Arch::Native => Command::new(drivers.join("members-native")),
        Arch::Aarch64 => {
            let mut c = Command::new("qemu-aarch64");
            c.arg(drivers.join("members-aarch64"));
            c
        }
    };
    let o = cmd.args(args).args(files).output().expect("run the driver");
    assert!(
        o.status.success(),
        "{arch:?} driver {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 6, "driver line {l:?}");
            Line {
                codec: f[0].to_string(),
                level: f[1].parse().unwrap(),
                file: f[2].parse().unwrap(),
                in_len: f[3].parse().unwrap(),
                out_len: f[4].parse().unwrap(),
                sha256: f[5].to_string(),
            }
        })
        .collect()
}

/// Checks the driver's lines against the members depotai wrote; one message per mismatch.
fn compare_with_layer(what: &str, lines: &[Line], members: &[&Member], problems: &mut Vec<String>) {
    if lines.len() != members.len() {
        problems.push(format!(
            "{what}: the driver gave {} members, the layer has {}",
            lines.len(),
            members.len()
        ));
        return;
    }
    for (i, (l, m)) in lines.iter().zip(members).enumerate() {
        let want = (m.raw.len(), m.compressed.len(), sha256_hex(&m.compressed));
        if (l.in_len, l.out_len, l.sha256.clone()) != want {
            problems.push(format!(
                "{what}, member {i}: the C build gave {} bytes ({} in) sha256 {}, depotai {} bytes ({} in) sha256 {}",
                l.out_len, l.in_len, l.sha256, want.1, want.0, want.2
            ));
        }
    }
}

/// The lowest, the default and the highest level a format offers.
fn some_levels(format: Format) -> [i32; 3] {
    let levels = format.levels();
    [*levels.start(), format.default_level(), *levels.end()]
}

#[test]
fn native_c_build_of_the_pinned_sources_compresses_every_member_as_depotai_does() {
    let Some(drivers) = drivers() else { return };
    let work = tempfile::tempdir().unwrap();
    let generated = work.path().join("generated");
    generated_model(&generated);
    let mut problems = Vec::new();
    let mut checked = 0;
    for src in [Path::new(TINY), &generated] {
        for format in [Format::Estargz, Format::ZstdChunked] {
            for level in some_levels(format) {
                let enc = encoded(src, format, level, work.path());
                let what = format!(
                    "{} --format {format} --compression-level {level}",
                    src.display()
                );
                let members: Vec<&Member> = enc.members.iter().collect();
                let files = member_files(&work.path().join("members"), &members);
                let codec = match format {
                    Format::Estargz => "--gzip",
                    Format::ZstdChunked => "--zstd",
                };
                let lines = run_driver(
                    &drivers,
                    Arch::Native,
                    &[codec.to_string(), level.to_string()],
                    &files,
                );
                compare_with_layer(&what, &lines, &members, &mut problems);
                checked += members.len();
                if let Some(ts) = &enc.tar_split {
                    let files = member_files(&work.path().join("tar-split"), &[ts]);
                    let lines = run_driver(
                        &drivers,
                        Arch::Native,
                        &["--zstd-stream".to_string(), level.to_string()],
                        &files,
                    );
                    compare_with_layer(&format!("{what}, tar-split"), &lines, &[ts], &mut problems);
                    checked += 1;
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // 2 sources x 2 formats x 3 levels, each with a few members at least.
    assert!(checked > 12 * 3, "only {checked} members checked");
}

#[test]
fn pinned_encoders_give_the_same_members_on_aarch64_as_natively_at_every_level() {
    let Some(drivers) = drivers() else { return };
    let work = tempfile::tempdir().unwrap();
    let generated = work.path().join("generated");
    generated_model(&generated);

    // The members of both sources at the default levels: what every level compresses
    // (the cut does not depend on the level).
    let mut gzip_members = Vec::new();
    let mut zstd_members = Vec::new();
    let mut tar_splits = Vec::new();
    for src in [Path::new(TINY), &generated] {
        let enc = encoded(
            src,
            Format::Estargz,
            Format::Estargz.default_level(),
            work.path(),
        );
        gzip_members.extend(enc.members);
        let enc = encoded(
            src,
            Format::ZstdChunked,
            Format::ZstdChunked.default_level(),
            work.path(),
        );
        zstd_members.extend(enc.members);
        tar_splits.extend(enc.tar_split);
    }
    let inputs: BTreeMap<&str, Vec<PathBuf>> = [
        (
            "--gzip",
            member_files(
                &work.path().join("gzip"),
                &gzip_members.iter().collect::<Vec<_>>(),
            ),
        ),
        (
            "--zstd",
            member_files(
                &work.path().join("zstd"),
                &zstd_members.iter().collect::<Vec<_>>(),
            ),
        ),
        (
            "--zstd-stream",
            member_files(
                &work.path().join("tar-split"),
                &tar_splits.iter().collect::<Vec<_>>(),
            ),
        ),
    ]
    .into();

    // Every level offered, on both builds; the slowest (zstd's highest levels) first, so
    // the jobs finish together on a few cores.
    let mut jobs = Vec::new();
    for arch in [Arch::Native, Arch::Aarch64] {
        for level in Format::ZstdChunked.levels().rev() {
            jobs.push((arch, "--zstd", level));
            jobs.push((arch, "--zstd-stream", level));
        }
        for level in Format::Estargz.levels().rev() {
            jobs.push((arch, "--gzip", level));
        }
    }
    jobs.sort_by_key(|&(arch, codec, level)| std::cmp::Reverse((codec == "--zstd", level, arch)));
    let queue = Mutex::new(jobs.into_iter());
    let results = Mutex::new(BTreeMap::new());
    let busy = Mutex::new(BTreeMap::<Arch, Duration>::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some((arch, codec, level)) = queue.lock().unwrap().next() else {
                    return;
                };
                let t = Instant::now();
                let lines = run_driver(
                    &drivers,
                    arch,
                    &[codec.to_string(), level.to_string()],
                    &inputs[codec],
                );
                *busy.lock().unwrap().entry(arch).or_default() += t.elapsed();
                results.lock().unwrap().insert((codec, level, arch), lines);
            });
        }
    });
    let results = results.into_inner().unwrap();

    let mut problems = Vec::new();
    let mut compared = 0;
    for (codec, files) in &inputs {
        let levels = match *codec {
            "--gzip" => Format::Estargz.levels(),
            _ => Format::ZstdChunked.levels(),
        };
        for level in levels {
            let native = &results[&(*codec, level, Arch::Native)];
            let aarch64 = &results[&(*codec, level, Arch::Aarch64)];
            // Each build read every member whole: one line per file, its size in.
            let sizes: Vec<usize> = files
                .iter()
                .map(|f| fs::metadata(f).unwrap().len() as usize)
                .collect();
            for (arch, lines) in [("x86-64", native), ("aarch64", aarch64)] {
                let got: Vec<usize> = lines.iter().map(|l| l.in_len).collect();
                assert_eq!(got, sizes, "{arch} {codec} {level}: members read");
            }
            for (n, a) in native.iter().zip(aarch64) {
                compared += 1;
                if n != a {
                    problems.push(format!(
                        "{} level {level}, member {} ({} bytes in): x86-64 {} bytes sha256 {}, aarch64 {} bytes sha256 {}",
                        n.codec, n.file, n.in_len, n.out_len, n.sha256, a.out_len, a.sha256
                    ));
                }
            }
        }
    }
    let busy = busy.into_inner().unwrap();
    eprintln!(
        "crossarch: {compared} members compared ({} gzip x {} levels, {} zstd and {} tar-split x {} levels) in {:.1} s on {workers} workers (wall time of the jobs: x86-64 {:.1} s, aarch64 under qemu {:.1} s)",
        inputs["--gzip"].len(),
        Format::Estargz.levels().count(),
        inputs["--zstd"].len(),
        inputs["--zstd-stream"].len(),
        Format::ZstdChunked.levels().count(),
        t0.elapsed().as_secs_f64(),
        busy[&Arch::Native].as_secs_f64(),
        busy[&Arch::Aarch64].as_secs_f64(),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every member of both sources was there: the generated model's 12 MiB at least.
    for members in [&gzip_members, &zstd_members] {
        assert!(members.iter().map(|m| m.raw.len()).sum::<usize>() > 12 << 20);
    }
    assert!(!tar_splits.is_empty());
}
