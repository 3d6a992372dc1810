//! How large a layer's TOC (and zstd:chunked's tar-split) can come out, computed from
//! its entries and the options before a byte is read, so a layer that any reader would
//! refuse ([`limits::MAX_TOC_ENTRIES`], [`limits::MAX_TOC_BYTES`],
//! [`limits::MAX_TAR_SPLIT_BYTES`]) is refused before it is written.
//!
//! The bound is conservative and close: each entry is counted with the keys its writer
//! puts in it for its kind, numbers at the width of the largest value they can take
//! (offsets at the width of the largest blob the layer can make), names and link
//! targets at their escaped JSON length, and every tar header at the PAX size whenever
//! USTAR might not hold the name. The tests compare bound and result on built layers.

use super::tar::{padding_len, BLOCK, USTAR_MAX_SIZE};
use super::{Entry, EntryKind, Format, LayerError, Options};
use crate::limits;
use crate::units::human_bytes;
use std::collections::BTreeMap;

/// A `sha256:<64 hex>` digest as a JSON string: 73 bytes.
const DIGEST: u64 = 73;

/// Decimal digits of `n`.
fn digits(n: u64) -> u64 {
    n.checked_ilog10().map_or(1, |d| d as u64 + 1)
}

/// The JSON string length of `s`: quotes, and `"`, `\` and controls escaped.
fn json_len(s: &str) -> u64 {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<u64>()
}

/// Keys and their values' JSON lengths, in the format's layout: eStargz's
/// `\t\t\t"key": value,\n` inside `\t\t{\n … \t\t},\n` (Go's `MarshalIndent`), or
/// zstd:chunked's compact `{"key":value,…},`.
fn object(format: Format, fields: &[(&str, u64)]) -> u64 {
    let (braces, per_field) = match format {
        Format::Estargz => ("\t\t{\n\t\t},\n".len() as u64, 3 + 2 + 2 + 2),
        Format::ZstdChunked => ("{},".len() as u64, 2 + 1 + 1),
    };
    braces
        + fields
            .iter()
            .map(|(k, v)| k.len() as u64 + per_field + v)
            .sum::<u64>()
}

/// What one path of a layer is, for its TOC entries.
struct Shape<'a> {
    /// The JSON length of its TOC name (directories end with `/`).
    name: u64,
    kind: &'static str,
    link: &'a str,
    size: u64,
}

/// Widths of the numbers a TOC entry holds.
struct Widths {
    offset: u64,
    chunk_size: u64,
}

/// The bytes of the TOC entries of one path: its own, and one per chunk after the
/// first, with the keys each format's writer puts in them.
fn entries_bytes(format: Format, s: &Shape<'_>, chunks: u64, w: &Widths) -> u64 {
    let zstd = format == Format::ZstdChunked;
    let kind = s.kind.len() as u64 + 2;
    let modtime = json_len(super::zstd_chunked::MODTIME);
    let mut own: Vec<(&str, u64)> = vec![("name", s.name), ("type", kind), ("mode", 3)];
    if zstd {
        own.push(("modtime", modtime));
    }
    if !s.link.is_empty() {
        own.push(("linkName", json_len(s.link)));
    }
    // eStargz gives every file a digest and its (first) chunk's; zstd:chunked gives an
    // empty file neither, a one-chunk file no chunk keys, and every file an end offset.
    if s.kind == "reg" && (s.size > 0 || !zstd) {
        own.push(("digest", DIGEST));
    }
    if s.kind == "reg" && s.size > 0 {
        own.extend([("size", digits(s.size)), ("offset", w.offset)]);
        if !zstd || chunks > 1 {
            own.extend([("chunkSize", w.chunk_size), ("chunkDigest", DIGEST)]);
        }
        if zstd {
            own.push(("endOffset", w.offset));
        }
    }
    let chunk = [
        ("name", s.name),
        ("type", "\"chunk\"".len() as u64),
        ("offset", w.offset),
        ("chunkOffset", digits(s.size)),
        ("chunkSize", w.chunk_size),
        ("chunkDigest", DIGEST),
    ];
    object(format, &own) + (chunks - 1) * object(format, &chunk)
}

