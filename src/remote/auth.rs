//! Credentials and `WWW-Authenticate` challenges.
//!
//! Credentials come from, in order: explicit ones (`--username` / `--password-stdin`),
//! the environment (`DEPOTAI_REGISTRY_USER` / `DEPOTAI_REGISTRY_PASSWORD`), then the
//! Docker config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`):
//! `credHelpers[host]`, `auths[host].auth` (base64 `user:password`), `credsStore`.

use super::RegistryError;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            base64_encode(format!("{}:{}", self.username, self.password).as_bytes())
        )
    }
}

/// The environment's credentials, if both variables are set.
pub fn from_env() -> Option<Credentials> {
    let u = std::env::var("DEPOTAI_REGISTRY_USER").ok()?;
    let p = std::env::var("DEPOTAI_REGISTRY_PASSWORD").ok()?;
    Some(Credentials {
        username: u,
        password: p,
    })
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Credentials for `host` from the Docker config, if it names any.
pub fn from_docker_config(host: &str) -> Result<Option<Credentials>, RegistryError> {
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RegistryError::io(path.display(), e)),
    };
    let cfg: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::Credentials(format!("{} is not JSON: {e}", path.display())))?;
    let keys = host_keys(host);
    if let Some(helpers) = cfg.get("credHelpers").and_then(|v| v.as_object()) {
        for k in &keys {
            if let Some(h) = helpers.get(k).and_then(|v| v.as_str()) {
                return helper_get(h, k);
            }
        }
    }
    if let Some(auths) = cfg.get("auths").and_then(|v| v.as_object()) {
        for k in &keys {
            if let Some(a) = auths
                .get(k)
                .and_then(|v| v.get("auth"))
                .and_then(|v| v.as_str())
            {
                let raw = base64_decode(a).ok_or_else(|| {
                    RegistryError::Credentials(format!(
                        "{}: auths[{k}].auth is not base64",
                        path.display()
                    ))
                })?;
                let s = String::from_utf8_lossy(&raw).into_owned();
                let (u, p) = s.split_once(':').ok_or_else(|| {
                    RegistryError::Credentials(format!(
                        "{}: auths[{k}].auth is not user:password",
                        path.display()
                    ))
                })?;
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }));
            }
        }
    }
    if let Some(store) = cfg.get("credsStore").and_then(|v| v.as_str()) {
        return helper_get(store, &keys[0]);
    }
    Ok(None)
}

/// The names a host may be filed under in a Docker config.
fn host_keys(host: &str) -> Vec<String> {
    let mut k = vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    if host == "registry-1.docker.io" {
        k.insert(0, "https://index.docker.io/v1/".to_string());
        k.push("docker.io".to_string());
    }
    k
}

/// `docker-credential-<helper> get`, with the server on stdin.
fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>, RegistryError> {
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RegistryError::Credentials(format!("{prog}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RegistryError::Credentials(format!("{prog}: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if msg.contains("credentials not found") {
            return Ok(None);
        }
        return Err(RegistryError::Credentials(format!(
            "{prog} get failed: {}",
            msg.trim()
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| RegistryError::Credentials(format!("{prog} printed no JSON: {e}")))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    Ok(Some(Credentials {
        username: s("Username"),
        password: s("Secret"),
    }))
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value; `None` for other schemes, malformed ones and any
/// longer than [`crate::limits::MAX_CHALLENGE_LEN`].
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    if h.len() > crate::limits::MAX_CHALLENGE_LEN {
        return None;
    }
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service, mut scope) = (None, None, None);
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v.to_string()),
            "service" => service = Some(v.to_string()),
            "scope" => scope = Some(v.to_string()),
            _ => {}
        }
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.trim().bytes() {
        if b == b'=' {
            break;
        }
        let v = B64.iter().position(|&c| c == b)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "user:pässword"] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes());
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
