//! One registry, one repository: requests with authentication and retries.
//!
//! * Auth: a request goes out anonymously (or with the header that worked last); a 401
//!   with `WWW-Authenticate: Basic` is retried with the credentials, one with `Bearer
//!   realm=…,service=…,scope=…` fetches a token from the realm (with the credentials as
//!   Basic auth when there are any) and is retried with it.
//! * Retries: connection errors, 5xx and 429 are retried up to [`ClientOptions::retries`]
//!   times with capped exponential backoff (honouring `Retry-After`).
//! * Plain HTTP only when the caller says so (`--insecure`); HTTPS otherwise.
//! * Every response body read through [`Client::bytes`] is counted in
//!   [`Client::fetched_bytes`].

use super::auth::{parse_challenge, Challenge, Credentials};
use super::{Reference, RegistryError};
use crate::limits::{self, BodyError};
use crate::units::human_bytes;
use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Use plain HTTP for this registry.
    pub insecure: bool,
    pub credentials: Option<Credentials>,
    /// Extra tries after the first on transient errors.
    pub retries: u32,
    /// First backoff; doubled each time, capped at 10 s.
    pub backoff: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            insecure: false,
            credentials: None,
            retries: std::env::var("DEPOTAI_REGISTRY_RETRIES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5),
            backoff: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    pub repository: String,
    opts: ClientOptions,
    /// The Authorization header that last worked (Basic or Bearer).
    auth: Mutex<Option<String>>,
    /// Extra token scopes to ask for (e.g. pull on a mount source).
    extra_scopes: Mutex<Vec<String>>,
    push: bool,
    fetched: AtomicU64,
    requests: AtomicU64,
}

