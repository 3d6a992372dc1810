//! The Hub's API: which files a repository has at a commit.

use super::error::{HubError, HubRefusal};
use super::http::{Attempt, Http, Probe};
use crate::limits::{self, BodyError};
use crate::names::{CommitSha, ModelName};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

/// Everything but RFC 3986 unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How a downloaded file is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// LFS file: sha256 of the content (also its cache etag).
    Sha256(String),
    /// Plain git file: the git blob id, sha1("blob <len>\0" + content).
    GitSha1(String),
}

impl Check {
    /// The cache's blob name, as `huggingface_hub` names it.
    pub fn etag(&self) -> &str {
        match self {
            Check::Sha256(h) | Check::GitSha1(h) => h,
        }
    }

    /// `sha256:<hex>` for an LFS file, whose content digest the Hub publishes (the
    /// layer computes every file's sha256 as it reads, so it can check it for free).
    pub fn sha256_digest(&self) -> Option<String> {
        match self {
            Check::Sha256(h) => Some(format!("sha256:{h}")),
            Check::GitSha1(_) => None,
        }
    }
}

/// The sha256 digests the Hub publishes for `files`, by path (LFS files only).
pub fn expected_sha256<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a Check)>,
) -> std::collections::BTreeMap<String, String> {
    files
        .into_iter()
        .filter_map(|(path, check)| Some((path.to_string(), check.sha256_digest()?)))
        .collect()
}

/// One file of the repository at the pinned commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
    pub check: Check,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: Option<String>,
}

/// One entry of the Hub's tree listing (also the form of the listing kept in the cache).
#[derive(Deserialize, Serialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    oid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    lfs: Option<LfsInfo>,
}

#[derive(Deserialize, Serialize)]
struct LfsInfo {
    oid: String,
    size: u64,
}

pub fn resolve_url(endpoint: &str, model: &ModelName, sha: &CommitSha, path: &str) -> String {
    let encoded: Vec<String> = path
        .split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect();
    format!("{endpoint}/{model}/resolve/{sha}/{}", encoded.join("/"))
}

/// Turns the Hub's error codes into errors that say what to do.
pub fn explain(
    e: HubError,
    http: &Http,
    model: &ModelName,
    sha: &CommitSha,
    path: Option<&str>,
) -> HubError {
    let HubError::Status {
        status, code, msg, ..
    } = &e
    else {
        return e;
    };
    let repo = model.to_string();
    let endpoint = http.endpoint().to_string();
    let hint = if http.has_token() {
        " (the token in HF_TOKEN cannot read it)"
    } else {
        " (if it is private or gated, set HF_TOKEN to a token that can read it)"
    };
    match code.as_str() {
        "RepoNotFound" => HubError::RepoNotFound {
            repo,
            endpoint,
            hint,
        },
        "GatedRepo" => HubError::Gated {
            repo,
            endpoint,
            hint: if http.has_token() {
                " with the account of HF_TOKEN"
            } else {
                ", then set HF_TOKEN"
            },
        },
        "RevisionNotFound" => HubError::RevisionNotFound {
            repo,
            rev: sha.to_string(),
        },
        "EntryNotFound" => HubError::EntryNotFound {
            repo,
            rev: sha.to_string(),
            path: path.unwrap_or("?").to_string(),
        },
        _ if *status == 401 && http.has_token() => HubError::BadToken { msg: msg.clone() },
        _ if *status == 401 || (*status == 404 && path.is_none()) => HubError::RepoNotFound {
            repo,
            endpoint,
            hint,
        },
        _ => e,
    }
}