/// The tar header blocks of an entry at most: one block when the name and target fit
/// USTAR, else a PAX header block, its records (`path`, `linkpath`, `size`) and the
/// main block.
fn header_bound(name: &str, link: &str, size: u64) -> u64 {
    let fits = |s: &str| s.len() <= 100 && s.is_ascii();
    if fits(name) && fits(link) && size <= USTAR_MAX_SIZE {
        return BLOCK as u64;
    }
    // "NNNN key=value\n" for each record: at most 5 digits of length, 9 of key and '=',
    // ' ' and '\n'.
    let records = (name.len() + link.len()) as u64 + 3 * (5 + 9 + 3) + 20;
    2 * BLOCK as u64 + records.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// Digits of a tar-split position: at most [`limits::MAX_TAR_SPLIT_LINES`].
fn position_digits() -> u64 {
    digits(limits::MAX_TAR_SPLIT_LINES as u64)
}

/// One tar entry's two tar-split lines at most: the segment before it (`raw` bytes: the
/// previous payload's padding and this entry's headers, in base64) and its file line
/// (with the CRC-64 in base64).
fn tar_split_bytes(name: u64, size: u64, raw: u64) -> u64 {
    let segment = r#"{"type":2,"payload":"","position":}"#.len() as u64 + 1;
    let file = r#"{"type":1,"name":,"size":,"payload":"","position":}"#.len() as u64 + 1;
    segment + raw.div_ceil(3) * 4 + file + name + digits(size) + 12 + 2 * position_digits()
}

/// What a layer's TOC holds at most.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TocBound {
    /// TOC entries: files, directories (the parents a layer adds too), symlinks, one per
    /// chunk after a file's first, and eStargz's landmark.
    pub entries: u64,
    /// Bytes of the TOC's JSON (and, within a few KiB, of its compressed form, which
    /// readers cap too).
    pub toc_bytes: u64,
    /// Bytes of zstd:chunked's tar-split (0 for eStargz).
    pub tar_split_bytes: u64,
}

/// Which reader limit a layer would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TocLimit {
    Entries,
    TocBytes,
    TarSplitBytes,
}

/// The bound of a layer of `entries` written with `opts`, and the first path (in layer
/// order) at which it passes a reader's limit, if it does.
pub fn toc_bound(entries: &[Entry], opts: &Options) -> (TocBound, Option<(TocLimit, String)>) {
    if opts.prefix.is_empty() {
        return bound_of(entries, opts);
    }
    // Under a prefix every name is longer and its directories are entries too: bound
    // the names the layer will hold.
    let (named, _) = super::under_prefix(entries.to_vec(), &[], &opts.prefix);
    bound_of(&named, opts)
}

fn bound_of<'a>(entries: &'a [Entry], opts: &Options) -> (TocBound, Option<(TocLimit, String)>) {
    let format = opts.format;
    let chunk_size = opts.chunk_size.max(1);
    // The layer's paths in tar order, the parents it adds included (as directories).
    let mut paths: BTreeMap<&str, Option<&EntryKind>> = BTreeMap::new();
    for e in entries {
        paths.insert(&e.path, Some(&e.kind));
        let mut p = e.path.as_str();
        // Every path in the map has its parents there too: stop at the first one.
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if paths.contains_key(p) {
                break;
            }
            paths.insert(p, None);
        }
    }
    let shape = |path: &'a str, kind: Option<&'a EntryKind>| -> Shape<'a> {
        match kind {
            None | Some(EntryKind::Directory) => Shape {
                name: json_len(path) + 1,
                kind: "dir",
                link: "",
                size: 0,
            },
            Some(EntryKind::File { size, .. }) => Shape {
                name: json_len(path),
                kind: "reg",
                link: "",
                size: *size,
            },
            Some(EntryKind::Symlink { target }) => Shape {
                name: json_len(path),
                kind: "symlink",
                link: target,
                size: 0,
            },
        }
    };
    // The largest blob the layer can make bounds every offset in it: the tar (headers,
    // payloads, padding), grown by stored blocks' framing at worst (deflate 5 bytes per
    // 64 KiB, zstd 3 per 128 KiB) and each member's header and trailer.
    let mut tar = 4 * BLOCK as u64;
    let mut members = 2u64;
    for (path, kind) in &paths {
        let s = shape(path, *kind);
        tar += header_bound(path, s.link, s.size) + s.size + padding_len(s.size) as u64;
        members += s.size.div_ceil(chunk_size) + 1;
    }
    let widths = Widths {
        offset: digits(tar + tar / 1000 + 64 * members),
        chunk_size: digits(chunk_size),
    };

    let envelope = match format {
        Format::Estargz => "{\n\t\"version\": 1,\n\t\"entries\": [\n\n\t]\n}".len() as u64,
        Format::ZstdChunked => {
            r#"{"version":1,"entries":[],"tarSplitDigest":}"#.len() as u64 + DIGEST
        }
    };
    let mut b = TocBound {
        entries: 0,
        toc_bytes: envelope,
        tar_split_bytes: 0,
    };
    if format == Format::Estargz {
        // The landmark: a one-byte file.
        let landmark = Shape {
            name: json_len(super::NO_PREFETCH_LANDMARK),
            kind: "reg",
            link: "",
            size: 1,
        };
        b.entries += 1;
        b.toc_bytes += entries_bytes(format, &landmark, 1, &widths);
    } else {
        // The last padding with the end-of-archive blocks, and the empty final segment.
        b.tar_split_bytes += 2 * tar_split_bytes(0, 0, 3 * BLOCK as u64);
    }
    let mut crossed = None;
    let mut prev_padding = 0u64;
    for (path, kind) in paths {
        let s = shape(path, kind);
        let chunks = s.size.div_ceil(chunk_size).max(1);
        b.entries += chunks;
        b.toc_bytes += entries_bytes(format, &s, chunks, &widths);
        if format == Format::ZstdChunked {
            let raw = prev_padding + header_bound(path, s.link, s.size);
            b.tar_split_bytes += tar_split_bytes(s.name, s.size, raw);
            prev_padding = padding_len(s.size) as u64;
        }
        if crossed.is_none() {
            let over = if b.entries > limits::MAX_TOC_ENTRIES as u64 {
                Some(TocLimit::Entries)
            } else if b.toc_bytes > toc_room() {
                Some(TocLimit::TocBytes)
            } else if b.tar_split_bytes > limits::MAX_TAR_SPLIT_BYTES {
                Some(TocLimit::TarSplitBytes)
            } else {
                None
            };
            crossed = over.map(|l| (l, path.to_string()));
        }
    }
    (b, crossed)
}

