//! The OCI Distribution protocol, client side: `push` of an image layout to a registry,
//! and lazy `ls` / `get` that read one eStargz layer's TOC and single files with Range
//! requests instead of pulling the whole layer.
//!
//! [`client`] does the HTTP (auth challenges, retries, byte counting), [`auth`] finds
//! credentials, [`push`] and [`lazy`] are the two flows.

pub mod auth;
pub mod client;
pub mod lazy;
pub mod published;
pub mod push;
pub mod upload;

use std::fmt;

pub use client::{Client, ClientOptions};

/// What can go wrong talking to a registry. Every text field is shown through
/// [`crate::redact::text`]: a URL's user and password and its query's tokens never
/// reach a message, whoever built the error.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {:?}: {}", redact(reference), redact(msg))]
    BadReference { reference: String, msg: String },
    #[error("{}: {}", redact(url), redact(msg))]
    Network { url: String, msg: String },
    #[error("{}: HTTP {status}: {}", redact(url), redact(body))]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{}: authentication failed (HTTP 401){}", redact(url), redact(hint))]
    Unauthorized { url: String, hint: String },
    /// A 401 from a server other than the registry: one a blob read was redirected to, or
    /// an upload Location elsewhere.
    #[error(
        "{}: HTTP 401 from a server the registry sent us to; registry credentials go only to the registry and to the token realm its own 401 names, so this read or upload cannot be authenticated",
        redact(url)
    )]
    ForeignChallenge { url: String },
    /// The registry's 401 named a token realm on plain HTTP that `--insecure` does not
    /// cover (or on another scheme still).
    #[error(
        "bearer realm {} of {} is not HTTPS: credentials go over plain HTTP only to the registry's own host, and only with --insecure",
        redact(realm),
        redact(registry)
    )]
    InsecureRealm { realm: String, registry: String },
    #[error("{}: access denied (HTTP 403)", redact(url))]
    Denied { url: String },
    #[error("{}: not found (HTTP 404)", redact(url))]
    NotFound { url: String },
    #[error("registry protocol: {}", redact(.0))]
    Protocol(String),
    #[error("digest mismatch in {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no such path in the image: {0}")]
    NoSuchPath(String),
    #[error("credentials: {}", redact(.0))]
    Credentials(String),
    #[error("layout: {0}")]
    Layout(#[from] crate::image::read::LayoutError),
    /// `get` found something other than a real directory where it creates one under
    /// the output (a symlink there would send the file elsewhere).
    #[error("{0} is not a directory (get follows no link under the output): remove it or choose another -o")]
    OutputNotADirectory(String),
    /// The file renamed into place is not the one `get` wrote: something replaced the
    /// `.partial` between the last write and the rename; that entry is removed.
    #[error("{0} was replaced while get wrote it (removed): run get again")]
    OutputReplaced(String),
    /// The registry would not take a push: found by [`Client::check_push`] before
    /// anything is downloaded or sent.
    #[error("cannot push to {}: {cause}", redact(registry))]
    CannotPush {
        registry: String,
        cause: PushRefusal,
    },
}

/// What to do when a registry asks for credentials and there are none.
pub(crate) const NO_CREDENTIALS: &str = "no credentials: pass --username with --password-stdin, set DEPOTAI_REGISTRY_USER and DEPOTAI_REGISTRY_PASSWORD, or log in with docker login";

/// Why a registry would not take a push ([`RegistryError::CannotPush`]), each with its
/// fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefusal {
    #[error(
        "connection refused (nothing listens there); start the registry or correct the address"
    )]
    ConnectionRefused,
    #[error(
        "the host name {} does not resolve (DNS); check the registry's name",
        redact(host)
    )]
    Dns { host: String },
    #[error("the TLS handshake failed: that port speaks plain HTTP; pass --insecure to push over plain HTTP")]
    PlainHttp,
    #[error("the TLS handshake failed ({}); check the address and the registry's certificate, or pass --insecure for a plain-HTTP registry", redact(detail))]
    Tls { detail: String },
    #[error(
        "no answer in time ({}); check the address and the network",
        redact(detail)
    )]
    Timeout { detail: String },
    #[error("{}; check the address and the network", redact(detail))]
    Transport { detail: String },
    #[error("GET /v2/ answered HTTP {status}, so it is no OCI registry; check the address")]
    NotARegistry { status: u16 },
    /// `hint` says what to do, as [`RegistryError::Unauthorized`]'s does.
    #[error("authentication failed (HTTP 401){}", redact(hint))]
    Unauthorized { hint: String },
    #[error("pushing to {} is denied (HTTP {status} to opening an upload); use credentials with push access to it", redact(repository))]
    Denied { repository: String, status: u16 },
    #[error("{} takes no uploads (HTTP {status} to opening one); push to a registry that accepts pushes", redact(repository))]
    NoUploads { repository: String, status: u16 },
}

