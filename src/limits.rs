//! Bounds on everything read from parties the user does not control: registries
//! (documents, TOCs, chunks, headers), the Hugging Face Hub (listings) and, for `serve`,
//! the layouts it serves and the clients it serves them to.
//!
//! Every value that comes from outside is checked against one of these before it is used
//! to allocate, seek, loop or write. The values are generous for real models (the
//! catalogue's largest image has a TOC of a few hundred KiB and a few thousand entries)
//! and small enough that the worst case of each stays well inside 512 MiB of memory.

/// Manifests, indexes and image configs. The CNCF distribution registry refuses
/// manifests over 4 MiB (`defaultMaxManifestBodySize`), and so do most registries; a
/// real one is a few KiB.
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// Descriptors in one index or layers in one manifest (a registry's or a layout's): a
/// multi-platform index has a handful, a manifest a few dozen layers at most, and a
/// referrers index one entry per signature, attestation or SBOM of the image.
pub const MAX_DESCRIPTORS: usize = 4096;

/// Nesting depth of any JSON document read from outside (OCI documents, TOCs, Hub
/// answers). Real ones nest at most 5 deep; serde_json's own limit (128) only keeps the
/// stack safe, this one says clearly what is wrong well before that.
pub const MAX_JSON_DEPTH: usize = 32;

/// A TOC: the compressed eStargz TOC member or zstd:chunked manifest, and the JSON it
/// inflates to. containers/storage refused manifests over 50 MiB (`maxTocSize`, later
/// raised to 150 MiB); 50 MiB is ~200,000 entries, far beyond any model.
pub const MAX_TOC_BYTES: u64 = 50 << 20;

/// The tar that holds an eStargz TOC: the JSON plus its tar headers (a PAX header at
/// most). The decompressor stops here, however small the member that inflates.
pub const MAX_TOC_TAR: u64 = MAX_TOC_BYTES + (1 << 20);

/// A zstd:chunked tar-split, compressed and uncompressed: one JSON line per tar entry
/// plus the headers in base64, so about the size of the TOC; same cap.
pub const MAX_TAR_SPLIT_BYTES: u64 = 50 << 20;

/// Entries in one TOC (files, directories, links, and one per chunk). A 100 GiB model in
/// 4 MiB chunks is 25,600; ten times that keeps the parsed TOC (≈300 bytes an entry)
/// under 100 MiB.
pub const MAX_TOC_ENTRIES: usize = 1 << 18;

/// Lines of one tar-split: one per tar entry and one segment between entries.
pub const MAX_TAR_SPLIT_LINES: usize = 2 * MAX_TOC_ENTRIES + 2;

/// A path in a TOC or a Hub listing, in bytes (Linux `PATH_MAX`). The rules for paths
/// are [`crate::names::check_path`].
pub const MAX_PATH_LEN: usize = 4096;

/// One component of such a path, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// `--chunk-size`, the size of the independently compressed chunks of a large file, in
/// bytes. Every chunk is a TOC entry of about 200 bytes plus its name, so below 64 KiB a
/// model's TOC outgrows [`MAX_TOC_BYTES`] and [`MAX_TOC_ENTRIES`] while its files are
/// still small (`--chunk-size 4`, a typo for 4MiB, makes a 1 MiB file 262,144 entries);
/// above 64 MiB a lazy pull fetches more than it needs and the compressor holds
/// `2 × threads + 2` such chunks.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;

/// One chunk's compressed bytes, fetched with one Range request. depotai writes chunks of
/// at most [`MAX_CHUNK_SIZE`] (earlier versions up to 1 GiB, and a file smaller than the
/// chunk size is one chunk however large), which compress to about that; the bytes are
/// streamed through the decompressor, never held whole.
pub const MAX_CHUNK_COMPRESSED: u64 = 1 << 31;

/// How much one gzip member may inflate: deflate's best case is 258 bytes from about 2
/// bits, a ratio of 1032 to 1. A TOC claiming more for a chunk is lying.
pub const MAX_GZIP_RATIO: u64 = 1032;

/// How much one zstd frame may inflate: an RLE block turns 4 bytes into 128 KiB, 32,768
/// to 1 (plus frame headers, which only lower it).
pub const MAX_ZSTD_RATIO: u64 = 1 << 15;

