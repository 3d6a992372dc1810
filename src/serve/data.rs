//! What the pages show about one image, gathered once per version of it: the store keeps
//! these next to the image it read, keyed by the identity of the image's `index.json`, so
//! a request renders from memory and never reads a layer blob once they are there.

use crate::digest::Digest;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// An image without its files: everything here comes from documents already in memory.
#[derive(Clone, Debug)]
pub struct Overview {
    pub name: String,
    /// Tag → digest of the index (or manifest) it names, sorted by tag.
    pub tags: Vec<(String, Digest)>,
    /// `org.opencontainers.image.revision`: the commit the files come from.
    pub revision: Option<String>,
    /// `org.opencontainers.image.source`: where they come from (the Hub repository).
    pub source: Option<String>,
    /// Platform → digest of its manifest, in index order.
    pub platforms: Vec<(String, Digest)>,
    /// The layers of the (first) manifest, in order.
    pub layers: Vec<LayerDesc>,
    /// Artifacts about a tagged document (provenance): artifact type (if it has one)
    /// and digest, as the referrers API lists them.
    pub referrers: Vec<(Option<String>, Digest)>,
}

#[derive(Clone, Debug)]
pub struct LayerDesc {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

impl Overview {
    /// The tag a bare reference (`host/name`) pulls: `latest`, else the first one.
    pub fn default_tag(&self) -> Option<&(String, Digest)> {
        self.tags
            .iter()
            .find(|(t, _)| t == "latest")
            .or(self.tags.first())
    }

    /// What pulling the image downloads: its layers (compressed).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// One entry of a layer's TOC, as the store reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocFile {
    pub name: String,
    pub size: u64,
    /// `reg`, `symlink` or `hardlink`.
    pub kind: String,
    pub link_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Symlink,
    Hardlink,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Hardlink => "hardlink",
        }
    }
}

/// A file of the image as a container sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative to the image root, `/`-separated, without a leading `./` or `/`.
    pub path: String,
    pub size: u64,
    pub kind: Kind,
    /// Where a symlink or hard link points.
    pub target: Option<String>,
    /// The index of the layer it comes from.
    pub layer: usize,
}

/// What one layer contributed, or why its files are unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerFiles {
    /// Entries in its TOC (files, symlinks, hard links).
    pub files: usize,
    /// Their uncompressed bytes.
    pub bytes: u64,
    /// The path of its file when it holds just one (a layer per large file).
    pub only: Option<String>,
    pub error: Option<String>,
}

/// Every layer's TOC, merged as the layers stack: a later layer's entry replaces an
/// earlier one at the same path, and whiteouts (`.wh.NAME`, `.wh..wh..opq`) hide what
/// the layers below hold.
#[derive(Clone, Debug, Default)]
pub struct Files {
    /// In tree order (see [`tree_order`]).
    pub entries: Vec<FileEntry>,
    pub layers: Vec<LayerFiles>,
}

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

fn clean(name: &str) -> &str {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("./").or_else(|| n.strip_prefix('/')) {
        n = rest;
    }
    n.trim_end_matches('/')
}

/// Removes `path` and everything below it.
fn remove_tree(map: &mut BTreeMap<String, FileEntry>, path: &str) {
    map.remove(path);
    remove_below(map, &format!("{path}/"));
}

/// Removes every key starting with `prefix` (which ends with `/`, or is empty: all).
fn remove_below(map: &mut BTreeMap<String, FileEntry>, prefix: &str) {
    let doomed: Vec<String> = map
        .range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        map.remove(&k);
    }
}

