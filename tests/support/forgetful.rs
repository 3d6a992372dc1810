//! A registry that checks and forgets: the push side of the OCI distribution API on
//! 127.0.0.1, for proving pushes of any size on a small disk. Every blob's sha256 is
//! computed over its bytes as they stream in and checked at the closing `PUT` (a
//! mismatch is refused with `DIGEST_INVALID`, as the CNCF registry does); then the bytes
//! are thrown away and only the digest and size are kept (blobs up to
//! `Options::keep_blobs_up_to`, 1 MiB by default, are kept whole: configs, provenance).
//! Manifests, tags and referrers are kept. Memory is a hasher per open upload, the kept
//! documents and the request log; nothing is written to disk.
//!
//! Uploads: monolithic (`POST ?digest=` with the body, or `POST` then `PUT ?digest=` with
//! the body), chunked (`POST`, `PATCH`…, `PUT ?digest=`), resumable (`GET`/`HEAD` of the
//! session answers 204 with `Range: 0-N` and `Docker-Upload-UUID`; a `PATCH` whose
//! `Content-Range` does not start at the offset held is refused with 416; bytes of a
//! `PATCH` cut midway are kept, as a registry that writes what arrives does), and
//! cross-repository mounts (`POST ?mount=D&from=R` answers 201 when `R` has `D`, else
//! opens a session). A `HEAD` of a blob answers 200 with `Content-Length` and
//! `Docker-Content-Digest` as any registry; a `GET` of a blob whose bytes were discarded
//! answers 410 with an error body saying so. A manifest `PUT` checks that the blobs (an
//! image manifest's config and layers) or manifests (an index's) it names were pushed to
//! that repository, as `docker-registry` does (`MANIFEST_BLOB_UNKNOWN`), and answers
//! `OCI-Subject` for a manifest with a `subject` (the referrers API).
//!
//! Every request is logged (method, target, status, body bytes in and out), and every
//! blob counts the uploads that verified it, for tests ([`Forgetful::requests`],
//! [`Forgetful::blobs`]) and scripts ([`Forgetful::stats`], which
//! `examples/forgetful_registry.rs` prints).

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Debug)]
pub struct Options {
    /// Blobs of at most this many bytes are kept and served by `GET`.
    pub keep_blobs_up_to: u64,
    /// Where to listen (`127.0.0.1:0`: a free port).
    pub addr: String,
    /// Answer 405 to a manifest whose `subject` is an image index, as ECR is reported
    /// to (aws/containers-roadmap#2783).
    pub refuse_index_subject: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            keep_blobs_up_to: 1 << 20,
            addr: "127.0.0.1:0".into(),
            refuse_index_subject: false,
        }
    }
}

/// One request as the registry saw it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Logged {
    pub method: String,
    /// Path and query, as received.
    pub target: String,
    pub status: u16,
    /// Request body bytes read (a `PATCH` cut midway counts what arrived).
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
}

/// A blob the registry has verified.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SeenBlob {
    pub size: u64,
    /// Uploads whose bytes hashed to this digest (a blob pushed twice counts 2).
    pub uploads: u32,
    /// Cross-repository mounts of it.
    pub mounts: u32,
    #[serde(skip)]
    kept: Option<Bytes>,
}

impl SeenBlob {
    /// The bytes were thrown away (only digest and size are known).
    pub fn discarded(&self) -> bool {
        self.kept.is_none()
    }
}

struct Upload {
    repo: String,
    hasher: Sha256,
    size: u64,
    /// The bytes so far, while they fit `keep_blobs_up_to`.
    kept: Option<Vec<u8>>,
}

struct Manifest {
    media_type: String,
    bytes: Bytes,
}

#[derive(Default)]
struct State {
    keep_up_to: u64,
    refuse_index_subject: bool,
    next_upload: u64,
    /// Open sessions; each behind its own lock, held by the request streaming into it.
    uploads: HashMap<String, Arc<tokio::sync::Mutex<Option<Upload>>>>,
    blobs: BTreeMap<String, SeenBlob>,
    /// (repository, digest) of blobs pushed or mounted there.
    blob_links: BTreeSet<(String, String)>,
    manifests: HashMap<String, Manifest>,
    manifest_links: BTreeSet<(String, String)>,
    tags: BTreeMap<(String, String), String>,
    /// (repository, subject) -> referrer descriptors.
    referrers: BTreeMap<(String, String), Vec<Value>>,
    digest_mismatches: u64,
    log: Vec<Logged>,
}

