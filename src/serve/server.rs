//! The HTTP server: the read side of the OCI Distribution spec over a [`Store`],
//! the web pages, access logs and graceful shutdown. HTTP/1.1 on hyper and tokio.

use super::body::{AccessLog, Budget, ServeBody, Source};
use super::pages;
use super::range::{self, Part, RangeError};
use super::store::{BlobBody, Store, StoreError};
use super::IMMUTABLE;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

use super::conn::{connection_cap, Guarded};
use crate::limits;
use tokio::sync::Semaphore;

/// Content-addressed blobs never change.
const OCTET_STREAM: &str = "application/octet-stream";
const JSON: &str = "application/json";

#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// No access log.
    pub quiet: bool,
    /// How long open connections may finish after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            quiet: false,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: String, error: io::Error },
}

struct State {
    store: Store,
    quiet: bool,
    local: SocketAddr,
    /// Store lookups at once (they run on the blocking pool).
    lookups: Semaphore,
    /// Bytes of full-size blob pieces all responses may hold (see `body`).
    pieces: Budget,
}

/// A bound, not yet running, registry.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
    grace: Duration,
}

impl Server {
    /// Opens the store at `root` and binds `addr` (`host:port`; port 0 picks a free one).
    pub async fn bind(addr: &str, root: &Path, opts: ServeOptions) -> Result<Server, ServeError> {
        let store = Store::open(root)?;
        let bind_err = |error| ServeError::Bind {
            addr: addr.to_string(),
            error,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        Ok(Server {
            listener,
            state: Arc::new(State {
                store,
                quiet: opts.quiet,
                local,
                lookups: Semaphore::new(limits::MAX_CONCURRENT_LOOKUPS),
                pieces: Budget::new(limits::SERVE_PIECE_BUDGET),
            }),
            grace: opts.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.state.local
    }

    pub fn root(&self) -> &Path {
        self.state.store.root()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets open requests
    /// finish (at most the grace period) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Server {
            listener,
            state,
            grace,
        } = self;
        // Hostile clients: the request head is bounded in size, count and time; a
        // connection where no byte moves either way for IDLE_TIMEOUT_SECS is closed; at
        // most `cap` connections are open, the rest wait in the kernel's backlog.
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(limits::HEADER_READ_TIMEOUT_SECS))
            .max_header_size(limits::MAX_REQUEST_HEAD)
            .max_headers(limits::MAX_REQUEST_HEADERS)
            .max_buf_size(limits::MAX_REQUEST_HEAD + (64 << 10))
            .keep_alive(true);
        let idle = Duration::from_secs(limits::IDLE_TIMEOUT_SECS);
        let slots = Arc::new(Semaphore::new(connection_cap()));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // A slot first, then a connection: at the cap, accepting waits.
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
                _ = &mut shutdown => break,
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let st = state.clone();
                        let svc = service_fn(move |req| handle(st.clone(), req, peer));
                        let io = TokioIo::new(Guarded::new(stream, idle));
                        let conn = builder.serve_connection(io, svc);
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            // Client-side failures (a reset, a timeout) end only that connection.
                            let _ = conn.await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        eprintln!("depotai serve: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        if !state.quiet {
            eprintln!("depotai serve: shutting down");
        }
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(grace) => {
                eprintln!("depotai serve: connections still open after {grace:?}; closing them");
            }
        }
        Ok(())
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ServeBody>, Infallible> {
    let start = Instant::now();
    let request = format!(
        "{peer} \"{} {} {:?}\"",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        req.version()
    );
    let mut resp = route(&state, &req).await;
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    if !state.quiet {
        let status = resp.status().as_u16();
        resp.body_mut().set_log(AccessLog {
            request,
            status,
            start,
        });
    }
    Ok(resp)
}

/// Runs a store lookup on the blocking pool (it touches the file system).
async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let st = state.clone();
    let _permit = state.lookups.acquire().await;
    match tokio::task::spawn_blocking(move || f(&st.store)).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Io {
            path: Default::default(),
            error: io::Error::other(e),
        }),
    }
}