impl Files {
    pub fn merge(tocs: Vec<Result<Vec<TocFile>, String>>) -> Files {
        let mut map: BTreeMap<String, FileEntry> = BTreeMap::new();
        let mut layers = Vec::with_capacity(tocs.len());
        for (layer, toc) in tocs.into_iter().enumerate() {
            let toc = match toc {
                Ok(t) => t,
                Err(error) => {
                    layers.push(LayerFiles {
                        files: 0,
                        bytes: 0,
                        only: None,
                        error: Some(error),
                    });
                    continue;
                }
            };
            // Whiteouts hide the layers below, never the files of their own layer.
            for f in &toc {
                let path = clean(&f.name);
                let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
                let prefix = if dir.is_empty() {
                    String::new()
                } else {
                    format!("{dir}/")
                };
                if base == OPAQUE {
                    remove_below(&mut map, &prefix);
                } else if let Some(hidden) = base.strip_prefix(WHITEOUT) {
                    remove_tree(&mut map, &format!("{prefix}{hidden}"));
                }
            }
            let mut info = LayerFiles {
                files: 0,
                bytes: 0,
                only: None,
                error: None,
            };
            for f in toc {
                let path = clean(&f.name);
                let base = path.rsplit('/').next().unwrap_or(path);
                if path.is_empty() || base.starts_with(WHITEOUT) {
                    continue;
                }
                let kind = match f.kind.as_str() {
                    "symlink" => Kind::Symlink,
                    "hardlink" => Kind::Hardlink,
                    _ => Kind::File,
                };
                info.files += 1;
                info.bytes += f.size;
                info.only = (info.files == 1).then(|| path.to_string());
                // A file replaces a directory of the layers below, and the reverse.
                remove_below(&mut map, &format!("{path}/"));
                let mut parent = path;
                while let Some((p, _)) = parent.rsplit_once('/') {
                    map.remove(p);
                    parent = p;
                }
                map.insert(
                    path.to_string(),
                    FileEntry {
                        path: path.to_string(),
                        size: f.size,
                        kind,
                        target: (kind != Kind::File).then_some(f.link_name),
                        layer,
                    },
                );
            }
            layers.push(info);
        }
        let mut entries: Vec<FileEntry> = map.into_values().collect();
        entries.sort_by(|a, b| tree_order(&a.path, &b.path));
        Files { entries, layers }
    }

    /// Bytes of all (regular) files.
    pub fn bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum()
    }

    /// The file a "copy one file" example should copy: a small configuration file at the
    /// top (`config.json` first), never `.gitattributes` or other dot files when there is
    /// anything else. The top is the directory every file is under: the root, or the
    /// `--prefix` of an image built with one (`/models/config.json`).
    pub fn example(&self) -> Option<&FileEntry> {
        let files = || self.entries.iter().filter(|e| e.kind == Kind::File);
        let top = files()
            .map(|e| e.path.rsplit_once('/').map_or("", |(dir, _)| dir))
            .reduce(common_dir)
            .unwrap_or_default();
        files().min_by_key(|e| (example_rank(&e.path, top), e.size, e.path.as_str()))
    }
}

/// The longest directory both `a` and `b` are (or lie) under, component by component.
fn common_dir<'a>(a: &'a str, b: &str) -> &'a str {
    let mut end = 0;
    for ((i, x), y) in a
        .split('/')
        .scan(0, |at, c| {
            let start = *at;
            *at += c.len() + 1;
            Some((start, c))
        })
        .zip(b.split('/'))
    {
        if x != y {
            break;
        }
        end = i + x.len();
    }
    &a[..end]
}

fn example_rank(path: &str, top_dir: &str) -> u8 {
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    let top = dir == top_dir;
    let lower = base.to_ascii_lowercase();
    let ext = |e: &str| lower.ends_with(e);
    let small_text = ext(".json") || ext(".txt") || ext(".yaml") || ext(".yml") || ext(".md");
    match () {
        _ if lower.starts_with('.') => 9,
        _ if top && lower == "config.json" => 0,
        _ if top && ext("config.json") => 1,
        _ if top && ext(".json") => 2,
        _ if top && small_text => 3,
        _ if lower == "config.json" => 4,
        _ if top => 5,
        _ if small_text => 6,
        _ => 7,
    }
}

