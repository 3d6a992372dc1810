//! The files of `src/` import each other without cycles. (Nothing in the library can
//! import the command line: `cli/` is a module of the binary, `src/main.rs`, which reaches
//! the library only as the crate `depotai`; the compiler holds that.)
//!
//! A file-level reading of the paths each file names (`use crate::…`, `super::…`,
//! `depotai::…` in the binary, and such paths in code), as `../shared/tools/modcycles.py`
//! reads them: an edge between a file and one of its own module ancestors (a child's
//! `super::Error`, a `mod.rs` re-exporting its children) is structure, not an import, and
//! code under `#[cfg(test)]` is left out. A cycle is reported with one line per edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module path inside one crate: `lib` or `bin`, then its segments.
type ModPath = Vec<String>;

struct File {
    /// `src/`-relative path, for messages.
    name: String,
    crate_: &'static str,
    module: Vec<String>,
    text: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The crate (`lib`, or `bin` for `main.rs` and what it declares: `cli/`) and module
/// path of a file of `src/`.
fn module_of(rel: &str) -> (&'static str, Vec<String>) {
    let mut segs: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    match segs.first().map(String::as_str) {
        Some("lib") if segs.len() == 1 => ("lib", vec![]),
        Some("main") if segs.len() == 1 => ("bin", vec![]),
        Some("cli") => ("bin", segs),
        _ => ("lib", segs),
    }
}

/// Source text with comments, string and char literals blanked (line breaks kept), and
/// every item under `#[cfg(test)]` removed.
fn code_of(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(b.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(b.len(), |n| i + n + 2);
            out.extend(src[i..end].chars().filter(|&c| c == '\n'));
            i = end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|&c| c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + 2 + hashes;
            let end = src[body..]
                .find(&close)
                .map_or(b.len(), |n| body + n + close.len());
            out.extend(src[i..end].chars().filter(|&c| c == '\n'));
            out.push_str("\"\"");
            i = end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            out.extend(src[i..j.min(b.len())].chars().filter(|&c| c == '\n'));
            out.push_str("\"\"");
            i = j + 1;
        } else if b[i] == b'\'' && (rest.starts_with("'\\") || rest.get(2..3) == Some("'")) {
            // A char literal (a lifetime has no closing quote two characters on).
            let end = rest[1..].find('\'').map_or(b.len(), |n| i + n + 2);
            i = end;
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    strip_cfg_test(&out)
}

fn strip_cfg_test(code: &str) -> String {
    let mut out = code.to_string();
    while let Some(at) = out.find("#[cfg(test)]") {
        let b = out.as_bytes();
        let mut j = at;
        let mut depth = 0i32;
        let mut end = b.len();
        while j < b.len() {
            match b[j] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let lines = out[at..end].matches('\n').count();
        out.replace_range(at..end, &"\n".repeat(lines));
    }
    out
}

/// Every path a file names that starts with `crate`, `super`, `self` or (in the binary)
/// `depotai`, with `use` groups expanded, and the line it is on.
fn paths_in(code: &str, crate_: &str) -> Vec<(Vec<String>, usize)> {
    // Tokens: identifiers and the punctuation a path is made of.
    let mut toks: Vec<(String, usize)> = Vec::new();
    let mut line = 1;
    let mut chars = code.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\n' {
            line += 1;
        } else if c.is_alphabetic() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_alphanumeric() || d == '_' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            toks.push((code[i..end].to_string(), line));
        } else if c == ':' && chars.peek().is_some_and(|&(_, d)| d == ':') {
            chars.next();
            toks.push(("::".into(), line));
        } else if "{},;*".contains(c) {
            toks.push((c.to_string(), line));
        } else if !c.is_whitespace() {
            toks.push(("·".into(), line));
        }
    }
    let roots: &[&str] = if crate_ == "bin" {
        &["crate", "super", "self", "depotai"]
    } else {
        &["crate", "super", "self"]
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts_path = roots.contains(&toks[i].0.as_str())
            && (i == 0 || toks[i - 1].0 != "::")
            && toks.get(i + 1).is_some_and(|t| t.0 == "::");
        if !starts_path {
            i += 1;
            continue;
        }
        let in_use = i > 0 && toks[i - 1].0 == "use";
        let mut prefix = vec![toks[i].0.clone()];
        let line = toks[i].1;
        i += 1;
        while i + 1 < toks.len() && toks[i].0 == "::" {
            let next = &toks[i + 1].0;
            if next == "{" && in_use {
                i = use_group(&toks, i + 2, &prefix, line, &mut out);
                break;
            }
            if !next.starts_with(|c: char| c.is_alphabetic() || c == '_') {
                break;
            }
            prefix.push(next.clone());
            i += 2;
        }
        out.push((prefix, line));
    }
    out
}

/// The paths of a `{ … }` use group starting at `i` (just after the brace); returns the
/// index after its closing brace.
fn use_group(
    toks: &[(String, usize)],
    mut i: usize,
    prefix: &[String],
    line: usize,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let mut cur = prefix.to_vec();
    while i < toks.len() {
        match toks[i].0.as_str() {
            "}" => {
                out.push((cur, line));
                return i + 1;
            }
            "," => {
                out.push((cur, line));
                cur = prefix.to_vec();
            }
            "{" => {
                i = use_group(toks, i + 1, &cur, line, out);
                cur = prefix.to_vec();
                continue;
            }
            "::" | "*" | "self" | "as" => {
                if toks[i].0 == "as" {
                    i += 1; // the alias names nothing new
                }
            }
            name => cur.push(name.to_string()),
        }
        i += 1;
    }
    i
}