pub struct Forgetful {
    /// `127.0.0.1:PORT`
    pub addr: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Forgetful {
    pub fn start() -> Forgetful {
        Forgetful::start_opts(Options::default())
    }

    pub fn start_opts(opts: Options) -> Forgetful {
        let listener = std::net::TcpListener::bind(&opts.addr).expect("bind the registry");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            keep_up_to: opts.keep_blobs_up_to,
            refuse_index_subject: opts.refuse_index_subject,
            ..State::default()
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime for the registry");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let st = st.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let st = st.clone();
                                async move { Ok::<_, Infallible>(handle(&st, req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_background();
        });
        Forgetful {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Every blob verified so far, by digest.
    pub fn blobs(&self) -> BTreeMap<String, SeenBlob> {
        self.state.lock().unwrap().blobs.clone()
    }

    /// Closing `PUT`s refused because the bytes did not hash to the digest.
    pub fn digest_mismatches(&self) -> u64 {
        self.state.lock().unwrap().digest_mismatches
    }

    /// The digest `repo:tag` points at.
    pub fn tag(&self, repo: &str, tag: &str) -> Option<String> {
        let st = self.state.lock().unwrap();
        st.tags.get(&(repo.to_string(), tag.to_string())).cloned()
    }

    /// A summary for scripts: requests by method, bytes in, blobs (digest, size,
    /// uploads, mounts, discarded), digest mismatches, tags.
    pub fn stats(&self) -> Value {
        let st = self.state.lock().unwrap();
        let mut methods: BTreeMap<&str, u64> = BTreeMap::new();
        for l in &st.log {
            *methods.entry(l.method.as_str()).or_default() += 1;
        }
        let blobs: Vec<Value> = st
            .blobs
            .iter()
            .map(|(d, b)| {
                json!({"digest": d, "size": b.size, "uploads": b.uploads, "mounts": b.mounts,
                       "discarded": b.discarded()})
            })
            .collect();
        let tags: BTreeMap<String, &String> = st
            .tags
            .iter()
            .map(|((r, t), d)| (format!("{r}:{t}"), d))
            .collect();
        json!({
            "requests": st.log.len(),
            "methods": methods,
            "bytes_in": st.log.iter().map(|l| l.bytes_in).sum::<u64>(),
            "blobs": blobs,
            "digest_mismatches": st.digest_mismatches,
            "open_uploads": st.uploads.len(),
            "tags": tags,
        })
    }
}

impl Drop for Forgetful {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ───────────────────────── routing ─────────────────────────

enum Route {
    Base,
    Uploads(String),
    Upload(String, String),
    Blob(String, String),
    Manifest(String, String),
    Tags(String),
    Referrers(String, String),
}

/// `/v2/<name>/…`: the name is everything before the last route keyword.
fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2/")?;
    if rest.is_empty() {
        return Some(Route::Base);
    }
    let named = |name: &str| valid_name(name).then(|| name.to_string());
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(named(name)?));
    }
    for (key, make) in [
        (
            "/manifests/",
            Route::Manifest as fn(String, String) -> Route,
        ),
        ("/referrers/", Route::Referrers),
        ("/blobs/uploads/", Route::Upload),
        ("/blobs/", Route::Blob),
    ] {
        if let Some(i) = rest.rfind(key) {
            let (name, arg) = (&rest[..i], &rest[i + key.len()..]);
            if key == "/blobs/uploads/" && arg.is_empty() {
                return Some(Route::Uploads(named(name)?));
            }
            if arg.is_empty() || arg.contains('/') {
                return None;
            }
            return Some(make(named(name)?, arg.to_string()));
        }
    }
    None
}

/// The OCI name grammar: `/`-separated `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_name(name: &str) -> bool {
    name.len() <= 255
        && name.split('/').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|x| x.is_ascii_digit() || x.is_ascii_lowercase() || b"._-".contains(x))
                && !c.contains("..")
                && !c.contains("___")
        })
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == key).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

