//! Serves a model as a Hub repository, with the test Hub emulator
//! (`tests/support/hub.rs`), until killed. For `bench/end-to-end.sh` and `bench/scale.sh`:
//!
//!     bench_hub [--whole-file-limit BYTES] DIR ORG/NAME SHA ENDPOINT_FILE
//!     bench_hub [--whole-file-limit BYTES] --generate TOTAL [--big BYTES] ORG/NAME SHA ENDPOINT_FILE
//!     bench_hub [--whole-file-limit BYTES] --catalogue FILE [--min BYTES] [--max BYTES] ENDPOINT_FILE
//!
//! From DIR: files of 1 MiB or more are LFS files (served through the emulator's CDN
//! origin, as the Hub serves weights); the others are plain git files. With
//! `--generate`: `hub::weights_model(TOTAL, BIG)`, a model of exactly TOTAL bytes whose
//! weights are generated as they are served (nothing stored), one file of BIG bytes
//! (default TOTAL / 2) and shards of at most 4 GiB; their sha256s are computed once ever
//! and kept in `DEPOTAI_GEN_CACHE` (default `~/.cache/depotai/generated`). The CDN refuses
//! a GET without `Range` of a file over `--whole-file-limit` (default 50 GB, as the Hub's
//! CDN does; 0 turns it off). Sizes are in bytes.
//!
//! With `--catalogue`: every model of a catalogue (`models/models.yaml`) at its commit,
//! each generated as `--generate` makes one, with seeds of its own (no two models share
//! a layer) and a size spread log-uniformly between `--min` (default 20 MB) and `--max`
//! (default 2 GB) by a hash of its name, so the same catalogue is the same Hub every
//! time (`bench/catalogue-scale.sh`).
//!
//! The Hub's endpoint is written to ENDPOINT_FILE once it listens. Each line `stats` on
//! stdin prints one JSON line on stdout: requests, file bytes served (`resolve` and CDN
//! answers 200/206), requests refused, and per file its size, the bytes served, the GETs
//! and the GETs without `Range`; `clear` forgets the requests so far.

#[path = "../tests/support/hub.rs"]
#[allow(dead_code)]
mod hub;

use std::collections::BTreeMap;
use std::io::BufRead;

/// `hub.rs` has a helper that runs the depotai binary; unused here.
fn depotai() -> std::process::Command {
    std::process::Command::new("depotai")
}

const USAGE: &str = "usage: bench_hub [--whole-file-limit BYTES] (DIR | --generate TOTAL [--big BYTES]) ORG/NAME SHA ENDPOINT_FILE\n       bench_hub [--whole-file-limit BYTES] --catalogue FILE [--min BYTES] [--max BYTES] ENDPOINT_FILE";

fn fail(msg: &str) -> ! {
    eprintln!("bench_hub: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn size(s: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|_| fail(&format!("{s:?} is not a number of bytes")))
}

fn files_of_dir(root: &std::path::Path) -> Vec<hub::RepoFile> {
    let mut files = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.expect("readable model directory");
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap();
        let bytes = std::fs::read(e.path()).expect("readable file");
        files.push(if bytes.len() >= 1 << 20 {
            hub::RepoFile::lfs(rel, hub::Content::Bytes(bytes))
        } else {
            hub::RepoFile::regular(rel, bytes)
        });
    }
    files
}

/// Every model of the catalogue at its commit, generated: sizes log-uniform in
/// `[min, max]` by a hash of the name, seeds from the model's place in the file.
fn catalogue_repos(file: &str, min: u64, max: u64) -> Vec<hub::Repo> {
    let c = depotai::catalogue::Catalogue::load(std::path::Path::new(file))
        .unwrap_or_else(|e| fail(&format!("{file}: {e}")));
    c.entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            // FNV-1a of the name: the same name, the same size, on any machine.
            let h = e
                .name
                .as_str()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            let u = (h % 1_000_000) as f64 / 1_000_000.0;
            let total = (min as f64 * (max as f64 / min as f64).powf(u)) as u64;
            let files = hub::weights_model_seeded(total, total / 2, i as u64 + 1);
            hub::Repo::new(e.name.as_str(), e.sha.as_str(), files)
        })
        .collect()
}

