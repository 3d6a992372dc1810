//! SHA-256's block function over several states that hash the same blocks.
//!
//! A crate of its own so that it is always built optimized: the SHA-NI kernel is
//! intrinsics that an unoptimized build turns into function calls, 30× slower, and the
//! tests hash gigabytes.
//!
//! One state goes to `sha2::compress256` (SHA-NI where the CPU has it, portable code
//! elsewhere). Several states fed the same blocks share one message schedule and, with
//! SHA-NI, interleave their rounds: `sha256rnds2` waits on its previous result, so a
//! single state leaves the unit idle most cycles, and up to four states fill it (measured
//! on this project's x86-64 runners: four states in about the time of one). Tests pin
//! every path to `sha2`'s own digests.

use sha2::digest::generic_array::{typenum::U64, GenericArray};

/// Bytes in a block.
pub const BLOCK: usize = 64;

/// The initial state.
pub const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Runs the block function over `blocks` (a multiple of 64 bytes) for every state.
pub fn compress(states: &mut [&mut [u32; 8]], blocks: &[u8]) {
    debug_assert_eq!(blocks.len() % BLOCK, 0);
    if blocks.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if states.len() > 1 && shani::available() {
        for group in states.chunks_mut(shani::MAX_STATES) {
            // SAFETY: `available` checked the CPU features the kernel is compiled for.
            unsafe {
                match group.len() {
                    1 => shani::compress::<1>(group, blocks),
                    2 => shani::compress::<2>(group, blocks),
                    3 => shani::compress::<3>(group, blocks),
                    _ => shani::compress::<4>(group, blocks),
                }
            }
        }
        return;
    }
    // SAFETY: `GenericArray<u8, U64>` is a `[u8; 64]` (size 64, alignment 1), and
    // `blocks` holds exactly `len / 64` of them.
    let as_blocks: &[GenericArray<u8, U64>] =
        unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), blocks.len() / BLOCK) };
    for s in states.iter_mut() {
        sha2::compress256(s, as_blocks);
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;

    pub const MAX_STATES: usize = 4;

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// Whether this CPU has the instructions `compress` is built for.
    pub fn available() -> bool {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("sha")
                && is_x86_feature_detected!("sse2")
                && is_x86_feature_detected!("ssse3")
                && is_x86_feature_detected!("sse4.1")
        })
    }

    /// Intel's SHA-NI sequence, with the schedule computed once per block and the two
    /// `sha256rnds2` of each step issued for all `N` states back to back.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub unsafe fn compress<const N: usize>(states: &mut [&mut [u32; 8]], blocks: &[u8]) {
        debug_assert_eq!(states.len(), N);
        let bswap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);
        let mut abef = [_mm_setzero_si128(); N];
        let mut cdgh = [_mm_setzero_si128(); N];
        for (s, state) in states.iter().enumerate() {
            let p = state.as_ptr().cast::<__m128i>();
            let dcba = _mm_shuffle_epi32(_mm_loadu_si128(p), 0xb1);
            let efgh = _mm_shuffle_epi32(_mm_loadu_si128(p.add(1)), 0x1b);
            abef[s] = _mm_alignr_epi8(dcba, efgh, 8);
            cdgh[s] = _mm_blend_epi16(efgh, dcba, 0xf0);
        }
        for block in blocks.chunks_exact(super::BLOCK) {
            let (abef_in, cdgh_in) = (abef, cdgh);
            let p = block.as_ptr().cast::<__m128i>();
            let mut w = [
                _mm_shuffle_epi8(_mm_loadu_si128(p), bswap),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), bswap),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), bswap),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), bswap),
            ];
            for i in 0..16 {
                if i >= 4 {
                    let (w0, w1, w2, w3) =
                        (w[i % 4], w[(i + 1) % 4], w[(i + 2) % 4], w[(i + 3) % 4]);
                    let t = _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4));
                    w[i % 4] = _mm_sha256msg2_epu32(t, w3);
                }
                let k = _mm_loadu_si128(K.as_ptr().add(4 * i).cast::<__m128i>());
                let lo = _mm_add_epi32(w[i % 4], k);
                let hi = _mm_shuffle_epi32(lo, 0x0e);
                for s in 0..N {
                    cdgh[s] = _mm_sha256rnds2_epu32(cdgh[s], abef[s], lo);
                }
                for s in 0..N {
                    abef[s] = _mm_sha256rnds2_epu32(abef[s], cdgh[s], hi);
                }
            }
            for s in 0..N {
                abef[s] = _mm_add_epi32(abef[s], abef_in[s]);
                cdgh[s] = _mm_add_epi32(cdgh[s], cdgh_in[s]);
            }
        }
        for (s, state) in states.iter_mut().enumerate() {
            let feba = _mm_shuffle_epi32(abef[s], 0x1b);
            let dchg = _mm_shuffle_epi32(cdgh[s], 0xb1);
            let p = state.as_mut_ptr().cast::<__m128i>();
            _mm_storeu_si128(p, _mm_blend_epi16(feba, dchg, 0xf0));
            _mm_storeu_si128(p.add(1), _mm_alignr_epi8(dchg, feba, 8));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn several_states_get_what_sha2_gives_each_alone() {
        let blocks: Vec<u8> = (0..64 * 37u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for n in 1..=6 {
            let mut ours = vec![super::H0; n];
            ours.iter_mut()
                .enumerate()
                .for_each(|(i, s)| s[0] ^= i as u32);
            let mut theirs = ours.clone();
            let mut refs: Vec<&mut [u32; 8]> = ours.iter_mut().collect();
            super::compress(&mut refs, &blocks);
            let as_blocks: Vec<_> = blocks
                .chunks(64)
                .map(|b| *sha2::digest::generic_array::GenericArray::from_slice(b))
                .collect();
            theirs
                .iter_mut()
                .for_each(|s| sha2::compress256(s, &as_blocks));
            assert_eq!(ours, theirs, "{n} states");
        }
    }
}
