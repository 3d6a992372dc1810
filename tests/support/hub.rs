//! A Hugging Face Hub–compatible test server (spec: /work/shared/docs/hf-hub-api.md).
//!
//! Two origins on 127.0.0.1: the hub (`endpoint`, API + `resolve`) and an LFS "CDN"
//! (`cdn`, addressed as `localhost` so it differs from the hub by host *and* port).
//! The HTTP/1.1 layer is hand-written on `std::net` on purpose: fault injection needs
//! byte-level control (cut a body after K bytes, stall, lie about lengths).
//!
//! Layout of this file:
//!   1. Public fixture types (`Content`, `RepoFile`, `Repo`, `Fault`, `Request`)
//!   2. Content: the seeded generator, SHA-1 (git blob ids), LFS pointers
//!   3. `HubServer`: start / configuration / shutdown
//!   4. Routing: path parsing, auth, revision resolution
//!   5. Handlers: repo info, tree listing, resolve, CDN
//!   6. Faults: selection and consumption
//!   7. Responses: ranges, error shapes, headers
//!   8. HTTP/1.1: request parsing, response writing, connection loop

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ───────────────────────── 1. Public fixture types ─────────────────────────

/// File content. `Generated` and `Weights` are computed from the offset on demand and
/// never stored, so fixtures of any size cost no memory or disk.
#[derive(Clone, Debug)]
pub enum Content {
    Bytes(Vec<u8>),
    /// A cheap repeating pattern (compresses far better than weights).
    Generated {
        size: u64,
        seed: u64,
    },
    /// Bytes that compress like real bf16/f32 tensors (see [`WEIGHTS_BLOCK`]).
    Weights {
        size: u64,
        seed: u64,
        dtype: Dtype,
    },
}

#[derive(Clone, Debug)]
pub struct RepoFile {
    pub path: String,
    pub content: Content,
    /// LFS files are served by a 302 to the CDN origin (shape C); others directly (shape A).
    pub lfs: bool,
}

#[derive(Clone, Debug)]
pub struct Repo {
    /// "org/name" or "name".
    pub id: String,
    /// Commit sha (40 lowercase hex) -> the files at that commit.
    pub commits: Vec<(String, Vec<RepoFile>)>,
    /// Branch (or tag, or "refs/pr/N") name -> commit sha.
    pub branches: Vec<(String, String)>,
    /// `resolve` needs a token approved for this repo (metadata stays public).
    pub gated: bool,
    /// Invisible (RepoNotFound) without a token approved for this repo.
    pub private: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Hub,
    Cdn,
}

/// One logged request (both origins, in arrival order).
#[derive(Clone, Debug)]
pub struct Request {
    pub origin: Origin,
    pub method: String,
    /// Raw request target: path + query, exactly as received.
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    /// Status code the server answered with (a cut/stalled body still counts as its status).
    pub status: u16,
    /// All request headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Length of the body the answer declared (0 for HEAD; a cut or stalled body sent
    /// fewer bytes).
    pub body_len: u64,
}

impl Request {
    /// The repository file a `resolve` or CDN request asks for (decoded); `None` for the
    /// API.
    pub fn file_path(&self) -> Option<String> {
        let (raw, _) = split_target(&self.path);
        let segs: Vec<&str> = raw.strip_prefix('/')?.split('/').collect();
        match self.origin {
            Origin::Cdn => match parse_cdn_route(&segs)? {
                Route::Cdn { path, .. } => Some(path),
                _ => None,
            },
            Origin::Hub => {
                // `{id}/resolve/{rev}/{path}`, the id one or two segments.
                let i = (1..=2).find(|&i| segs.get(i) == Some(&"resolve") && segs[0] != "api")?;
                let (_, p) = split_rev(&segs[i + 1..])?;
                (!p.is_empty()).then(|| decode_join(p)).flatten()
            }
        }
    }
}

/// Injected misbehaviour. `path` is the decoded repo file path (e.g. "a b/ü.bin") and
/// matches `resolve` and CDN requests for that file; "*" matches every request.
/// Body faults (CutAfter, WrongBytes, WrongLength, Stall) are consumed only by GET
/// responses that carry file bytes: `resolve` for non-LFS files, the CDN for LFS files.
/// `Status` is consumed by any matching request (HEAD included).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Headers with the full Content-Length, then `bytes` of body, then close the socket.
    CutAfter {
        path: String,
        bytes: u64,
        times: u32,
    },
    /// Same length, one byte (the middle of the body) flipped.
    WrongBytes { path: String, times: u32 },
    /// Serve the file as if it were `size + delta` bytes long (truncated, or padded with
    /// zeros); Content-Length / Content-Range are consistent with the bytes sent.
    WrongLength {
        path: String,
        delta: i64,
        times: u32,
    },
    /// Reply with `status` instead (no body semantics). 429 (and any status given a
    /// `retry_after`) carries `Retry-After`; 429 also carries `RateLimit` r=0.
    Status {
        path: String,
        status: u16,
        retry_after: Option<u32>,
        times: u32,
    },
    /// `resolve` answers 307 to its own (relative) URL, forever.
    RedirectLoop { path: String },
    /// Headers + `after_bytes` of body, then silence for ~60 s (or until the server drops).
    Stall {
        path: String,
        after_bytes: u64,
        times: u32,
    },
    /// Adds a tree/siblings entry with this raw (unsafe) name at `commit`; `resolve`
    /// serves it (non-LFS, content `TRAVERSAL_CONTENT`) if asked for exactly that path.
    TraversalName {
        repo: String,
        commit: String,
        name: String,
    },
    /// Every tree page says there is a next one, at a new cursor each time (pages past
    /// the end are empty): pagination that never ends. Stays until cleared.
    EndlessTree,
    /// Every tree page's next page is the page itself. Stays until cleared.
    RepeatingTree,
    /// Every tree page is padded with `bytes` spaces after the JSON (still valid JSON,
    /// just enormous). Stays until cleared.
    PaddedTree { bytes: usize },
    /// Every file in the tree listing is listed with this size (LFS size too). Stays
    /// until cleared.
    ListedSize { size: u64 },
}

/// Content served for `Fault::TraversalName` entries.
pub const TRAVERSAL_CONTENT: &[u8] = b"you should not have written this file\n";

/// git's blob id of the empty file.
pub const EMPTY_BLOB_SHA1: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391";

/// The canonical "bigger than plain ustar allows" fixture: 8 GiB + 1 byte.
pub const BIG_SIZE: u64 = 8 * 1024 * 1024 * 1024 + 1;
pub const BIG_SEED: u64 = 8;

impl RepoFile {
    /// A regular (non-LFS) file.
    pub fn regular(path: &str, bytes: impl Into<Vec<u8>>) -> RepoFile {
        RepoFile {
            path: path.into(),
            content: Content::Bytes(bytes.into()),
            lfs: false,
        }
    }
    /// An LFS file (served through the CDN).
    pub fn lfs(path: &str, content: Content) -> RepoFile {
        RepoFile {
            path: path.into(),
            content,
            lfs: true,
        }
    }
}

impl Repo {
    /// A public repo with one commit, which `main` points to.
    pub fn new(id: &str, sha: &str, files: Vec<RepoFile>) -> Repo {
        Repo {
            id: id.into(),
            commits: vec![(sha.into(), files)],
            branches: vec![("main".into(), sha.into())],
            gated: false,
            private: false,
        }
    }
}

/// The largest shard of [`weights_model`].
pub const WEIGHTS_SHARD_MAX: u64 = 4 << 30;

/// A model of exactly `total` bytes made of weights, as `tests/scale.rs` and
/// `bench/scale.sh` serve it: `config.json`, `tokenizer.json` and
/// `model.safetensors.index.json` (git files), then LFS safetensors: one f32 file of
/// `big` bytes (`model-00001-of-…`, the one above the CDN's whole-file limit) and at
/// least two shards of at most [`WEIGHTS_SHARD_MAX`], bf16 until 35 % of the model is
/// bf16 (the mix of `bench/gen_weights.py`), then f32, the last taking the remainder.
pub fn weights_model(total: u64, big: u64) -> Vec<RepoFile> {
    weights_model_seeded(total, big, 0)
}