type Resp = Response<Full<Bytes>>;

fn respond(status: StatusCode, headers: &[(&'static str, String)], body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    for (k, v) in headers {
        r.headers_mut()
            .append(*k, HeaderValue::from_str(v).expect("a valid header value"));
    }
    r
}

/// The distribution spec's error body.
fn error(status: StatusCode, code: &str, message: &str, detail: Value) -> Resp {
    let body = json!({"errors": [{"code": code, "message": message, "detail": detail}]});
    respond(
        status,
        &[("Content-Type", "application/json".into())],
        Bytes::from(serde_json::to_vec(&body).unwrap()),
    )
}

async fn handle(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.to_string());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (path, query) = (path.to_string(), query.to_string());
    let mut bytes_in = 0u64;
    let resp = dispatch(state, req, &path, &query, &mut bytes_in).await;
    let bytes_out = if method == Method::HEAD {
        0
    } else {
        http_body::Body::size_hint(resp.body()).exact().unwrap_or(0)
    };
    state.lock().unwrap().log.push(Logged {
        method: method.to_string(),
        target,
        status: resp.status().as_u16(),
        bytes_in,
        bytes_out,
    });
    let mut resp = resp;
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn dispatch(
    state: &Arc<Mutex<State>>,
    req: Request<Incoming>,
    path: &str,
    query: &str,
    bytes_in: &mut u64,
) -> Resp {
    let Some(r) = route(path) else {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_INVALID",
            "no such route or invalid repository name",
            json!(path),
        );
    };
    let m = req.method().clone();
    match (r, m) {
        (Route::Base, Method::GET | Method::HEAD) => respond(
            StatusCode::OK,
            &[("Content-Type", "application/json".into())],
            Bytes::from_static(b"{}"),
        ),
        (Route::Uploads(repo), Method::POST) => {
            post_upload(state, req, &repo, query, bytes_in).await
        }
        (Route::Upload(repo, id), Method::PATCH) => {
            patch_upload(state, req, &repo, &id, bytes_in).await
        }
        (Route::Upload(repo, id), Method::PUT) => {
            put_upload(state, req, &repo, &id, query, bytes_in).await
        }
        (Route::Upload(repo, id), Method::GET | Method::HEAD) => {
            upload_status(state, &repo, &id).await
        }
        (Route::Upload(repo, id), Method::DELETE) => {
            let gone = state.lock().unwrap().uploads.remove(&id);
            match gone {
                Some(_) => respond(StatusCode::NO_CONTENT, &[], Bytes::new()),
                None => unknown_upload(&repo, &id),
            }
        }
        (Route::Blob(repo, digest), m @ (Method::GET | Method::HEAD)) => {
            get_blob(state, &repo, &digest, m == Method::HEAD)
        }
        (Route::Manifest(repo, reference), Method::PUT) => {
            put_manifest(state, req, &repo, &reference, bytes_in).await
        }
        (Route::Manifest(repo, reference), Method::GET | Method::HEAD) => {
            get_manifest(state, &repo, &reference)
        }
        (Route::Tags(repo), Method::GET) => {
            let st = state.lock().unwrap();
            let tags: Vec<&String> = st
                .tags
                .keys()
                .filter(|(r, _)| *r == repo)
                .map(|(_, t)| t)
                .collect();
            if tags.is_empty() {
                return error(
                    StatusCode::NOT_FOUND,
                    "NAME_UNKNOWN",
                    "repository name not known to registry",
                    json!({"name": repo}),
                );
            }
            json_resp(&json!({"name": repo, "tags": tags}), "application/json")
        }
        (Route::Referrers(repo, digest), Method::GET) => {
            let st = state.lock().unwrap();
            let filter = query_param(query, "artifactType");
            let all = st
                .referrers
                .get(&(repo, digest))
                .cloned()
                .unwrap_or_default();
            let manifests: Vec<Value> = all
                .into_iter()
                .filter(|d| filter.as_deref().map_or(true, |f| d["artifactType"] == f))
                .collect();
            let mut r = json_resp(
                &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": manifests}),
                "application/vnd.oci.image.index.v1+json",
            );
            if filter.is_some() {
                r.headers_mut().insert(
                    "OCI-Filters-Applied",
                    HeaderValue::from_static("artifactType"),
                );
            }
            r
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the operation is unsupported",
            Value::Null,
        ),
    }
}