async fn route(state: &Arc<State>, req: &Request<Incoming>) -> Response<ServeBody> {
    let path = req.uri().path();
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    let rest = match path.strip_prefix("/v2/") {
        Some(rest) => rest,
        None if path == "/v2" => "",
        // Everything outside /v2 is the web pages (routes in pages/mod.rs).
        None if read => return web_page(state, req).await,
        None => return method_not_allowed(),
    };
    if !read {
        return method_not_allowed();
    }
    if rest.is_empty() {
        return json(StatusCode::OK, Bytes::from_static(b"{}"), req);
    }
    if rest == "_catalog" {
        return catalog(state, req).await;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let Some(name) = decode(name) else {
            return api_error(&StoreError::NameInvalid, req);
        };
        return tags(state, req, name).await;
    }
    let Some((head, reference)) = rest.rsplit_once('/') else {
        return unsupported_endpoint(req);
    };
    let Some((name, kind)) = head.rsplit_once('/') else {
        return unsupported_endpoint(req);
    };
    let Some(name) = decode(name) else {
        return api_error(&StoreError::NameInvalid, req);
    };
    let Some(reference) = decode(reference) else {
        return api_error(&StoreError::DigestInvalid, req);
    };
    match kind {
        "manifests" => manifest(state, req, name, reference).await,
        "blobs" => blob(state, req, name, reference).await,
        "referrers" => referrers(state, req, name, reference).await,
        _ => unsupported_endpoint(req),
    }
}

/// `GET /v2/<name>/referrers/<digest>[?artifactType=…]` (OCI distribution 1.1).
async fn referrers(
    state: &Arc<State>,
    req: &Request<Incoming>,
    name: String,
    subject: String,
) -> Response<ServeBody> {
    let filter = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "artifactType")
            .and_then(|(_, v)| decode(v))
    });
    let applied = filter.is_some();
    let body = match blocking(state, move |s| {
        s.referrers(&name, &subject, filter.as_deref())
    })
    .await
    {
        Ok(b) => b,
        Err(e) => return api_error(&e, req),
    };
    let mut r = with_body(
        StatusCode::OK,
        crate::image::media::OCI_INDEX,
        ServeBody::bytes(body),
        req,
    );
    if applied {
        r.headers_mut().insert(
            "oci-filters-applied",
            http::HeaderValue::from_static("artifactType"),
        );
    }
    r
}

/// Percent-decodes a path piece; names and references are then checked against their
/// grammars, which allow neither `%`, `..` as a component, nor `/` at either end.
fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn plain(status: StatusCode, text: &'static str) -> Response<ServeBody> {
    let mut r = Response::new(ServeBody::bytes(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    r
}

/// A response whose body is dropped for HEAD but whose headers stay the same.
fn with_body(
    status: StatusCode,
    content_type: &str,
    body: ServeBody,
    req: &Request<Incoming>,
) -> Response<ServeBody> {
    let len = body.content_length();
    let body = if req.method() == Method::HEAD {
        ServeBody::empty()
    } else {
        body
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

fn json(status: StatusCode, bytes: Bytes, req: &Request<Incoming>) -> Response<ServeBody> {
    with_body(status, JSON, ServeBody::bytes(bytes), req)
}

/// The spec's error body: `{"errors":[{"code","message","detail"}]}`.
fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    detail: serde_json::Value,
    req: &Request<Incoming>,
) -> Response<ServeBody> {
    let body =
        serde_json::json!({"errors": [{"code": code, "message": message, "detail": detail}]});
    json(
        status,
        Bytes::from(serde_json::to_vec(&body).expect("JSON")),
        req,
    )
}

fn api_error(e: &StoreError, req: &Request<Incoming>) -> Response<ServeBody> {
    let (status, code) = match e {
        StoreError::NameInvalid => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
        StoreError::NameUnknown => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        StoreError::ManifestUnknown => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        StoreError::DigestInvalid => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        StoreError::BlobUnknown => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        StoreError::Io { .. } | StoreError::Root { .. } | StoreError::RootNotADirectory(_) => {
            // Say what failed on the server's stderr, not to the client.
            eprintln!("depotai serve: {} {}: {e}", req.method(), req.uri().path());
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                "internal error",
                serde_json::Value::Null,
                req,
            );
        }
    };
    error_response(status, code, &e.to_string(), serde_json::Value::Null, req)
}

fn unsupported_endpoint(req: &Request<Incoming>) -> Response<ServeBody> {
    error_response(
        StatusCode::NOT_FOUND,
        "UNSUPPORTED",
        "no such endpoint in this read-only registry",
        serde_json::Value::Null,
        req,
    )
}

fn method_not_allowed() -> Response<ServeBody> {
    let body = br#"{"errors":[{"code":"UNSUPPORTED","message":"the operation is unsupported: this registry is read-only","detail":null}]}"#;
    let mut r = Response::new(ServeBody::bytes(Bytes::from_static(body)));
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// `"sha256:…"`, the entity tag of a content-addressed document.
fn etag_of(digest: &crate::digest::Digest) -> String {
    format!("\"{digest}\"")
}

/// `If-None-Match` matches (weak comparison, RFC 9110 §13.1.2).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').map(str::trim).any(|t| {
                t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.trim_start_matches("W/")
            })
        })
    })
}