/// [`weights_model`] whose weights come from seeds of its own (`seed` 0 is
/// [`weights_model`]): models with other seeds share no layer, as real models do.
pub fn weights_model_seeded(total: u64, big: u64, seed: u64) -> Vec<RepoFile> {
    let seed = seed * 1000;
    let config = br#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "model_type": "llama", "torch_dtype": "bfloat16"}
"#;
    // A tokenizer-like JSON of about 1 MiB.
    let vocab: Vec<String> = (0..40_000)
        .map(|i| {
            format!(
                "\"Ġt{:x}{}\": {i}",
                splitmix64(i) % 4096,
                ["a", "er", "ing", "on"][i as usize % 4]
            )
        })
        .collect();
    let tokenizer = format!(
        "{{\"model\": {{\"type\": \"BPE\", \"vocab\": {{{}}}}}}}\n",
        vocab.join(", ")
    );
    let small = config.len() as u64 + tokenizer.len() as u64 + 4096;
    assert!(
        total >= big + small + (2 << 20),
        "a {total}-byte model cannot hold a {big}-byte file and two shards"
    );
    let rest = total - big - small;
    let shards = rest.div_ceil(WEIGHTS_SHARD_MAX).max(2);
    let n = 1 + shards;
    let name = |i: u64| format!("model-{i:05}-of-{n:05}.safetensors");
    let mut files = vec![RepoFile::lfs(
        &name(1),
        Content::weights(big, seed + 1, Dtype::F32),
    )];
    let mut bf16 = 0u64;
    for s in 0..shards {
        let size = if s + 1 == shards {
            rest - (shards - 1) * (rest / shards)
        } else {
            rest / shards
        };
        let dtype = if bf16 * 100 < total * 35 {
            bf16 += size;
            Dtype::Bf16
        } else {
            Dtype::F32
        };
        files.push(RepoFile::lfs(
            &name(s + 2),
            Content::weights(size, seed + s + 2, dtype),
        ));
    }
    let map: Vec<String> = (1..=n)
        .map(|i| format!("    \"model.layers.{i}.weight\": \"{}\"", name(i)))
        .collect();
    let mut index = format!(
        "{{\n  \"metadata\": {{\"total_size\": {}}},\n  \"weight_map\": {{\n{}\n  }}\n}}\n",
        total - small,
        map.join(",\n")
    )
    .into_bytes();
    // Pad the index so the small files are exactly `small` bytes: the model is `total`.
    let pad = small - config.len() as u64 - tokenizer.len() as u64;
    assert!(index.len() as u64 <= pad, "the index fits its 4 KiB");
    index.resize(pad as usize, b' ');
    files.push(RepoFile::regular("config.json", config.to_vec()));
    files.push(RepoFile::regular("model.safetensors.index.json", index));
    files.push(RepoFile::regular("tokenizer.json", tokenizer.into_bytes()));
    files
}

// ───────────────────────── 2. Content ─────────────────────────

/// Generated content is made of 4096-byte blocks: block index (u64 LE), seed (u64 LE),
/// then a pattern that varies within the block (so any offset shift changes bytes) but
/// repeats across blocks (so it compresses moderately).
pub const GENERATED_BLOCK: usize = 4096;

/// sha256 of generated content too big to hash in a fast test (verified by the ignored
/// test `big_generated_sha256_table_is_correct` in tests/hub_server.rs).
const KNOWN_GENERATED_SHA256: &[(u64, u64, &str)] = &[(
    BIG_SIZE,
    BIG_SEED,
    "cc460d2b6302baf1c24217ea5f44e552cc67e9ed171f3da9e97ed4848dae8e50",
)];

struct Generator {
    template: Vec<u8>,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        let mut template = vec![0u8; GENERATED_BLOCK];
        template[8..16].copy_from_slice(&seed.to_le_bytes());
        let salt = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
        for (j, b) in template.iter_mut().enumerate().skip(16) {
            *b = ((j * 7 + (j >> 8) * 13) as u8) ^ salt;
        }
        Generator { template }
    }

    /// Fills `buf` with the bytes at `offset..`: whole-block memcpy + an 8-byte patch,
    /// so it stays fast even in unoptimised test builds.
    fn fill(&self, offset: u64, buf: &mut [u8]) {
        fill_blocks(offset, buf, GENERATED_BLOCK, |block, within, dst| {
            dst.copy_from_slice(&self.template[within..within + dst.len()]);
            patch(dst, within, block.to_le_bytes());
        });
    }
}

/// Calls `copy(block, offset within the block, destination)` for each block-sized piece
/// of `offset..offset + buf.len()`.
fn fill_blocks(
    offset: u64,
    buf: &mut [u8],
    block_size: usize,
    mut copy: impl FnMut(u64, usize, &mut [u8]),
) {
    let mut pos = 0usize;
    while pos < buf.len() {
        let abs = offset + pos as u64;
        let block = abs / block_size as u64;
        let within = (abs % block_size as u64) as usize;
        let n = (block_size - within).min(buf.len() - pos);
        copy(block, within, &mut buf[pos..pos + n]);
        pos += n;
    }
}

/// Overwrites the part of a block's first 8 bytes that `dst` (starting `within` the
/// block) covers with `head`.
fn patch(dst: &mut [u8], within: usize, head: [u8; 8]) {
    if within < 8 {
        let end = 8.min(within + dst.len());
        dst[..end - within].copy_from_slice(&head[within..end]);
    }
}

/// `len` bytes of the generated content for `seed`, starting at `offset`.
pub fn generated_bytes(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    Content::Generated {
        size: u64::MAX,
        seed,
    }
    .read(offset, len)
}

/// sha256 of generated content of `size` bytes (see [`Content::sha256`]).
pub fn generated_sha256(size: u64, seed: u64) -> [u8; 32] {
    Content::Generated { size, seed }.sha256()
}

/// Always streams (no memo, no table, no cache file): for checking the table.
pub fn generated_sha256_uncached(size: u64, seed: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    Content::Generated { size, seed }.for_each_piece(|b| hasher.update(b));
    hasher.finalize().into()
}

/// The element type of generated weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    Bf16,
    F32,
}

/// `Content::Weights` is made of 64 KiB blocks, each a copy of one block of a pool of
/// tensor bytes (per dtype, made once per process), its first 8 bytes replaced by a hash
/// of (seed, block index) so no two blocks of any file are equal. The pool holds rows of
/// 2048 Gaussian values (std 0.02 times a per-row lognormal spread, as trained layers
/// have and as `bench/gen_weights.py` draws them), encoded as real IEEE bf16 or f32.
/// A block is longer than deflate's 32 KiB window, so deflate sees no repeats and
/// compresses the bytes as it does real weights; and within every run of
/// `WEIGHTS_POOL_BLOCKS` blocks each pool block is used once, so repeats are 8 MiB apart
/// or more: further than zstd level 3 looks (2 MiB) and than a 4 MiB chunk.
pub const WEIGHTS_BLOCK: usize = 64 << 10;
/// A power of two: an odd multiplier then permutes the pool's blocks.
const WEIGHTS_POOL_BLOCKS: u64 = 128;
const WEIGHTS_COLS: usize = 2048;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The pool for `dtype`: `WEIGHTS_POOL_BLOCKS` blocks of tensor rows.
fn weights_pool(dtype: Dtype) -> &'static [u8] {
    static BF16: OnceLock<Vec<u8>> = OnceLock::new();
    static F32: OnceLock<Vec<u8>> = OnceLock::new();
    let cell = match dtype {
        Dtype::Bf16 => &BF16,
        Dtype::F32 => &F32,
    };
    cell.get_or_init(|| {
        let bytes = WEIGHTS_BLOCK * WEIGHTS_POOL_BLOCKS as usize;
        let mut out = Vec::with_capacity(bytes);
        let mut state = 0x6765_6e5f_7765_6967 ^ dtype as u64;
        let mut uniform = move || {
            state = state.wrapping_add(1);
            // In (0, 1]: ln() below never sees 0.
            ((splitmix64(state) >> 11) + 1) as f64 / (1u64 << 53) as f64
        };
        // Box–Muller: two Gaussian values per pair of uniforms.
        let mut normals = std::iter::from_fn(move || {
            let (r, t) = (
                (-2.0 * uniform().ln()).sqrt(),
                std::f64::consts::TAU * uniform(),
            );
            Some([r * t.cos(), r * t.sin()])
        })
        .flatten();
        let mut scale = 0.0;
        let mut i = 0usize;
        while out.len() < bytes {
            if i % WEIGHTS_COLS == 0 {
                scale = 0.02 * (0.7 * normals.next().unwrap()).exp();
            }
            let x = (normals.next().unwrap() * scale) as f32;
            match dtype {
                Dtype::F32 => out.extend_from_slice(&x.to_le_bytes()),
                // Round to nearest even, as torch converts f32 to bf16.
                Dtype::Bf16 => {
                    let u = x.to_bits();
                    let b = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) as u16;
                    out.extend_from_slice(&b.to_le_bytes());
                }
            }
            i += 1;
        }
        out
    })
}

/// The pool block that block `k` of a weights file with `seed` copies: in each run of
/// `WEIGHTS_POOL_BLOCKS` blocks, a permutation of the pool drawn from (seed, run).
fn weights_pool_block(seed: u64, k: u64) -> u64 {
    let h = splitmix64(seed ^ splitmix64(k / WEIGHTS_POOL_BLOCKS));
    let (a, b) = (h | 1, h >> 32);
    (a.wrapping_mul(k % WEIGHTS_POOL_BLOCKS).wrapping_add(b)) % WEIGHTS_POOL_BLOCKS
}