fn redact(s: &str) -> String {
    crate::redact::text(s)
}

impl RegistryError {
    pub(crate) fn io(path: impl fmt::Display, source: std::io::Error) -> RegistryError {
        RegistryError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// `host[:port]/repo/path[:tag][@sha256:…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host and port as written (`docker.io` is mapped to `registry-1.docker.io`).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, RegistryError> {
        let bad = |msg: &str| RegistryError::BadReference {
            reference: s.to_string(),
            msg: msg.to_string(),
        };
        // `user:password@host/…`: credentials have their own flags, and a reference is
        // printed in messages and records.
        if s.split_once('/')
            .is_some_and(|(host, _)| host.contains('@'))
        {
            return Err(bad(
                "a reference names no user or password; pass --username with --password-stdin, or set DEPOTAI_REGISTRY_USER and DEPOTAI_REGISTRY_PASSWORD",
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if crate::digest::Digest::parse(d).is_none() {
                    return Err(bad("the digest must be sha256:<64 lowercase hex>"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), p.to_string())
            }
            _ => ("registry-1.docker.io".to_string(), rest.to_string()),
        };
        let host = if host == "docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            host
        };
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path, None),
        };
        if repo.is_empty()
            || repo.split('/').any(|c| {
                c.is_empty()
                    || !c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
        {
            return Err(bad(
                "the repository must be lowercase path components such as org/model",
            ));
        }
        if let Some(t) = &tag {
            crate::image::validate_tag(t).map_err(|e| bad(&e.to_string()))?;
        }
        // Docker Hub's official images live under `library/`.
        let repo = if host == "registry-1.docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry: host,
            repository: repo,
            tag,
            digest,
        })
    }

    /// The tag, or else the digest: what goes after `/manifests/`.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// An index or manifest from a registry: its shape checked (depth, descriptors) before
/// it is parsed; `r` names it in messages. (Here, below both readers and the uploader.)
pub fn parse_manifest_document(bytes: &[u8], r: &str) -> Result<serde_json::Value, RegistryError> {
    use crate::limits::{self, shown};
    let bad = |what: String| RegistryError::Protocol(format!("manifest {}: {what}", shown(r)));
    limits::check_json_shape(bytes, limits::MAX_JSON_DEPTH, limits::MAX_DESCRIPTORS)
        .map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(bytes).map_err(|e| bad(limits::one_line(&e.to_string(), 200)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = Reference::parse("127.0.0.1:5000/acme/m:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "acme/m");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        let r = Reference::parse("registry.example/acme/m").unwrap();
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = Reference::parse("acme/m:x").unwrap();
        assert_eq!(r.registry, "registry-1.docker.io");
        assert_eq!(
            Reference::parse("ubuntu").unwrap().repository,
            "library/ubuntu"
        );
        assert!(Reference::parse("reg.example/Acme/m").is_err());
        let e = Reference::parse("bob:s3cret@reg.example/acme/m:v1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid image reference \"***@reg.example/acme/m:v1\": a reference names no user or password; pass --username with --password-stdin, or set DEPOTAI_REGISTRY_USER and DEPOTAI_REGISTRY_PASSWORD"
        );
        let d = format!("ubuntu@sha256:{}", "0".repeat(64));
        assert_eq!(Reference::parse(&d).unwrap().repository, "library/ubuntu");
        assert!(Reference::parse("reg.example/a//m").is_err());
        let d = format!("reg.example/a/m@sha256:{}", "0".repeat(64));
        assert_eq!(
            Reference::parse(&d).unwrap().manifest_ref(),
            format!("sha256:{}", "0".repeat(64))
        );
    }
}
