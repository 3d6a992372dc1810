//! The download stage alone: every file of a Hub model read through the same stream
//! `depotai build … --push --no-cache` reads (parallel Range windows, hashes checked),
//! into nothing. For `bench/end-to-end.sh`:
//!
//!     HF_ENDPOINT=… bench_fetch ORG/NAME SHA [JOBS] [CONNECTIONS]

use depotai::layer::Contents;
use depotai::source::hub::{self, FileFilter, HubConfig, HubStream, Silent, StreamOptions};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        anyhow::bail!("usage: bench_fetch ORG/NAME SHA [JOBS] [CONNECTIONS]");
    }
    let name = args[0].parse()?;
    let sha = args[1].parse()?;
    let mut cfg = HubConfig::from_env();
    cfg.jobs = args.get(2).map_or(Ok(4), |j| j.parse())?;
    let opts = StreamOptions {
        connections: args.get(3).map_or(Ok(4), |c| c.parse())?,
        cache: false,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let files = hub::list(&name, &sha, &cfg, &FileFilter::new(&[], &[])?, opts.cache)?;
    let stream = HubStream::start(&name, &sha, &cfg, files.clone(), opts, Arc::new(Silent))?;
    let mut total = 0;
    for f in files.iter().filter(|f| f.size > 0) {
        total += std::io::copy(&mut stream.open(&f.path)?, &mut std::io::sink())?;
    }
    println!(
        "{{\"bytes\": {total}, \"files\": {}, \"seconds\": {:.3}}}",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