/// Fills buffers with a content's bytes; made once per body or hash, so the per-piece
/// work is memcpy (fast even in unoptimised test builds).
enum Filler<'a> {
    Bytes(&'a [u8]),
    Pattern(Generator),
    Weights { pool: &'static [u8], seed: u64 },
}

impl Filler<'_> {
    fn fill(&self, offset: u64, buf: &mut [u8]) {
        match self {
            Filler::Bytes(b) => {
                buf.copy_from_slice(&b[offset as usize..offset as usize + buf.len()])
            }
            Filler::Pattern(g) => g.fill(offset, buf),
            Filler::Weights { pool, seed } => {
                fill_blocks(offset, buf, WEIGHTS_BLOCK, |k, within, dst| {
                    let from = weights_pool_block(*seed, k) as usize * WEIGHTS_BLOCK + within;
                    dst.copy_from_slice(&pool[from..from + dst.len()]);
                    patch(
                        dst,
                        within,
                        splitmix64(seed.rotate_left(17) ^ k).to_le_bytes(),
                    );
                })
            }
        }
    }
}

/// Generated content at least this big has its sha256 kept in a cache file.
const SHA256_CACHE_FROM: u64 = 64 << 20;

/// Where sha256s of generated content are kept across runs: `DEPOTAI_GEN_CACHE`, else
/// the integration tests' `target/tmp`, else `~/.cache/depotai/generated`.
pub fn generated_cache_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("DEPOTAI_GEN_CACHE") {
        return d.into();
    }
    if let Some(t) = option_env!("CARGO_TARGET_TMPDIR") {
        return std::path::Path::new(t).join("generated-sha256");
    }
    match std::env::var_os("HOME") {
        Some(h) => std::path::Path::new(&h).join(".cache/depotai/generated"),
        None => std::env::temp_dir().join("depotai-generated"),
    }
}

impl Content {
    /// Weight-like content (see [`WEIGHTS_BLOCK`]).
    pub fn weights(size: u64, seed: u64, dtype: Dtype) -> Content {
        Content::Weights { size, seed, dtype }
    }

    pub fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Generated { size, .. } | Content::Weights { size, .. } => *size,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn filler(&self) -> Filler<'_> {
        match self {
            Content::Bytes(b) => Filler::Bytes(b),
            Content::Generated { seed, .. } => Filler::Pattern(Generator::new(*seed)),
            Content::Weights { seed, dtype, .. } => Filler::Weights {
                pool: weights_pool(*dtype),
                seed: *seed,
            },
        }
    }

    /// Bytes at `offset..offset+len` (must be in range).
    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        assert!(
            offset + len as u64 <= self.len(),
            "read past the end of the content"
        );
        let mut v = vec![0u8; len];
        self.filler().fill(offset, &mut v);
        v
    }

    /// Calls `f` with the whole content, in order, 1 MiB at a time.
    pub fn for_each_piece(&self, mut f: impl FnMut(&[u8])) {
        let filler = self.filler();
        let size = self.len();
        let mut buf = vec![0u8; size.min(1 << 20) as usize];
        let mut off = 0u64;
        while off < size {
            let n = (size - off).min(buf.len() as u64) as usize;
            filler.fill(off, &mut buf[..n]);
            f(&buf[..n]);
            off += n as u64;
        }
    }

    /// Writes the content to `path` (streamed: any size).
    pub fn write_file(&self, path: &std::path::Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut w = io::BufWriter::new(std::fs::File::create(path)?);
        let mut r = Ok(());
        self.for_each_piece(|b| {
            if r.is_ok() {
                r = w.write_all(b);
            }
        });
        r?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// sha256 of the content. Generated content's is memoised per process; the big
    /// canonical pattern fixture's comes from a table; other generated content of
    /// `SHA256_CACHE_FROM` or more is hashed once ever and kept in a file under
    /// [`generated_cache_dir`], named by kind, size, seed and a fingerprint of the
    /// generator's bytes (a changed generator does not read a stale hash).
    pub fn sha256(&self) -> [u8; 32] {
        let (kind, size, seed) = match self {
            Content::Bytes(b) => return Sha256::digest(b).into(),
            Content::Generated { size, seed } => (None, *size, *seed),
            Content::Weights { size, seed, dtype } => (Some(*dtype), *size, *seed),
        };
        type Memo = Mutex<HashMap<(Option<Dtype>, u64, u64), [u8; 32]>>;
        static MEMO: OnceLock<Memo> = OnceLock::new();
        let memo = MEMO.get_or_init(Default::default);
        if let Some(h) = memo.lock().unwrap().get(&(kind, size, seed)) {
            return *h;
        }
        let known = KNOWN_GENERATED_SHA256
            .iter()
            .find(|(s, sd, hex)| kind.is_none() && *s == size && *sd == seed && hex.len() == 64)
            .map(|(_, _, h)| hex::decode(h).unwrap().try_into().unwrap());
        let h = known.unwrap_or_else(|| {
            let Some(file) = self.sha256_cache_file() else {
                return self.stream_sha256();
            };
            let cached = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| hex::decode(s.trim()).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            cached.unwrap_or_else(|| {
                let h = self.stream_sha256();
                // Best effort, atomically: a failed write only costs a rehash next time.
                let tmp = file.with_extension(format!("tmp{}", std::process::id()));
                let _ = std::fs::create_dir_all(file.parent().unwrap())
                    .and_then(|()| std::fs::write(&tmp, hex::encode(h)))
                    .and_then(|()| std::fs::rename(&tmp, &file));
                h
            })
        });
        memo.lock().unwrap().insert((kind, size, seed), h);
        h
    }

    /// The file that keeps this content's sha256 (generated content of
    /// `SHA256_CACHE_FROM` bytes or more).
    pub fn sha256_cache_file(&self) -> Option<std::path::PathBuf> {
        let kind = match self {
            Content::Bytes(_) => return None,
            Content::Generated { .. } => "pattern",
            Content::Weights {
                dtype: Dtype::Bf16, ..
            } => "weights-bf16",
            Content::Weights {
                dtype: Dtype::F32, ..
            } => "weights-f32",
        };
        let (Content::Generated { size, seed } | Content::Weights { size, seed, .. }) = self else {
            unreachable!()
        };
        (*size >= SHA256_CACHE_FROM).then(|| {
            generated_cache_dir().join(format!(
                "{kind}-{size}-{seed}-{}.sha256",
                self.fingerprint()
            ))
        })
    }

    fn stream_sha256(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        self.for_each_piece(|b| hasher.update(b));
        hasher.finalize().into()
    }

    /// 16 hex digits of the sha256 of the first and last 64 KiB.
    fn fingerprint(&self) -> String {
        let n = self.len().min(64 << 10);
        let mut h = Sha256::new();
        h.update(self.read(0, n as usize));
        h.update(self.read(self.len() - n, n as usize));
        hex::encode(&h.finalize()[..8])
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256())
    }

    /// git blob id: sha1("blob <len>\0" + data).
    pub fn git_blob_sha1_hex(&self) -> String {
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", self.len()).as_bytes());
        self.for_each_piece(|b| h.update(b));
        hex::encode(h.finish())
    }
}

/// git blob id of `data`, hex.
pub fn git_blob_sha1_hex(data: &[u8]) -> String {
    Content::Bytes(data.to_vec()).git_blob_sha1_hex()
}

/// The LFS pointer file git stores for an LFS object.
pub fn lfs_pointer(sha256_hex: &str, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex}\nsize {size}\n")
}

/// SHA-1 for git object ids (the `sha1` crate, behind the small API the tests use).
#[derive(Default)]
pub struct Sha1(sha1::Sha1);

impl Sha1 {
    pub fn new() -> Sha1 {
        Sha1::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        sha1::Digest::update(&mut self.0, data);
    }

    pub fn finish(self) -> [u8; 20] {
        sha1::Digest::finalize(self.0).into()
    }
}

/// A file as the server holds it; its hashes are computed on first use and kept.
struct FileEntry {
    path: String,
    content: Content,
    lfs: bool,
    meta: OnceLock<FileMeta>,
}

struct FileMeta {
    size: u64,
    /// git blob id (for LFS files: of the pointer text), hex.
    oid: String,
    /// LFS only: sha256 of the content, hex, and the pointer's length.
    sha256: Option<String>,
    pointer_size: u64,
}

impl FileEntry {
    fn new(path: String, content: Content, lfs: bool) -> Arc<FileEntry> {
        Arc::new(FileEntry {
            path,
            content,
            lfs,
            meta: OnceLock::new(),
        })
    }

    fn meta(&self) -> &FileMeta {
        self.meta.get_or_init(|| {
            let size = self.content.len();
            if self.lfs {
                let sha = self.content.sha256_hex();
                let pointer = lfs_pointer(&sha, size);
                FileMeta {
                    size,
                    oid: git_blob_sha1_hex(pointer.as_bytes()),
                    sha256: Some(sha),
                    pointer_size: pointer.len() as u64,
                }
            } else {
                FileMeta {
                    size,
                    oid: self.content.git_blob_sha1_hex(),
                    sha256: None,
                    pointer_size: 0,
                }
            }
        })
    }

    /// The CDN's own ETag: deliberately not the sha256 (like a real Xet id).
    fn cdn_etag(&self) -> String {
        let m = self.meta();
        let base = m.sha256.as_deref().unwrap_or(&m.oid);
        format!(
            "\"{}\"",
            &hex::encode(Sha256::digest(format!("xet:{base}")))[..64]
        )
    }
}

