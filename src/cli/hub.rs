//! How the commands that build from the Hub (`build ORG/MODEL`, `build --all`, the
//! rebuild of `verify`) reach it: the `HF_*` environment, the signal flag, and the
//! stream's tuning.

use super::signals::Stop;
use depotai::source::hub::{HubConfig, StreamOptions, DEFAULT_BUFFER, DEFAULT_WINDOW};

/// `HF_*` from the environment, `jobs` files at once, stopped by `stop`'s signals.
pub fn config(jobs: usize, stop: &Stop) -> HubConfig {
    let mut hub = HubConfig::from_env();
    hub.jobs = jobs;
    hub.cancel = Some(stop.flag());
    hub
}

/// `--connections` Range requests per file, through the cache unless `--no-cache`.
/// `DEPOTAI_STREAM_WINDOW` and `DEPOTAI_STREAM_BUFFER` (sizes) tune the Range window and
/// the read-ahead, for tests and benchmarks.
pub fn stream_options(connections: usize, no_cache: bool) -> StreamOptions {
    StreamOptions {
        connections,
        cache: !no_cache,
        window: env_size("DEPOTAI_STREAM_WINDOW").unwrap_or(DEFAULT_WINDOW),
        buffer: env_size("DEPOTAI_STREAM_BUFFER").unwrap_or(DEFAULT_BUFFER),
        ..StreamOptions::default()
    }
}

fn env_size(key: &str) -> Option<u64> {
    super::parse_size(&std::env::var(key).ok()?).ok()
}