fn json_resp(v: &Value, media_type: &str) -> Resp {
    respond(
        StatusCode::OK,
        &[("Content-Type", media_type.into())],
        Bytes::from(serde_json::to_vec(v).unwrap()),
    )
}

fn unknown_upload(repo: &str, id: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        "blob upload unknown to registry",
        json!({"name": repo, "uuid": id}),
    )
}

/// Headers of an upload in progress: where it is and how much it holds (`0-0` when
/// empty, as the CNCF registry says).
fn session_headers(repo: &str, id: &str, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("Location", format!("/v2/{repo}/blobs/uploads/{id}")),
        ("Range", format!("0-{}", size.saturating_sub(1))),
        ("Docker-Upload-UUID", id.to_string()),
        ("Content-Length", "0".into()),
    ]
}

/// Streams a request body into `up`, counting into `bytes_in`. A body cut midway keeps
/// what arrived (the error is returned after).
async fn ingest(
    body: Incoming,
    up: &mut Upload,
    keep_up_to: u64,
    bytes_in: &mut u64,
) -> Result<(), hyper::Error> {
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            up.hasher.update(&data);
            up.size += data.len() as u64;
            *bytes_in += data.len() as u64;
            if up.size > keep_up_to {
                up.kept = None;
            } else if let Some(k) = &mut up.kept {
                k.extend_from_slice(&data);
            }
        }
    }
    Ok(())
}

fn new_upload(state: &Mutex<State>, repo: &str) -> String {
    let mut st = state.lock().unwrap();
    st.next_upload += 1;
    // UUID-shaped, from a counter: the same run gives the same ids.
    let id = format!("00000000-0000-4000-8000-{:012x}", st.next_upload);
    let up = Upload {
        repo: repo.to_string(),
        hasher: Sha256::new(),
        size: 0,
        kept: Some(Vec::new()),
    };
    st.uploads
        .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(Some(up))));
    id
}

async fn post_upload(
    state: &Arc<Mutex<State>>,
    req: Request<Incoming>,
    repo: &str,
    query: &str,
    bytes_in: &mut u64,
) -> Resp {
    if let (Some(d), Some(from)) = (query_param(query, "mount"), query_param(query, "from")) {
        let mut st = state.lock().unwrap();
        if st.blob_links.contains(&(from, d.clone())) {
            st.blob_links.insert((repo.to_string(), d.clone()));
            if let Some(b) = st.blobs.get_mut(&d) {
                b.mounts += 1;
            }
            return respond(
                StatusCode::CREATED,
                &[
                    ("Location", format!("/v2/{repo}/blobs/{d}")),
                    ("Docker-Content-Digest", d),
                    ("Content-Length", "0".into()),
                ],
                Bytes::new(),
            );
        }
        // Not there: an ordinary session, as distribution answers.
    }
    let id = new_upload(state, repo);
    if let Some(d) = query_param(query, "digest") {
        // Monolithic: the whole blob in the POST.
        return put_upload(state, req, repo, &id, &format!("digest={d}"), bytes_in).await;
    }
    respond(
        StatusCode::ACCEPTED,
        &session_headers(repo, &id, 0),
        Bytes::new(),
    )
}

fn session(state: &Mutex<State>, id: &str) -> Option<Arc<tokio::sync::Mutex<Option<Upload>>>> {
    state.lock().unwrap().uploads.get(id).cloned()
}

fn content_range_start(req: &Request<Incoming>) -> Option<Option<u64>> {
    let v = req.headers().get("content-range")?;
    let v = v.to_str().ok().unwrap_or("");
    let v = v.trim().strip_prefix("bytes=").unwrap_or(v.trim());
    Some(v.split_once('-').and_then(|(a, _)| a.trim().parse().ok()))
}