/// `If-Range` allows the range: absent, or our (strong) entity tag.
fn if_range_ok(headers: &HeaderMap, etag: &str) -> bool {
    match headers.get(header::IF_RANGE) {
        None => true,
        Some(v) => v.to_str().is_ok_and(|s| s.trim() == etag),
    }
}

fn content_headers(h: &mut HeaderMap, digest: &crate::digest::Digest, cache: &'static str) {
    let etag = etag_of(digest);
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest.to_string()).expect("digest is ASCII"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("digest is ASCII"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
}

fn not_modified(digest: &crate::digest::Digest, cache: &'static str) -> Response<ServeBody> {
    let mut r = Response::new(ServeBody::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    content_headers(r.headers_mut(), digest, cache);
    r
}

async fn manifest(
    state: &Arc<State>,
    req: &Request<Incoming>,
    name: String,
    reference: String,
) -> Response<ServeBody> {
    let by_digest = reference.starts_with("sha256:");
    let m = match blocking(state, move |s| s.manifest(&name, &reference)).await {
        Ok(m) => m,
        Err(e) => return api_error(&e, req),
    };
    // A tag can move to another digest; a digest never changes.
    let cache = if by_digest { IMMUTABLE } else { "no-cache" };
    if none_match(req.headers(), &etag_of(&m.digest)) {
        return not_modified(&m.digest, cache);
    }
    let mut r = with_body(
        StatusCode::OK,
        &m.media_type,
        ServeBody::bytes(m.bytes),
        req,
    );
    content_headers(r.headers_mut(), &m.digest, cache);
    r
}

async fn blob(
    state: &Arc<State>,
    req: &Request<Incoming>,
    name: String,
    digest: String,
) -> Response<ServeBody> {
    let b = match blocking(state, move |s| s.blob(&name, &digest)).await {
        Ok(b) => b,
        Err(e) => return api_error(&e, req),
    };
    let etag = etag_of(&b.digest);
    if none_match(req.headers(), &etag) {
        return not_modified(&b.digest, IMMUTABLE);
    }
    let size = b.size;
    let source = match b.body {
        BlobBody::File(f) => Source::File(Arc::new(f), state.pieces.clone()),
        BlobBody::Memory(m) => Source::Memory(m),
    };
    let whole = || {
        vec![Part::File(range::ByteRange {
            start: 0,
            end: size,
        })]
    };
    // Ranges apply to GET only (RFC 9110 §14.2); HEAD describes the whole blob.
    let ranges = match req.headers().get(header::RANGE) {
        Some(v) if req.method() == Method::GET && if_range_ok(req.headers(), &etag) => {
            match range::parse(v.as_bytes(), size) {
                Ok(r) => r,
                Err(e) => return range_not_satisfiable(&e, size, &b.digest, req),
            }
        }
        _ => None,
    };
    let (status, content_type, parts, content_range) = match ranges {
        None => (StatusCode::OK, OCTET_STREAM.to_string(), whole(), None),
        Some(r) if r.len() == 1 => (
            StatusCode::PARTIAL_CONTENT,
            OCTET_STREAM.to_string(),
            vec![Part::File(r[0])],
            Some(r[0].content_range(size)),
        ),
        Some(r) => {
            let boundary = range::new_boundary();
            (
                StatusCode::PARTIAL_CONTENT,
                format!("multipart/byteranges; boundary={boundary}"),
                range::multipart(&r, size, OCTET_STREAM, &boundary),
                None,
            )
        }
    };
    let mut resp = with_body(status, &content_type, ServeBody::parts(source, parts), req);
    let h = resp.headers_mut();
    content_headers(h, &b.digest, IMMUTABLE);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(cr) = content_range {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).expect("ASCII"),
        );
    }
    resp
}

