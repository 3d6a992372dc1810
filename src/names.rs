//! Typed names parsed once at the edge: a model's repo id, the commit it is pinned to,
//! and the one policy for the paths of files inside an image ([`check_path`]).
//!
//! Registry mapping: a Hub repo id keeps its spelling in annotations, but image
//! references and output paths use its lowercase form (OCI repository names must be
//! lowercase). A repo id whose lowercase form is not a valid OCI repository path (for
//! instance `org/a._b`) is refused rather than silently rewritten, so two models can never
//! map to the same image.

use crate::limits::{MAX_NAME_LEN, MAX_PATH_LEN};
use std::fmt;
use std::str::FromStr;

/// Why a path cannot be a file of an image. One policy for both sides: the builder
/// refuses such a name before it writes anything (a model directory's files, a Hub
/// listing), and every reader refuses it in a TOC or tar-split, so depotai never builds
/// an image that its own `ls` and `get` (or a runtime) would refuse or misread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathRule {
    #[error("empty name")]
    Empty,
    #[error("name of {0} bytes (at most {MAX_PATH_LEN})")]
    TooLong(usize),
    #[error("absolute name")]
    Absolute,
    #[error("NUL in the name")]
    Nul,
    /// Newline, tab, escape, DEL and the other C0/C1 controls: they break one-line
    /// listings and terminals.
    #[error("control character in the name")]
    Control,
    #[error("backslash in the name")]
    Backslash,
    #[error("empty, '.' or '..' component")]
    DotComponent,
    #[error("component of {0} bytes (at most {MAX_NAME_LEN})")]
    LongComponent(usize),
    /// `C:…`: a Windows drive, which a cache or extraction on Windows would take as one.
    #[error("drive letter")]
    DriveLetter,
    /// `.wh.NAME` and `.wh..wh..opq` are overlay whiteouts: every runtime unpacking the
    /// layer deletes `NAME` (or the directory's contents) instead of creating a file.
    #[error("whiteout name: a component starting with '.wh.' hides files when a runtime unpacks the layer")]
    Whiteout,
}

/// Checks a `/`-separated path of a file inside an image (no leading `./`, no trailing
/// `/`) against [`PathRule`].
pub fn check_path(path: &str) -> Result<(), PathRule> {
    if path.is_empty() {
        return Err(PathRule::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathRule::TooLong(path.len()));
    }
    if path.starts_with('/') {
        return Err(PathRule::Absolute);
    }
    if path.contains('\0') {
        return Err(PathRule::Nul);
    }
    if path.chars().any(char::is_control) {
        return Err(PathRule::Control);
    }
    if path.contains('\\') {
        return Err(PathRule::Backslash);
    }
    for c in path.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(PathRule::DotComponent);
        }
        if c.len() > MAX_NAME_LEN {
            return Err(PathRule::LongComponent(c.len()));
        }
        if c.starts_with(".wh.") {
            return Err(PathRule::Whiteout);
        }
    }
    if path.as_bytes().get(1) == Some(&b':') {
        return Err(PathRule::DriveLetter);
    }
    Ok(())
}

/// Checks a symlink's target: what a reader accepts as a `linkname` (at most
/// [`MAX_PATH_LEN`] bytes, no NUL or control characters). Where it points is the
/// source's concern (a model directory's links must stay inside it).
pub fn check_link_target(target: &str) -> Result<(), PathRule> {
    if target.len() > MAX_PATH_LEN {
        return Err(PathRule::TooLong(target.len()));
    }
    if target.contains('\0') {
        return Err(PathRule::Nul);
    }
    if target.chars().any(char::is_control) {
        return Err(PathRule::Control);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid model name {0:?}: {1}")]
    Model(String, &'static str),
    #[error("invalid commit sha {0:?}: expected 40 hexadecimal digits (a full git commit id)")]
    Sha(String),
}

/// A Hugging Face repo id such as `runwayml/stable-diffusion-v1-5` or `gpt2`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName {
    original: String,
}

const MAX_REPO_ID_LEN: usize = 96;

impl ModelName {
    /// The repo id as the Hub spells it.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The lowercase form used for image references and output paths.
    pub fn registry_path(&self) -> String {
        self.original.to_ascii_lowercase()
    }
}

/// The Hub's repo-id rules (as `huggingface_hub.validate_repo_id` applies them): one or
/// two `/`-separated parts of ASCII letters, digits, `-`, `_` and `.`, each starting and
/// ending with a letter, digit or `_`, with no `--` or `..`, at most 96 characters.
fn check_hub_rules(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    if s.len() > MAX_REPO_ID_LEN {
        return Err("longer than the Hub's 96-character limit");
    }
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() > 2 {
        return Err("expected 'name' or 'organisation/name'");
    }
    if s.contains("--") || s.contains("..") {
        return Err("'--' and '..' are not allowed in Hub repo ids");
    }
    for part in parts {
        if part.is_empty() {
            return Err("an empty part before or after '/'");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err("only ASCII letters, digits, '-', '_' and '.' are allowed");
        }
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if !word(part.as_bytes()[0]) || !word(part.as_bytes()[part.len() - 1]) {
            return Err("each part must start and end with a letter, digit or '_'");
        }
    }
    Ok(())
}

/// OCI distribution path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub(crate) fn is_registry_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[sep_start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
}

