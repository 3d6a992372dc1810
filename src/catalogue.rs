//! A catalogue of models to build: `models/models.yaml`.
//!
//! ```yaml
//! models:
//!   - name: sentence-transformers/all-MiniLM-L6-v2   # Hub repo id
//!     sha: c9745ed1d9f207416be6d2e6f8de32d1f16199bf  # pinned commit, 40 hex digits
//!     tag: latest                                    # optional (default latest); `tagAs` too
//!     include: ["*.json", "*.safetensors"]           # optional globs
//!     exclude: ["*.onnx"]                            # optional globs
//!     prefix: /models                                # optional: the files under /models
//! ```
//!
//! The whole file is checked before anything is downloaded, and every problem is
//! reported with its line ([`CatalogueError::Invalid`]). [`Shard`] splits a catalogue
//! into disjoint parts for a CI matrix, and [`record`] tells whether an image on disk
//! was built from exactly what the catalogue asks for.

pub mod record;
pub mod run;
mod yaml;

use crate::image;
use crate::names::{CommitSha, ModelName};
use crate::source::hub::FileFilter;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use yaml::Node;

/// One model of the catalogue, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogueEntry {
    pub name: ModelName,
    pub sha: CommitSha,
    pub tag: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// The directory the files go under in the image, as a relative tar path
    /// ([`crate::layer::parse_prefix`]); empty: the root.
    pub prefix: String,
    /// Where the entry starts in the file (1-based).
    pub line: usize,
}

impl CatalogueEntry {
    /// The image directory under an output root: `ROOT/<name, lowercased>`.
    pub fn output(&self, root: &Path) -> PathBuf {
        root.join(self.name.registry_path())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub entries: Vec<CatalogueEntry>,
}

/// One thing wrong with a catalogue, at a line (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("reading the catalogue {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every problem, one per line, as `FILE:LINE: message`.
    #[error("{}", render(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn render(file: &str, problems: &[Problem]) -> String {
    let n = problems.len();
    let mut s = format!(
        "{file} is not a valid catalogue ({n} problem{}):",
        if n == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str(&format!("\n{file}:{}: {}", p.line, p.message));
    }
    s
}

impl CatalogueError {
    /// The problems, each as `FILE:LINE: message`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            CatalogueError::Read { .. } => vec![self.to_string()],
            CatalogueError::Invalid { file, problems } => problems
                .iter()
                .map(|p| format!("{file}:{}: {}", p.line, p.message))
                .collect(),
        }
    }
}

const ENTRY_KEYS: &str = "name, sha, tag (or tagAs), include, exclude, prefix";

impl Catalogue {
    /// Reads and validates a catalogue file; messages name it as `path` is spelled.
    pub fn load(path: &Path) -> Result<Catalogue, CatalogueError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Catalogue::parse(&text, &path.display().to_string())
    }

    /// Validates a catalogue held in memory; `file` is how messages name it.
    pub fn parse(text: &str, file: &str) -> Result<Catalogue, CatalogueError> {
        let invalid = |problems: Vec<Problem>| CatalogueError::Invalid {
            file: file.to_string(),
            problems,
        };
        let root = match yaml::parse(text) {
            Ok(Some(root)) => root,
            Ok(None) => {
                return Err(invalid(vec![Problem {
                    line: 1,
                    message: "the file is empty; expected a `models:` list".into(),
                }]))
            }
            Err(e) => {
                return Err(invalid(vec![Problem {
                    line: e.line,
                    message: e.message,
                }]))
            }
        };
        let mut v = Validator::default();
        let entries = v.root(&root);
        if v.problems.is_empty() {
            Ok(Catalogue { entries })
        } else {
            v.problems.sort_by_key(|p| p.line);
            Err(invalid(v.problems))
        }
    }

    /// The entries in `shard` (all of them for `None`), in file order.
    pub fn select(&self, shard: Option<Shard>) -> Vec<&CatalogueEntry> {
        self.entries
            .iter()
            .filter(|e| match shard {
                None => true,
                Some(s) => s.contains(&e.name),
            })
            .collect()
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
    /// Every well-formed name with its entry's line, for the checks across entries
    /// (a duplicate is reported even when another field of the entry is wrong).
    names: Vec<(ModelName, usize)>,
}

impl Validator {
    fn problem(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }

