//! Serves a model directory as a Hub repository, with the test Hub emulator
//! (`tests/support/hub.rs`), until killed. For `bench/end-to-end.sh`:
//!
//!     bench_hub DIR ORG/NAME SHA ENDPOINT_FILE
//!
//! Files of 1 MiB or more are LFS files (served through the emulator's CDN origin, as
//! the Hub serves weights); the others are plain git files. The Hub's endpoint is
//! written to ENDPOINT_FILE once it listens.

#[path = "../tests/support/hub.rs"]
#[allow(dead_code)]
mod hub;

/// `hub.rs` has a helper that runs the depotai binary; unused here.
fn depotai() -> std::process::Command {
    std::process::Command::new("depotai")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, name, sha, endpoint_file] = args.as_slice() else {
        eprintln!("usage: bench_hub DIR ORG/NAME SHA ENDPOINT_FILE");
        std::process::exit(2);
    };
    let root = std::path::Path::new(dir);
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
    let server = hub::HubServer::start(vec![hub::Repo::new(name, sha, files)]);
    let tmp = format!("{endpoint_file}.tmp");
    std::fs::write(&tmp, &server.endpoint).unwrap();
    std::fs::rename(&tmp, endpoint_file).unwrap();
    let _ = depotai;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
