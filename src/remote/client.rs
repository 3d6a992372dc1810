//! One registry, one repository: requests with authentication and retries.
//!
//! * Auth: a request goes out anonymously (or with the header that worked last); a 401
//!   with `WWW-Authenticate: Basic` is retried with the credentials, one with `Bearer
//!   realm=…,service=…,scope=…` fetches a token from the realm (with the credentials as
//!   Basic auth when there are any) and is retried with it.
//! * Where credentials go: the credentials and tokens go to the registry's own origin
//!   (scheme, host and port) and the credentials to the token realm that the registry's
//!   own 401 names, nowhere else. Redirects are followed by hand ([`crate::http::follow`])
//!   so that no other origin, and no change of scheme or port, ever gets the header; a
//!   401 from any other origin (a storage host a blob read is redirected to, an upload
//!   Location elsewhere) is an error, never answered ([`may_ask_realm`] and
//!   [`RegistryError::ForeignChallenge`]).
//! * Plain HTTP only when the caller says so (`--insecure`), and then only to the
//!   registry's host: a token realm on plain HTTP elsewhere is refused.
//! * Retries: connection errors, 5xx and 429 are retried up to [`ClientOptions::retries`]
//!   times with capped exponential backoff (honouring `Retry-After`).
//! * Every response body read through [`Client::bytes`] is counted in
//!   [`Client::fetched_bytes`].

use super::auth::{parse_challenge, Challenge, Credentials};
use super::{PushRefusal, Reference, RegistryError, NO_CREDENTIALS};
use crate::http::{follow, same_origin, transport_failure, Credential, FollowError, Transport};
use crate::limits::{self, BodyError};
use crate::units::human_bytes;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Use plain HTTP for this registry (and allow a token realm on plain HTTP on its
    /// host; nowhere else).
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
    /// The Authorization header that last worked (Basic or Bearer), for the registry's
    /// origin only.
    auth: Mutex<Option<HeaderValue>>,
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

/// A transport error on one line, redacted (reqwest names the URL, query and all).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    crate::redact::text(&msg)
}

