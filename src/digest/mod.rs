//! Content digests (`sha256:<hex>`), the one way blobs are named everywhere.

use sha256_lanes as lanes;
use std::fmt;
use std::io::{self, Write};

/// A sha256 content digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new();
        h.update(bytes);
        h.finish()
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The 32 raw bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The lowercase hex form without the `sha256:` prefix (a blob's file name).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Option<Digest> {
        let hex_part = s.strip_prefix("sha256:")?;
        if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A running sha256 that also counts bytes.
///
/// Its own small state (rather than `sha2::Sha256`) so that [`update_all`] can feed one
/// pass over a buffer to several digests at once.
#[derive(Clone)]
pub struct Hasher {
    state: [u32; 8],
    buf: [u8; lanes::BLOCK],
    buf_len: usize,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Hasher {
        Hasher {
            state: lanes::H0,
            buf: [0; lanes::BLOCK],
            buf_len: 0,
            len: 0,
        }
    }
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.buf_len > 0 {
            let take = (lanes::BLOCK - self.buf_len).min(bytes.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&bytes[..take]);
            self.buf_len += take;
            bytes = &bytes[take..];
            if self.buf_len < lanes::BLOCK {
                return;
            }
            lanes::compress(&mut [&mut self.state], &self.buf);
            self.buf_len = 0;
        }
        let full = bytes.len() - bytes.len() % lanes::BLOCK;
        lanes::compress(&mut [&mut self.state], &bytes[..full]);
        self.keep_tail(&bytes[full..]);
    }

    fn keep_tail(&mut self, tail: &[u8]) {
        self.buf[..tail.len()].copy_from_slice(tail);
        self.buf_len = tail.len();
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(mut self) -> Digest {
        let bits = self.len.wrapping_mul(8);
        let mut last = [0u8; 2 * lanes::BLOCK];
        last[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
        last[self.buf_len] = 0x80;
        let end = if self.buf_len < lanes::BLOCK - 8 {
            lanes::BLOCK
        } else {
            2 * lanes::BLOCK
        };
        last[end - 8..end].copy_from_slice(&bits.to_be_bytes());
        lanes::compress(&mut [&mut self.state], &last[..end]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        Digest(out)
    }
}

/// Feeds the same bytes to several hashers, as `h.update(bytes)` on each would, in about
/// the time of one: a file's digest, its chunk's digest and the layer's diff ID all hash
/// the same payload, and the CPU's SHA-256 instructions are limited by their latency,
/// not their throughput, so interleaved states come almost for free.
pub fn update_all(hashers: &mut [&mut Hasher], mut bytes: &[u8]) {
    let pos = match hashers {
        [] => return,
        [one] => return one.update(bytes),
        [first, ..] => first.buf_len,
    };
    if hashers.iter().any(|h| h.buf_len != pos) {
        // Out of step (a digest that started mid-block): one at a time.
        hashers.iter_mut().for_each(|h| h.update(bytes));
        return;
    }
    if pos > 0 {
        let head = (lanes::BLOCK - pos).min(bytes.len());
        hashers.iter_mut().for_each(|h| h.update(&bytes[..head]));
        bytes = &bytes[head..];
        if bytes.is_empty() {
            return;
        }
    }
    let full = bytes.len() - bytes.len() % lanes::BLOCK;
    let mut states: Vec<&mut [u32; 8]> = Vec::with_capacity(hashers.len());
    for h in hashers.iter_mut() {
        h.len += bytes.len() as u64;
        states.push(&mut h.state);
    }
    lanes::compress(&mut states, &bytes[..full]);
    hashers.iter_mut().for_each(|h| h.keep_tail(&bytes[full..]));
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.hasher.len()
    }

    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn sample(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn reference(parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        parts.iter().for_each(|p| h.update(p));
        h.finalize().into()
    }

    #[test]
    fn hasher_matches_sha2_for_every_length_around_block_and_padding_edges() {
        let data = sample(300, 1);
        for len in 0..data.len() {
            let mut h = Hasher::new();
            h.update(&data[..len]);
            assert_eq!(
                h.finish().bytes(),
                &reference(&[&data[..len]]),
                "length {len}"
            );
        }
    }

    #[test]
    fn hasher_matches_sha2_whatever_the_update_boundaries() {
        let data = sample(5000, 2);
        for step in [1, 3, 63, 64, 65, 127, 1000, 4999] {
            let mut h = Hasher::new();
            data.chunks(step).for_each(|c| h.update(c));
            assert_eq!(h.len(), data.len() as u64);
            assert_eq!(h.finish().bytes(), &reference(&[&data]), "step {step}");
        }
    }

    /// One to six hashers (more than one group of four), in step or not, each with its
    /// own earlier bytes, fed the same payload in pieces of awkward sizes.
    #[test]
    fn update_all_gives_each_hasher_the_digest_of_its_own_stream() {
        let payload = sample(70_000, 3);
        for n in 1..=6usize {
            // In step at a block boundary, in step mid-block, out of step.
            for case in 0..3usize {
                let prefix_len = |i: usize| [0, 64 * i + 5, 7 * i + 1][case];
                let prefixes: Vec<Vec<u8>> = (0..n)
                    .map(|i| sample(prefix_len(i), 100 + i as u32))
                    .collect();
                let mut hashers: Vec<Hasher> = prefixes
                    .iter()
                    .map(|p| {
                        let mut h = Hasher::new();
                        h.update(p);
                        h
                    })
                    .collect();
                for piece in payload.chunks(4_099).chain(payload.chunks(64)) {
                    let mut refs: Vec<&mut Hasher> = hashers.iter_mut().collect();
                    update_all(&mut refs, piece);
                }
                for (i, h) in hashers.into_iter().enumerate() {
                    let want = reference(&[&prefixes[i], &payload, &payload]);
                    assert_eq!(h.finish().bytes(), &want, "{n} hashers, case {case}, #{i}");
                }
            }
        }
    }

    #[test]
    fn empty_input_has_the_well_known_sha256() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_malformed_digests() {
        let d = Digest::of(b"x");
        assert_eq!(Digest::parse(&d.to_string()), Some(d));
        assert_eq!(Digest::parse("sha256:abc"), None);
        assert_eq!(Digest::parse(&d.to_string().to_uppercase()), None);
        assert_eq!(Digest::parse(&d.hex()), None);
    }
}
