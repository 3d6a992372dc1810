//! Secrets kept out of text. A URL can carry a user and password (`HF_ENDPOINT`, a
//! Location or realm a server sends) and tokens in its query string (an upload Location's
//! `_state`, a storage host's signed `X-Amz-Signature`, a CDN's `Signature`); [`text`]
//! rewrites every URL in a piece of text so that neither shows. It is the one redactor:
//! the `Display` of [`RegistryError`](crate::remote::RegistryError) and
//! [`HubError`](crate::source::hub::HubError) and the two describers of transport
//! errors call it, so every message, log line, `--json` field and record that shows an
//! error is redacted, whoever built the error.

/// Query parameters whose values the OCI Distribution and Hub protocols define and which
/// carry no secret; every other value is shown as `***`.
const PLAIN_QUERY_KEYS: &[&str] = &[
    "digest",
    "mount",
    "from",
    "n",
    "last",
    "service",
    "scope",
    "recursive",
    "expand",
];

/// What replaces a secret.
pub const HIDDEN: &str = "***";

/// `s` with every URL's user and password and every query value other than the
/// protocol's own (see [`PLAIN_QUERY_KEYS`]) replaced by `***`, and any fragment
/// dropped to `#***`. A `user:password@host/…` word without a scheme (a registry
/// reference written with credentials) loses its `user:password` too. Everything else
/// is left as it is, byte for byte.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        // Words are separated by whitespace and the quotes and brackets that wrap URLs
        // in messages.
        let start = rest.find(|c: char| !is_separator(c)).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(is_separator).unwrap_or(rest.len());
        redact_word(&rest[..end], &mut out);
        rest = &rest[end..];
    }
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>' | '`')
}

/// One word: a URL (possibly inside brackets or before punctuation), a reference with
/// credentials, or anything else (copied).
fn redact_word(word: &str, out: &mut String) {
    let Some(sep) = word.find("://") else {
        redact_reference(word, out);
        return;
    };
    // The scheme: the letters, digits, `+`, `-` and `.` just before `://`.
    let scheme_start = word[..sep]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .map_or(0, |i| i + 1);
    if scheme_start == sep {
        out.push_str(word);
        return;
    }
    out.push_str(&word[..scheme_start]);
    // A closing bracket or a sentence's punctuation after the URL is not part of it.
    let mut url = &word[scheme_start..];
    let mut tail = "";
    while let Some(c) = url.chars().last() {
        let unbalanced_close = c == ')' && url.matches('(').count() < url.matches(')').count();
        if unbalanced_close || matches!(c, ',' | ';' | '.' | ':' | ']') {
            let cut = url.len() - c.len_utf8();
            tail = &word[scheme_start + cut..];
            url = &url[..cut];
        } else {
            break;
        }
    }
    let after_scheme = sep - scheme_start + 3;
    out.push_str(&url[..after_scheme]);
    let rest = &url[after_scheme..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(HIDDEN);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match rest.find('#') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            redact_query(query, out);
        }
        None => out.push_str(before_fragment),
    }
    if fragment.len() > 1 {
        out.push('#');
        out.push_str(HIDDEN);
    } else {
        out.push_str(fragment);
    }
    out.push_str(tail);
}

fn redact_query(query: &str, out: &mut String) {
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((k, _)) if PLAIN_QUERY_KEYS.contains(&k) => out.push_str(pair),
            Some((k, _)) => {
                out.push_str(k);
                out.push('=');
                out.push_str(HIDDEN);
            }
            None if pair.is_empty() || PLAIN_QUERY_KEYS.contains(&pair) => out.push_str(pair),
            // A bare value (`?opaque-token`).
            None => out.push_str(HIDDEN),
        }
    }
}

/// `user:password@host/path` (no scheme): the form a registry reference with
/// credentials takes. A `repo@sha256:…` reference (its `@` comes after a `/`) and a
/// mail address (no `/` after the `@`) are left alone.
fn redact_reference(word: &str, out: &mut String) {
    let slash = word.find('/');
    match (word.find('@'), slash) {
        (Some(at), Some(slash)) if at < slash && word[..at].contains(':') => {
            // Keep what wraps the word (an opening bracket) outside the credentials.
            let start = word[..at].rfind(['(', '[', '{', '=']).map_or(0, |i| i + 1);
            out.push_str(&word[..start]);
            out.push_str(HIDDEN);
            out.push_str(&word[at..]);
        }
        _ => out.push_str(word),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_hidden_and_the_rest_of_the_url_kept() {
        assert_eq!(
            text("http://bob:PASS@127.0.0.1:8080/api/models/a/b: connection refused"),
            "http://***@127.0.0.1:8080/api/models/a/b: connection refused"
        );
        assert_eq!(
            text("see https://tok@hub.example"),
            "see https://***@hub.example"
        );
        // An `@` in the path is not userinfo.
        assert_eq!(
            text("https://reg.example/v2/a/b/manifests/x@y"),
            "https://reg.example/v2/a/b/manifests/x@y"
        );
    }

    #[test]
    fn query_values_are_hidden_except_the_protocols_own() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            text(&format!(
                "http://reg:5000/v2/a/b/blobs/uploads/u1?_state=SECRET&digest={digest}: HTTP 400"
            )),
            format!("http://reg:5000/v2/a/b/blobs/uploads/u1?_state=***&digest={digest}: HTTP 400")
        );
        assert_eq!(
            text("https://cdn.example/f?Expires=1&Signature=abc&Key-Pair-Id=K"),
            "https://cdn.example/f?Expires=***&Signature=***&Key-Pair-Id=***"
        );
        assert_eq!(
            text("https://auth.example/token?service=reg&scope=repository:a/b:pull&account=bob"),
            "https://auth.example/token?service=reg&scope=repository:a/b:pull&account=***"
        );
        assert_eq!(
            text("https://s.example/x?opaque"),
            "https://s.example/x?***"
        );
        assert_eq!(
            text("https://s.example/x#access_token=t"),
            "https://s.example/x#***"
        );
    }

    #[test]
    fn urls_inside_brackets_and_sentences_keep_their_punctuation() {
        assert_eq!(
            text("error sending request for url (http://u:p@h/x?sig=1): refused."),
            "error sending request for url (http://***@h/x?sig=***): refused."
        );
        assert_eq!(
            text("bearer realm \"http://h/token?t=1\" is not HTTPS"),
            "bearer realm \"http://h/token?t=***\" is not HTTPS"
        );
        assert_eq!(text("at http://h/x."), "at http://h/x.");
        assert_eq!(text("(http://h/a_(b))"), "(http://h/a_(b))");
    }

    #[test]
    fn references_with_credentials_lose_them() {
        assert_eq!(
            text("invalid image reference \"bob:pw@reg.example/acme/m:v1\": no"),
            "invalid image reference \"***@reg.example/acme/m:v1\": no"
        );
        let d = format!("reg.example/acme/m@sha256:{}", "0".repeat(64));
        assert_eq!(text(&d), d);
        assert_eq!(text("mail bob@example.com"), "mail bob@example.com");
        assert_eq!(
            text("user bob@reg.example/acme/m"),
            "user bob@reg.example/acme/m"
        );
    }

    #[test]
    fn text_without_secrets_is_unchanged() {
        for s in [
            "",
            "plain words, and more",
            "\"config.json\": the chunk at 0 declares 1099511627776 bytes",
            "http://127.0.0.1:5000/v2/acme/m/manifests/latest: not found (HTTP 404)",
            "a://",
            "://x",
            "ünïcödé https://h/ü?digest=x",
        ] {
            assert_eq!(text(s), s);
        }
    }
}