/// A `WWW-Authenticate` challenge. Real ones are a realm URL, a service and a scope,
/// under 1 KiB; a longer one is refused before it is parsed.
pub const MAX_CHALLENGE_LEN: usize = 8 << 10;

/// A `Link` or `Location` header value: one URL.
pub const MAX_LINK_LEN: usize = 8 << 10;

/// A token endpoint's answer: a JSON object with a token of a few KiB.
pub const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// The body of an error answer, read for its message (only the first 300 characters are
/// shown).
pub const MAX_ERROR_BODY: u64 = 64 << 10;

/// One page of the Hub's tree listing. The Hub sends 1,000 entries a page (about 300
/// KiB); 16 MiB allows 50 times that.
pub const MAX_LISTING_PAGE: u64 = 16 << 20;

/// Pages of one tree listing, and files in it. The largest model repositories have a
/// few thousand files; a Hub that keeps sending `Link: rel="next"` is stopped here.
pub const MAX_LISTING_PAGES: usize = 1000;
pub const MAX_LISTING_FILES: usize = 200_000;

/// The listing depotai keeps in the Hub cache for offline builds (the Hub's tree entries,
/// about 200 bytes a file plus its path): 200,000 files with 100-byte paths fit.
pub const MAX_KEPT_LISTING: u64 = 64 << 20;

/// The size the Hub may declare for one file: its LFS limit is 50 GB a file, and a size
/// this large is a lie that would otherwise fill the disk before the hash says so.
pub const MAX_HUB_FILE_SIZE: u64 = 1 << 40;

/// `serve`: open connections at once. Past this the server stops accepting (the kernel's
/// backlog holds the rest) until one closes; with the header and stall timeouts below,
/// idle or stuck clients cannot hold a slot for long.
pub const MAX_CONNECTIONS: usize = 2048;

/// `serve`: a request's head (request line and headers) in bytes. Larger heads get 431.
/// Registry clients send under 4 KiB (a bearer token is the largest part).
pub const MAX_REQUEST_HEAD: usize = 64 << 10;

/// `serve`: headers in one request.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// `serve`: seconds a client has to send a request's head once it starts waiting for one
/// (also how long an idle keep-alive connection stays open).
pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;

/// `serve`: seconds a connection may go without a byte moving either way (a client that
/// stops reading a response, or an idle keep-alive connection) before it is closed.
pub const IDLE_TIMEOUT_SECS: u64 = 30;

/// `serve`: file descriptors kept free of connections (blob files being served, the
/// listener, the store's reads) when the connection cap is fitted to `RLIMIT_NOFILE`.
pub const RESERVED_FDS: u64 = 64;

/// `serve`: bytes read from a blob per step (one positioned read on the blocking pool),
/// while [`SERVE_PIECE_BUDGET`] lasts. Large enough that a fast client costs few reads.
pub const SERVE_PIECE: u64 = 256 << 10;

/// `serve`: bytes of full-size pieces all responses together may hold. A piece is held
/// from its read until the client's socket has taken its last byte, so a reader that
/// stops draining keeps one (or two: hyper asks for the next piece once less than its
/// 128 KiB buffer limit is left of the last). Past the budget, pieces are
/// [`SERVE_SMALL_PIECE`], one at a time per response, so readers stalled at the
/// connection cap hold at most this plus `MAX_CONNECTIONS` small pieces. 64 MiB is 128
/// to 256 responses streaming at full size at once.
pub const SERVE_PIECE_BUDGET: usize = 64 << 20;

/// `serve`: the piece size once [`SERVE_PIECE_BUDGET`] is spent; a response has at most
/// one such piece in memory, read when the last was written out.
pub const SERVE_SMALL_PIECE: u64 = 16 << 10;

/// `serve`: store lookups (file system work on the blocking pool) at once; more wait.
pub const MAX_CONCURRENT_LOOKUPS: usize = 64;

/// `serve`: ranges in one `Range` header that overlap another. A lazy puller never asks
/// for the same bytes twice in one request; thousands of overlapping ranges only
/// multiply the work (RFC 9110 §15.5.17 allows refusing them with 416).
pub const MAX_OVERLAPPING_RANGES: usize = 16;

