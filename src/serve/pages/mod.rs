//! The registry's web pages and their JSON twins, for people (and scripts) browsing the
//! served models:
//!
//! | path | what |
//! | --- | --- |
//! | `/` | every model: a searchable list with tag, commit, size and a `COPY` line |
//! | `/index.json` | the same as JSON (also `/` with `Accept: application/json`) |
//! | `/<org>/<model>`, `/<model>` | one model: tags, commit, digests, layers, file tree |
//! | `/<org>/<model>.json` | the same as JSON (also `?format=json` or `Accept`) |
//! | `/_/model/<name>` | the model page under a prefix no name can have (names starting `v2/`) |
//! | `/_/app.js`, `/_/app.css`, `/_/icon.svg` | the only script, style and icon |
//!
//! `/v2` and `/v2/…` stay the registry API; `_` cannot start an OCI name, so `/_/…` is
//! ours alone. Everything that comes from disk or the request is HTML-escaped; the one
//! script is a static file, fed by escaped `data-` attributes, and the pages are sent with
//! a Content-Security-Policy that allows nothing but our own script, style and icon.

mod html;
mod json;

pub use super::data::{FileEntry, Files, Kind, LayerDesc, LayerFiles, Overview, TocFile};

use super::store::{is_valid_name, Store, StoreError};
use crate::digest::Digest;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;
use percent_encoding::percent_decode_str;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// Nothing but our own script, style and icon; no frames, forms or plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// Escapes text for HTML element content and (quoted) attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The image reference to pull: `host/name`, with `:tag` unless the default tag is
/// `latest` (or there is none).
pub fn image_ref(host: &str, o: &Overview) -> String {
    match o.default_tag() {
        Some((t, _)) if t != "latest" => format!("{host}/{}:{t}", o.name),
        _ => format!("{host}/{}", o.name),
    }
}

/// `host/name@sha256:…`: the reference that cannot move.
pub fn pinned_ref(host: &str, o: &Overview) -> Option<String> {
    o.default_tag()
        .map(|(_, d)| format!("{host}/{}@{d}", o.name))
}

fn needs_json_form(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\' || c == '$')
}

/// `COPY --link --from=IMAGE /path DEST`, or the JSON form when the path needs quoting.
pub fn copy_line(image: &str, path: &str, dest: &str) -> String {
    let src = format!("/{}", path.trim_start_matches('/'));
    if needs_json_form(&src) || needs_json_form(dest) {
        let q = |s: &str| serde_json::to_string(s).expect("a string serialises");
        format!("COPY --link --from={image} [{}, {}]", q(&src), q(dest))
    } else {
        format!("COPY --link --from={image} {src} {dest}")
    }
}

/// Where a directory of the image goes: a directory of the same name.
pub fn dir_dest(path: &str) -> String {
    format!("./{}/", path.trim_matches('/'))
}

/// The host clients should pull from: the request's `Host` if it looks like one (host
/// name or address, optional port), else the address we listen on.
pub fn pull_host(host: Option<&HeaderValue>, local: SocketAddr) -> String {
    host.and_then(|h| h.to_str().ok())
        .filter(|h| valid_host(h))
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| local.to_string())
}

fn valid_host(h: &str) -> bool {
    let (name_ok, port) = if let Some(rest) = h.strip_prefix('[') {
        // An IPv6 literal: `[addr]` or `[addr]:port`.
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        let ok = !addr.is_empty()
            && addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (ok, port)
    } else {
        let (name, port) = match h.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        };
        (valid_dns_name(name), port)
    };
    name_ok
        && port.map_or(true, |p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        })
}

fn valid_dns_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Where a model's page is: `/<name>`, or under `/_/model/` when `/<name>` is taken by
/// the registry API or the catalogue's JSON.
pub fn page_href(name: &str) -> String {
    if name == "v2" || name.starts_with("v2/") || name == "index.json" {
        format!("/_/model/{name}")
    } else {
        format!("/{name}")
    }
}

/// Where a model's JSON is: `<page>.json`, or `<page>?format=json` when an image is
/// itself called `<name>.json` (its page is at `/<name>.json`).
pub fn json_href(name: &str, name_json_is_an_image: bool) -> String {
    if name_json_is_an_image {
        format!("{}?format=json", page_href(name))
    } else {
        format!("{}.json", page_href(name))
    }
}

