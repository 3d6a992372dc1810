//! A thin HTTP layer over reqwest with the Hub's rules: redirects followed by hand
//! ([`crate::http::follow`], at most 10) so the `Authorization` header never leaves the
//! Hub's origin (scheme, host and port) and the commit header of the Hub's own answer is
//! seen; retries with capped exponential backoff on connection errors, 5xx and 429
//! (honouring `Retry-After`); errors mapped from `X-Error-Code`.
//!
//! A user and password in `HF_ENDPOINT` (`https://bob:pw@mirror.example`) are taken out
//! of the endpoint before anything uses it, so no URL or message ever holds them, and sent
//! as Basic auth to the endpoint's origin (only) when there is no token.

use super::config::HubConfig;
use super::error::HubError;
use crate::http::{follow, same_origin, Credential, FollowError};
use reqwest::header::{HeaderMap, HeaderValue, RANGE, RETRY_AFTER};
use reqwest::{Response, StatusCode, Url};
use std::time::Duration;

use crate::http::MAX_REDIRECTS;

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
    /// `Bearer <token>`, else Basic from `HF_ENDPOINT`'s user and password: for `hub`'s
    /// origin only.
    authorization: Option<HeaderValue>,
    hub: Url,
    /// `cfg.endpoint` is the endpoint without its user and password.
    pub cfg: HubConfig,
}

/// Why one GET got no answer to judge.
enum Sent {
    /// Not sent, or no answer read (worth another try).
    Transport(reqwest::Error),
    Fail(HubError),
}

/// Why [`Http::probe`] failed.
#[derive(Debug)]
pub enum Probe {
    /// No answer: connection refused, DNS, TLS, a timeout.
    Transport(reqwest::Error),
    /// A failure status (4xx), its Hub error code kept ([`HubError::Status`]), or a
    /// redirect that could not be followed.
    Answer(HubError),
    /// A transient failure status (5xx, 429, 408).
    Unwell(String),
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

/// `HF_ENDPOINT` without its user and password, and those (percent-decoded) if any.
fn split_userinfo(mut url: Url) -> (Url, Option<(String, String)>) {
    if url.username().is_empty() && url.password().is_none() {
        return (url, None);
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(url.username());
    let password = decode(url.password().unwrap_or(""));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    (url, Some((user, password)))
}

impl Http {
    pub fn new(cfg: &HubConfig) -> Result<Http, HubError> {
        let hub = Url::parse(&cfg.endpoint).map_err(|e| HubError::BadResponse {
            url: cfg.endpoint.clone(),
            msg: format!("HF_ENDPOINT is not a URL: {e}"),
        })?;
        let (hub, userinfo) = split_userinfo(hub);
        let mut cfg = cfg.clone();
        cfg.endpoint = hub.as_str().trim_end_matches('/').to_string();
        let authorization = match (&cfg.token, userinfo) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, Some((user, password))) => Some(format!(
                "Basic {}",
                crate::remote::auth::base64_encode(format!("{user}:{password}").as_bytes())
            )),
            (None, None) => None,
        };
        let authorization = match authorization.map(|a| HeaderValue::from_str(&a)) {
            Some(Ok(mut v)) => {
                v.set_sensitive(true);
                Some(v)
            }
            Some(Err(_)) if cfg.token.is_some() => {
                return Err(HubError::BadToken {
                    msg: "it cannot be sent in a header: a control character?".into(),
                })
            }
            Some(Err(_)) => {
                return Err(HubError::BadResponse {
                    url: cfg.endpoint,
                    msg: "the user and password in HF_ENDPOINT cannot be sent in a header: a control character?".into(),
                })
            }
            None => None,
        };
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
            authorization,
            hub,
            cfg,
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
        match self.send(url, range).await {
            Ok(fetched) => {
                let status = fetched.response.status();
                if status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE {
                    return Attempt::Done(fetched);
                }
                classify_failure(fetched.response).await
            }
            Err(Sent::Transport(e)) => Attempt::Retry {
                why: describe(&e),
                after: None,
            },
            Err(Sent::Fail(e)) => Attempt::Fail(e),
        }
    }

    /// One try at the Hub, with no retry and within `cfg.connect_timeout`: `url`
    /// answers a success, else why not, typed. What the check before a rebuild
    /// (`hub::check`) asks.
    pub async fn probe(&self, url: &str) -> Result<Fetched, Probe> {
        match self.send(url, None).await {
            Ok(f) if f.response.status().is_success() => Ok(f),
            Ok(f) => match classify_failure::<()>(f.response).await {
                Attempt::Fail(e) => Err(Probe::Answer(e)),
                // 5xx, 429: the Hub is there but not well.
                Attempt::Retry { why, .. } => Err(Probe::Unwell(why)),
                Attempt::Done(()) => unreachable!("classify_failure never succeeds"),
            },
            Err(Sent::Transport(e)) => Err(Probe::Transport(e)),
            Err(Sent::Fail(e)) => Err(Probe::Answer(e)),
        }
    }

    /// One GET, following redirects (the token to the Hub's origin only), whatever
    /// the final status.
    async fn send(&self, url: &str, range: Option<String>) -> Result<Fetched, Sent> {
        let url = Url::parse(url).map_err(|e| {
            Sent::Fail(HubError::BadResponse {
                url: url.to_string(),
                msg: e.to_string(),
            })
        })?;
        let (mut repo_commit, mut linked_etag) = (None, None);
        let mut req = self.client.get(url);
        if let Some(r) = &range {
            req = req.header(RANGE, r.as_str());
        }
        let req = req.build().map_err(Sent::Transport)?;
        // The token is for the Hub only: never for a CDN or any other origin.
        let credential = self.authorization.as_ref().map(|header| Credential {
            origin: &self.hub,
            header,
        });
        let sent = follow(&self.client, req, credential, |url, resp| {
            if same_origin(url, &self.hub) {
                let h = resp.headers();
                repo_commit = header(h, "x-repo-commit").or(repo_commit.take());
                linked_etag = header(h, "x-linked-etag").or(linked_etag.take());
            }
        })
        .await;
        let response = match sent {
            Ok(r) => r,
            Err(FollowError::Send(e)) => return Err(Sent::Transport(e)),
            Err(FollowError::NoLocation { url, status }) => {
                return Err(Sent::Fail(HubError::BadResponse {
                    url: url.to_string(),
                    msg: format!("HTTP {status} without a Location"),
                }))
            }
            Err(FollowError::BadLocation { url, msg }) => {
                return Err(Sent::Fail(HubError::BadResponse {
                    url: url.to_string(),
                    msg,
                }))
            }
            Err(FollowError::TooMany { url }) => {
                return Err(Sent::Fail(HubError::TooManyRedirects {
                    url: url.to_string(),
                    max: MAX_REDIRECTS,
                }))
            }
        };
        Ok(Fetched {
            response,
            repo_commit,
            linked_etag,
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

/// A transport error on one line, redacted.
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
    crate::redact::text(&msg)
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
        // Retries are reported as they happen: the CDN's signed URL must not show.
        return Attempt::Retry {
            why: crate::redact::text(&format!("HTTP {status} from {url}")),
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