/// A Hub answer as JSON, with the next page's URL from its `Link` header. The body is
/// at most [`limits::MAX_LISTING_PAGE`] bytes of JSON at most
/// [`limits::MAX_JSON_DEPTH`] deep with arrays of at most
/// [`limits::MAX_LISTING_FILES`] items; a `Link` header at most
/// [`limits::MAX_LINK_LEN`] bytes.
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &Http,
    url: &str,
) -> Result<(T, Option<String>), HubError> {
    let too = |msg: String| HubError::BadResponse {
        url: url.to_string(),
        msg,
    };
    http.retrying(url, || async {
        match http.get(url, None).await {
            Attempt::Done(mut f) => {
                let links = f.response.headers().get_all("link");
                if let Some(v) = links.iter().find(|v| v.len() > limits::MAX_LINK_LEN) {
                    let msg = format!(
                        "a Link header of {} bytes (at most {})",
                        v.len(),
                        limits::MAX_LINK_LEN
                    );
                    return (Attempt::Fail(too(msg)), false);
                }
                let next = links
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(next_link);
                let body =
                    limits::read_body_capped(&mut f.response, limits::MAX_LISTING_PAGE, |_| {})
                        .await;
                let body = match body {
                    Err(BodyError::TooLarge) => {
                        let msg = format!(
                            "the answer is larger than {} ({} bytes), the most depotai reads",
                            crate::units::human_bytes(limits::MAX_LISTING_PAGE),
                            limits::MAX_LISTING_PAGE
                        );
                        return (Attempt::Fail(too(msg)), false);
                    }
                    Err(BodyError::Network(e)) => Err(e),
                    Ok(b) => {
                        let shape = limits::check_json_shape(
                            &b,
                            limits::MAX_JSON_DEPTH,
                            limits::MAX_LISTING_FILES,
                        );
                        if let Err(e) = shape {
                            return (Attempt::Fail(too(e.to_string())), false);
                        }
                        Ok(b)
                    }
                };
                match body {
                    Ok(body) => match serde_json::from_slice::<T>(&body) {
                        Ok(v) => (Attempt::Done((v, next)), false),
                        Err(e) => (
                            Attempt::Fail(HubError::BadResponse {
                                url: url.to_string(),
                                msg: limits::one_line(&e.to_string(), 200),
                            }),
                            false,
                        ),
                    },
                    Err(e) => (
                        Attempt::Retry {
                            why: super::http::describe(&e),
                            after: None,
                        },
                        false,
                    ),
                }
            }
            Attempt::Retry { why, after } => (Attempt::Retry { why, after }, false),
            Attempt::Fail(e) => (Attempt::Fail(e), false),
        }
    })
    .await
}

/// `<url>; rel="next"` from a Link header value.
fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"" || p.trim() == "rel=next")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

/// Adds the files of one listing page to `files` (unsafe names to `unsafe_names`, the
/// first 20 of them kept for the message), checking counts, sizes and hashes.
fn add_page(
    entries: Vec<TreeEntry>,
    url: &str,
    files: &mut Vec<RemoteFile>,
    unsafe_names: &mut Vec<String>,
) -> Result<(), HubError> {
    for e in entries {
        if e.kind != "file" {
            continue;
        }
        if files.len() + unsafe_names.len() >= limits::MAX_LISTING_FILES {
            return Err(HubError::BadResponse {
                url: url.to_string(),
                msg: format!(
                    "the tree listing has more than {} files",
                    limits::MAX_LISTING_FILES
                ),
            });
        }
        if e.size > limits::MAX_HUB_FILE_SIZE {
            return Err(HubError::BadResponse {
                url: url.to_string(),
                msg: format!(
                    "{} is listed with {} bytes, more than the {} depotai accepts for a file",
                    limits::shown(&e.path),
                    e.size,
                    crate::units::human_bytes(limits::MAX_HUB_FILE_SIZE)
                ),
            });
        }
        // The image's path policy, before the name touches the cache or the disk.
        if let Err(why) = crate::names::check_path(&e.path) {
            if unsafe_names.len() < 20 {
                unsafe_names.push(format!("{} ({why})", limits::shown(&e.path)));
            }
            continue;
        }
        let check = match &e.lfs {
            Some(l) => {
                if l.size != e.size {
                    return Err(HubError::BadResponse {
                        url: url.to_string(),
                        msg: format!(
                            "{}: LFS size {} differs from size {}",
                            e.path, l.size, e.size
                        ),
                    });
                }
                Check::Sha256(l.oid.to_ascii_lowercase())
            }
            None => Check::GitSha1(e.oid.to_ascii_lowercase()),
        };
        let hex_len = match check {
            Check::Sha256(_) => 64,
            Check::GitSha1(_) => 40,
        };
        let h = check.etag();
        if h.len() != hex_len || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HubError::BadResponse {
                url: url.to_string(),
                msg: format!("{}: malformed hash {}", e.path, limits::shown(h)),
            });
        }
        files.push(RemoteFile {
            path: e.path,
            size: e.size,
            check,
        });
    }
    Ok(())
}