/// The TOC's JSON may fill [`limits::MAX_TOC_BYTES`] less what wraps it on the way to a
/// reader: eStargz's tar header, padding and end blocks, and a stored (level 0) gzip
/// member's 5 bytes per 64 KiB block.
fn toc_room() -> u64 {
    limits::MAX_TOC_BYTES - (limits::MAX_TOC_BYTES >> 10) - 8 * BLOCK as u64
}

/// Refuses a layer of `entries` whose TOC (or tar-split) could pass a reader's limit,
/// naming the entry at which it would.
pub fn check_toc_bound(entries: &[Entry], opts: &Options) -> Result<(), LayerError> {
    match toc_bound(entries, opts) {
        (_, None) => Ok(()),
        (_, Some((limit, path))) => Err(LayerError::TocTooLarge { path, limit }),
    }
}

/// The one line a [`LayerError::TocTooLarge`] reads as.
pub(super) fn too_large(path: &str, limit: TocLimit) -> String {
    let path = limits::shown(path);
    match limit {
        TocLimit::Entries => format!(
            "{path}: the layer's TOC would pass {} entries here, the most a reader accepts (one per file, directory and symlink, and one per --chunk-size chunk of a large file); use fewer files or a larger --chunk-size",
            limits::MAX_TOC_ENTRIES
        ),
        TocLimit::TocBytes => format!(
            "{path}: the layer's TOC would pass {} here, the most a reader accepts (about 300 bytes per entry and chunk, plus its name); use fewer files, shorter names or a larger --chunk-size",
            human_bytes(limits::MAX_TOC_BYTES)
        ),
        TocLimit::TarSplitBytes => format!(
            "{path}: the layer's zstd:chunked tar-split would pass {} here, the most a reader accepts (about 1.5 KiB per file); use fewer files or --format estargz",
            human_bytes(limits::MAX_TAR_SPLIT_BYTES)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::estargz::reader::estargz_toc_json;
    use crate::layer::zstd_chunked::reader::zstd_chunked_from_blob;
    use crate::layer::{build, Contents};
    use std::io::{self, Read};

    /// Every file is `len` bytes of one letter.
    struct Letters;
    impl Contents for Letters {
        fn open(&self, path: &str) -> io::Result<Box<dyn Read + Send + '_>> {
            let len = path.rsplit('-').next().unwrap().parse::<u64>().unwrap();
            Ok(Box::new(io::repeat(b'x').take(len)))
        }
    }

    fn entries() -> Vec<Entry> {
        let mut v = Vec::new();
        for i in 0..300u64 {
            let size = [0, 3, 511, 512, 4097, 200_000][i as usize % 6];
            let dir = if i % 7 == 0 {
                "deep/".repeat(30)
            } else {
                format!("d{}/", i % 5)
            };
            let name = if i % 11 == 0 {
                "ü\"n".repeat(40)
            } else {
                "f".into()
            };
            v.push(Entry {
                path: format!("{dir}{name}{i}-{size}"),
                kind: EntryKind::File {
                    size,
                    executable: false,
                },
            });
        }
        v.push(Entry {
            path: "link".into(),
            kind: EntryKind::Symlink {
                target: "d1/".to_string() + &"../d1/".repeat(30),
            },
        });
        v.push(Entry {
            path: "empty".into(),
            kind: EntryKind::Directory,
        });
        v
    }

    #[test]
    fn the_bound_holds_every_built_toc_and_tar_split_within_a_fifth_above() {
        // Under a prefix, every name is longer and its directories are entries too.
        let cases = [Format::Estargz, Format::ZstdChunked]
            .into_iter()
            .flat_map(|f| [(f, ""), (f, "opt/ml/model")]);
        for (format, prefix) in cases {
            let opts = Options {
                format,
                chunk_size: limits::MIN_CHUNK_SIZE,
                threads: 2,
                prefix: prefix.to_string(),
                ..Options::default()
            };
            let (bound, crossed) = toc_bound(&entries(), &opts);
            assert_eq!(crossed, None);
            let (info, blob) = build(entries(), &Letters, &opts, Vec::new(), &|_| {}).unwrap();
            assert_eq!(bound.entries, info.toc_entries, "{format}");
            let (toc_len, split_len) = match format {
                Format::Estargz => {
                    let member = &blob[info.toc_offset as usize..blob.len() - 51];
                    (estargz_toc_json(member).unwrap().len() as u64, 0)
                }
                Format::ZstdChunked => {
                    let (_, _, _) = zstd_chunked_from_blob(&blob).unwrap();
                    let f = crate::layer::zstd_chunked::parse_footer(
                        &blob[blob.len() - crate::layer::zstd_chunked::FOOTER_FRAME_SIZE..],
                    )
                    .unwrap();
                    (f.manifest_uncompressed_len, f.tar_split_uncompressed_len)
                }
            };
            assert!(
                bound.toc_bytes >= toc_len,
                "{format}: {bound:?} < {toc_len}"
            );
            assert!(
                bound.toc_bytes < toc_len + toc_len / 5,
                "{format}: {bound:?} vs {toc_len}"
            );
            assert!(bound.tar_split_bytes >= split_len, "{format}: {bound:?}");
            assert!(
                bound.tar_split_bytes <= split_len + split_len / 5,
                "{format}: {bound:?} vs {split_len}"
            );
        }
    }

    #[test]
    fn a_layer_past_a_reader_limit_is_refused_at_the_entry_that_passes_it() {
        let opts = |format| Options {
            format,
            chunk_size: limits::MIN_CHUNK_SIZE,
            ..Options::default()
        };
        // One entry per 64 KiB chunk: 16 GiB is 262,144 chunks, plus the landmark.
        let big = vec![Entry {
            path: "w.bin".into(),
            kind: EntryKind::File {
                size: 16 << 30,
                executable: false,
            },
        }];
        let err = check_toc_bound(&big, &opts(Format::Estargz)).unwrap_err();
        assert!(
            matches!(&err, LayerError::TocTooLarge { path, limit: TocLimit::Entries, .. } if path == "w.bin"),
            "{err}"
        );
        // zstd:chunked has no landmark: the same file is exactly 262,144 entries.
        let (bound, crossed) = toc_bound(&big, &opts(Format::ZstdChunked));
        assert_eq!((bound.entries, crossed), (1 << 18, None));
        // Names of 4,000 bytes: about 4 KiB an entry, so 13,000 files pass 50 MiB.
        let long = "n/".repeat(1990);
        let many: Vec<Entry> = (0..13_000)
            .map(|i| Entry {
                path: format!("{long}{i:05}"),
                kind: EntryKind::File {
                    size: 1,
                    executable: false,
                },
            })
            .collect();
        let err = check_toc_bound(&many, &opts(Format::Estargz)).unwrap_err();
        let LayerError::TocTooLarge { path, limit, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*limit, TocLimit::TocBytes);
        assert!(
            path.starts_with(&long) && path.len() == long.len() + 5,
            "{path}"
        );
        assert!(check_toc_bound(&many[..10_000], &opts(Format::Estargz)).is_ok());
    }
}