async fn patch_upload(
    state: &Arc<Mutex<State>>,
    req: Request<Incoming>,
    repo: &str,
    id: &str,
    bytes_in: &mut u64,
) -> Resp {
    let Some(lock) = session(state, id) else {
        return unknown_upload(repo, id);
    };
    let mut guard = lock.lock().await;
    let Some(up) = guard.as_mut().filter(|u| u.repo == repo) else {
        return unknown_upload(repo, id);
    };
    if let Some(start) = content_range_start(&req) {
        if start != Some(up.size) {
            let mut h = session_headers(repo, id, up.size);
            h.retain(|(k, _)| *k != "Content-Length");
            return respond(StatusCode::RANGE_NOT_SATISFIABLE, &h, Bytes::new());
        }
    }
    let keep = state.lock().unwrap().keep_up_to;
    if ingest(req.into_body(), up, keep, bytes_in).await.is_err() {
        // The client went away; what arrived stays, as the status will say.
        return error(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            "the body was cut",
            Value::Null,
        );
    }
    respond(
        StatusCode::ACCEPTED,
        &session_headers(repo, id, up.size),
        Bytes::new(),
    )
}

async fn upload_status(state: &Arc<Mutex<State>>, repo: &str, id: &str) -> Resp {
    let Some(lock) = session(state, id) else {
        return unknown_upload(repo, id);
    };
    let guard = lock.lock().await;
    match guard.as_ref().filter(|u| u.repo == repo) {
        Some(up) => respond(
            StatusCode::NO_CONTENT,
            &session_headers(repo, id, up.size),
            Bytes::new(),
        ),
        None => unknown_upload(repo, id),
    }
}

async fn put_upload(
    state: &Arc<Mutex<State>>,
    req: Request<Incoming>,
    repo: &str,
    id: &str,
    query: &str,
    bytes_in: &mut u64,
) -> Resp {
    let Some(lock) = session(state, id) else {
        return unknown_upload(repo, id);
    };
    let mut guard = lock.lock().await;
    let Some(up) = guard.as_mut().filter(|u| u.repo == repo) else {
        return unknown_upload(repo, id);
    };
    let Some(digest) = query_param(query, "digest").filter(|d| valid_digest(d)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "provided digest did not match uploaded content",
            json!("a sha256 digest is required"),
        );
    };
    let keep = state.lock().unwrap().keep_up_to;
    if ingest(req.into_body(), up, keep, bytes_in).await.is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            "the body was cut",
            Value::Null,
        );
    }
    let up = guard.take().expect("checked above");
    drop(guard);
    let mut st = state.lock().unwrap();
    // The session ends either way, as in distribution (a failed commit cancels it).
    st.uploads.remove(id);
    let computed = format!("sha256:{}", hex::encode(up.hasher.finalize()));
    if computed != digest {
        st.digest_mismatches += 1;
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "provided digest did not match uploaded content",
            json!({"provided": digest, "computed": computed, "size": up.size}),
        );
    }
    let blob = st.blobs.entry(digest.clone()).or_insert(SeenBlob {
        size: up.size,
        uploads: 0,
        mounts: 0,
        kept: None,
    });
    blob.uploads += 1;
    if blob.kept.is_none() {
        blob.kept = up.kept.map(Bytes::from);
    }
    st.blob_links.insert((repo.to_string(), digest.clone()));
    respond(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{repo}/blobs/{digest}")),
            ("Docker-Content-Digest", digest),
            ("Content-Length", "0".into()),
        ],
        Bytes::new(),
    )
}

fn get_blob(state: &Mutex<State>, repo: &str, digest: &str, head: bool) -> Resp {
    let st = state.lock().unwrap();
    let blob = st
        .blob_links
        .contains(&(repo.to_string(), digest.to_string()))
        .then(|| st.blobs.get(digest))
        .flatten();
    let Some(blob) = blob else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
            json!({"digest": digest}),
        );
    };
    let headers = [
        ("Content-Type", "application/octet-stream".to_string()),
        ("Docker-Content-Digest", digest.to_string()),
        ("Content-Length", blob.size.to_string()),
    ];
    match &blob.kept {
        Some(b) => respond(StatusCode::OK, &headers[..2], b.clone()),
        // The digest and size are known, so a HEAD answers as any registry's does.
        None if head => respond(StatusCode::OK, &headers, Bytes::new()),
        None => error(
            StatusCode::GONE,
            "BLOB_UNKNOWN",
            "this registry verified the blob and discarded its bytes (a registry that checks and forgets)",
            json!({"digest": digest, "size": blob.size}),
        ),
    }
}