pub(crate) fn header(h: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// A header that names a URL or a challenge, refused when longer than `max` (a registry
/// cannot make us parse or store megabytes of it).
pub(crate) fn bounded_header(
    h: &HeaderMap,
    name: reqwest::header::HeaderName,
    max: usize,
) -> Result<Option<String>, RegistryError> {
    match h.get(&name) {
        Some(v) if v.len() > max => Err(RegistryError::Protocol(format!(
            "the registry sent a {name} header of {} bytes (at most {max})",
            v.len()
        ))),
        _ => Ok(header(h, name)),
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

impl Client {
    /// A client for `reference`'s repository. `push` asks tokens for `pull,push`.
    pub fn new(
        reference: &Reference,
        opts: ClientOptions,
        push: bool,
    ) -> Result<Client, RegistryError> {
        let scheme = if opts.insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{}/", reference.registry)).map_err(|e| {
            RegistryError::BadReference {
                reference: reference.to_string(),
                msg: e.to_string(),
            }
        })?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("depotai/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.idle_timeout)
            .build()
            .map_err(|e| RegistryError::Network {
                url: base.to_string(),
                msg: describe(&e),
            })?;
        Ok(Client {
            http,
            base,
            repository: reference.repository.clone(),
            opts,
            auth: Mutex::new(None),
            extra_scopes: Mutex::new(Vec::new()),
            push,
            fetched: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        })
    }

    fn same_origin(&self, u: &Url) -> bool {
        u.scheme() == self.base.scheme()
            && u.host_str() == self.base.host_str()
            && u.port_or_known_default() == self.base.port_or_known_default()
    }

    /// `scheme://host:port/` of the registry.
    pub fn base_str(&self) -> &str {
        self.base.as_str()
    }

    /// Bytes of response bodies read so far.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// HTTP requests sent so far (retries and auth round trips included).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn add_scope(&self, scope: String) {
        self.extra_scopes.lock().unwrap().push(scope);
    }

    /// `/v2/<repository>/<rest>` on this registry.
    pub fn url(&self, rest: &str) -> Url {
        self.base
            .join(&format!("v2/{}/{rest}", self.repository))
            .expect("a repository path is a valid URL path")
    }

    /// Resolves a `Location` header against the registry.
    pub fn resolve(&self, location: &str) -> Result<Url, RegistryError> {
        if location.len() > limits::MAX_LINK_LEN {
            return Err(RegistryError::Protocol(format!(
                "the registry sent a Location of {} bytes (at most {})",
                location.len(),
                limits::MAX_LINK_LEN
            )));
        }
        self.base.join(location).map_err(|e| {
            RegistryError::Protocol(format!("bad Location {}: {e}", limits::shown(location)))
        })
    }

    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Sends the request `build` makes, retrying transient failures and answering auth
    /// challenges. Returns any response that is not a transient failure or a 401 (the
    /// caller judges the status); a 401 after authenticating is an error.
    pub async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        self.send_with(build, self.opts.retries).await
    }

    /// [`Client::send`] with a given number of retries (0: one try; for uploads that
    /// must check the registry's state before resending).
    pub async fn send_with(
        &self,
        build: impl Fn() -> RequestBuilder,
        retries: u32,
    ) -> Result<Response, RegistryError> {
        let mut tries = 0u32;
        let mut authed = false;
        loop {
            let mut req = build().build().map_err(|e| RegistryError::Network {
                url: self.base.to_string(),
                msg: describe(&e),
            })?;
            // Credentials and tokens are for this registry only (an upload Location may
            // point elsewhere).
            if let (Some(a), true) = (
                self.auth.lock().unwrap().clone(),
                self.same_origin(req.url()),
            ) {
                let v = reqwest::header::HeaderValue::from_str(&a).map_err(|e| {
                    RegistryError::Protocol(format!("unusable Authorization value: {e}"))
                })?;
                req.headers_mut().insert(AUTHORIZATION, v);
            }
            let url = req.url().to_string();
            self.requests.fetch_add(1, Ordering::Relaxed);
            let (why, after) = match self.http.execute(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED {
                        if authed {
                            return Err(self.unauthorized(&url, &resp));
                        }
                        let challenge = bounded_header(
                            resp.headers(),
                            WWW_AUTHENTICATE,
                            limits::MAX_CHALLENGE_LEN,
                        )?;
                        self.authenticate(&url, challenge.as_deref()).await?;
                        authed = true;
                        continue;
                    }
                    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                        let after = header(resp.headers(), RETRY_AFTER)
                            .and_then(|s| s.parse::<u64>().ok())
                            .map(|s| Duration::from_secs(s.min(60)));
                        (format!("HTTP {status}"), after)
                    } else {
                        return Ok(resp);
                    }
                }
                Err(e) => {
                    let msg = describe(&e);
                    // TLS failures do not go away by trying again.
                    if msg.contains("InvalidContentType") {
                        return Err(RegistryError::Network {
                            url,
                            msg: format!("{msg} (the registry speaks plain HTTP? pass --insecure)"),
                        });
                    }
                    if msg.contains("certificate") || msg.contains("HandshakeFailure") {
                        return Err(RegistryError::Network { url, msg });
                    }
                    (msg, None)
                }
            };
            if tries >= retries {
                return Err(RegistryError::Network {
                    url,
                    msg: format!("{why} (gave up after {} tries)", tries + 1),
                });
            }
            let backoff = self.backoff(tries);
            tokio::time::sleep(after.unwrap_or(backoff).max(backoff)).await;
            tries += 1;
        }
    }

    pub(crate) fn backoff(&self, tries: u32) -> Duration {
        (self.opts.backoff * 2u32.saturating_pow(tries.min(10))).min(Duration::from_secs(10))
    }

    pub(crate) fn retries(&self) -> u32 {
        self.opts.retries
    }

    fn unauthorized(&self, url: &str, _resp: &Response) -> RegistryError {
        let hint = if self.opts.credentials.is_none() {
            "; no credentials: pass --username with --password-stdin, set DEPOTAI_REGISTRY_USER and DEPOTAI_REGISTRY_PASSWORD, or log in with docker login".to_string()
        } else {
            "; check the username and password".to_string()
        };
        RegistryError::Unauthorized {
            url: url.to_string(),
            hint,
        }
    }

    async fn authenticate(&self, url: &str, challenge: Option<&str>) -> Result<(), RegistryError> {
        let no_creds = || {
            RegistryError::Unauthorized {
            url: url.to_string(),
            hint: "; no credentials: pass --username with --password-stdin, set DEPOTAI_REGISTRY_USER and DEPOTAI_REGISTRY_PASSWORD, or log in with docker login".to_string(),
        }
        };
        match challenge.and_then(parse_challenge) {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let token = self.token(url, &realm, service, scope).await?;
                *self.auth.lock().unwrap() = Some(format!("Bearer {token}"));
                Ok(())
            }
            // Basic, or no usable challenge: try Basic if we have credentials.
            _ => {
                let c = self.opts.credentials.as_ref().ok_or_else(no_creds)?;
                *self.auth.lock().unwrap() = Some(c.basic_header());
                Ok(())
            }
        }
    }

    async fn token(
        &self,
        url: &str,
        realm: &str,
        service: Option<String>,
        scope: Option<String>,
    ) -> Result<String, RegistryError> {
        let mut realm_url = Url::parse(realm).map_err(|e| {
            RegistryError::Protocol(format!(
                "bearer realm {} is not a URL: {e}",
                limits::shown(realm)
            ))
        })?;
        if realm_url.scheme() != "https" && !self.opts.insecure {
            return Err(RegistryError::Protocol(format!(
                "bearer realm {realm} is not HTTPS (use --insecure to allow)"
            )));
        }
        let mut scopes: Vec<String> = scope.into_iter().collect();
        let own = format!(
            "repository:{}:{}",
            self.repository,
            if self.push { "pull,push" } else { "pull" }
        );
        if !scopes.contains(&own) {
            scopes.push(own);
        }
        scopes.extend(self.extra_scopes.lock().unwrap().iter().cloned());
        {
            let mut q = realm_url.query_pairs_mut();
            if let Some(s) = &service {
                q.append_pair("service", s);
            }
            for s in &scopes {
                q.append_pair("scope", s);
            }
        }
        let mut tries = 0;
        loop {
            let mut req = self.http.get(realm_url.clone());
            if let Some(c) = &self.opts.credentials {
                req = req.header(AUTHORIZATION, c.basic_header());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let err = match req.send().await {
                Ok(mut resp) if resp.status().is_success() => {
                    let body = self
                        .read_capped(&mut resp, limits::MAX_TOKEN_RESPONSE, "token answer")
                        .await?;
                    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                        RegistryError::Protocol(format!("token endpoint {realm}: {e}"))
                    })?;
                    return v
                        .get("token")
                        .or_else(|| v.get("access_token"))
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| {
                            RegistryError::Protocol(format!(
                                "token endpoint {realm} returned no token"
                            ))
                        });
                }
                Ok(resp)
                    if resp.status() == StatusCode::UNAUTHORIZED
                        || resp.status() == StatusCode::FORBIDDEN =>
                {
                    return Err(RegistryError::Unauthorized {
                        url: url.to_string(),
                        hint: format!(
                            "; the token endpoint {realm} refused {}",
                            if self.opts.credentials.is_some() {
                                "these credentials"
                            } else {
                                "anonymous access (credentials needed)"
                            }
                        ),
                    });
                }
                Ok(resp) if !resp.status().is_server_error() => {
                    return Err(RegistryError::Status {
                        url: realm.to_string(),
                        status: resp.status().as_u16(),
                        body: error_text(resp).await,
                    })
                }
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(e) => describe(&e),
            };
            if tries >= self.opts.retries {
                return Err(RegistryError::Network {
                    url: realm.to_string(),
                    msg: err,
                });
            }
            tokio::time::sleep(self.backoff(tries)).await;
            tries += 1;
        }
    }

    /// Reads a whole body of at most `max` bytes, counting its bytes. A larger one is a
    /// protocol error naming `what` (not retried); a broken transfer is a network error.
    pub async fn read_capped(
        &self,
        resp: &mut Response,
        max: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let url = resp.url().to_string();
        let counted = |n: usize| {
            self.fetched.fetch_add(n as u64, Ordering::Relaxed);
        };
        match limits::read_body_capped(resp, max, counted).await {
            Ok(b) => Ok(b),
            Err(BodyError::TooLarge) => Err(RegistryError::Protocol(format!(
                "{url}: the {what} is larger than {} ({max} bytes), the most depotai reads",
                human_bytes(max)
            ))),
            Err(BodyError::Network(e)) => Err(RegistryError::Network {
                url,
                msg: describe(&e),
            }),
        }
    }

    /// Sends a GET for `range` of a blob and checks that the answer is that range,
    /// leaving the body to be streamed.
    pub async fn get_range(&self, url: &Url, range: (u64, u64)) -> Result<Response, RegistryError> {
        let (start, end) = range;
        let resp = self
            .send(|| {
                self.http
                    .get(url.clone())
                    .header(reqwest::header::RANGE, format!("bytes={start}-{end}"))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp).await);
        }
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(RegistryError::Protocol(format!(
                "{url}: the registry ignored the Range header (HTTP {}); lazy reads need Range support",
                resp.status()
            )));
        }
        Ok(resp)
    }

    /// Counts bytes read from a body streamed by the caller.
    pub fn count_fetched(&self, n: u64) {
        self.fetched.fetch_add(n, Ordering::Relaxed);
    }

    /// Turns an unexpected status into an error (reading the body for the message).
    pub async fn status_error(&self, resp: Response) -> RegistryError {
        let url = resp.url().to_string();
        match resp.status() {
            StatusCode::NOT_FOUND => RegistryError::NotFound { url },
            StatusCode::FORBIDDEN => RegistryError::Denied { url },
            s => RegistryError::Status {
                url,
                status: s.as_u16(),
                body: error_text(resp).await,
            },
        }
    }

    /// A GET that must succeed (with retries on transient errors and body-read errors).
    /// The body is at most [`limits::MAX_DOCUMENT`] bytes, or exactly the range asked for.
    pub async fn get_bytes(
        &self,
        url: &Url,
        accept: Option<&str>,
        range: Option<(u64, u64)>,
    ) -> Result<(Vec<u8>, HeaderMap), RegistryError> {
        let mut tries = 0;
        loop {
            let resp = self
                .send(|| {
                    let mut r = self.http.get(url.clone());
                    if let Some(a) = accept {
                        r = r.header(reqwest::header::ACCEPT, a);
                    }
                    if let Some((start, end)) = range {
                        r = r.header(reqwest::header::RANGE, format!("bytes={start}-{end}"));
                    }
                    r
                })
                .await?;
            if !resp.status().is_success() {
                return Err(self.status_error(resp).await);
            }
            if range.is_some() && resp.status() != StatusCode::PARTIAL_CONTENT {
                return Err(RegistryError::Protocol(format!(
                    "{url}: the registry ignored the Range header (HTTP {}); lazy reads need Range support",
                    resp.status()
                )));
            }
            let headers = resp.headers().clone();
            let (max, what) = match range {
                Some((start, end)) => (end.saturating_sub(start).saturating_add(1), "range"),
                None => (limits::MAX_DOCUMENT, "document"),
            };
            let mut resp = resp;
            match self.read_capped(&mut resp, max, what).await {
                Ok(b) if range.is_some() && b.len() as u64 != max => {
                    return Err(RegistryError::Protocol(format!(
                        "{url}: the registry sent {} bytes for a range of {max}",
                        b.len()
                    )))
                }
                Ok(b) => return Ok((b, headers)),
                Err(e @ RegistryError::Protocol(_)) => return Err(e),
                Err(e) if tries < self.opts.retries => {
                    let _ = e;
                    tokio::time::sleep(self.backoff(tries)).await;
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The start of an error answer's body, on one line, for a message.
async fn error_text(mut resp: Response) -> String {
    let body = limits::read_body_capped(&mut resp, limits::MAX_ERROR_BODY, |_| {})
        .await
        .unwrap_or_default();
    limits::one_line(String::from_utf8_lossy(&body).trim(), 300)
}