/// A response for the server to send (HEAD drops the body, not the headers).
pub struct Page {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Page {
    fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Page {
        let mut p = Page {
            status,
            content_type,
            body: body.into(),
            headers: vec![(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            )],
        };
        if content_type == HTML {
            p.headers.push((
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ));
            p.headers.push((
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            ));
        }
        p
    }

    fn header(mut self, name: HeaderName, value: &str) -> Page {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    fn dynamic(self) -> Page {
        self.header(header::CACHE_CONTROL, "no-cache")
            .header(header::VARY, "Accept")
    }
}

/// What the request asks for.
pub struct PageRequest<'a> {
    pub host: &'a str,
    /// The raw (percent-encoded) path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub accept: Option<&'a str>,
}

impl PageRequest<'_> {
    /// `?format=json`, or an `Accept` that names JSON and not HTML.
    fn wants_json(&self) -> bool {
        let q = self.query.unwrap_or("");
        if q.split('&').any(|p| p == "format=json") {
            return true;
        }
        self.accept.is_some_and(|a| {
            let a = a.to_ascii_lowercase();
            a.contains("application/json") && !a.contains("text/html")
        })
    }
}

struct Asset {
    body: &'static str,
    content_type: &'static str,
}

const ASSETS: [(&str, Asset); 3] = [
    (
        "app.js",
        Asset {
            body: include_str!("../assets/app.js"),
            content_type: "text/javascript; charset=utf-8",
        },
    ),
    (
        "app.css",
        Asset {
            body: include_str!("../assets/app.css"),
            content_type: "text/css; charset=utf-8",
        },
    ),
    (
        "icon.svg",
        Asset {
            body: include_str!("../assets/icon.svg"),
            content_type: "image/svg+xml",
        },
    ),
];

/// `/_/NAME?v=VERSION`: a URL that changes whenever the asset does, so it can be cached
/// for good.
pub fn asset_href(name: &str) -> String {
    static VERSIONS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let versions = VERSIONS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(n, a)| (*n, Digest::of(a.body.as_bytes()).hex()[..12].to_string()))
            .collect()
    });
    let v = versions
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, v)| v.as_str());
    format!("/_/{name}?v={v}")
}

fn asset(name: &str, query: Option<&str>) -> Option<Page> {
    let (_, a) = ASSETS.iter().find(|(n, _)| *n == name)?;
    let versioned = query.is_some_and(|q| {
        asset_href(name)
            .split_once('?')
            .is_some_and(|(_, v)| q == v)
    });
    let cache = if versioned {
        super::IMMUTABLE
    } else {
        "no-cache"
    };
    Some(
        Page::new(
            StatusCode::OK,
            a.content_type,
            Bytes::from_static(a.body.as_bytes()),
        )
        .header(header::CACHE_CONTROL, cache),
    )
}

fn not_found(what: &str) -> Page {
    Page::new(StatusCode::NOT_FOUND, HTML, html::not_found(what))
        .header(header::CACHE_CONTROL, "no-cache")
}

fn redirect(to: &str) -> Page {
    Page::new(
        StatusCode::PERMANENT_REDIRECT,
        "text/plain; charset=utf-8",
        Bytes::from(format!("see {to}\n")),
    )
    .header(header::LOCATION, to)
}

fn internal(e: &StoreError, path: &str) -> Page {
    eprintln!("depotai serve: page {path}: {e}");
    Page::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"internal error\n"),
    )
}

/// Answers a GET or HEAD for anything outside `/v2`. Runs on the blocking pool: it
/// looks at the file system (never at a layer once the image's pages are cached).
pub fn respond(store: &Store, req: &PageRequest) -> Page {
    let path = req.path;
    if path == "/" || path == "/index.json" {
        return catalogue(store, req, path == "/index.json" || req.wants_json());
    }
    if let Some(name) = path.strip_prefix("/_/") {
        if let Some(model) = name.strip_prefix("model/") {
            return model_page(store, req, model, "/_/model/");
        }
        return asset(name, req.query).unwrap_or_else(|| not_found(path));
    }
    model_page(store, req, &path[1..], "/")
}