async fn put_manifest(
    state: &Arc<Mutex<State>>,
    req: Request<Incoming>,
    repo: &str,
    reference: &str,
    bytes_in: &mut u64,
) -> Resp {
    const LIMIT: usize = 4 << 20;
    let media_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                "the body was cut",
                Value::Null,
            );
        };
        if let Ok(d) = frame.into_data() {
            *bytes_in += d.len() as u64;
            bytes.extend_from_slice(&d);
            if bytes.len() > LIMIT {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "SIZE_INVALID",
                    "manifest over 4 MiB",
                    Value::Null,
                );
            }
        }
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "manifest invalid",
            json!("not JSON"),
        );
    };
    let media_type = media_type
        .or_else(|| doc["mediaType"].as_str().map(str::to_string))
        .unwrap_or_default();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if reference.starts_with("sha256:") && reference != digest {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "provided digest did not match uploaded content",
            json!({"provided": reference, "computed": digest}),
        );
    }
    let mut st = state.lock().unwrap();
    if st.refuse_index_subject
        && doc["subject"]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "a referrer's subject may not be an image index",
            Value::Null,
        );
    }
    let linked = |st: &State, set: fn(&State) -> &BTreeSet<(String, String)>, d: &Value| {
        d.as_str()
            .is_some_and(|d| set(st).contains(&(repo.to_string(), d.to_string())))
    };
    let mut missing = Vec::new();
    for m in doc["manifests"].as_array().into_iter().flatten() {
        if !linked(&st, |s| &s.manifest_links, &m["digest"]) {
            missing.push(m["digest"].clone());
        }
    }
    let blobs = doc["config"]
        .as_object()
        .map(|_| &doc["config"])
        .into_iter();
    for b in blobs.chain(doc["layers"].as_array().into_iter().flatten()) {
        if !linked(&st, |s| &s.blob_links, &b["digest"]) {
            missing.push(b["digest"].clone());
        }
    }
    if !missing.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            "manifest blob unknown to registry",
            json!({"missing": missing}),
        );
    }
    let mut headers = vec![
        ("Location", format!("/v2/{repo}/manifests/{digest}")),
        ("Docker-Content-Digest", digest.clone()),
        ("Content-Length", "0".into()),
    ];
    if let Some(subject) = doc["subject"]["digest"].as_str() {
        let artifact_type = doc["artifactType"]
            .as_str()
            .or_else(|| doc["config"]["mediaType"].as_str())
            .unwrap_or_default();
        let mut d = json!({"mediaType": media_type, "digest": digest, "size": bytes.len(),
                           "artifactType": artifact_type});
        if let Some(a) = doc.get("annotations") {
            d["annotations"] = a.clone();
        }
        let list = st
            .referrers
            .entry((repo.to_string(), subject.to_string()))
            .or_default();
        if !list.iter().any(|x| x["digest"] == digest.as_str()) {
            list.push(d);
        }
        headers.push(("OCI-Subject", subject.to_string()));
    }
    st.manifests.insert(
        digest.clone(),
        Manifest {
            media_type,
            bytes: Bytes::from(bytes),
        },
    );
    st.manifest_links.insert((repo.to_string(), digest.clone()));
    if !reference.starts_with("sha256:") {
        st.tags
            .insert((repo.to_string(), reference.to_string()), digest.clone());
    }
    respond(StatusCode::CREATED, &headers, Bytes::new())
}

fn get_manifest(state: &Mutex<State>, repo: &str, reference: &str) -> Resp {
    let st = state.lock().unwrap();
    let digest = if reference.starts_with("sha256:") {
        Some(reference.to_string())
            .filter(|d| st.manifest_links.contains(&(repo.to_string(), d.clone())))
    } else {
        st.tags
            .get(&(repo.to_string(), reference.to_string()))
            .cloned()
    };
    let Some(m) = digest.as_ref().and_then(|d| st.manifests.get(d)) else {
        return error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown to registry",
            json!({"name": repo, "reference": reference}),
        );
    };
    respond(
        StatusCode::OK,
        &[
            ("Content-Type", m.media_type.clone()),
            ("Docker-Content-Digest", digest.unwrap()),
        ],
        m.bytes.clone(),
    )
}
