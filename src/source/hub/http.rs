//! A thin HTTP layer over reqwest with the Hub's rules: redirects followed by hand (at
//! most 10) so the `Authorization` header never leaves the Hub's origin and the commit
//! header of the Hub's own answer is seen; retries with capped exponential backoff on
//! connection errors, 5xx and 429 (honouring `Retry-After`); errors mapped from
//! `X-Error-Code`.

use super::config::HubConfig;
use super::error::HubError;
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION, RANGE, RETRY_AFTER};
use reqwest::{Response, StatusCode, Url};
use std::time::Duration;

pub const MAX_REDIRECTS: usize = 10;

/// The outcome of one try.
pub enum Attempt<T> {
    Done(T),
    /// Worth another try, after at least `after` if the server said so.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    Fail(HubError),
}

pub struct Http {
    client: reqwest::Client,
    token: Option<String>,
    hub: Url,
    pub cfg: HubConfig,
}

/// A response from the end of the redirect chain, with what the Hub said on the way.
pub struct Fetched {
    pub response: Response,
    /// `X-Repo-Commit` from the Hub's own response (the first hop).
    pub repo_commit: Option<String>,
    /// `X-Linked-Etag` / `ETag` and `X-Linked-Size` from the Hub's response.
    pub linked_etag: Option<String>,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl Http {
    pub fn new(cfg: &HubConfig) -> Result<Http, HubError> {
        let hub = Url::parse(&cfg.endpoint).map_err(|e| HubError::BadResponse {
            url: cfg.endpoint.clone(),
            msg: format!("HF_ENDPOINT is not a URL: {e}"),
        })?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("depotai/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.idle_timeout)
            .build()
            .map_err(|e| HubError::Network {
                url: cfg.endpoint.clone(),
                msg: e.to_string(),
            })?;
        Ok(Http {
            client,
            token: cfg.token.clone(),
            hub,
            cfg: cfg.clone(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.cfg.endpoint
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// One GET, following redirects. `range_from` asks for `bytes=N-`.
    pub async fn get(&self, url: &str, range_from: Option<u64>) -> Attempt<Fetched> {
        self.get_with_range(url, range_from.map(|from| format!("bytes={from}-")))
            .await
    }

    /// One GET of `bytes=first-last` (inclusive), following redirects.
    pub async fn get_range(&self, url: &str, first: u64, last: u64) -> Attempt<Fetched> {
        self.get_with_range(url, Some(format!("bytes={first}-{last}")))
            .await
    }

    async fn get_with_range(&self, url: &str, range: Option<String>) -> Attempt<Fetched> {
        let mut url = match Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                return Attempt::Fail(HubError::BadResponse {
                    url: url.to_string(),
                    msg: e.to_string(),
                })
            }
        };
        let (mut repo_commit, mut linked_etag) = (None, None);
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.client.get(url.clone());
            if let Some(r) = &range {
                req = req.header(RANGE, r.as_str());
            }
            // The token is for the Hub only: never for a CDN or any other origin.
            if let (Some(t), true) = (&self.token, same_origin(&url, &self.hub)) {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return Attempt::Retry {
                        why: describe(&e),
                        after: None,
                    }
                }
            };
            if same_origin(&url, &self.hub) {
                let h = resp.headers();
                repo_commit = header(h, "x-repo-commit").or(repo_commit);
                linked_etag = header(h, "x-linked-etag").or(linked_etag);
            }
            let status = resp.status();
            if status.is_redirection() {
                let Some(loc) = header(resp.headers(), LOCATION.as_str()) else {
                    return Attempt::Fail(HubError::BadResponse {
                        url: url.to_string(),
                        msg: format!("HTTP {status} without a Location"),
                    });
                };
                url = match url.join(&loc) {
                    Ok(u) => u,
                    Err(e) => {
                        return Attempt::Fail(HubError::BadResponse {
                            url: url.to_string(),
                            msg: format!("bad Location {}: {e}", crate::limits::shown(&loc)),
                        })
                    }
                };
                continue;
            }
            if status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE {
                return Attempt::Done(Fetched {
                    response: resp,
                    repo_commit,
                    linked_etag,
                });
            }
            return classify_failure(resp).await;
        }
        Attempt::Fail(HubError::TooManyRedirects {
            url: url.to_string(),
            max: MAX_REDIRECTS,
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or runs out of tries. `progress`
    /// resets the count: a transfer that keeps moving is never given up on.
    pub async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, HubError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = (Attempt<T>, bool)>,
    {
        let mut failures = 0u32;
        loop {
            let (outcome, progressed) = attempt().await;
            if progressed {
                failures = 0;
            }
            match outcome {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { why, after } => {
                    failures += 1;
                    if failures >= self.cfg.max_attempts {
                        return Err(HubError::Network {
                            url: what.to_string(),
                            msg: format!("giving up after {failures} attempts: {why}"),
                        });
                    }
                    let backoff = self
                        .cfg
                        .backoff_base
                        .saturating_mul(1 << (failures - 1).min(16))
                        .min(self.cfg.backoff_cap);
                    let wait =
                        after.map_or(backoff, |a| a.min(Duration::from_secs(300)).max(backoff));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "transfer interrupted"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// A non-success status: transient ones are retried, the Hub's error codes become
/// their own errors (filled in by the caller, who knows the repo and path).
async fn classify_failure<T>(mut resp: Response) -> Attempt<T> {
    let status = resp.status();
    let url = resp.url().to_string();
    let h = resp.headers().clone();
    let code = header(&h, "x-error-code").unwrap_or_default();
    let mut msg = header(&h, "x-error-message").unwrap_or_default();
    if msg.is_empty() {
        // An error page is read for its message only: a bounded start of it, on one line.
        let max = crate::limits::MAX_ERROR_BODY;
        if let Ok(body) = crate::limits::read_body_capped(&mut resp, max, |_| {}).await {
            let body = String::from_utf8_lossy(&body);
            msg = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.into_owned());
            msg = crate::limits::one_line(msg.trim(), 200);
        }
    }
    let transient = status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error();
    if transient {
        let after = header(&h, RETRY_AFTER.as_str())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        return Attempt::Retry {
            why: format!("HTTP {status} from {url}"),
            after,
        };
    }
    Attempt::Fail(HubError::Status {
        url,
        status: status.as_u16(),
        code,
        msg,
    })
}