// ───────────────────────── 3. HubServer ─────────────────────────

type Files = Arc<BTreeMap<String, Arc<FileEntry>>>;

struct RepoState {
    id: String,
    commits: HashMap<String, Files>,
    branches: HashMap<String, String>,
    gated: bool,
    private: bool,
    /// TraversalName entries: (commit, entry).
    extras: Vec<(String, Arc<FileEntry>)>,
}

struct State {
    repos: HashMap<String, RepoState>,
    /// token -> repos it may read when gated/private.
    tokens: HashMap<String, BTreeSet<String>>,
    faults: Vec<Fault>,
    log: Vec<Request>,
    page_size: usize,
    empty_range_200: bool,
    /// A GET without `Range` of a file bigger than this is refused (the CDN's 50 GB rule).
    whole_file_limit: Option<u64>,
}

struct Shared {
    state: Mutex<State>,
    endpoint: String,
    cdn: String,
    stop: AtomicBool,
    /// Stalled bodies wait on this; Drop sets it and notifies.
    stopped: Mutex<bool>,
    stop_cv: Condvar,
    /// Live connections, so Drop can shut them down (wakes idle keep-alive readers).
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    verbose: bool,
}

pub struct HubServer {
    /// `http://127.0.0.1:PORT` — the Hub origin (API + resolve).
    pub endpoint: String,
    /// `http://localhost:PORT2` — the LFS CDN origin (different host and port).
    pub cdn: String,
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
    listen_addrs: Vec<SocketAddr>,
}

/// In tests, the size above which a file is served only in Range requests (see
/// [`HubServer::set_whole_file_limit`]): below every test's weights, above its configs.
pub const TEST_WHOLE_FILE_LIMIT: u64 = 1 << 20;

impl HubServer {
    /// Starts both origins. Panics on inconsistent fixtures (bad sha, dangling branch).
    pub fn start(repos: Vec<Repo>) -> HubServer {
        let mut map = HashMap::new();
        for r in repos {
            let mut commits = HashMap::new();
            for (sha, files) in r.commits {
                assert!(
                    is_sha(&sha),
                    "commit {sha:?} of {} is not 40 lowercase hex",
                    r.id
                );
                let mut m = BTreeMap::new();
                for f in files {
                    let prev = m.insert(f.path.clone(), FileEntry::new(f.path, f.content, f.lfs));
                    assert!(prev.is_none(), "duplicate path in {} @ {sha}", r.id);
                }
                commits.insert(sha, Arc::new(m));
            }
            for (b, sha) in &r.branches {
                assert!(
                    commits.contains_key(sha),
                    "branch {b} of {} -> unknown commit {sha}",
                    r.id
                );
            }
            let state = RepoState {
                id: r.id.clone(),
                commits,
                branches: r.branches.into_iter().collect(),
                gated: r.gated,
                private: r.private,
                extras: Vec::new(),
            };
            assert!(
                map.insert(r.id.clone(), state).is_none(),
                "duplicate repo {}",
                r.id
            );
        }

        let hub = TcpListener::bind("127.0.0.1:0").expect("bind hub listener");
        let cdn4 = TcpListener::bind("127.0.0.1:0").expect("bind cdn listener");
        let hub_port = hub.local_addr().unwrap().port();
        let cdn_port = cdn4.local_addr().unwrap().port();
        // `localhost` may resolve to ::1 first elsewhere: listen there too if we can.
        let cdn6 = TcpListener::bind(("::1", cdn_port)).ok();

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                repos: map,
                tokens: HashMap::new(),
                faults: Vec::new(),
                log: Vec::new(),
                page_size: 1000,
                empty_range_200: false,
                whole_file_limit: None,
            }),
            endpoint: format!("http://127.0.0.1:{hub_port}"),
            cdn: format!("http://localhost:{cdn_port}"),
            stop: AtomicBool::new(false),
            stopped: Mutex::new(false),
            stop_cv: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            verbose: std::env::var_os("DEPOTAI_HUB_LOG").is_some(),
        });

        // In the test suite a file above TEST_WHOLE_FILE_LIMIT is served only in Range
        // requests, as the real CDN serves files above 50 GB, so every Hub build the
        // suite runs proves it never asks for a big file whole (examples: off).
        if cfg!(test) {
            shared.state.lock().unwrap().whole_file_limit = Some(TEST_WHOLE_FILE_LIMIT);
        }

        let mut listeners = vec![(hub, Origin::Hub), (cdn4, Origin::Cdn)];
        listeners.extend(cdn6.map(|l| (l, Origin::Cdn)));
        let mut acceptors = Vec::new();
        let mut listen_addrs = Vec::new();
        for (l, origin) in listeners {
            listen_addrs.push(l.local_addr().unwrap());
            let sh = shared.clone();
            acceptors.push(thread::spawn(move || accept_loop(sh, l, origin)));
        }
        HubServer {
            endpoint: shared.endpoint.clone(),
            cdn: shared.cdn.clone(),
            shared,
            acceptors,
            listen_addrs,
        }
    }

    /// Tree listing page size (default 1000).
    pub fn set_tree_page_size(&self, n: usize) {
        assert!(n > 0);
        self.shared.state.lock().unwrap().page_size = n;
    }

    /// Registers a valid token; it may read the listed gated/private repos.
    pub fn add_token(&self, token: &str, approved_for: &[&str]) {
        let mut st = self.shared.state.lock().unwrap();
        let set = st.tokens.entry(token.to_string()).or_default();
        set.extend(approved_for.iter().map(|s| s.to_string()));
    }

    pub fn inject(&self, fault: Fault) {
        let mut st = self.shared.state.lock().unwrap();
        match fault {
            Fault::TraversalName { repo, commit, name } => {
                let r = st
                    .repos
                    .get_mut(&repo)
                    .unwrap_or_else(|| panic!("no repo {repo}"));
                assert!(
                    r.commits.contains_key(&commit),
                    "no commit {commit} in {repo}"
                );
                let entry = FileEntry::new(name, Content::Bytes(TRAVERSAL_CONTENT.to_vec()), false);
                r.extras.push((commit, entry));
            }
            f => st.faults.push(f),
        }
    }

    /// Removes all pending faults (TraversalName entries stay).
    pub fn clear_faults(&self) {
        self.shared.state.lock().unwrap().faults.clear();
    }

    /// A 0-byte file asked for with a Range answers 200 (empty) instead of 416 `bytes */0`.
    pub fn set_empty_range_200(&self, on: bool) {
        self.shared.state.lock().unwrap().empty_range_200 = on;
    }

    /// Refuse (400, as the Hub's CDN does above 50 GB: huggingface/xet-core#592) a GET
    /// without a `Range` header of a file bigger than `limit` bytes; `None` (the
    /// default) serves any size whole.
    pub fn set_whole_file_limit(&self, limit: Option<u64>) {
        self.shared.state.lock().unwrap().whole_file_limit = limit;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.state.lock().unwrap().log.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.state.lock().unwrap().log.clear();
    }

    /// Points `branch` (created if absent) at `to_commit`, which must exist.
    pub fn move_branch(&self, repo: &str, branch: &str, to_commit: &str) {
        let mut st = self.shared.state.lock().unwrap();
        let r = st
            .repos
            .get_mut(repo)
            .unwrap_or_else(|| panic!("no repo {repo}"));
        assert!(
            r.commits.contains_key(to_commit),
            "no commit {to_commit} in {repo}"
        );
        r.branches.insert(branch.to_string(), to_commit.to_string());
    }

    /// `{endpoint}/{repo}/resolve/{rev}/{path}` encoded the way the Hub expects
    /// (revision as one segment, each path segment percent-encoded).
    pub fn resolve_url(&self, repo: &str, rev: &str, path: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo,
            pct_segment(rev),
            pct_path(path)
        )
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        *self.shared.stopped.lock().unwrap() = true;
        self.shared.stop_cv.notify_all();
        // Wake the blocking accept() calls.
        for a in &self.listen_addrs {
            let _ = TcpStream::connect_timeout(a, Duration::from_millis(500));
        }
        for t in self.acceptors.drain(..) {
            let _ = t.join();
        }
        for (_, c) in self.shared.conns.lock().unwrap().drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener, origin: Origin) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let sh = shared.clone();
        thread::spawn(move || serve_connection(sh, stream, origin));
    }
}

// ───────────────────────── 4. Routing ─────────────────────────

enum Route {
    Info {
        id: String,
        rev: Option<String>,
    },
    Tree {
        id: String,
        rev: String,
        path: String,
    },
    Resolve {
        id: String,
        rev: String,
        path: String,
    },
    Cdn {
        id: String,
        commit: String,
        path: String,
    },
    Unknown,
}

impl Route {
    /// The file path faults are matched against (resolve and CDN routes only).
    fn file_path(&self) -> Option<&str> {
        match self {
            Route::Resolve { path, .. } | Route::Cdn { path, .. } => Some(path),
            _ => None,
        }
    }
}

enum Auth {
    Anonymous,
    Token(String),
}

/// What a request may see of a repo at one commit.
struct Snapshot {
    id: String,
    commit: String,
    files: Files,
    extras: Vec<Arc<FileEntry>>,
    private: bool,
    gated: bool,
}