/// Directories before files, then by name, component by component: a directory's
/// entries follow it, as in a file browser.
pub fn tree_order(a: &str, b: &str) -> Ordering {
    let mut ai = a.split('/').peekable();
    let mut bi = b.split('/').peekable();
    loop {
        match (ai.next(), bi.next()) {
            (Some(x), Some(y)) => {
                let (x_dir, y_dir) = (ai.peek().is_some(), bi.peek().is_some());
                if x_dir != y_dir {
                    return if x_dir {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    };
                }
                match x.cmp(y) {
                    Ordering::Equal => continue,
                    o => return o,
                }
            }
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, size: u64) -> TocFile {
        TocFile {
            name: name.into(),
            size,
            kind: "reg".into(),
            link_name: String::new(),
        }
    }

    fn paths(f: &Files) -> Vec<(&str, u64, usize)> {
        f.entries
            .iter()
            .map(|e| (e.path.as_str(), e.size, e.layer))
            .collect()
    }

    #[test]
    fn layers_merge_into_one_tree_later_layers_winning() {
        let f = Files::merge(vec![
            Ok(vec![
                reg("config.json", 10),
                reg("1_Pooling/config.json", 5),
            ]),
            Ok(vec![reg("model.safetensors", 1 << 30)]),
            Ok(vec![reg("./config.json", 11), reg("b/x", 1)]),
        ]);
        assert_eq!(
            paths(&f),
            [
                ("1_Pooling/config.json", 5, 0),
                ("b/x", 1, 2),
                ("config.json", 11, 2),
                ("model.safetensors", 1 << 30, 1),
            ]
        );
        assert_eq!(
            f.layers
                .iter()
                .map(|l| (l.files, l.bytes))
                .collect::<Vec<_>>(),
            [(2, 15), (1, 1 << 30), (2, 12)]
        );
        assert_eq!(f.layers[1].only.as_deref(), Some("model.safetensors"));
        assert_eq!(f.layers[0].only, None);
        assert_eq!(f.bytes(), 5 + 1 + 11 + (1 << 30));
    }

    #[test]
    fn whiteouts_hide_lower_layers_and_a_failed_layer_says_why() {
        let f = Files::merge(vec![
            Ok(vec![
                reg("a/x", 1),
                reg("a/y", 2),
                reg("b/z", 3),
                reg("c", 4),
            ]),
            Err("the layer blob is missing".into()),
            Ok(vec![
                reg("a/.wh..wh..opq", 0),
                reg("a/new", 5),
                reg(".wh.b", 0),
            ]),
        ]);
        assert_eq!(paths(&f), [("a/new", 5, 2), ("c", 4, 0)]);
        assert_eq!(
            f.layers[1].error.as_deref(),
            Some("the layer blob is missing")
        );
        assert_eq!(f.layers[2].files, 1);
    }

    #[test]
    fn the_example_is_a_small_config_file_not_gitattributes() {
        let f = Files::merge(vec![Ok(vec![
            reg(".gitattributes", 1),
            reg("1_Pooling/config.json", 2),
            reg("README.md", 3),
            reg("config.json", 700),
            reg("model.safetensors", 90_000_000),
        ])]);
        assert_eq!(f.example().unwrap().path, "config.json");
        let f = Files::merge(vec![Ok(vec![
            reg(".gitattributes", 1),
            reg("tokenizer_config.json", 900),
            reg("generation_config.json", 100),
            reg("vocab.txt", 10),
        ])]);
        assert_eq!(f.example().unwrap().path, "generation_config.json");
        let f = Files::merge(vec![Ok(vec![reg(".gitattributes", 1)])]);
        assert_eq!(f.example().unwrap().path, ".gitattributes");
        // Under a --prefix the top is the prefix's directory.
        let f = Files::merge(vec![Ok(vec![
            reg("models/1_Pooling/config.json", 2),
            reg("models/config.json", 700),
            reg("models/model.safetensors", 90_000_000),
        ])]);
        assert_eq!(f.example().unwrap().path, "models/config.json");
        assert_eq!(common_dir("models/a", "models/b"), "models");
        assert_eq!(common_dir("models/a", "models/a"), "models/a");
        assert_eq!(common_dir("models", "models/1_Pooling"), "models");
        assert_eq!(common_dir("models", "modelsX"), "");
        assert_eq!(common_dir("", "models"), "");
    }

    #[test]
    fn tree_order_puts_directories_first_and_keeps_them_together() {
        let mut v = vec!["a.txt", "a/x", "a-b/z", "z", "a/b/c", "a/a"];
        v.sort_by(|a, b| tree_order(a, b));
        assert_eq!(v, ["a/b/c", "a/a", "a/x", "a-b/z", "a.txt", "z"]);
    }
}