fn range_not_satisfiable(
    e: &RangeError,
    size: u64,
    digest: &crate::digest::Digest,
    req: &Request<Incoming>,
) -> Response<ServeBody> {
    let mut r = error_response(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "RANGE_INVALID",
        &e.to_string(),
        serde_json::json!({ "size": size }),
        req,
    );
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        "docker-content-digest",
        HeaderValue::from_str(&digest.to_string()).expect("ASCII"),
    );
    r
}

/// `n` and `last` from the query string.
struct Page {
    n: Option<usize>,
    last: Option<String>,
}

/// Parses the query; `Err` carries an `n` that is not a number.
fn page(query: Option<&str>) -> Result<Page, String> {
    let mut p = Page {
        n: None,
        last: None,
    };
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "n" => p.n = Some(v.parse::<usize>().map_err(|_| v)?),
            "last" => p.last = Some(v),
            _ => {}
        }
    }
    Ok(p)
}

fn bad_page(n: String, req: &Request<Incoming>) -> Response<ServeBody> {
    error_response(
        StatusCode::BAD_REQUEST,
        "PAGINATION_NUMBER_INVALID",
        "invalid number of results requested",
        serde_json::json!({ "n": n }),
        req,
    )
}

/// The slice of sorted `items` after `last`, at most `n` long, and whether more follow.
fn paginate(items: Vec<String>, p: &Page) -> (Vec<String>, bool) {
    let after: Vec<String> = match &p.last {
        Some(l) => items.into_iter().filter(|i| i > l).collect(),
        None => items,
    };
    match p.n {
        Some(n) if after.len() > n => (after.into_iter().take(n).collect(), true),
        _ => (after, false),
    }
}

fn link_next(r: &mut Response<ServeBody>, path: &str, n: usize, last: &str) {
    let v = format!(
        "<{path}?n={n}&last={}>; rel=\"next\"",
        utf8_percent_encode(last, NON_ALPHANUMERIC)
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert(header::LINK, v);
    }
}

async fn catalog(state: &Arc<State>, req: &Request<Incoming>) -> Response<ServeBody> {
    let p = match page(req.uri().query()) {
        Ok(p) => p,
        Err(n) => return bad_page(n, req),
    };
    let names = match blocking(state, |s| Ok(s.catalog())).await {
        Ok(n) => n,
        Err(e) => return api_error(&e, req),
    };
    let (names, more) = paginate(names, &p);
    let body = serde_json::json!({ "repositories": names });
    let mut r = json(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&body).expect("JSON")),
        req,
    );
    if let (true, Some(n), Some(last)) = (more, p.n, names.last()) {
        link_next(&mut r, "/v2/_catalog", n, last);
    }
    r
}

async fn tags(state: &Arc<State>, req: &Request<Incoming>, name: String) -> Response<ServeBody> {
    let p = match page(req.uri().query()) {
        Ok(p) => p,
        Err(n) => return bad_page(n, req),
    };
    let n2 = name.clone();
    let tags = match blocking(state, move |s| s.tags(&n2)).await {
        Ok(t) => t,
        Err(e) => return api_error(&e, req),
    };
    let (tags, more) = paginate(tags, &p);
    let body = serde_json::json!({ "name": name, "tags": tags });
    let mut r = json(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&body).expect("JSON")),
        req,
    );
    if let (true, Some(n), Some(last)) = (more, p.n, tags.last()) {
        link_next(&mut r, &format!("/v2/{name}/tags/list"), n, last);
    }
    r
}

/// A web page or its JSON twin, rendered on the blocking pool (it looks at the store).
async fn web_page(state: &Arc<State>, req: &Request<Incoming>) -> Response<ServeBody> {
    let host = pages::pull_host(req.headers().get(header::HOST), state.local);
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let st = state.clone();
    let page = tokio::task::spawn_blocking(move || {
        pages::respond(
            &st.store,
            &pages::PageRequest {
                host: &host,
                path: &path,
                query: query.as_deref(),
                accept: accept.as_deref(),
            },
        )
    })
    .await;
    let Ok(page) = page else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
    };
    let mut r = with_body(
        page.status,
        page.content_type,
        ServeBody::bytes(page.body),
        req,
    );
    for (name, value) in page.headers {
        r.headers_mut().insert(name, value);
    }
    r
}