impl Snapshot {
    fn find(&self, path: &str) -> Option<Arc<FileEntry>> {
        self.files
            .get(path)
            .or_else(|| self.extras.iter().find(|e| e.path == path))
            .cloned()
    }
}

impl Shared {
    fn handle(&self, origin: Origin, req: &HttpRequest) -> Response {
        let mut resp = self.route(origin, req);
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        resp.headers
            .push(("X-Request-Id".into(), format!("Root=1-{secs:08x}-{n:024x}")));
        if origin == Origin::Hub && resp.get("RateLimit").is_none() {
            let bucket = if req.target.starts_with("/api/") {
                "api"
            } else {
                "resolvers"
            };
            resp.headers
                .push(("RateLimit".into(), format!("\"{bucket}\";r=2999;t=300")));
            resp.headers.push((
                "RateLimit-Policy".into(),
                format!("\"fixed window\";\"{bucket}\";q=3000;w=300"),
            ));
        }
        resp
    }

    fn route(&self, origin: Origin, req: &HttpRequest) -> Response {
        let (raw_path, raw_query) = split_target(&req.target);
        let segs: Vec<&str> = raw_path
            .strip_prefix('/')
            .unwrap_or(raw_path)
            .split('/')
            .collect();
        let parsed = match origin {
            Origin::Hub => self.parse_hub_route(&segs),
            Origin::Cdn => parse_cdn_route(&segs),
        };
        let Some(route) = parsed else {
            return hub_error(400, None, "Invalid percent-encoding in path");
        };
        if let Some(resp) = self.take_status_fault(route.file_path()) {
            return resp;
        }
        if req.method != "GET" && req.method != "HEAD" {
            return hub_error(405, None, "Method not allowed").header("Allow", "GET, HEAD");
        }
        let query = parse_query(raw_query);
        match route {
            Route::Info { id, rev } => self.api_info(req, &id, rev.as_deref(), &query),
            Route::Tree { id, rev, path } => {
                self.api_tree(req, raw_path, raw_query, &query, &id, &rev, &path)
            }
            Route::Resolve { id, rev, path } => self.resolve(req, &id, &rev, &path),
            Route::Cdn { id, commit, path } => self.cdn_get(req, &query, &id, &commit, &path),
            Route::Unknown => hub_error(404, None, "Not Found"),
        }
    }

    /// `/api/models/{id}[/revision/{rev}]`, `/api/models/{id}/tree/{rev}[/{path}]`,
    /// `/{id}/resolve/{rev}/{path}`. `{id}` is one or two segments; when both readings
    /// parse, the one naming an existing repo wins.
    fn parse_hub_route(&self, segs: &[&str]) -> Option<Route> {
        let exists = |id: &str| self.state.lock().unwrap().repos.contains_key(id);
        let mut candidates: Vec<(bool, Route)> = Vec::new();
        if segs.len() >= 3 && segs[0] == "api" && segs[1] == "models" {
            let rest = &segs[2..];
            for k in [2usize, 1] {
                if rest.len() < k {
                    continue;
                }
                let id = decode_join(&rest[..k])?;
                let tail = &rest[k..];
                let route = match tail.first() {
                    None => Some(Route::Info {
                        id: id.clone(),
                        rev: None,
                    }),
                    Some(&"revision") => match split_rev(&tail[1..])? {
                        (rev, []) => Some(Route::Info {
                            id: id.clone(),
                            rev: Some(rev),
                        }),
                        _ => None,
                    },
                    Some(&"tree") => {
                        let (rev, p) = split_rev(&tail[1..])?;
                        Some(Route::Tree {
                            id: id.clone(),
                            rev,
                            path: decode_join(p)?,
                        })
                    }
                    _ => None,
                };
                if let Some(r) = route {
                    candidates.push((exists(&id), r));
                }
            }
        } else {
            for k in [2usize, 1] {
                if segs.len() >= k + 3 && segs[k] == "resolve" {
                    let id = decode_join(&segs[..k])?;
                    let (rev, p) = split_rev(&segs[k + 1..])?;
                    if p.is_empty() {
                        continue;
                    }
                    let path = decode_join(p)?;
                    candidates.push((exists(&id), Route::Resolve { id, rev, path }));
                }
            }
        }
        let pick = candidates.iter().position(|(e, _)| *e).unwrap_or(0);
        Some(if candidates.is_empty() {
            Route::Unknown
        } else {
            candidates.swap_remove(pick).1
        })
    }

    /// Token check, repo visibility, gating (only when `need_gated`), revision resolution,
    /// in the Hub's order. Errors are ready-made responses.
    fn access(
        &self,
        req: &HttpRequest,
        id: &str,
        rev: Option<&str>,
        need_gated: bool,
    ) -> Result<Snapshot, Response> {
        let st = self.state.lock().unwrap();
        let auth = match req.header("authorization") {
            None => Auth::Anonymous,
            Some(v) => {
                let token = v
                    .split_once(' ')
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                    .map(|(_, t)| t.trim());
                match token {
                    Some(t) if st.tokens.contains_key(t) => Auth::Token(t.to_string()),
                    _ => {
                        return Err(hub_error(
                            401,
                            None,
                            "Invalid credentials in Authorization header",
                        ))
                    }
                }
            }
        };
        let approved = match &auth {
            Auth::Token(t) => st.tokens[t].contains(id),
            Auth::Anonymous => false,
        };
        let repo = match st.repos.get(id) {
            Some(r) if !r.private || approved => r,
            _ => {
                let status = if matches!(auth, Auth::Anonymous) {
                    401
                } else {
                    404
                };
                return Err(hub_error(
                    status,
                    Some("RepoNotFound"),
                    "Repository not found",
                ));
            }
        };
        if need_gated && repo.gated && !approved {
            return Err(match auth {
                Auth::Anonymous => hub_error(
                    401,
                    Some("GatedRepo"),
                    &format!("Access to model {id} is restricted. You must have access to it and be authenticated to access it. Please log in."),
                ),
                Auth::Token(_) => hub_error(
                    403,
                    Some("GatedRepo"),
                    &format!("Access to model {id} is restricted and you are not in the authorized list. Visit https://huggingface.co/{id} to ask for access."),
                ),
            });
        }
        let rev = rev.unwrap_or("main");
        let commit = if is_sha(rev) && repo.commits.contains_key(rev) {
            rev.to_string()
        } else if let Some(c) = repo.branches.get(rev) {
            c.clone()
        } else {
            return Err(hub_error(
                404,
                Some("RevisionNotFound"),
                &format!("Invalid rev id: {rev}"),
            ));
        };
        Ok(Snapshot {
            id: repo.id.clone(),
            files: repo.commits[&commit].clone(),
            extras: repo
                .extras
                .iter()
                .filter(|(c, _)| *c == commit)
                .map(|(_, e)| e.clone())
                .collect(),
            commit,
            private: repo.private,
            gated: repo.gated,
        })
    }

    /// Signed CDN URL for an LFS file (fake CloudFront-style query; the CDN checks `Signature`).
    fn cdn_url(&self, id: &str, commit: &str, path: &str) -> String {
        let name = path.rsplit('/').next().unwrap_or(path);
        format!(
            "{}/lfs/{}/{}/{}?Expires=4102444800&Policy=eyJmYWtlIjp0cnVlfQ__&Signature={}&Key-Pair-Id=KDEPOTAIFAKE&response-content-disposition={}",
            self.cdn,
            pct_segment(id),
            commit,
            pct_path(path),
            cdn_signature(id, commit, path),
            pct_segment(&format!("inline; filename*=UTF-8''{}", pct_segment(name))),
        )
    }
}

/// `/lfs/{pct(id)}/{commit}/{path...}`
fn parse_cdn_route(segs: &[&str]) -> Option<Route> {
    if segs.len() >= 4 && segs[0] == "lfs" {
        Some(Route::Cdn {
            id: pct_decode(segs[1])?,
            commit: pct_decode(segs[2])?,
            path: decode_join(&segs[3..])?,
        })
    } else {
        Some(Route::Unknown)
    }
}

fn cdn_signature(id: &str, commit: &str, path: &str) -> String {
    hex::encode(&Sha256::digest(format!("depotai-fake-cdn-key\0{id}\0{commit}\0{path}"))[..16])
}

/// The revision is one segment (`refs%2Fpr%2F1`); an unescaped `refs/pr/N` or
/// `refs/convert/X` is accepted too. Returns (decoded rev, remaining segments).
fn split_rev<'a, 'b>(segs: &'a [&'b str]) -> Option<(String, &'a [&'b str])> {
    match segs {
        [] => None,
        ["refs", kind @ ("pr" | "convert"), n, rest @ ..] => {
            Some((format!("refs/{kind}/{}", pct_decode(n)?), rest))
        }
        [rev, rest @ ..] => Some((pct_decode(rev)?, rest)),
    }
}

