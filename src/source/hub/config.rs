//! The Hub's conventions, read from the environment the way `huggingface_hub` reads them.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Everything the Hub client needs to know, resolved once. Its `Debug` hides the token
/// and the endpoint's user and password.
#[derive(Clone)]
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

impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &crate::redact::text(&self.endpoint))
            .field("token", &self.token.as_ref().map(|_| crate::redact::HIDDEN))
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("jobs", &self.jobs)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_cap", &self.backoff_cap)
            .field("cancel", &self.cancel)
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_hub_config_shows_neither_the_token_nor_the_endpoint_password() {
        let cfg = HubConfig {
            endpoint: "https://user:hunter2@hub.example".to_string(),
            token: Some("hf_sEcReTtOkEn".to_string()),
            cache_dir: PathBuf::from("/cache"),
            offline: false,
            jobs: 4,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_attempts: 1,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(1),
            cancel: None,
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hf_sEcReTtOkEn"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(r#"token: Some("***")"#), "{shown}");
        assert!(shown.contains("hub.example"), "{shown}");
        assert!(shown.contains(r#"cache_dir: "/cache""#), "{shown}");
        let none = HubConfig { token: None, ..cfg };
        assert!(format!("{none:?}").contains("token: None"));
    }
}
