//! A registry that checks every blob's sha256 and forgets its bytes
//! (`tests/support/forgetful.rs`), until killed. For `bench/scale.sh`:
//!
//!     forgetful_registry ADDR_FILE [--addr 127.0.0.1:0] [--keep-blobs-up-to BYTES]
//!
//! Its address (`127.0.0.1:PORT`) is written to ADDR_FILE once it listens. Commands on
//! stdin, one per line, each answered with one JSON line on stdout: `stats` (requests by
//! method, bytes received, every blob verified with its size, uploads and mounts, digest
//! mismatches, open uploads, tags), `log` (every request: method, target, status, bytes
//! in and out), `clear` (forget the requests so far).

#[path = "../tests/support/forgetful.rs"]
#[allow(dead_code)]
mod forgetful;

use std::io::BufRead;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = forgetful::Options::default();
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args.get(i + 1).cloned();
        args.drain(i..(i + 2).min(args.len()));
        v
    };
    if let Some(a) = take("--addr") {
        opts.addr = a;
    }
    if let Some(k) = take("--keep-blobs-up-to") {
        opts.keep_blobs_up_to = k
            .parse()
            .expect("--keep-blobs-up-to takes a number of bytes");
    }
    let [addr_file] = args.as_slice() else {
        eprintln!(
            "usage: forgetful_registry ADDR_FILE [--addr 127.0.0.1:0] [--keep-blobs-up-to BYTES]"
        );
        std::process::exit(2);
    };
    let registry = forgetful::Forgetful::start_opts(opts);
    let tmp = format!("{addr_file}.tmp");
    std::fs::write(&tmp, &registry.addr).unwrap();
    std::fs::rename(&tmp, addr_file).unwrap();
    // Commands until stdin closes (at once when started in the background), then serve on.
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("stats") => println!("{}", registry.stats()),
            Ok("log") => println!("{}", serde_json::to_string(&registry.requests()).unwrap()),
            Ok("clear") => {
                registry.clear_requests();
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