fn is_sha(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ───────────────────────── 5. Handlers ─────────────────────────

const FIXED_DATE: &str = "2024-01-01T00:00:00.000Z";

impl Shared {
    /// `GET /api/models/{id}[/revision/{rev}][?blobs=true]`
    fn api_info(
        &self,
        req: &HttpRequest,
        id: &str,
        rev: Option<&str>,
        query: &[(String, String)],
    ) -> Response {
        let snap = match self.access(req, id, rev, false) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let blobs = query_flag(query, "blobs");
        let mut siblings = Vec::new();
        let mut used = 0u64;
        for f in snap.extras.iter().chain(snap.files.values()) {
            let mut s = json!({ "rfilename": f.path });
            if blobs {
                let m = f.meta();
                s["size"] = json!(m.size);
                s["blobId"] = json!(m.oid);
                if let Some(sha) = &m.sha256 {
                    s["lfs"] =
                        json!({ "sha256": sha, "size": m.size, "pointerSize": m.pointer_size });
                }
                used += m.size;
            }
            siblings.push(s);
        }
        let author = snap.id.split_once('/').map(|(o, _)| o.to_string());
        let body = json!({
            "_id": &hex::encode(Sha256::digest(snap.id.as_bytes()))[..24],
            "id": snap.id,
            "modelId": snap.id,
            "author": author,
            "sha": snap.commit,
            "lastModified": FIXED_DATE,
            "createdAt": FIXED_DATE,
            "private": snap.private,
            "disabled": false,
            "gated": if snap.gated { json!("manual") } else { json!(false) },
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": null,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": used,
        });
        json_response(200, &body)
    }

    /// `GET /api/models/{id}/tree/{rev}[/{path}][?recursive=true][&expand=true][&cursor=..]`
    #[allow(clippy::too_many_arguments)]
    fn api_tree(
        &self,
        req: &HttpRequest,
        raw_path: &str,
        raw_query: &str,
        query: &[(String, String)],
        id: &str,
        rev: &str,
        path: &str,
    ) -> Response {
        let snap = match self.access(req, id, Some(rev), false) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let recursive = query_flag(query, "recursive");
        let expand = query_flag(query, "expand");
        let offset = match query.iter().find(|(k, _)| k == "cursor") {
            None => 0,
            Some((_, c)) => match decode_cursor(c) {
                Some(o) => o,
                None => return hub_error(400, None, "Invalid cursor"),
            },
        };
        let page_size = self.state.lock().unwrap().page_size;
        let (mut endless, mut repeating, mut pad, mut listed_size) = (false, false, 0, None);
        for f in &self.state.lock().unwrap().faults {
            match f {
                Fault::EndlessTree => endless = true,
                Fault::RepeatingTree => repeating = true,
                Fault::PaddedTree { bytes } => pad = *bytes,
                Fault::ListedSize { size } => listed_size = Some(*size),
                _ => {}
            }
        }

        let root = DirNode::build(&snap.files);
        let base = path.trim_end_matches('/');
        let Some(dir) = root.find(base) else {
            return hub_error(
                404,
                Some("EntryNotFound"),
                &format!("{base} does not exist on \"{rev}\""),
            )
            .header("X-Repo-Commit", &snap.commit);
        };
        let mut items: Vec<TreeItem> = Vec::new();
        if base.is_empty() {
            items.extend(snap.extras.iter().map(|e| TreeItem::File(e.clone())));
        }
        let prefix = if base.is_empty() {
            String::new()
        } else {
            format!("{base}/")
        };
        dir.collect(&prefix, recursive, &mut items);

        let end = offset.saturating_add(page_size).min(items.len());
        let mut page: Vec<Value> = items
            .get(offset.min(items.len())..end)
            .unwrap_or(&[])
            .iter()
            .map(|it| it.to_json(expand, &snap.commit))
            .collect();
        if let Some(size) = listed_size {
            for v in page.iter_mut().filter(|v| v["type"] == "file") {
                v["size"] = json!(size);
                if v["lfs"].is_object() {
                    v["lfs"]["size"] = json!(size);
                }
            }
        }
        let mut resp = json_response(200, &Value::Array(page));
        if pad > 0 {
            if let Body::Bytes(b) = &mut resp.body {
                b.resize(b.len() + pad, b' ');
            }
        }
        let end = if repeating {
            offset
        } else if endless {
            offset.saturating_add(page_size.max(1))
        } else {
            end
        };
        if end < items.len() || endless || repeating {
            // Absolute, pointing at this server, keeping the caller's other parameters.
            let mut q: Vec<&str> = raw_query
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
                .collect();
            let c = format!("cursor={}", encode_cursor(end));
            q.push(&c);
            let url = format!("{}{}?{}", self.endpoint, raw_path, q.join("&"));
            resp = resp.header("Link", &format!("<{url}>; rel=\"next\""));
        }
        resp
    }

    /// `HEAD|GET /{id}/resolve/{rev}/{path}`: shape A for regular files, shape C (302 to
    /// the CDN) for LFS files.
    fn resolve(&self, req: &HttpRequest, id: &str, rev: &str, path: &str) -> Response {
        if self.redirect_loop(path) {
            return text_response(
                307,
                format!("Temporary Redirect. Redirecting to {}", req.target),
            )
            .header("Location", &req.target);
        }
        let snap = match self.access(req, id, Some(rev), true) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let Some(file) = snap.find(path) else {
            return hub_error(404, Some("EntryNotFound"), "Entry not found")
                .header("X-Repo-Commit", &snap.commit);
        };
        let m = file.meta();
        if let Some(sha) = &m.sha256 {
            let loc = self.cdn_url(&snap.id, &snap.commit, path);
            return text_response(302, format!("Found. Redirecting to {loc}"))
                .header("Location", &loc)
                .header("X-Repo-Commit", &snap.commit)
                .header("X-Linked-Etag", &format!("\"{sha}\""))
                .header("X-Linked-Size", &m.size.to_string())
                .header("ETag", &format!("\"{}\"", m.oid))
                .header("Accept-Ranges", "bytes");
        }
        let etag = format!("\"{}\"", m.oid);
        let headers = vec![
            ("ETag".to_string(), etag.clone()),
            ("X-Repo-Commit".to_string(), snap.commit.clone()),
            ("Accept-Ranges".to_string(), "bytes".to_string()),
            ("Content-Type".to_string(), content_type(path).to_string()),
        ];
        if let Some(inm) = req.header("if-none-match") {
            let hit = inm
                .split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == m.oid || t == "*");
            if hit {
                return Response {
                    status: 304,
                    headers,
                    body: Body::Bytes(Vec::new()),
                };
            }
        }
        self.serve_file(req, path, file, headers)
    }

    /// CDN: signed URL, no Authorization allowed, serves bytes with ranges; no X-Repo-Commit.
    fn cdn_get(
        &self,
        req: &HttpRequest,
        query: &[(String, String)],
        id: &str,
        commit: &str,
        path: &str,
    ) -> Response {
        if req.header("authorization").is_some() {
            return s3_error(403, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified");
        }
        let sig = query
            .iter()
            .find(|(k, _)| k == "Signature")
            .map(|(_, v)| v.as_str());
        if sig != Some(cdn_signature(id, commit, path).as_str()) {
            return s3_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            );
        }
        let file = {
            let st = self.state.lock().unwrap();
            st.repos.get(id).and_then(|r| {
                r.commits
                    .get(commit)
                    .and_then(|files| files.get(path).cloned())
                    .or_else(|| {
                        r.extras
                            .iter()
                            .find(|(c, e)| c == commit && e.path == path)
                            .map(|(_, e)| e.clone())
                    })
            })
        };
        let Some(file) = file else {
            return s3_error(404, "NoSuchKey", "The specified key does not exist.");
        };
        let headers = vec![
            ("ETag".to_string(), file.cdn_etag()),
            ("Accept-Ranges".to_string(), "bytes".to_string()),
            (
                "Content-Type".to_string(),
                "application/octet-stream".to_string(),
            ),
            (
                "Cache-Control".to_string(),
                "public, max-age=604800, immutable".to_string(),
            ),
        ];
        self.serve_file(req, path, file, headers)
    }

    /// 200 / 206 / 416 for a file's bytes, with any body fault for `path` applied.
    fn serve_file(
        &self,
        req: &HttpRequest,
        path: &str,
        file: Arc<FileEntry>,
        mut headers: Vec<(String, String)>,
    ) -> Response {
        let limit = self.state.lock().unwrap().whole_file_limit;
        let whole = matches!(
            parse_range(req.header("range"), file.content.len()),
            RangeSpec::Full
        );
        if req.method == "GET" && whole && limit.is_some_and(|l| file.content.len() > l) {
            return s3_error(
                400,
                "InvalidRequest",
                &format!(
                    "The file is {} bytes; files over {} bytes are served only in Range requests.",
                    file.content.len(),
                    limit.unwrap_or_default()
                ),
            );
        }
        let fault = if req.method == "GET" {
            self.take_body_fault(path)
        } else {
            None
        };
        let real_size = file.content.len();
        let size = match fault {
            Some(BodyFault::Length(d)) => (real_size as i128 + d as i128).max(0) as u64,
            _ => real_size,
        };
        let empty_range_200 = self.state.lock().unwrap().empty_range_200;
        let (status, start, len) = match parse_range(req.header("range"), size) {
            RangeSpec::Full => (200, 0, size),
            RangeSpec::Partial(a, b) => {
                headers.push(("Content-Range".into(), format!("bytes {a}-{b}/{size}")));
                (206, a, b - a + 1)
            }
            RangeSpec::Unsatisfiable if size == 0 && empty_range_200 => (200, 0, 0),
            RangeSpec::Unsatisfiable => {
                headers.retain(|(k, _)| k != "Content-Type");
                headers.push(("Content-Range".into(), format!("bytes */{size}")));
                return Response {
                    status: 416,
                    headers,
                    body: Body::Bytes(Vec::new()),
                };
            }
        };
        Response {
            status,
            headers,
            body: Body::File(FileBody {
                file,
                start,
                len,
                real_size,
                fault,
            }),
        }
    }
}

