//! HTTP range requests (RFC 9110 §14): `Range: bytes=…` parsed against a known length,
//! and the exact layout of a `multipart/byteranges` body (RFC 9110 §14.6).
//!
//! Lazy-pulling readers live on these: the stargz snapshotter sends several 50 000-byte
//! aligned windows in one `Range` header and accepts a single-part `206`, a multipart
//! `206` or a `200`; containers/storage reads the footer with a suffix range and then the
//! TOC with one range (see `shared/docs/layer-formats.md` §6).

use bytes::Bytes;

/// More ranges than this in one header is refused with 416 (RFC 9110 §15.5.17 lets a
/// server reject "an excessive number of small or overlapping ranges"). containers/image
/// batches at most about a thousand chunks per request.
pub const MAX_RANGES: usize = 4096;

/// A satisfiable byte range, half-open: `start..end`, `start < end <= length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The `Content-Range` value for this range of a representation of `total` bytes.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end - 1, total)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("malformed Range header")]
    Malformed,
    #[error("no requested range is satisfiable")]
    Unsatisfiable,
    #[error("more than {MAX_RANGES} ranges in one request")]
    TooMany,
    #[error(
        "more than {} ranges overlap others",
        crate::limits::MAX_OVERLAPPING_RANGES
    )]
    Overlapping,
}

/// Parses a `Range` header value against a representation of `len` bytes.
///
/// `Ok(None)`: serve the whole representation with 200 (the header names another unit,
/// or the ranges overlap so much that they add up to more than the whole, which a client
/// could otherwise use to multiply the bytes a server sends). `Ok(Some(ranges))`: the
/// satisfiable ranges, in request order, clamped to the length. `Err`: answer 416.
pub fn parse(header: &[u8], len: u64) -> Result<Option<Vec<ByteRange>>, RangeError> {
    let s = std::str::from_utf8(header).map_err(|_| RangeError::Malformed)?;
    let (unit, set) = s.trim().split_once('=').ok_or(RangeError::Malformed)?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(None);
    }
    let mut specs = 0usize;
    let mut ranges = Vec::new();
    // A list may contain empty elements, which recipients must accept (RFC 9110 §5.6.1).
    for spec in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        specs += 1;
        if specs > MAX_RANGES {
            return Err(RangeError::TooMany);
        }
        if let Some(r) = parse_spec(spec, len)? {
            ranges.push(r);
        }
    }
    if specs == 0 {
        return Err(RangeError::Malformed);
    }
    if ranges.is_empty() {
        return Err(RangeError::Unsatisfiable);
    }
    if overlapping(&ranges) > crate::limits::MAX_OVERLAPPING_RANGES {
        return Err(RangeError::Overlapping);
    }
    let total: u64 = ranges.iter().map(|r| r.len()).fold(0, u64::saturating_add);
    if ranges.len() > 1 && total > len {
        return Ok(None);
    }
    Ok(Some(ranges))
}

/// How many ranges overlap one before them (in start order).
fn overlapping(ranges: &[ByteRange]) -> usize {
    if ranges.len() < 2 {
        return 0;
    }
    let mut sorted: Vec<(u64, u64)> = ranges.iter().map(|r| (r.start, r.end)).collect();
    sorted.sort_unstable();
    let mut reach = 0u64;
    let mut n = 0;
    for (i, (start, end)) in sorted.into_iter().enumerate() {
        if i > 0 && start < reach {
            n += 1;
        }
        reach = reach.max(end);
    }
    n
}

/// Digits only: no sign, no spaces. Values too large for u64 saturate (they can only
/// mean "past the end").
fn number(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    Ok(s.parse::<u64>().unwrap_or(u64::MAX))
}

/// One `first-last`, `first-` or `-suffix`; `Ok(None)` if well-formed but unsatisfiable.
fn parse_spec(spec: &str, len: u64) -> Result<Option<ByteRange>, RangeError> {
    let (first, last) = spec.split_once('-').ok_or(RangeError::Malformed)?;
    if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || len == 0 {
            return Ok(None);
        }
        return Ok(Some(ByteRange {
            start: len - suffix.min(len),
            end: len,
        }));
    }
    let start = number(first)?;
    let end = if last.is_empty() {
        len
    } else {
        let last = number(last)?;
        if last < start {
            return Err(RangeError::Malformed);
        }
        last.saturating_add(1).min(len)
    };
    if start >= len {
        return Ok(None);
    }
    Ok(Some(ByteRange { start, end }))
}

/// One piece of a response body: literal bytes or a range of the file being served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Bytes(Bytes),
    File(ByteRange),
}

impl Part {
    pub fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A boundary that will not occur in the content by accident: 128 bits from the clock,
/// a counter and the process id, hashed.
pub fn new_boundary() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!("{t}:{n}:{}", std::process::id());
    let d = crate::digest::Digest::of(seed.as_bytes()).hex();
    format!("depotai-{}", &d[..32])
}