/// One page of a tree listing as [`list_files`] reads it: the JSON's shape, then each
/// entry. Returns the files and the unsafe names found (for tests and fuzzing).
pub fn parse_tree_page(body: &[u8]) -> Result<(Vec<RemoteFile>, Vec<String>), HubError> {
    parse_entries(body, "tree page")
}

fn parse_entries(body: &[u8], url: &str) -> Result<(Vec<RemoteFile>, Vec<String>), HubError> {
    limits::check_json_shape(body, limits::MAX_JSON_DEPTH, limits::MAX_LISTING_FILES).map_err(
        |e| HubError::BadResponse {
            url: url.into(),
            msg: e.to_string(),
        },
    )?;
    let entries: Vec<TreeEntry> =
        serde_json::from_slice(body).map_err(|e| HubError::BadResponse {
            url: url.into(),
            msg: limits::one_line(&e.to_string(), 200),
        })?;
    let (mut files, mut unsafe_names) = (Vec::new(), Vec::new());
    add_page(entries, url, &mut files, &mut unsafe_names)?;
    Ok((files, unsafe_names))
}

/// `files` as the Hub lists them (one page of tree entries, in path order): the copy of
/// a commit's listing kept in the cache, read back by [`parse_listing`].
pub(super) fn tree_json(files: &[RemoteFile]) -> Vec<u8> {
    let mut entries: Vec<TreeEntry> = files
        .iter()
        .map(|f| {
            let (oid, lfs) = match &f.check {
                Check::GitSha1(h) => (h.clone(), None),
                Check::Sha256(h) => (
                    String::new(),
                    Some(LfsInfo {
                        oid: h.clone(),
                        size: f.size,
                    }),
                ),
            };
            TreeEntry {
                kind: "file".into(),
                path: f.path.clone(),
                size: f.size,
                oid,
                lfs,
            }
        })
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    serde_json::to_vec(&entries).expect("tree entries serialise")
}

/// A whole listing kept by [`tree_json`], checked as the Hub's pages are (`source`
/// names it in errors).
pub(super) fn parse_listing(
    body: &[u8],
    model: &ModelName,
    source: &str,
) -> Result<Vec<RemoteFile>, HubError> {
    let (files, unsafe_names) = parse_entries(body, source)?;
    whole_listing(files, unsafe_names, model, source)
}

