//! The directory walker's name policy: every name the builder accepts is one every
//! reader accepts, and resolving a tree of symlinks always ends (inside, outside, or
//! after too many links) without panicking.
//!
//! Input: UTF-8 lines, each `NAME` or `NAME -> TARGET` (a symlink).
#![no_main]
use depotai::names::{check_link_target, check_path};
use depotai::remote::toc::check_entries;
use depotai::source::dir::resolve_link;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut links: HashMap<&str, &str> = HashMap::new();
    for line in text.split('\n').take(64) {
        let (name, target) = match line.split_once(" -> ") {
            Some((n, t)) => (n, Some(t)),
            None => (line, None),
        };
        if check_path(name).is_ok() {
            // What the builder writes, every reader takes: as a file, a directory (with
            // its trailing slash) and a link.
            assert!(
                check_entries([(name, "reg", "")].into_iter()).is_ok(),
                "{name:?}"
            );
            let dir = format!("{name}/");
            assert!(check_entries([(dir.as_str(), "dir", "")].into_iter()).is_ok());
            assert!(name.len() <= depotai::limits::MAX_PATH_LEN);
            assert!(!name.chars().any(|c| c.is_control() || c == '\\'));
            assert!(!name.split('/').any(|c| c.starts_with(".wh.") || c == ".."));
            if let Some(t) = target.filter(|t| check_link_target(t).is_ok()) {
                assert!(check_entries([(name, "symlink", t)].into_iter()).is_ok());
                links.insert(name, t);
            }
        }
    }
    let tree = |p: &str| links.get(p).map(|t| t.to_string());
    for (name, target) in &links {
        let _ = resolve_link(name, target, tree);
    }
});