struct Graph {
    names: Vec<String>,
    /// Edges with one example line each, by file index.
    edges: BTreeMap<(usize, usize), String>,
}

fn graph(src: &Path) -> Graph {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    let files: Vec<File> = paths
        .iter()
        .map(|p| {
            let name = p.strip_prefix(src).unwrap().to_str().unwrap().to_string();
            let (crate_, module) = module_of(&name);
            File {
                text: code_of(&fs::read_to_string(p).unwrap()),
                name,
                crate_,
                module,
            }
        })
        .collect();
    let by_module: BTreeMap<(&str, &Vec<String>), usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| ((f.crate_, &f.module), i))
        .collect();
    let mut edges = BTreeMap::new();
    for (a, f) in files.iter().enumerate() {
        for (path, line) in paths_in(&f.text, f.crate_) {
            let (crate_, base, rest): (&str, ModPath, &[String]) = match path[0].as_str() {
                "crate" => (f.crate_, vec![], &path[1..]),
                "depotai" => ("lib", vec![], &path[1..]),
                "self" => (f.crate_, f.module.clone(), &path[1..]),
                _ => {
                    // `super::super::x`: one level up per `super`.
                    let ups = path.iter().take_while(|s| *s == "super").count();
                    let keep = f.module.len().saturating_sub(ups);
                    (f.crate_, f.module[..keep].to_vec(), &path[ups..])
                }
            };
            let mut resolved = base;
            resolved.extend(rest.iter().cloned());
            let file = deepest(&by_module, crate_, &resolved);
            add_edge(&files, &mut edges, a, file, line);
        }
    }
    Graph {
        names: files.into_iter().map(|f| f.name).collect(),
        edges,
    }
}

/// The file of the deepest module that `path` names.
fn deepest(
    by_module: &BTreeMap<(&str, &Vec<String>), usize>,
    crate_: &str,
    path: &[String],
) -> Option<usize> {
    (0..=path.len())
        .rev()
        .find_map(|n| by_module.get(&(crate_, &path[..n].to_vec())).copied())
}

fn add_edge(
    files: &[File],
    edges: &mut BTreeMap<(usize, usize), String>,
    a: usize,
    b: Option<usize>,
    line: usize,
) {
    let Some(b) = b else { return };
    let (fa, fb) = (&files[a], &files[b]);
    let ancestor = |x: &File, y: &File| x.crate_ == y.crate_ && y.module.starts_with(&x.module);
    // A file and its own module ancestors: the parent/child facade, not an import.
    if a == b || ancestor(fa, fb) || ancestor(fb, fa) {
        return;
    }
    edges
        .entry((a, b))
        .or_insert_with(|| format!("{}:{line}", fa.name));
}

/// Strongly connected components of more than one file (Tarjan), each sorted.
fn cycles(g: &Graph) -> Vec<Vec<usize>> {
    let n = g.names.len();
    let mut adj = vec![Vec::new(); n];
    for &(a, b) in g.edges.keys() {
        adj[a].push(b);
    }
    struct T<'a> {
        adj: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(t: &mut T, v: usize) {
        t.index[v] = Some(t.next);
        t.low[v] = t.next;
        t.next += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in &t.adj[v].clone() {
            match t.index[w] {
                None => {
                    visit(t, w);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        adj: &adj,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

fn report(g: &Graph) -> Vec<String> {
    let mut lines = Vec::new();
    for comp in cycles(g) {
        let set: BTreeSet<usize> = comp.iter().copied().collect();
        let names: Vec<&str> = comp.iter().map(|&i| g.names[i].as_str()).collect();
        lines.push(format!("cycle: {}", names.join(" <-> ")));
        for (&(a, b), at) in &g.edges {
            if set.contains(&a) && set.contains(&b) {
                lines.push(format!("    {} -> {}   ({at})", g.names[a], g.names[b]));
            }
        }
    }
    lines
}

#[test]
fn no_two_files_of_src_import_each_other_directly_or_around_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    assert!(
        g.names.len() > 20 && g.edges.len() > 50,
        "the graph was read: {} files, {} edges",
        g.names.len(),
        g.edges.len()
    );
    let found = report(&g);
    assert!(
        found.is_empty(),
        "import cycles among the files of src/:\n{}",
        found.join("\n")
    );
}

/// The check can fail: a small tree with a cycle through `use`, one through a path in
/// code, a group import, and parent/child and test-only uses that are not cycles.
#[test]
fn the_cycle_check_finds_cycles_and_leaves_parent_child_and_test_uses_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    let write = |p: &str, s: &str| {
        let p = src.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n");
    write("a.rs", "use crate::b::{x, y::Z};\n");
    write("b.rs", "pub mod y;\nfn f() { crate::a::g() }\n");
    write("b/y.rs", "use super::x; // a child's use of its parent\n");
    write("c.rs", "// use crate::d;\nconst S: &str = \"crate::d::X\";\n#[cfg(test)]\nmod tests { use crate::d::X; }\n");
    write("d.rs", "use crate::c::S;\n");
    write("main.rs", "mod cli;\nuse depotai::a;\n");
    write("cli/mod.rs", "use depotai::d;\n");
    let g = graph(src);
    assert_eq!(
        report(&g),
        vec![
            "cycle: a.rs <-> b.rs".to_string(),
            "    a.rs -> b.rs   (a.rs:1)".into(),
            "    b.rs -> a.rs   (b.rs:2)".into(),
        ]
    );
    write("c.rs", "use crate::{a, d::{self, S as T}};\n");
    let found = report(&graph(src));
    assert!(
        found.contains(&"cycle: c.rs <-> d.rs".to_string()),
        "{found:?}"
    );
}
