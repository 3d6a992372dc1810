//! The Hub's conventions, read from the environment the way `huggingface_hub` reads them.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Everything the Hub client needs to know, resolved once.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, without a trailing slash.
    pub endpoint: String,
    /// `HF_TOKEN`, else the token file (`HF_TOKEN_PATH`, else `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// `HF_HUB_OFFLINE=1`: build from the cache alone.
    pub offline: bool,
    /// Files downloaded at once.
    pub jobs: usize,
    pub connect_timeout: Duration,
    /// A transfer that receives nothing for this long is retried (no total timeout:
    /// a slow but healthy 10 GB transfer must finish).
    pub idle_timeout: Duration,
    /// Attempts per request for transient failures (connection errors, 5xx, 429).
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Set (e.g. by a signal handler) to stop: a fetch under way ends with
    /// [`HubError::Interrupted`](super::HubError::Interrupted), leaving partial files
    /// to be resumed by the next run.
    pub cancel: Option<Arc<AtomicBool>>,
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn env_secs(key: &str) -> Option<Duration> {
    env(key)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
}

impl HubConfig {
    pub fn from_env() -> HubConfig {
        let home_dir = env("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let xdg_cache = env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home_dir.join(".cache"));
        let hf_home = env("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| xdg_cache.join("huggingface"));
        let cache_dir = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_path = env("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| read_token_file(&token_path));
        HubConfig {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            token: token.map(|t| t.trim().to_string()),
            cache_dir,
            offline: env("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            jobs: 4,
            connect_timeout: env_secs("DEPOTAI_CONNECT_TIMEOUT").unwrap_or(Duration::from_secs(10)),
            idle_timeout: env_secs("DEPOTAI_IDLE_TIMEOUT").unwrap_or(Duration::from_secs(60)),
            max_attempts: 8,
            backoff_base: env_secs("DEPOTAI_RETRY_BASE").unwrap_or(Duration::from_millis(500)),
            backoff_cap: Duration::from_secs(30),
            cancel: None,
        }
    }
}

fn read_token_file(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}