/// An `Authorization` value, marked sensitive (HTTP/2 never indexes it).
fn secret_header(value: String) -> Result<HeaderValue, RegistryError> {
    let mut v = HeaderValue::from_str(&value).map_err(|_| {
        RegistryError::Protocol(
            "the Authorization value is not a valid header (a token with control characters?)"
                .into(),
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A redirect that could not be followed.
fn redirect_error(e: FollowError) -> RegistryError {
    match e {
        FollowError::Send(e) => RegistryError::Network {
            url: e.url().map(Url::to_string).unwrap_or_default(),
            msg: describe(&e),
        },
        FollowError::NoLocation { url, status } => {
            RegistryError::Protocol(format!("{url}: HTTP {status} without a Location"))
        }
        FollowError::BadLocation { url, msg } => RegistryError::Protocol(format!("{url}: {msg}")),
        FollowError::TooMany { url } => RegistryError::Protocol(format!(
            "{url}: more than {} redirects",
            crate::http::MAX_REDIRECTS
        )),
    }
}

/// Whether a token realm that the registry's own 401 names may be asked for a token
/// (with the credentials as Basic auth): over HTTPS, or over plain HTTP on the
/// registry's own host when `--insecure` named it (a token server beside the registry
/// on another port is common); never plain HTTP to any other host.
pub fn may_ask_realm(registry: &Url, insecure: bool, realm: &Url) -> bool {
    match realm.scheme() {
        "https" => true,
        "http" => insecure && realm.host_str() == registry.host_str(),
        _ => false,
    }
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
            // Followed by hand: see the module doc.
            .redirect(reqwest::redirect::Policy::none())
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
        let mut url = self.base.join(location).map_err(|e| {
            RegistryError::Protocol(format!("bad Location {}: {e}", limits::shown(location)))
        })?;
        // Credentials a registry writes into a Location are not ours to send.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(url)
    }

    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Checks, before anything is downloaded or sent, that the registry would take a
    /// push to this repository: its host name resolves, it answers `GET /v2/` (once:
    /// nothing listening or a failed TLS handshake is reported at once, not retried),
    /// the credentials are accepted, and an upload session can be opened (it is
    /// cancelled with `DELETE` straight away). The causes are typed
    /// ([`PushRefusal`]); redirects and a 401 from elsewhere are treated as in
    /// [`Client::send`].
    pub async fn check_push(&self) -> Result<(), RegistryError> {
        let refused = |cause| RegistryError::CannotPush {
            registry: self.base.to_string(),
            cause,
        };
        if let Some(host) = self.base.domain() {
            let port = self.base.port_or_known_default().unwrap_or(443);
            if tokio::net::lookup_host((host, port)).await.is_err() {
                return Err(refused(PushRefusal::Dns {
                    host: host.to_string(),
                }));
            }
        }
        let v2 = self
            .base
            .join("v2/")
            .expect("/v2/ is a valid path on any base URL");
        // Reachable: one anonymous try.
        let req = self
            .http
            .get(v2.clone())
            .build()
            .map_err(|e| RegistryError::Network {
                url: v2.to_string(),
                msg: describe(&e),
            })?;
        let count = |_: &Url, _: &Response| {
            self.requests.fetch_add(1, Ordering::Relaxed);
        };
        let first = match follow(&self.http, req, None, count).await {
            Ok(resp) => resp,
            Err(FollowError::Send(e)) => return Err(refused(self.unreachable(&e).await)),
            Err(e) => return Err(redirect_error(e)),
        };
        // Credentials: the challenge answered, /v2/ asked again with them.
        let mut authenticated = false;
        let mut status = first.status();
        if status == StatusCode::UNAUTHORIZED {
            if !same_origin(first.url(), &self.base) {
                return Err(RegistryError::ForeignChallenge {
                    url: first.url().to_string(),
                });
            }
            let challenge =
                bounded_header(first.headers(), WWW_AUTHENTICATE, limits::MAX_CHALLENGE_LEN)?;
            // Not held across the requests that follow.
            drop(first);
            let unauthorized = |e| match e {
                RegistryError::Unauthorized { hint, .. } => {
                    refused(PushRefusal::Unauthorized { hint })
                }
                e => e,
            };
            self.authenticate(v2.as_str(), challenge.as_deref())
                .await
                .map_err(unauthorized)?;
            let again = self
                .send(|| self.http.get(v2.clone()))
                .await
                .map_err(unauthorized)?;
            status = again.status();
            authenticated = true;
        } else {
            drop(first);
        }
        if !status.is_success() {
            return Err(refused(PushRefusal::NotARegistry {
                status: status.as_u16(),
            }));
        }
        // Push allowed: an upload session opened, and cancelled.
        let uploads = self.url("blobs/uploads/");
        let opened = self
            .send(|| {
                self.http
                    .post(uploads.clone())
                    .header(reqwest::header::CONTENT_LENGTH, "0")
            })
            .await;
        let resp = match opened {
            Ok(resp) => resp,
            // Credentials that opened /v2/ but not an upload: no push access. (Without
            // credentials, /v2/ may take an anonymous token: giving some is the fix.)
            Err(RegistryError::Unauthorized { .. })
                if authenticated && self.opts.credentials.is_some() =>
            {
                return Err(refused(PushRefusal::Denied {
                    repository: self.repository.clone(),
                    status: 401,
                }))
            }
            Err(RegistryError::Unauthorized { hint, .. }) => {
                return Err(refused(PushRefusal::Unauthorized { hint }))
            }
            Err(e) => return Err(e),
        };
        match resp.status() {
            StatusCode::ACCEPTED => {
                // Cancelling is a courtesy: an abandoned session expires anyway.
                if let Some(loc) = header(resp.headers(), reqwest::header::LOCATION) {
                    if let Ok(loc) = self.resolve(&loc) {
                        let _ = self.send_with(|| self.http.delete(loc.clone()), 0).await;
                    }
                }
                Ok(())
            }
            s if s.is_success() => Ok(()),
            StatusCode::FORBIDDEN => Err(refused(PushRefusal::Denied {
                repository: self.repository.clone(),
                status: 403,
            })),
            s => Err(refused(PushRefusal::NoUploads {
                repository: self.repository.clone(),
                status: s.as_u16(),
            })),
        }
    }

    /// Why the registry could not be reached. A failed TLS handshake is told apart:
    /// when the port answers plain HTTP, `--insecure` is the fix.
    async fn unreachable(&self, e: &reqwest::Error) -> PushRefusal {
        let detail = describe(e);
        match transport_failure(e) {
            Transport::Refused => PushRefusal::ConnectionRefused,
            Transport::TimedOut => PushRefusal::Timeout { detail },
            Transport::Tls => {
                // The same port, asked in plain HTTP (once, without credentials).
                let mut plain = self.base.join("v2/").expect("a valid path");
                let port = self.base.port_or_known_default();
                let speaks_http = plain.set_scheme("http").is_ok()
                    && plain.set_port(port).is_ok()
                    && self.http.get(plain).send().await.is_ok();
                if speaks_http {
                    PushRefusal::PlainHttp
                } else {
                    PushRefusal::Tls { detail }
                }
            }
            Transport::Other => PushRefusal::Transport { detail },
        }
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
            let req = build().build().map_err(|e| RegistryError::Network {
                url: self.base.to_string(),
                msg: describe(&e),
            })?;
            let url = req.url().to_string();
            let auth = self.auth.lock().unwrap().clone();
            let credential = auth.as_ref().map(|header| Credential {
                origin: &self.base,
                header,
            });
            let sent = follow(&self.http, req, credential, |_, _| {
                self.requests.fetch_add(1, Ordering::Relaxed);
            })
            .await;
            let (why, after) = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED {
                        // Only the registry's own challenge is answered: a server it
                        // redirected to, or an upload Location elsewhere, never gets
                        // the credentials or a token, nor sends us to a realm of its
                        // own.
                        if !same_origin(resp.url(), &self.base) {
                            return Err(RegistryError::ForeignChallenge {
                                url: resp.url().to_string(),
                            });
                        }
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
                Err(FollowError::Send(e)) => {
                    let msg = describe(&e);
                    // TLS failures do not go away by trying again.
                    if transport_failure(&e) == Transport::Tls {
                        return Err(RegistryError::Network {
                            url,
                            msg: format!("{msg} (the TLS handshake failed: a registry that speaks plain HTTP needs --insecure; otherwise check its certificate)"),
                        });
                    }
                    (msg, None)
                }
                Err(e) => return Err(redirect_error(e)),
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
            format!("; {NO_CREDENTIALS}")
        } else {
            "; check the username and password".to_string()
        };
        RegistryError::Unauthorized {
            url: url.to_string(),
            hint,
        }
    }

    async fn authenticate(&self, url: &str, challenge: Option<&str>) -> Result<(), RegistryError> {
        let no_creds = || RegistryError::Unauthorized {
            url: url.to_string(),
            hint: format!("; {NO_CREDENTIALS}"),
        };
        match challenge.and_then(parse_challenge) {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let token = self.token(url, &realm, service, scope).await?;
                *self.auth.lock().unwrap() = Some(secret_header(format!("Bearer {token}"))?);
                Ok(())
            }
            // Basic, or no usable challenge: try Basic if we have credentials.
            _ => {
                let c = self.opts.credentials.as_ref().ok_or_else(no_creds)?;
                *self.auth.lock().unwrap() = Some(secret_header(c.basic_header())?);
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
        if !may_ask_realm(&self.base, self.opts.insecure, &realm_url) {
            return Err(RegistryError::InsecureRealm {
                realm: realm.to_string(),
                registry: self.base.to_string(),
            });
        }
        // A user and password in the realm are not ours to send; ours go instead.
        let _ = realm_url.set_username("");
        let _ = realm_url.set_password(None);
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
        let basic = match &self.opts.credentials {
            Some(c) => Some(secret_header(c.basic_header())?),
            None => None,
        };
        // The credentials go to the realm's own origin, not to where it redirects.
        let credential = basic.as_ref().map(|header| Credential {
            origin: &realm_url,
            header,
        });
        let mut tries = 0;
        loop {
            let req =
                self.http
                    .get(realm_url.clone())
                    .build()
                    .map_err(|e| RegistryError::Network {
                        url: realm.to_string(),
                        msg: describe(&e),
                    })?;
            let sent = follow(&self.http, req, credential, |_, _| {
                self.requests.fetch_add(1, Ordering::Relaxed);
            })
            .await;
            let err = match sent {
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
                Err(FollowError::Send(e)) => describe(&e),
                Err(e) => return Err(redirect_error(e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_token_realm_gets_credentials_over_https_or_on_the_insecure_registrys_own_host() {
        let reg = u("http://reg.example:5000/");
        // HTTPS anywhere the registry's own 401 points.
        assert!(may_ask_realm(&reg, false, &u("https://auth.example/token")));
        assert!(may_ask_realm(&reg, true, &u("https://auth.example/token")));
        // Plain HTTP: the registry's host only (a token server on another port beside
        // it), and only with --insecure.
        assert!(may_ask_realm(
            &reg,
            true,
            &u("http://reg.example:5001/token")
        ));
        assert!(!may_ask_realm(
            &reg,
            false,
            &u("http://reg.example:5000/token")
        ));
        assert!(!may_ask_realm(&reg, true, &u("http://auth.example/token")));
        assert!(!may_ask_realm(
            &reg,
            true,
            &u("http://cdn.reg.example:5000/token")
        ));
        assert!(!may_ask_realm(&reg, true, &u("ftp://reg.example/token")));
    }
}