fn stats(server: &hub::HubServer, sizes: &BTreeMap<String, u64>) -> serde_json::Value {
    #[derive(Default, serde::Serialize)]
    struct PerFile {
        size: u64,
        bytes: u64,
        gets: u64,
        gets_without_range: u64,
    }
    let log = server.requests();
    let mut files: BTreeMap<String, PerFile> = sizes
        .iter()
        .map(|(p, &size)| {
            (
                p.clone(),
                PerFile {
                    size,
                    ..PerFile::default()
                },
            )
        })
        .collect();
    for r in &log {
        let Some(path) = r.file_path().filter(|_| r.method == "GET") else {
            continue;
        };
        let f = files.entry(path).or_default();
        if matches!(r.status, 200 | 206) {
            f.bytes += r.body_len;
        }
        f.gets += 1;
        f.gets_without_range += u64::from(r.range.is_none());
    }
    serde_json::json!({
        "requests": log.len(),
        "file_bytes": files.values().map(|f| f.bytes).sum::<u64>(),
        "refused": log.iter().filter(|r| r.status >= 400).count(),
        "files": files,
    })
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        args.drain(i..i + 2);
        Some(v)
    };
    let limit = take("--whole-file-limit").map_or(50_000_000_000, |s| size(&s));
    let generate = take("--generate").map(|s| size(&s));
    let big = take("--big").map(|s| size(&s));
    let catalogue = take("--catalogue");
    let min = take("--min").map_or(20_000_000, |s| size(&s));
    let max = take("--max").map_or(2_000_000_000, |s| size(&s));
    let repos: Vec<hub::Repo> = match (generate, catalogue, args.len()) {
        (Some(total), None, 3) => vec![hub::Repo::new(
            &args[0],
            &args[1],
            hub::weights_model(total, big.unwrap_or(total / 2)),
        )],
        (None, Some(file), 1) if big.is_none() => catalogue_repos(&file, min, max),
        (None, None, 4) if big.is_none() => {
            let files = files_of_dir(std::path::Path::new(&args.remove(0)));
            vec![hub::Repo::new(&args[0], &args[1], files)]
        }
        _ => fail("wrong arguments"),
    };
    let endpoint_file = args.last().unwrap().clone();
    let files: Vec<&hub::RepoFile> = repos
        .iter()
        .flat_map(|r| r.commits.iter().flat_map(|(_, f)| f))
        .collect();
    for f in files.iter().filter(|f| f.lfs) {
        if f.content.len() >= 1 << 30 {
            eprintln!(
                "bench_hub: sha256 of {} ({} bytes), once: {}",
                f.path,
                f.content.len(),
                f.content
                    .sha256_cache_file()
                    .map_or("not kept".into(), |p| p.display().to_string())
            );
        }
        f.content.sha256();
    }
    // Per file, by path: for one repository (a catalogue's Hub reports totals only).
    let sizes: BTreeMap<String, u64> = match repos.as_slice() {
        [one] => one.commits[0]
            .1
            .iter()
            .map(|f| (f.path.clone(), f.content.len()))
            .collect(),
        _ => BTreeMap::new(),
    };
    let server = hub::HubServer::start(repos);
    server.set_whole_file_limit((limit > 0).then_some(limit));
    let tmp = format!("{endpoint_file}.tmp");
    std::fs::write(&tmp, &server.endpoint).unwrap();
    std::fs::rename(&tmp, endpoint_file).unwrap();
    let _ = depotai;
    // Commands until stdin closes (at once when started in the background), then serve on.
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("stats") => println!("{}", stats(&server, &sizes)),
            Ok("clear") => {
                server.clear_requests();
                println!("{{\"cleared\": true}}");
            }
            Ok(other) => println!(
                "{}",
                serde_json::json!({"error": format!("unknown command {other:?}")})
            ),
            Err(_) => break,
        }
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
