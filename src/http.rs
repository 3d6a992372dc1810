//! What the Hub client ([`crate::source::hub`]) and the registry client
//! ([`crate::remote`]) share about HTTP: redirects are followed by hand, and a credential
//! goes with a request only to the one origin it belongs to.
//!
//! reqwest's own redirect policy keeps `Authorization` when only the scheme changes
//! (`https://reg:5000` → `http://reg:5000`), and its clients are built here without it:
//! [`follow`] sets or removes the header on every hop by [`same_origin`], so a
//! credential never reaches another scheme, host or port, whichever hop sends it there.

use reqwest::header::{HeaderValue, AUTHORIZATION, COOKIE, LOCATION, PROXY_AUTHORIZATION};
use reqwest::{Method, Request, Response, StatusCode, Url};

/// Redirects followed for one request.
pub const MAX_REDIRECTS: usize = 10;

/// Same scheme, host and port (the default one when none is written).
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// What kind of transport failure an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Nothing listens at the address.
    Refused,
    /// The TLS handshake failed (not TLS at the other end, or a certificate refused).
    Tls,
    TimedOut,
    Other,
}

/// Reads the kind from the types in the error's source chain, never from its text:
/// rustls reports a failed handshake as an `InvalidData` I/O error while connecting
/// (which hyper wraps in an I/O error of its own).
pub fn transport_failure(e: &reqwest::Error) -> Transport {
    if e.is_timeout() {
        return Transport::TimedOut;
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let mut io = s.downcast_ref::<std::io::Error>();
        while let Some(err) = io {
            match err.kind() {
                std::io::ErrorKind::ConnectionRefused => return Transport::Refused,
                std::io::ErrorKind::InvalidData if e.is_connect() => return Transport::Tls,
                std::io::ErrorKind::TimedOut => return Transport::TimedOut,
                _ => {}
            }
            io = err
                .get_ref()
                .and_then(|i| i.downcast_ref::<std::io::Error>());
        }
        src = s.source();
    }
    Transport::Other
}

/// An `Authorization` value and the origin it was issued for.
#[derive(Clone, Copy)]
pub struct Credential<'a> {
    pub origin: &'a Url,
    pub header: &'a HeaderValue,
}

/// Why a redirect could not be followed.
#[derive(Debug)]
pub enum FollowError {
    /// The request could not be sent or its answer not read.
    Send(reqwest::Error),
    /// A redirect without a `Location`.
    NoLocation { url: Url, status: StatusCode },
    /// A `Location` longer than [`crate::limits::MAX_LINK_LEN`] or not a URL.
    BadLocation { url: Url, msg: String },
    /// More than [`MAX_REDIRECTS`] redirects; `url` is the last one asked for.
    TooMany { url: Url },
}

/// Sends `req`, following up to [`MAX_REDIRECTS`] redirects. `credential` goes with
/// every hop to its own origin and with no other (any `Authorization` the request
/// carries is replaced). GET and HEAD follow 301, 302, 303, 307 and 308; other methods
/// follow 307 and 308 only, with their body, when the body can be sent again; any other
/// answer, and a redirect that cannot be followed so, is returned as it is. `hop` sees
/// each answer with the URL it came from. A user and password in a `Location` are
/// dropped.
pub async fn follow(
    http: &reqwest::Client,
    mut req: Request,
    credential: Option<Credential<'_>>,
    mut hop: impl FnMut(&Url, &Response),
) -> Result<Response, FollowError> {
    for _ in 0..=MAX_REDIRECTS {
        let headers = req.headers_mut();
        for h in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE] {
            headers.remove(h);
        }
        if let Some(c) = credential.filter(|c| same_origin(c.origin, req.url())) {
            req.headers_mut().insert(AUTHORIZATION, c.header.clone());
        }
        let url = req.url().clone();
        let method = req.method().clone();
        let again = req.try_clone();
        let resp = http.execute(req).await.map_err(FollowError::Send)?;
        hop(&url, &resp);
        let status = resp.status();
        let followed = match status {
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => {
                method == Method::GET || method == Method::HEAD
            }
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => true,
            _ => false,
        };
        let Some(mut next) = again.filter(|_| followed) else {
            return Ok(resp);
        };
        let Some(location) = resp.headers().get(LOCATION) else {
            return Err(FollowError::NoLocation { url, status });
        };
        let max = crate::limits::MAX_LINK_LEN;
        if location.len() > max {
            return Err(FollowError::BadLocation {
                msg: format!(
                    "the server sent a Location of {} bytes (at most {max})",
                    location.len()
                ),
                url,
            });
        }
        let location = String::from_utf8_lossy(location.as_bytes())
            .trim()
            .to_string();
        let mut target = url.join(&location).map_err(|e| FollowError::BadLocation {
            url: url.clone(),
            msg: format!("bad Location {}: {e}", crate::limits::shown(&location)),
        })?;
        // Credentials a server writes into a Location are not ours to send.
        let _ = target.set_username("");
        let _ = target.set_password(None);
        *next.url_mut() = target;
        req = next;
    }
    Err(FollowError::TooMany {
        url: req.url().clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn an_origin_is_scheme_host_and_port() {
        let reg = u("https://reg.example:5000/v2/");
        assert!(same_origin(
            &reg,
            &u("https://reg.example:5000/v2/a/b/blobs/x")
        ));
        // https → http on the same host and port: another origin (reqwest's own
        // policy would keep the header here).
        assert!(!same_origin(&reg, &u("http://reg.example:5000/v2/")));
        assert!(!same_origin(&reg, &u("https://reg.example:5001/v2/")));
        assert!(!same_origin(&reg, &u("https://cdn.reg.example:5000/v2/")));
        // The default port is the same port written or not.
        assert!(same_origin(
            &u("https://reg.example/"),
            &u("https://reg.example:443/x")
        ));
        assert!(!same_origin(
            &u("https://reg.example/"),
            &u("http://reg.example:443/x")
        ));
    }
}