/// The checks on a whole listing, however it was read: no unsafe name, no path twice,
/// and no file where another file needs a directory (`a` and `a/b`), which could never
/// be laid out on disk. Returns the files in path order.
fn whole_listing(
    mut files: Vec<RemoteFile>,
    unsafe_names: Vec<String>,
    model: &ModelName,
    source: &str,
) -> Result<Vec<RemoteFile>, HubError> {
    if !unsafe_names.is_empty() {
        return Err(HubError::UnsafeNames {
            repo: model.to_string(),
            names: unsafe_names.join(", "),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = files.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(HubError::BadResponse {
            url: source.to_string(),
            msg: format!("{} is listed twice", w[0].path),
        });
    }
    let paths: std::collections::BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for f in &files {
        let mut parents = f.path.match_indices('/').map(|(i, _)| &f.path[..i]);
        if let Some(dir) = parents.find(|d| paths.contains(d)) {
            return Err(HubError::FileAndDirectory {
                repo: model.to_string(),
                file: limits::shown(dir),
                inside: limits::shown(&f.path),
            });
        }
    }
    Ok(files)
}

/// Lists every file at `sha`, checking that the Hub knows the commit as pinned.
pub async fn list_files(
    http: &Http,
    model: &ModelName,
    sha: &CommitSha,
) -> Result<Vec<RemoteFile>, HubError> {
    let ep = http.endpoint();
    let info_url = format!("{ep}/api/models/{model}/revision/{sha}");
    let (info, _) = get_json::<RevisionInfo>(http, &info_url)
        .await
        .map_err(|e| explain(e, http, model, sha, None))?;
    match info.sha {
        Some(got) if got == sha.as_str() => {}
        Some(got) => {
            return Err(HubError::CommitMismatch {
                repo: model.to_string(),
                expected: sha.to_string(),
                got,
            })
        }
        None => {
            return Err(HubError::BadResponse {
                url: info_url,
                msg: "no commit sha in the answer".into(),
            })
        }
    }

    let mut files = Vec::new();
    let mut unsafe_names = Vec::new();
    let mut next = Some(format!("{ep}/api/models/{model}/tree/{sha}?recursive=true"));
    let mut pages = 0;
    let mut seen_pages = std::collections::HashSet::new();
    while let Some(url) = next.take() {
        pages += 1;
        if pages > limits::MAX_LISTING_PAGES {
            return Err(HubError::BadResponse {
                url,
                msg: format!(
                    "the tree listing goes on for more than {} pages",
                    limits::MAX_LISTING_PAGES
                ),
            });
        }
        if !seen_pages.insert(url.clone()) {
            return Err(HubError::BadResponse {
                url,
                msg: "the tree listing's next page is one it sent before".into(),
            });
        }
        let (entries, link) = get_json::<Vec<TreeEntry>>(http, &url)
            .await
            .map_err(|e| explain(e, http, model, sha, None))?;
        add_page(entries, &url, &mut files, &mut unsafe_names)?;
        next = link;
    }
    whole_listing(
        files,
        unsafe_names,
        model,
        &format!("{ep}/api/models/{model}/tree/{sha}"),
    )
}

/// The check before a rebuild: one request for the commit's metadata, with no retry,
/// says whether the Hub answers, knows the repository and the commit, and takes the
/// token. Each cause is typed from the transport error's or the answer's kind.
pub async fn check(http: &Http, model: &ModelName, sha: &CommitSha) -> Result<(), HubRefusal> {
    let ep = http.endpoint();
    // A name that does not resolve is told as such, not as a failed connection.
    if let Ok(u) = reqwest::Url::parse(ep) {
        if let Some(host) = u.domain() {
            let port = u.port_or_known_default().unwrap_or(443);
            if tokio::net::lookup_host((host, port)).await.is_err() {
                return Err(HubRefusal::Dns {
                    host: host.to_string(),
                });
            }
        }
    }
    let url = format!("{ep}/api/models/{model}/revision/{sha}");
    let mut fetched = match http.probe(&url).await {
        Ok(f) => f,
        Err(Probe::Transport(e)) => {
            let detail = super::http::describe(&e);
            return Err(match crate::http::transport_failure(&e) {
                crate::http::Transport::Refused => HubRefusal::ConnectionRefused,
                crate::http::Transport::Tls => HubRefusal::Tls { detail },
                crate::http::Transport::TimedOut => HubRefusal::Timeout { detail },
                crate::http::Transport::Other => HubRefusal::Transport { detail },
            });
        }
        Err(Probe::Unwell(why)) => return Err(HubRefusal::Unwell { why }),
        Err(Probe::Answer(e)) => {
            let status = match &e {
                HubError::Status { status, .. } => *status,
                _ => 0,
            };
            return Err(match explain(e, http, model, sha, None) {
                HubError::BadToken { .. } => HubRefusal::BadToken,
                HubError::RepoNotFound { repo, hint, .. } => {
                    HubRefusal::NoRepo { repo, status, hint }
                }
                HubError::RevisionNotFound { repo, rev } => HubRefusal::NoCommit { repo, rev },
                other => HubRefusal::Answer(Box::new(other)),
            });
        }
    };
    let bad = |msg: String| {
        HubRefusal::Answer(Box::new(HubError::BadResponse {
            url: url.clone(),
            msg,
        }))
    };
    let body = limits::read_body_capped(&mut fetched.response, limits::MAX_LISTING_PAGE, |_| {})
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => bad(format!(
                "the answer is larger than {} bytes, the most depotai reads",
                limits::MAX_LISTING_PAGE
            )),
            BodyError::Network(e) => bad(super::http::describe(&e)),
        })?;
    limits::check_json_shape(&body, limits::MAX_JSON_DEPTH, limits::MAX_LISTING_FILES)
        .map_err(|e| bad(e.to_string()))?;
    let info: RevisionInfo =
        serde_json::from_slice(&body).map_err(|e| bad(limits::one_line(&e.to_string(), 200)))?;
    match info.sha {
        Some(got) if got == sha.as_str() => Ok(()),
        Some(got) => Err(HubRefusal::OtherCommit {
            repo: model.to_string(),
            expected: sha.to_string(),
            got: limits::shown(&got),
        }),
        None => Err(bad("no commit sha in the answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_names_that_no_image_may_hold_are_set_aside_with_their_rule() {
        let page = serde_json::json!([
            {"type": "file", "path": "config.json", "size": 2, "oid": "9e26dfeeb6e641a33dae4961196235bdb965b21b"},
            {"type": "file", "path": ".wh.w.bin", "size": 2, "oid": "9e26dfeeb6e641a33dae4961196235bdb965b21b"},
            {"type": "file", "path": "sub/.wh..wh..opq", "size": 2, "oid": "9e26dfeeb6e641a33dae4961196235bdb965b21b"},
            {"type": "file", "path": "a\u{1b}[31mb", "size": 2, "oid": "9e26dfeeb6e641a33dae4961196235bdb965b21b"},
            {"type": "file", "path": "../x", "size": 2, "oid": "9e26dfeeb6e641a33dae4961196235bdb965b21b"},
            {"type": "file", "path": "C:x", "size": 2, "oid": "9e26dfeeb6e641a33dae4961196235bdb965b21b"},
        ]);
        let (files, refused) = parse_tree_page(page.to_string().as_bytes()).unwrap();
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["config.json"]
        );
        assert_eq!(
            refused,
            [
                r#"".wh.w.bin" (whiteout name: a component starting with '.wh.' hides files when a runtime unpacks the layer)"#,
                r#""sub/.wh..wh..opq" (whiteout name: a component starting with '.wh.' hides files when a runtime unpacks the layer)"#,
                r#""a\u{1b}[31mb" (control character in the name)"#,
                r#""../x" (empty, '.' or '..' component)"#,
                r#""C:x" (drive letter)"#,
            ]
        );
    }

    #[test]
    fn a_file_where_another_file_needs_a_directory_is_refused() {
        let m: ModelName = "acme/m".parse().unwrap();
        let file = |p: &str| RemoteFile {
            path: p.into(),
            size: 1,
            check: Check::GitSha1("0".repeat(40)),
        };
        // "a-x" sorts between "a" and "a/b": the check must not rely on neighbours.
        let files = vec![file("a/b/c"), file("a-x"), file("a/b"), file("z")];
        let e = whole_listing(files, vec![], &m, "listing").unwrap_err();
        assert_eq!(
            e.to_string(),
            "acme/m lists \"a/b\" both as a file and as the directory of \"a/b/c\"; refusing to download anything"
        );
        let ok = whole_listing(vec![file("ab/c"), file("a"), file("a.b")], vec![], &m, "l");
        let paths: Vec<String> = ok.unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(paths, ["a", "a.b", "ab/c"]);
    }

    #[test]
    fn resolve_urls_encode_each_segment() {
        let m: ModelName = "org/model".parse().unwrap();
        let sha: CommitSha = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        assert_eq!(
            resolve_url("http://h", &m, &sha, "dir/a b#1?.bin"),
            "http://h/org/model/resolve/0123456789abcdef0123456789abcdef01234567/dir/a%20b%231%3F.bin"
        );
        assert!(resolve_url("http://h", &m, &sha, "ü/100%.txt").ends_with("/%C3%BC/100%25.txt"));
    }

    #[test]
    fn next_page_comes_from_the_link_header() {
        assert_eq!(
            next_link(r#"<http://h/api/models/a/tree/x?recursive=true&cursor=abc>; rel="next""#)
                .as_deref(),
            Some("http://h/api/models/a/tree/x?recursive=true&cursor=abc")
        );
        assert_eq!(next_link(r#"<http://h/x>; rel="prev""#), None);
    }
}
