//! An encoder alone, on two (or N) threads: the input cut into chunks as a layer cuts a
//! large file (4 MiB), each chunk one gzip member, the members spread over the threads.
//! No reading, hashing or writing is timed: the input is in memory first, the output
//! only counted. bench/estargz.sh runs it beside whole builds.
//!
//!   bench_encoder INPUT THREADS CHUNK_BYTES ENCODER-LEVEL...   (e.g. libdeflate-1 isal-2)
//!
//! Prints one line per encoder: `name seconds input_bytes output_bytes`.

use depotai::layer::encoder::GzipMembers;
use depotai::layer::Encoder;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        return Err("usage: bench_encoder INPUT THREADS CHUNK_BYTES ENCODER-LEVEL...".into());
    }
    let input = std::fs::read(&args[0])?;
    let threads: usize = args[1].parse()?;
    let chunk: usize = args[2].parse()?;
    let chunks: Vec<&[u8]> = input.chunks(chunk.max(1)).collect();
    for spec in &args[3..] {
        let (name, level) = spec
            .rsplit_once('-')
            .ok_or_else(|| format!("{spec}: expected ENCODER-LEVEL"))?;
        let encoder: Encoder = name.parse()?;
        let level: i32 = level.parse()?;
        GzipMembers::new(encoder, level)?;
        let started = Instant::now();
        let out: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|t| {
                    let chunks = &chunks;
                    s.spawn(move || -> Result<u64, String> {
                        let mut m = GzipMembers::new(encoder, level).map_err(|e| e.to_string())?;
                        let mut n = 0u64;
                        for c in chunks.iter().skip(t).step_by(threads.max(1)) {
                            n += m.compress(c).map_err(|e| e.to_string())?.len() as u64;
                        }
                        Ok(n)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("worker panicked"))
                .sum::<Result<u64, String>>()
        })?;
        let secs = started.elapsed().as_secs_f64();
        println!("{spec} {secs:.6} {} {out}", input.len());
    }
    Ok(())
}