/// The parts of a `multipart/byteranges` body for `ranges` of a representation of
/// `total` bytes, laid out as Go's `mime/multipart` writes them (and the stargz
/// snapshotter reads them): `--B CRLF headers CRLF CRLF data`, then `CRLF --B` between
/// parts and `CRLF --B-- CRLF` at the end.
pub fn multipart(
    ranges: &[ByteRange],
    total: u64,
    content_type: &str,
    boundary: &str,
) -> Vec<Part> {
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for (i, r) in ranges.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        parts.push(Part::Bytes(Bytes::from(format!(
            "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
            r.content_range(total)
        ))));
        parts.push(Part::File(*r));
    }
    parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn p(h: &str, len: u64) -> Result<Option<Vec<ByteRange>>, RangeError> {
        parse(h.as_bytes(), len)
    }

    #[test]
    fn single_suffix_and_open_ended_ranges() {
        assert_eq!(p("bytes=0-0", 10), Ok(Some(vec![r(0, 1)])));
        assert_eq!(p("bytes=2-5", 10), Ok(Some(vec![r(2, 6)])));
        assert_eq!(p("bytes=2-", 10), Ok(Some(vec![r(2, 10)])));
        assert_eq!(p("bytes=-3", 10), Ok(Some(vec![r(7, 10)])));
        // Clamped to the length.
        assert_eq!(p("bytes=5-100", 10), Ok(Some(vec![r(5, 10)])));
        assert_eq!(p("bytes=-100", 10), Ok(Some(vec![r(0, 10)])));
        assert_eq!(
            p("bytes=0-99999999999999999999999", 10),
            Ok(Some(vec![r(0, 10)]))
        );
        // Unit and spaces are lenient where the grammar allows it.
        assert_eq!(p(" Bytes=1-2", 10), Ok(Some(vec![r(1, 3)])));
        assert_eq!(p("bytes=1-2, 4-4", 10), Ok(Some(vec![r(1, 3), r(4, 5)])));
    }

    #[test]
    fn several_ranges_keep_request_order_and_skip_unsatisfiable_ones() {
        assert_eq!(
            p("bytes=5-6,0-1,,20-30,-1", 10),
            Ok(Some(vec![r(5, 7), r(0, 2), r(9, 10)]))
        );
    }

    #[test]
    fn unsatisfiable_malformed_and_other_units() {
        assert_eq!(p("bytes=10-", 10), Err(RangeError::Unsatisfiable));
        assert_eq!(p("bytes=10-20,30-40", 10), Err(RangeError::Unsatisfiable));
        assert_eq!(p("bytes=-0", 10), Err(RangeError::Unsatisfiable));
        assert_eq!(p("bytes=0-0", 0), Err(RangeError::Unsatisfiable));
        assert_eq!(p("bytes=-5", 0), Err(RangeError::Unsatisfiable));
        for bad in [
            "bytes=",
            "bytes=,",
            "bytes=5",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1 -2",
            "bytes=--1",
            "bytes",
            "0-1",
        ] {
            assert_eq!(p(bad, 10), Err(RangeError::Malformed), "{bad}");
        }
        assert_eq!(parse(b"bytes=\xff-1", 10), Err(RangeError::Malformed));
        assert_eq!(p("items=0-1", 10), Ok(None));
    }

    #[test]
    fn overlapping_ranges_adding_up_to_more_than_the_whole_get_the_whole() {
        assert_eq!(p("bytes=0-9,0-9", 10), Ok(None));
        assert_eq!(p("bytes=0-4,3-6", 10), Ok(Some(vec![r(0, 5), r(3, 7)])));
    }

    #[test]
    fn too_many_ranges_are_refused() {
        let many = (0..=MAX_RANGES)
            .map(|i| format!("{i}-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            p(&format!("bytes={many}"), 1 << 20),
            Err(RangeError::TooMany)
        );
    }

    #[test]
    fn thousands_of_tiny_overlapping_ranges_are_refused() {
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("{}-{}", i, i + 1))
                .collect::<Vec<_>>()
                .join(",")
        };
        // Each of 0-1, 1-2, … overlaps the one before it by a byte.
        let limit = crate::limits::MAX_OVERLAPPING_RANGES;
        assert_eq!(
            p(&format!("bytes={}", many(limit + 1)), 1 << 20).map(|r| r.map(|v| v.len())),
            Ok(Some(limit + 1))
        );
        assert_eq!(
            p(&format!("bytes={}", many(limit + 2)), 1 << 20),
            Err(RangeError::Overlapping)
        );
        assert_eq!(
            p(&format!("bytes={}", many(3000)), 1 << 20),
            Err(RangeError::Overlapping)
        );
        // As many disjoint ranges are fine.
        let disjoint = (0..3000)
            .map(|i| format!("{}-{}", 2 * i, 2 * i))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            p(&format!("bytes={disjoint}"), 1 << 20).map(|r| r.map(|v| v.len())),
            Ok(Some(3000))
        );
    }

    #[test]
    fn multipart_body_has_the_exact_byteranges_layout() {
        let data = b"0123456789";
        let ranges = [r(0, 2), r(7, 10)];
        let parts = multipart(&ranges, 10, "application/octet-stream", "B");
        let mut body = Vec::new();
        for part in &parts {
            match part {
                Part::Bytes(b) => body.extend_from_slice(b),
                Part::File(x) => body.extend_from_slice(&data[x.start as usize..x.end as usize]),
            }
        }
        let want = "--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
                    \r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 7-9/10\r\n\r\n789\
                    \r\n--B--\r\n";
        assert_eq!(String::from_utf8(body.clone()).unwrap(), want);
        assert_eq!(parts.iter().map(Part::len).sum::<u64>(), body.len() as u64);
    }

    #[test]
    fn boundaries_differ() {
        let a = new_boundary();
        assert_ne!(a, new_boundary());
        assert!(a.len() <= 70, "RFC 2046 limits boundaries to 70 characters");
    }
}