/// What was wrong with a JSON document's shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonShapeError {
    #[error("JSON nested more than {0} deep")]
    TooDeep(usize),
    #[error("a JSON array has more than {0} items")]
    TooManyItems(usize),
}

/// Checks nesting depth and the number of items of every array in one pass over the
/// bytes, without allocating, before a parser builds anything from them. Malformed JSON
/// is left to the parser to describe.
pub fn check_json_shape(
    bytes: &[u8],
    max_depth: usize,
    max_items: usize,
) -> Result<(), JsonShapeError> {
    // Per open container: is it an array, and how many items so far (arrays only).
    let mut stack: Vec<(bool, usize)> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    // Whether the current array has a value since its last comma (or its start).
    let mut seen_value = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                seen_value = true;
            }
            b'[' | b'{' => {
                if stack.len() >= max_depth {
                    return Err(JsonShapeError::TooDeep(max_depth));
                }
                stack.push((b == b'[', 0));
                seen_value = false;
            }
            b']' | b'}' => {
                if let Some((true, n)) = stack.last() {
                    if seen_value && n + 1 > max_items {
                        return Err(JsonShapeError::TooManyItems(max_items));
                    }
                }
                stack.pop();
                seen_value = true;
            }
            b',' => {
                if let Some((true, n)) = stack.last_mut() {
                    *n += 1;
                    if *n >= max_items {
                        return Err(JsonShapeError::TooManyItems(max_items));
                    }
                }
                seen_value = false;
            }
            b' ' | b'\t' | b'\n' | b'\r' | b':' => {}
            _ => seen_value = true,
        }
    }
    Ok(())
}

/// Untrusted text for a one-line message: control characters (newlines included)
/// escaped, at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum BodyError {
    /// More than the limit (by `Content-Length` or by what arrived).
    TooLarge,
    Network(reqwest::Error),
}

/// Reads a response body of at most `max` bytes, refusing a larger `Content-Length`
/// before reading and stopping as soon as more than `max` arrived; `counted` is told of
/// every piece.
pub async fn read_body_capped(
    resp: &mut reqwest::Response,
    max: u64,
    mut counted: impl FnMut(usize),
) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(piece) = resp.chunk().await.map_err(BodyError::Network)? {
        counted(piece.len());
        if out.len() as u64 + piece.len() as u64 > max {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// A short, printable form of an untrusted name for an error message: control
/// characters escaped and at most 200 characters.
pub fn shown(name: &str) -> String {
    let mut s: String = name.chars().take(200).collect();
    if s.len() < name.len() {
        s.push('…');
    }
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_counts_depth_and_items_outside_strings() {
        assert_eq!(check_json_shape(br#"{"a":[1,2,3]}"#, 2, 3), Ok(()));
        assert_eq!(
            check_json_shape(br#"{"a":[1,2,3,4]}"#, 2, 3),
            Err(JsonShapeError::TooManyItems(3))
        );
        assert_eq!(
            check_json_shape(br#"{"a":[[1]]}"#, 2, 3),
            Err(JsonShapeError::TooDeep(2))
        );
        // Brackets, commas and escaped quotes inside strings do not count.
        assert_eq!(check_json_shape(br#"["[[[,,,\"]]]", 1]"#, 1, 2), Ok(()));
        assert_eq!(check_json_shape(b"[]", 1, 0), Ok(()));
        assert_eq!(
            check_json_shape(b"[1]", 1, 0),
            Err(JsonShapeError::TooManyItems(0))
        );
        let deep = "[".repeat(100_000);
        assert_eq!(
            check_json_shape(deep.as_bytes(), MAX_JSON_DEPTH, 10),
            Err(JsonShapeError::TooDeep(MAX_JSON_DEPTH))
        );
    }

    #[test]
    fn one_line_escapes_newlines_and_cuts() {
        assert_eq!(one_line("a\nb\r\tc", 100), "a\\nb\\r\\tc");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn shown_names_are_short_and_escaped() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown(&"x".repeat(500)).chars().count(), 203);
    }
}