    /// The keys of a mapping with their values, reporting keys that are not strings,
    /// unknown or repeated. `known` maps a key to the name it stands for (aliases).
    fn keys<'n>(
        &mut self,
        pairs: &'n [(Node, Node)],
        known: &[(&str, &'static str)],
        expected: &str,
        place: &str,
    ) -> BTreeMap<&'static str, (usize, &'n Node)> {
        let mut seen: BTreeMap<&'static str, (usize, &'n Node)> = BTreeMap::new();
        let mut spelled: BTreeMap<&'static str, &'n str> = BTreeMap::new();
        for (k, value) in pairs {
            let Some(key) = k.as_str() else {
                self.problem(
                    k.line(),
                    format!("a key must be a string, not {}", k.kind()),
                );
                continue;
            };
            let Some(&(_, canonical)) = known.iter().find(|(s, _)| *s == key) else {
                self.problem(
                    k.line(),
                    format!("unknown key {key:?} {place} (expected {expected})"),
                );
                continue;
            };
            if let Some((first, _)) = seen.get(canonical) {
                let before = spelled[canonical];
                let msg = if before == key {
                    format!("duplicate key {key:?} (first at line {first})")
                } else {
                    format!("{key:?} repeats {before:?} (line {first}); use one of them")
                };
                self.problem(k.line(), msg);
                continue;
            }
            seen.insert(canonical, (k.line(), value));
            spelled.insert(canonical, key);
        }
        seen
    }

    fn root(&mut self, root: &Node) -> Vec<CatalogueEntry> {
        let Node::Map { pairs, .. } = root else {
            self.problem(
                root.line(),
                format!(
                    "expected a mapping with a `models:` list at the top, found {}",
                    root.kind()
                ),
            );
            return Vec::new();
        };
        let keys = self.keys(pairs, &[("models", "models")], "models", "at the top level");
        let Some(&(_, models)) = keys.get("models") else {
            if self.problems.is_empty() {
                self.problem(root.line(), "no `models:` list");
            }
            return Vec::new();
        };
        let Node::Seq { items, .. } = models else {
            self.problem(
                models.line(),
                format!("`models:` must be a list, found {}", models.kind()),
            );
            return Vec::new();
        };
        let entries: Vec<CatalogueEntry> = items.iter().filter_map(|n| self.entry(n)).collect();
        self.across();
        entries
    }

    /// A value's line; an empty value's is its key's.
    fn at(key_line: usize, node: &Node) -> usize {
        if node.is_null() {
            key_line
        } else {
            node.line()
        }
    }

    fn string<'n>(&mut self, key: &str, key_line: usize, node: &'n Node) -> Option<&'n str> {
        let s = node.as_str();
        if s.is_none() {
            self.problem(
                Self::at(key_line, node),
                format!("{key} must be a string, found {}", node.kind()),
            );
        }
        s
    }

    fn globs(&mut self, key: &str, key_line: usize, node: &Node) -> Option<Vec<String>> {
        let Node::Seq { items, .. } = node else {
            self.problem(
                Self::at(key_line, node),
                format!(
                    "{key} must be a list of glob strings, found {}",
                    node.kind()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(g) = self.string(&format!("each {key} pattern"), item.line(), item) else {
                ok = false;
                continue;
            };
            if let Err(e) = FileFilter::new(&[g.to_string()], &[]) {
                self.problem(item.line(), format!("{key}: {e}"));
                ok = false;
            }
            out.push(g.to_string());
        }
        ok.then_some(out)
    }

    fn entry(&mut self, node: &Node) -> Option<CatalogueEntry> {
        let Node::Map { pairs, line } = node else {
            self.problem(
                node.line(),
                format!(
                    "each model must be a mapping with name and sha, found {}",
                    node.kind()
                ),
            );
            return None;
        };
        let line = *line;
        let keys = self.keys(
            pairs,
            &[
                ("name", "name"),
                ("sha", "sha"),
                ("tag", "tag"),
                ("tagAs", "tag"),
                ("include", "include"),
                ("exclude", "exclude"),
                ("prefix", "prefix"),
            ],
            ENTRY_KEYS,
            "in a model",
        );
        let name = match keys.get("name") {
            None => {
                self.problem(line, "model has no name");
                None
            }
            Some(&(kl, n)) => self.string("name", kl, n).and_then(|s| {
                s.parse::<ModelName>()
                    .map_err(|e| self.problem(n.line(), e.to_string()))
                    .ok()
            }),
        };
        if let Some(n) = &name {
            self.names.push((n.clone(), line));
        }
        let label = name.as_ref().map(|n| format!("{n}: ")).unwrap_or_default();
        let sha = match keys.get("sha") {
            None => {
                self.problem(
                    line,
                    format!("{label}no sha (the commit to build, 40 hex digits)"),
                );
                None
            }
            Some(&(kl, n)) => self.string("sha", kl, n).and_then(|s| {
                s.parse::<CommitSha>()
                    .map_err(|e| self.problem(n.line(), e.to_string()))
                    .ok()
            }),
        };
        let tag = match keys.get("tag") {
            None => Some("latest".to_string()),
            Some(&(kl, n)) => self.string("tag", kl, n).and_then(|s| {
                image::validate_tag(s)
                    .map(|()| s.to_string())
                    .map_err(|e| self.problem(n.line(), e.to_string()))
                    .ok()
            }),
        };
        let include = match keys.get("include") {
            None => Some(Vec::new()),
            Some(&(kl, n)) => self.globs("include", kl, n),
        };
        let exclude = match keys.get("exclude") {
            None => Some(Vec::new()),
            Some(&(kl, n)) => self.globs("exclude", kl, n),
        };
        let prefix = match keys.get("prefix") {
            None => Some(String::new()),
            Some(&(kl, n)) => self.string("prefix", kl, n).and_then(|s| {
                crate::layer::parse_prefix(s)
                    .map_err(|e| self.problem(n.line(), e.to_string()))
                    .ok()
            }),
        };
        Some(CatalogueEntry {
            name: name?,
            sha: sha?,
            tag: tag?,
            include: include?,
            exclude: exclude?,
            prefix: prefix?,
            line,
        })
    }

    /// Duplicates (two entries, one image) and nesting (`org` would hold `org/model`).
    fn across(&mut self) {
        let names = std::mem::take(&mut self.names);
        let mut first: BTreeMap<String, &(ModelName, usize)> = BTreeMap::new();
        for e @ (name, line) in &names {
            match first.get(&name.registry_path()) {
                Some((f, fl)) if f == name => self.problem(
                    *line,
                    format!("duplicate name \"{name}\" (first at line {fl})"),
                ),
                Some((f, fl)) => self.problem(
                    *line,
                    format!(
                        "duplicate name \"{name}\": same image as \"{f}\" (line {fl}); image names are lowercase"
                    ),
                ),
                None => {
                    first.insert(name.registry_path(), e);
                }
            }
        }
        for e in first.values() {
            let path = e.0.registry_path();
            let Some((org, _)) = path.split_once('/') else {
                continue;
            };
            let Some(outer) = first.get(org) else {
                continue;
            };
            let (early, late) = if outer.1 < e.1 {
                (*outer, *e)
            } else {
                (*e, *outer)
            };
            self.problem(
                late.1,
                format!(
                    "\"{}\" and \"{}\" (line {}) would be written one inside the other ({} and {})",
                    late.0,
                    early.0,
                    early.1,
                    late.0.registry_path(),
                    early.0.registry_path()
                ),
            );
        }
    }
}

/// Part `index` of `count` (1-based) of a catalogue, for a CI matrix.
///
/// A model belongs to shard `1 + (u64 of the first 8 bytes of sha256(lowercased name),
/// big-endian) mod count`: the same everywhere, independent of the order of the file,
/// and adding or removing a model moves no other model between shards. Shards are
/// disjoint and together hold the whole catalogue, but need not be of equal size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// The shard (1-based) of `name` among `count`.
pub fn shard_of(name: &ModelName, count: u32) -> u32 {
    assert!(count > 0, "at least one shard");
    let h = Sha256::digest(name.registry_path().as_bytes());
    let n = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
    (n % u64::from(count)) as u32 + 1
}

impl Shard {
    pub fn contains(&self, name: &ModelName) -> bool {
        shard_of(name, self.count) == self.index
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("{s:?} is not a shard such as 1/4 (I/N, 1 <= I <= N)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";

    fn problems(text: &str) -> Vec<String> {
        match Catalogue::parse(text, "cat.yaml") {
            Ok(c) => panic!("expected problems, got {c:?}"),
            Err(e) => e.lines(),
        }
    }

    #[test]
    fn the_shipped_catalogue_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/models.yaml");
        let c = Catalogue::load(&path).unwrap();
        assert_eq!(c.entries.len(), 109);
        assert!(c.entries.iter().all(|e| e.tag == "latest"));
        let gpt2 = c
            .entries
            .iter()
            .find(|e| e.name.as_str() == "gpt2")
            .unwrap();
        assert_eq!(
            gpt2.sha.as_str(),
            "11c5a3d5811f50298f278a704980280950aedb10"
        );
        assert_eq!(gpt2.line, 17);
        assert_eq!(c.entries[0].line, 2);
    }

    #[test]
    fn our_schema_with_defaults_and_globs() {
        let t = format!(
            "models:\n  - name: Org/Model\n    sha: {}\n    tag: v1\n    include: ['*.json', \"*.safetensors\"]\n    exclude: []\n  - {{name: gpt2, sha: {A}}}\n",
            A.to_uppercase()
        );
        let c = Catalogue::parse(&t, "x").unwrap();
        assert_eq!(c.entries.len(), 2);
        let e = &c.entries[0];
        assert_eq!(e.name.as_str(), "Org/Model");
        assert_eq!(e.sha.as_str(), A, "sha lowercased");
        assert_eq!(e.tag, "v1");
        assert_eq!(e.include, ["*.json", "*.safetensors"]);
        assert_eq!(e.output(Path::new("out")), Path::new("out/org/model"));
        assert_eq!(c.entries[1].tag, "latest");
        assert_eq!(c.entries[1].line, 7);
        assert!(Catalogue::parse("models: []\n", "x")
            .unwrap()
            .entries
            .is_empty());
    }

    #[test]
    fn a_models_prefix_is_parsed_as_a_tar_path_and_a_relative_one_is_reported_at_its_line() {
        let t = format!(
            "models:\n  - name: kserve/m\n    sha: {A}\n    prefix: /models/\n  - {{name: gpt2, sha: {A}}}\n"
        );
        let c = Catalogue::parse(&t, "x").unwrap();
        assert_eq!(c.entries[0].prefix, "models");
        assert_eq!(c.entries[1].prefix, "", "no prefix: the root");
        assert_eq!(
            problems(&format!(
                "models:\n  - name: a/b\n    sha: {A}\n    prefix: models\n  - name: c/d\n    sha: {A}\n    prefix: /a/../b\n"
            )),
            [
                "cat.yaml:4: --prefix \"models\" is not absolute: name the directory the files go under in the image, such as /models",
                "cat.yaml:7: --prefix \"/a/../b\" is not a directory an image may hold: empty, '.' or '..' component",
            ]
        );
    }

    #[test]
    fn malformed_yaml_is_reported_at_its_line() {
        let p = problems(&format!(
            "models:\n  - name: gpt2\n    sha: {A}\n  - name: [oops\n    sha: {A}\n"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("cat.yaml:"), "{p:?}");
        assert!(p[0].contains("malformed YAML"), "{p:?}");
        let line: usize = p[0].split(':').nth(1).unwrap().parse().unwrap();
        assert!((4..=6).contains(&line), "{p:?}");

        let p = problems("models:\n  - name: a\n\tsha: b\n");
        assert!(p[0].contains("malformed YAML"), "{p:?}");
        assert_eq!(
            problems(""),
            ["cat.yaml:1: the file is empty; expected a `models:` list"]
        );
        assert_eq!(
            problems("- a\n- b\n"),
            ["cat.yaml:1: expected a mapping with a `models:` list at the top, found a list"]
        );
        assert_eq!(
            problems("models: gpt2\n"),
            ["cat.yaml:1: `models:` must be a list, found a string"]
        );
    }

    #[test]
    fn unknown_keys_are_reported_with_their_lines() {
        let p = problems(&format!(
            "models:\n  - name: gpt2\n    sha: {A}\n    revision: main\n  - name: b\n    sha: {A}\n    Tag: x\nversion: 2\n"
        ));
        assert_eq!(
            p,
            [
                format!("cat.yaml:4: unknown key \"revision\" in a model (expected {ENTRY_KEYS})"),
                format!("cat.yaml:7: unknown key \"Tag\" in a model (expected {ENTRY_KEYS})"),
                "cat.yaml:8: unknown key \"version\" at the top level (expected models)".into(),
            ]
        );
    }

    #[test]
    fn duplicate_names_and_keys_point_at_both_lines() {
        let p = problems(&format!(
            "models:\n  - name: gpt2\n    sha: {A}\n  - name: bert\n    sha: {A}\n  - name: gpt2\n    sha: {A}\n  - name: GPT2\n    sha: {A}\n    sha: {A}\n  - name: c\n    sha: {A}\n    tag: a\n    tagAs: b\n"
        ));
        assert_eq!(
            p,
            [
                "cat.yaml:6: duplicate name \"gpt2\" (first at line 2)",
                "cat.yaml:8: duplicate name \"GPT2\": same image as \"gpt2\" (line 2); image names are lowercase",
                "cat.yaml:10: duplicate key \"sha\" (first at line 9)",
                "cat.yaml:14: \"tagAs\" repeats \"tag\" (line 13); use one of them",
            ]
        );
    }

    #[test]
    fn bad_shas_names_tags_and_globs_are_each_reported() {
        let p = problems(&format!(
            "models:\n  - name: gpt2\n    sha: main\n  - name: org/a--b\n    sha: {A}\n  - sha: {A}\n  - name: ok\n  - name: t\n    sha: {A}\n    tag: -bad\n    include: ['[', '*.json']\n    exclude: '*.bin'\n  - name: 42\n    sha: 123\n  - name:\n    sha: {A}\n  - just a string\n"
        ));
        assert_eq!(
            p,
            [
                "cat.yaml:3: invalid commit sha \"main\": expected 40 hexadecimal digits (a full git commit id)".to_string(),
                "cat.yaml:4: invalid model name \"org/a--b\": '--' and '..' are not allowed in Hub repo ids".into(),
                "cat.yaml:6: model has no name".into(),
                "cat.yaml:7: ok: no sha (the commit to build, 40 hex digits)".into(),
                "cat.yaml:10: invalid tag \"-bad\": up to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'".into(),
                "cat.yaml:11: include: invalid glob \"[\": error parsing glob '[': unclosed character class; missing ']'".into(),
                "cat.yaml:12: exclude must be a list of glob strings, found a string".into(),
                "cat.yaml:14: invalid commit sha \"123\": expected 40 hexadecimal digits (a full git commit id)".into(),
                "cat.yaml:15: name must be a string, found nothing".into(),
                "cat.yaml:17: each model must be a mapping with name and sha, found a string".into(),
            ]
        );
    }

    #[test]
    fn nested_outputs_are_refused() {
        let p = problems(&format!(
            "models:\n  - name: openai/clip\n    sha: {A}\n  - name: OpenAI\n    sha: {A}\n"
        ));
        assert_eq!(
            p,
            ["cat.yaml:4: \"OpenAI\" and \"openai/clip\" (line 2) would be written one inside the other (openai and openai/clip)"]
        );
    }

    #[test]
    fn the_error_message_lists_every_problem_on_its_own_line() {
        let e = Catalogue::parse("models:\n  - name: a\n  - name: a\n", "m.yaml").unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.yaml is not a valid catalogue (3 problems):\nm.yaml:2: a: no sha (the commit to build, 40 hex digits)\nm.yaml:3: a: no sha (the commit to build, 40 hex digits)\nm.yaml:3: duplicate name \"a\" (first at line 2)"
        );
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_catalogue() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/models.yaml");
        let c = Catalogue::load(&path).unwrap();
        for n in [1, 2, 3, 8, 200] {
            let mut seen = std::collections::BTreeMap::new();
            for i in 1..=n {
                for e in c.select(Some(Shard { index: i, count: n })) {
                    assert!(
                        seen.insert(e.name.as_str(), i).is_none(),
                        "{} twice",
                        e.name
                    );
                }
            }
            assert_eq!(seen.len(), c.entries.len(), "{n} shards cover everything");
        }
        // Stable: pinned values, so a change of the scheme is deliberate.
        let gpt2: ModelName = "gpt2".parse().unwrap();
        let upper: ModelName = "GPT2".parse().unwrap();
        assert_eq!(shard_of(&gpt2, 8), shard_of(&upper, 8));
        let sizes: Vec<usize> = (1..=3)
            .map(|i| c.select(Some(Shard { index: i, count: 3 })).len())
            .collect();
        assert!(sizes.iter().all(|&s| s > 20), "{sizes:?}");
    }

    #[test]
    fn shard_syntax() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(Shard { index: 2, count: 3 }.to_string(), "2/3");
        for bad in ["0/3", "4/3", "1/0", "1", "a/b", "1/3/4", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