impl FromStr for ModelName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        check_hub_rules(s).map_err(|why| NameError::Model(s.to_string(), why))?;
        let lower = s.to_ascii_lowercase();
        if !lower.split('/').all(is_registry_component) {
            return Err(NameError::Model(
                s.to_string(),
                "its lowercase form is not a valid OCI repository path (separators must sit between letters or digits)",
            ));
        }
        Ok(ModelName {
            original: s.to_string(),
        })
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// A full 40-hex-digit git commit id, stored lowercase.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitSha(String);

impl CommitSha {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CommitSha {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, NameError> {
        if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(CommitSha(s.to_ascii_lowercase()))
        } else {
            Err(NameError::Sha(s.to_string()))
        }
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_name_the_rule_they_break() {
        for (p, rule) in [
            ("", PathRule::Empty),
            ("/etc/passwd", PathRule::Absolute),
            ("a/../../x", PathRule::DotComponent),
            ("a//b", PathRule::DotComponent),
            ("./a", PathRule::DotComponent),
            ("a/.", PathRule::DotComponent),
            ("a\\b", PathRule::Backslash),
            ("..\\x", PathRule::Backslash),
            ("a\0b", PathRule::Nul),
            ("a\nb", PathRule::Control),
            ("a\tb", PathRule::Control),
            ("a\u{1b}[31mb", PathRule::Control),
            ("a\u{7f}", PathRule::Control),
            ("a\u{85}", PathRule::Control),
            ("C:x", PathRule::DriveLetter),
            (".wh.w.bin", PathRule::Whiteout),
            ("sub/.wh..wh..opq", PathRule::Whiteout),
        ] {
            assert_eq!(check_path(p), Err(rule), "{p:?}");
        }
        assert_eq!(
            check_path(&"a".repeat(256)),
            Err(PathRule::LongComponent(256))
        );
        assert_eq!(check_path(&"a/".repeat(3000)), Err(PathRule::TooLong(6000)));
        assert_eq!(
            PathRule::TooLong(6000).to_string(),
            "name of 6000 bytes (at most 4096)"
        );
        for ok in [
            "config.json",
            "1_Pooling/config.json",
            "a..b",
            "ü/файл",
            "a b#1?.bin",
            "100%.txt",
            ".gitattributes",
            "a.wh.b",
            "wh.x",
            "..a",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn link_targets_may_climb_but_not_carry_controls_or_run_long() {
        assert_eq!(check_link_target("../a/b"), Ok(()));
        assert_eq!(check_link_target("a\nb"), Err(PathRule::Control));
        assert_eq!(check_link_target("a\0b"), Err(PathRule::Nul));
        assert_eq!(
            check_link_target(&"x".repeat(4097)),
            Err(PathRule::TooLong(4097))
        );
    }

    #[test]
    fn hub_repo_ids_from_the_catalogue_are_accepted() {
        for ok in [
            "gpt2",
            "runwayml/stable-diffusion-v1-5",
            "samlowe/roberta-base-go_emotions",
            "timm/vit_large_patch14_clip_224.openai_ft_in12k_in1k",
            "BAAI/bge-large-en",
        ] {
            ok.parse::<ModelName>().unwrap();
        }
    }

    #[test]
    fn registry_path_is_lowercase() {
        let n: ModelName = "BAAI/bge-large-en".parse().unwrap();
        assert_eq!(n.as_str(), "BAAI/bge-large-en");
        assert_eq!(n.registry_path(), "baai/bge-large-en");
    }

    #[test]
    fn malformed_repo_ids_are_rejected_with_a_reason() {
        for bad in [
            "",
            "a/b/c",
            "/model",
            "org/",
            "org/../x",
            "org/a--b",
            "-org/model",
            "org/model.",
            "org/mo del",
            "org/modèle",
            "org/a._b",
            "_org/model",
        ] {
            let err = bad.parse::<ModelName>().unwrap_err();
            assert!(
                err.to_string().contains("invalid model name"),
                "{bad}: {err}"
            );
        }
        assert!("a".repeat(97).parse::<ModelName>().is_err());
    }

    #[test]
    fn shas_must_be_40_hex_digits_and_are_lowercased() {
        let s: CommitSha = "0123456789ABCDEF0123456789abcdef01234567".parse().unwrap();
        assert_eq!(s.as_str(), "0123456789abcdef0123456789abcdef01234567");
        for bad in [
            "",
            "main",
            "0123456789abcdef",
            &"g".repeat(40),
            &"a".repeat(41),
        ] {
            assert!(bad.parse::<CommitSha>().is_err(), "{bad}");
        }
    }
}
