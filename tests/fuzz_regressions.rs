//! Replays inputs the fuzzers found (and hand-made hostile ones) through the same
//! library functions the `fuzz/` targets call: `fuzz/regressions/TARGET/*`. A crash the
//! fuzzer finds is copied there, fixed, and stays fixed.

use depotai::layer::estargz::reader as estargz;
use depotai::layer::reader::check_entries;
use depotai::layer::zstd_chunked::reader as zstd_chunked;
use depotai::limits;
use std::path::Path;

/// What each target checks, as in `fuzz/fuzz_targets/TARGET.rs`.
fn replay(target: &str, data: &[u8]) {
    match target {
        "estargz_toc" => {
            if let Ok((_, files)) = estargz::estargz_from_blob(data) {
                for f in &files {
                    assert_eq!(f.chunks.iter().map(|c| c.len).sum::<u64>(), f.size);
                }
            }
            if let Ok(json) = estargz::estargz_toc_json(data) {
                assert!(json.len() as u64 <= limits::MAX_TOC_BYTES);
                let _ = estargz::parse_estargz_toc(&json);
            }
        }
        "zstd_chunked_toc" => {
            let _ = zstd_chunked::zstd_chunked_from_blob(data);
            if let Ok(s) = std::str::from_utf8(data) {
                let _ = zstd_chunked::zstd_toc_position(s, 1 << 40);
            }
            let _ = zstd_chunked::parse_zstd_toc(data);
        }
        "range_header" => {
            if data.len() >= 8 {
                let len = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
                if let Ok(Some(ranges)) = depotai::serve::range::parse(&data[8..], len) {
                    assert!(ranges.iter().all(|r| r.start < r.end && r.end <= len));
                }
            }
        }
        "catalogue_yaml" => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = depotai::catalogue::Catalogue::parse(text, "fuzz.yaml");
            }
        }
        "hub_tree_page" => {
            let _ = depotai::source::hub::parse_tree_page(data);
        }
        "www_authenticate" => {
            if let Ok(h) = std::str::from_utf8(data) {
                let _ = depotai::remote::auth::parse_challenge(h);
            }
        }
        "oci_documents" => {
            let _ = depotai::remote::parse_manifest_document(data, "fuzz");
            let _ = depotai::serve::store::parse_document(data);
            let _ = depotai::image::read::parse::<serde_json::Value>(data, "fuzz");
        }
        "dir_names" => {
            let Ok(text) = std::str::from_utf8(data) else {
                return;
            };
            let mut links = std::collections::HashMap::new();
            for line in text.split('\n').take(64) {
                let (name, target) = match line.split_once(" -> ") {
                    Some((n, t)) => (n, Some(t)),
                    None => (line, None),
                };
                if depotai::names::check_path(name).is_ok() {
                    assert!(check_entries([(name, "reg", "")].into_iter()).is_ok());
                    let dir = format!("{name}/");
                    assert!(check_entries([(dir.as_str(), "dir", "")].into_iter()).is_ok());
                    if let Some(t) = target.filter(|t| depotai::names::check_link_target(t).is_ok())
                    {
                        assert!(check_entries([(name, "symlink", t)].into_iter()).is_ok());
                        links.insert(name, t);
                    }
                }
            }
            let tree = |p: &str| links.get(p).map(|t| t.to_string());
            for (name, target) in &links {
                let _ = depotai::source::dir::resolve_link(name, target, tree);
            }
        }
        other => panic!("no fuzz target {other}"),
    }
}

#[test]
fn inputs_the_fuzzers_found_stay_harmless() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for t in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if !t.path().is_dir() {
            continue;
        }
        let target = t.file_name().to_string_lossy().to_string();
        for f in std::fs::read_dir(t.path()).unwrap().flatten() {
            replay(&target, &std::fs::read(f.path()).unwrap());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} saved fuzz inputs");
}

#[test]
fn hand_made_hostile_inputs_are_answered_without_panicking() {
    let deep = "[".repeat(200_000);
    let footer = depotai::layer::estargz::footer(u64::MAX);
    let mut zfooter = vec![0u8; 100];
    zfooter.extend_from_slice(&depotai::layer::zstd_chunked::footer(
        &depotai::layer::zstd_chunked::Footer {
            manifest_offset: u64::MAX - 1,
            manifest_len: 10,
            manifest_uncompressed_len: u64::MAX,
            tar_split_offset: 0,
            tar_split_len: 0,
            tar_split_uncompressed_len: 0,
        },
    ));
    for (target, data) in [
        ("estargz_toc", footer.to_vec()),
        ("estargz_toc", Vec::new()),
        ("zstd_chunked_toc", zfooter.clone()),
        (
            "zstd_chunked_toc",
            b"18446744073709551615:18446744073709551615:1:1".to_vec(),
        ),
        (
            "range_header",
            [&[0xffu8; 8][..], b"bytes=-18446744073709551616"].concat(),
        ),
        ("catalogue_yaml", deep.clone().into_bytes()),
        ("hub_tree_page", deep.clone().into_bytes()),
        (
            "www_authenticate",
            format!("Bearer {}", "a=".repeat(100_000)).into_bytes(),
        ),
        ("oci_documents", deep.into_bytes()),
        (
            "dir_names",
            b"s -> .\nt -> s/s/s/../../../../x\na -> b\nb -> a\n.wh.x\nx\ty".to_vec(),
        ),
    ] {
        replay(target, &data);
    }
    assert_eq!(
        zstd_chunked::zstd_chunked_from_blob(&zfooter)
            .unwrap_err()
            .0,
        format!(
            "the TOC at {} (10 bytes) is outside the 172-byte blob",
            u64::MAX - 1
        )
    );
    assert_eq!(
        estargz::estargz_from_blob(&footer).unwrap_err().0,
        "the footer puts the TOC at 18446744073709551615, outside the 51-byte blob"
    );
}