/// Directory tree of one commit, for listings and git tree ids.
#[derive(Default)]
struct DirNode {
    dirs: BTreeMap<String, DirNode>,
    files: BTreeMap<String, Arc<FileEntry>>,
}

enum TreeItem<'a> {
    Dir(String, &'a DirNode),
    File(Arc<FileEntry>),
}

impl DirNode {
    fn build(files: &BTreeMap<String, Arc<FileEntry>>) -> DirNode {
        let mut root = DirNode::default();
        for (path, f) in files {
            let mut parts: Vec<&str> = path.split('/').collect();
            let name = parts.pop().unwrap();
            let mut d = &mut root;
            for p in parts {
                d = d.dirs.entry(p.to_string()).or_default();
            }
            d.files.insert(name.to_string(), f.clone());
        }
        root
    }

    fn find(&self, path: &str) -> Option<&DirNode> {
        if path.is_empty() {
            return Some(self);
        }
        let mut d = self;
        for p in path.split('/') {
            d = d.dirs.get(p)?;
        }
        Some(d)
    }

    /// Per level: directories first, then files (both sorted); then, if recursive, the
    /// contents of each subdirectory.
    fn collect<'a>(&'a self, prefix: &str, recursive: bool, out: &mut Vec<TreeItem<'a>>) {
        out.extend(
            self.dirs
                .iter()
                .map(|(n, d)| TreeItem::Dir(format!("{prefix}{n}"), d)),
        );
        out.extend(self.files.values().map(|f| TreeItem::File(f.clone())));
        if recursive {
            for (n, d) in &self.dirs {
                d.collect(&format!("{prefix}{n}/"), true, out);
            }
        }
    }

    /// Real git tree id (entries in git order: directories sort as "name/").
    fn git_oid(&self) -> [u8; 20] {
        let mut entries: Vec<(Vec<u8>, &str, &str, [u8; 20])> = Vec::new();
        for (n, d) in &self.dirs {
            entries.push((format!("{n}/").into_bytes(), "40000", n, d.git_oid()));
        }
        for (n, f) in &self.files {
            let oid: [u8; 20] = hex::decode(&f.meta().oid).unwrap().try_into().unwrap();
            entries.push((n.as_bytes().to_vec(), "100644", n, oid));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut body = Vec::new();
        for (_, mode, name, oid) in entries {
            body.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            body.extend_from_slice(&oid);
        }
        let mut h = Sha1::new();
        h.update(format!("tree {}\0", body.len()).as_bytes());
        h.update(&body);
        h.finish()
    }
}

impl TreeItem<'_> {
    fn to_json(&self, expand: bool, commit: &str) -> Value {
        let mut v = match self {
            TreeItem::Dir(path, d) => {
                json!({ "type": "directory", "oid": hex::encode(d.git_oid()), "size": 0, "path": path })
            }
            TreeItem::File(f) => {
                let m = f.meta();
                let mut v = json!({ "type": "file", "oid": m.oid, "size": m.size, "path": f.path });
                if let Some(sha) = &m.sha256 {
                    v["lfs"] = json!({ "oid": sha, "size": m.size, "pointerSize": m.pointer_size });
                }
                v
            }
        };
        if expand {
            v["lastCommit"] = json!({ "id": commit, "title": "Upload folder using huggingface_hub", "date": FIXED_DATE });
            if matches!(self, TreeItem::File(_)) {
                v["securityFileStatus"] = json!({ "status": "safe" });
            }
        }
        v
    }
}

/// Opaque-looking cursor: hex of a small JSON object.
fn encode_cursor(offset: usize) -> String {
    hex::encode(format!("{{\"offset\":{offset}}}"))
}

fn decode_cursor(c: &str) -> Option<usize> {
    let s = String::from_utf8(hex::decode(c).ok()?).ok()?;
    s.strip_prefix("{\"offset\":")?
        .strip_suffix('}')?
        .parse()
        .ok()
}

fn content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "json" => "application/json; charset=utf-8",
        "txt" | "md" | "py" | "gitattributes" | "model" | "yaml" | "yml" => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

// ───────────────────────── 6. Faults ─────────────────────────

#[derive(Clone, Copy, Debug)]
enum BodyFault {
    Cut(u64),
    Flip,
    Length(i64),
    Stall(u64),
}

fn fault_matches(fault_path: &str, path: Option<&str>) -> bool {
    fault_path == "*" || Some(fault_path) == path
}

impl Shared {
    /// Consumes one matching `Status` fault and builds its response.
    fn take_status_fault(&self, path: Option<&str>) -> Option<Response> {
        let mut st = self.state.lock().unwrap();
        let i = st.faults.iter().position(|f| matches!(f, Fault::Status { path: p, times, .. } if *times > 0 && fault_matches(p, path)))?;
        let Fault::Status {
            status,
            retry_after,
            times,
            ..
        } = &mut st.faults[i]
        else {
            unreachable!()
        };
        let (status, retry_after) = (*status, *retry_after);
        *times -= 1;
        if *times == 0 {
            st.faults.remove(i);
        }
        drop(st);
        let msg = match status {
            429 => "Rate limit exceeded, retry later",
            500 => "Internal Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Injected failure",
        };
        let mut r = hub_error(status, None, msg);
        if let Some(s) = retry_after {
            r = r.header("Retry-After", &s.to_string());
        }
        if status == 429 {
            let t = retry_after.unwrap_or(300);
            r = r
                .header("RateLimit", &format!("\"resolvers\";r=0;t={t}"))
                .header(
                    "RateLimit-Policy",
                    "\"fixed window\";\"resolvers\";q=3000;w=300",
                );
        }
        Some(r)
    }

    fn redirect_loop(&self, path: &str) -> bool {
        let st = self.state.lock().unwrap();
        st.faults
            .iter()
            .any(|f| matches!(f, Fault::RedirectLoop { path: p } if fault_matches(p, Some(path))))
    }

    /// Consumes the first matching body fault.
    fn take_body_fault(&self, path: &str) -> Option<BodyFault> {
        let mut st = self.state.lock().unwrap();
        for i in 0..st.faults.len() {
            let (p, times, bf) = match &mut st.faults[i] {
                Fault::CutAfter { path, bytes, times } => (path, times, BodyFault::Cut(*bytes)),
                Fault::WrongBytes { path, times } => (path, times, BodyFault::Flip),
                Fault::WrongLength { path, delta, times } => {
                    (path, times, BodyFault::Length(*delta))
                }
                Fault::Stall {
                    path,
                    after_bytes,
                    times,
                } => (path, times, BodyFault::Stall(*after_bytes)),
                _ => continue,
            };
            if *times == 0 || !fault_matches(p, Some(path)) {
                continue;
            }
            *times -= 1;
            if *times == 0 {
                st.faults.remove(i);
            }
            return Some(bf);
        }
        None
    }

    /// Holds a stalled connection until ~60 s pass or the server is dropped.
    fn stall(&self) {
        let g = self.stopped.lock().unwrap();
        let _ = self
            .stop_cv
            .wait_timeout_while(g, Duration::from_secs(60), |stopped| !*stopped);
    }
}

// ───────────────────────── 7. Responses ─────────────────────────

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    File(FileBody),
}

/// `len` bytes of `file` from `start`, as the (possibly faulted) server sees it:
/// offsets past `real_size` (WrongLength > 0) read as zeros.
struct FileBody {
    file: Arc<FileEntry>,
    start: u64,
    len: u64,
    real_size: u64,
    fault: Option<BodyFault>,
}

impl Response {
    fn header(mut self, k: &str, v: &str) -> Response {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }

    fn body_len(&self) -> u64 {
        match &self.body {
            Body::Bytes(b) => b.len() as u64,
            Body::File(f) => f.len,
        }
    }
}

fn json_response(status: u16, v: &Value) -> Response {
    Response {
        status,
        headers: vec![(
            "Content-Type".into(),
            "application/json; charset=utf-8".into(),
        )],
        body: Body::Bytes(serde_json::to_vec(v).unwrap()),
    }
}

fn text_response(status: u16, text: String) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
        body: Body::Bytes(text.into_bytes()),
    }
}