fn catalogue(store: &Store, req: &PageRequest, as_json: bool) -> Page {
    let models = store.overviews();
    if as_json {
        Page::new(StatusCode::OK, JSON, json::catalogue(req.host, &models)).dynamic()
    } else {
        Page::new(StatusCode::OK, HTML, html::catalogue(req.host, &models)).dynamic()
    }
}

/// `raw` is the path after `prefix`: a name, maybe with `.json`.
fn model_page(store: &Store, req: &PageRequest, raw: &str, prefix: &str) -> Page {
    let Ok(decoded) = percent_decode_str(raw).decode_utf8() else {
        return not_found(raw);
    };
    let decoded = decoded.into_owned();
    let exists = |n: &str| is_valid_name(n) && store.image(n).is_ok();
    let exists_or_json = |n: &str| exists(n) || n.strip_suffix(".json").is_some_and(exists);
    if !exists_or_json(&decoded) {
        // README links carry the Hub's spelling (`BAAI/bge-large-en`), sometimes a
        // trailing slash; images are lowercase. Only an existing image is a target, so
        // nothing else (`//elsewhere.example/`) is ever redirected to.
        let canon = decoded.trim_end_matches('/').to_ascii_lowercase();
        if canon != decoded && exists_or_json(&canon) {
            return redirect(&format!("{prefix}{canon}"));
        }
        return not_found(&decoded);
    }
    // The name itself wins: an image may be called `x.json`.
    let (name, as_json) = if exists(&decoded) {
        (decoded.clone(), req.wants_json())
    } else {
        let stem = decoded.strip_suffix(".json").unwrap_or(&decoded);
        (stem.to_string(), true)
    };
    match store.files(&name) {
        Ok((o, files)) => {
            let same_name_json = exists(&format!("{name}.json"));
            if as_json {
                Page::new(StatusCode::OK, JSON, json::model(req.host, &o, &files)).dynamic()
            } else {
                let page = html::model(req.host, &o, &files, same_name_json);
                Page::new(StatusCode::OK, HTML, page).dynamic()
            }
        }
        Err(StoreError::NameUnknown | StoreError::NameInvalid) => not_found(&decoded),
        Err(e) => internal(&e, req.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn copy_lines_link_and_quote_paths_that_need_it() {
        assert_eq!(
            copy_line("h:5000/acme/m", "config.json", "."),
            "COPY --link --from=h:5000/acme/m /config.json ."
        );
        assert_eq!(
            copy_line("h/m", "a b/c.txt", "."),
            r#"COPY --link --from=h/m ["/a b/c.txt", "."]"#
        );
        assert_eq!(
            copy_line("h/m", "1_Pooling", &dir_dest("1_Pooling")),
            "COPY --link --from=h/m /1_Pooling ./1_Pooling/"
        );
        assert_eq!(copy_line("h/m", "", "."), "COPY --link --from=h/m / .");
        assert_eq!(
            copy_line("h/m", "$HOME\n", "."),
            r#"COPY --link --from=h/m ["/$HOME\n", "."]"#
        );
    }

    #[test]
    fn hosts_are_names_or_addresses_with_a_port() {
        for ok in [
            "models.example",
            "models.example:5000",
            "127.0.0.1:8080",
            "localhost",
            "[::1]:5000",
            "[::1]",
            "Registry.Example",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "<script>x</script>",
            "a b",
            "h:99999",
            "h:",
            "h:5000:1",
            "[::1",
            "[zz]:1",
            "-h.example",
            "a..b",
            "h/evil",
            "h\"",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let v = HeaderValue::from_static("Models.Example:80");
        assert_eq!(pull_host(Some(&v), local), "models.example:80");
        let v = HeaderValue::from_static("bad host");
        assert_eq!(pull_host(Some(&v), local), "127.0.0.1:5000");
        assert_eq!(pull_host(None, local), "127.0.0.1:5000");
    }

    #[test]
    fn pages_of_names_the_api_owns_move_under_the_prefix() {
        assert_eq!(page_href("acme/m"), "/acme/m");
        assert_eq!(page_href("v2"), "/_/model/v2");
        assert_eq!(page_href("v2/x"), "/_/model/v2/x");
        assert_eq!(page_href("v2x/y"), "/v2x/y");
        assert_eq!(page_href("index.json"), "/_/model/index.json");
        assert_eq!(json_href("acme/m", false), "/acme/m.json");
        assert_eq!(json_href("acme/m", true), "/acme/m?format=json");
    }
}