/// Hub error: `X-Error-Code` (when the Hub sends one), `X-Error-Message`, JSON body.
fn hub_error(status: u16, code: Option<&str>, msg: &str) -> Response {
    let mut r = json_response(status, &json!({ "error": msg }));
    if let Some(c) = code {
        r = r.header("X-Error-Code", c);
    }
    r.header("X-Error-Message", msg)
}

/// S3/CloudFront-style XML error, as the CDN answers.
fn s3_error(status: u16, code: &str, msg: &str) -> Response {
    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message></Error>");
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/xml".into())],
        body: Body::Bytes(body.into_bytes()),
    }
}

enum RangeSpec {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

/// One range of `bytes=a-b`, `bytes=a-`, `bytes=-n`; `b >= size` is clamped (hf-hub asks
/// one past the end); malformed or multi-range headers are ignored (200).
fn parse_range(h: Option<&str>, size: u64) -> RangeSpec {
    let Some(h) = h else { return RangeSpec::Full };
    let Some((unit, spec)) = h.trim().split_once('=') else {
        return RangeSpec::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeSpec::Full;
        };
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Partial(size.saturating_sub(n), size - 1);
    }
    let Ok(a) = a.parse::<u64>() else {
        return RangeSpec::Full;
    };
    let end = if b.is_empty() {
        None
    } else {
        match b.parse::<u64>() {
            Ok(b) if b >= a => Some(b),
            _ => return RangeSpec::Full,
        }
    };
    if a >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Partial(a, end.map_or(size - 1, |b| b.min(size - 1)))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

// ── URL encoding helpers ──

fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

fn hexval(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes one segment to UTF-8 (invalid escapes stay literal; invalid UTF-8 → None).
fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Decodes each segment separately, then joins with '/' (so `%2F` inside a segment and
/// real separators end up the same, as on the Hub).
fn decode_join(segs: &[&str]) -> Option<String> {
    Some(
        segs.iter()
            .map(|s| pct_decode(s))
            .collect::<Option<Vec<_>>>()?
            .join("/"),
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes each '/'-separated segment of a repo path.
pub fn pct_path(p: &str) -> String {
    p.split('/').map(pct_segment).collect::<Vec<_>>().join("/")
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| pct_decode(&s.replace('+', " ")).unwrap_or_else(|| s.to_string());
            (dec(k), dec(v))
        })
        .collect()
}

fn query_flag(q: &[(String, String)], key: &str) -> bool {
    q.iter()
        .any(|(k, v)| k == key && matches!(v.to_ascii_lowercase().as_str(), "true" | "1"))
}

// ───────────────────────── 8. HTTP/1.1 ─────────────────────────

const MAX_HEAD: u64 = 64 * 1024;
const CHUNK: u64 = 256 * 1024;

struct HttpRequest {
    method: String,
    target: String,
    /// HTTP/1.0, `Connection: close`, or a request body we can't frame.
    close: bool,
    headers: Vec<(String, String)>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request head (and discards any Content-Length body). `Ok(None)` = clean EOF.
fn read_request(r: &mut BufReader<TcpStream>) -> io::Result<Option<HttpRequest>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut budget = MAX_HEAD;
    let mut line = Vec::new();
    let mut read_line = |r: &mut BufReader<TcpStream>, line: &mut Vec<u8>| -> io::Result<usize> {
        line.clear();
        let n = r.by_ref().take(budget).read_until(b'\n', line)?;
        budget -= n as u64;
        if n > 0 && !line.ends_with(b"\n") {
            return Err(bad("request head too large or truncated"));
        }
        while line.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
            line.pop();
        }
        Ok(n)
    };
    // Tolerate stray CRLFs between requests (RFC 9112 §2.2).
    loop {
        if read_line(r, &mut line)? == 0 {
            return Ok(None);
        }
        if !line.is_empty() {
            break;
        }
    }
    let start = String::from_utf8_lossy(&line).to_string();
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("bad request line"));
    };
    let (method, target, version) = (method.to_string(), target.to_string(), version.to_string());
    let mut headers = Vec::new();
    loop {
        if read_line(r, &mut line)? == 0 {
            return Err(bad("EOF in headers"));
        }
        if line.is_empty() {
            break;
        }
        let l = String::from_utf8_lossy(&line);
        let (k, v) = l.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut req = HttpRequest {
        method,
        target,
        close: version != "HTTP/1.1",
        headers,
    };
    if let Some(c) = req.header("connection") {
        if c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
            req.close = true;
        }
    }
    if req.header("transfer-encoding").is_some() {
        req.close = true; // can't find the next request reliably: answer, then close
    } else if let Some(n) = req
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    }
    Ok(Some(req))
}

fn serve_connection(shared: Arc<Shared>, stream: TcpStream, origin: Origin) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let (Ok(read_half), Ok(registered)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    shared.conns.lock().unwrap().insert(id, registered);
    // Drop may have run between accept and registration.
    if !shared.stop.load(Ordering::SeqCst) {
        let mut reader = BufReader::new(read_half);
        let mut w = stream;
        loop {
            let req = match read_request(&mut reader) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let resp = hub_error(400, None, "Bad Request");
                    let _ = write_response(&shared, &mut w, resp, false, true);
                    break;
                }
                Err(_) => break,
            };
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            let resp = shared.handle(origin, &req);
            if shared.verbose {
                eprintln!(
                    "[hub] {:?} {} {} -> {}",
                    origin, req.method, req.target, resp.status
                );
            }
            shared.state.lock().unwrap().log.push(Request {
                origin,
                method: req.method.clone(),
                path: req.target.clone(),
                range: req.header("range").map(String::from),
                authorization: req.header("authorization").map(String::from),
                status: resp.status,
                headers: req.headers.clone(),
                body_len: if req.method == "HEAD" || resp.status == 304 {
                    0
                } else {
                    resp.body_len()
                },
            });
            match write_response(&shared, &mut w, resp, req.method == "HEAD", req.close) {
                Ok(true) => {}
                _ => break,
            }
        }
        let _ = w.shutdown(Shutdown::Both);
    }
    shared.conns.lock().unwrap().remove(&id);
}

/// Header values must not break framing (decoded revs can hold anything).
fn sanitize(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Writes head + body. Returns Ok(true) if the connection may be reused.
fn write_response(
    shared: &Shared,
    w: &mut TcpStream,
    resp: Response,
    head_only: bool,
    close: bool,
) -> io::Result<bool> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {}\r\n", sanitize(v)));
    }
    if resp.status != 304 {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body_len()));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    match resp.body {
        Body::Bytes(b) => {
            if !head_only && resp.status != 304 {
                out.extend_from_slice(&b);
            }
            w.write_all(&out)?;
            w.flush()?;
        }
        Body::File(fb) => {
            w.write_all(&out)?;
            if !head_only && !write_file_body(shared, w, &fb)? {
                return Ok(false);
            }
            w.flush()?;
        }
    }
    Ok(!close)
}

/// Streams a file body, applying its fault. Ok(false) = the connection must end.
fn write_file_body(shared: &Shared, w: &mut TcpStream, fb: &FileBody) -> io::Result<bool> {
    let limit = match fb.fault {
        Some(BodyFault::Cut(k)) | Some(BodyFault::Stall(k)) => k.min(fb.len),
        _ => fb.len,
    };
    let filler = fb.file.content.filler();
    let flip_at = fb.len / 2;
    let mut buf = vec![0u8; limit.min(CHUNK) as usize];
    let mut sent = 0u64;
    while sent < limit {
        let n = (limit - sent).min(CHUNK) as usize;
        let chunk = &mut buf[..n];
        let off = fb.start + sent;
        // Real bytes up to real_size, zeros past it (WrongLength > 0).
        let real_n = fb.real_size.saturating_sub(off).min(n as u64) as usize;
        if real_n > 0 {
            filler.fill(off, &mut chunk[..real_n]);
        }
        chunk[real_n..].fill(0);
        if matches!(fb.fault, Some(BodyFault::Flip)) && (sent..sent + n as u64).contains(&flip_at) {
            chunk[(flip_at - sent) as usize] ^= 0xFF;
        }
        w.write_all(chunk)?;
        sent += n as u64;
    }
    match fb.fault {
        Some(BodyFault::Cut(_)) => {
            w.flush()?;
            // FIN (not RST): the request was fully read, so nothing unread is pending.
            let _ = w.shutdown(Shutdown::Both);
            Ok(false)
        }
        Some(BodyFault::Stall(_)) => {
            w.flush()?;
            shared.stall();
            Ok(false)
        }
        _ => Ok(true),
    }
}

/// `depotai` pointed at `server` with a private `HF_HOME`: no token, no offline mode, no
/// inherited cache, and short retry/timeouts so fault tests stay quick.
pub fn depotai_against(server: &HubServer, hf_home: &std::path::Path) -> std::process::Command {
    let mut c = super::depotai();
    c.env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_TOKEN_PATH")
        .env("HF_ENDPOINT", &server.endpoint)
        .env("HF_HOME", hf_home)
        .env("DEPOTAI_RETRY_BASE", "0.05")
        .env("DEPOTAI_IDLE_TIMEOUT", "2")
        .env("DEPOTAI_CONNECT_TIMEOUT", "2");
    c
}
