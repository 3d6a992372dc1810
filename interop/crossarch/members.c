/*
 * Compresses each input file into one member exactly as depotai's layers make their
 * members (src/layer/members.rs, Codec::compressor) and prints each member's sha256, so
 * the same program built for x86-64 and for aarch64 (scripts/crossarch.sh) shows whether
 * the pinned encoders give the same bytes on both. tests/crossarch.rs feeds it the
 * uncompressed members of depotai's own layers (payload chunks of 4 MiB with their tar
 * headers, the TOC, the tar-split), so it is cut exactly as the layers are.
 *
 *   members [--gzip FROM-TO] [--zstd FROM-TO] [--zstd-stream FROM-TO] FILE...
 *
 *   gzip: libdeflate_gzip_compress at the level, one compressor per level reused for
 *         every file (libdeflater's Compressor, one per worker thread in depotai);
 *   zstd: ZSTD_compress2 with the level, an empty dictionary, the checksum and content
 *         size flags, one context per level reused for every file (zstd's
 *         bulk::Compressor, as members.rs sets it up);
 *   zstd-stream: one frame from zstd's streaming API, fed line by line
 *         (ZSTD_compressStream, then ZSTD_endStream), with the level and the checksum
 *         flag: how zstd:chunked's tar-split is made (zstd::stream::write::Encoder, one
 *         write per JSON line, src/layer/zstd_chunked/tarsplit.rs).
 *
 * One line per member, codec by codec, level by level, file by file:
 *   CODEC LEVEL FILE_INDEX IN_BYTES OUT_BYTES SHA256_HEX
 * Errors: a line on stderr, exit status 2.
 */
#define _POSIX_C_SOURCE 200809L /* getline */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libdeflate.h"
#include "zstd.h"

/* SHA-256 (FIPS 180-4). Small and portable: the static aarch64 build has no OpenSSL, and
 * tests/crossarch.rs checks these digests against the sha2 crate's over depotai's own
 * layer members, so a mistake here cannot pass unnoticed. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (i = 0; i < 64; i++) {
        t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

static void sha256_hex(const uint8_t *data, size_t len, char out[65])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint8_t tail[128] = {0};
    size_t full = len / 64 * 64, rest = len - full, tail_len;
    uint64_t bits = (uint64_t)len * 8;
    int i;
    for (size_t off = 0; off < full; off += 64)
        sha256_block(h, data + off);
    memcpy(tail, data + full, rest);
    tail[rest] = 0x80;
    tail_len = rest + 9 <= 64 ? 64 : 128;
    for (i = 0; i < 8; i++)
        tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
    sha256_block(h, tail);
    if (tail_len == 128)
        sha256_block(h, tail + 64);
    for (i = 0; i < 8; i++)
        sprintf(out + 8 * i, "%08x", h[i]);
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "members: %s: %s\n", what, detail);
    exit(2);
}

/* "A-B" or "A": an inclusive range of levels. */
static void parse_range(const char *s, int *from, int *to)
{
    char *end;
    long a = strtol(s, &end, 10), b = a;
    if (*end == '-')
        b = strtol(end + 1, &end, 10);
    if (end == s || *end != '\0' || a > b || a < -1000 || b > 1000)
        die("bad level range (want FROM-TO)", s);
    *from = (int)a;
    *to = (int)b;
}

enum codec { GZIP, ZSTD, ZSTD_STREAM };
static const char *const codec_names[] = {"gzip", "zstd", "zstd-stream"};

struct encoder {
    enum codec codec;
    struct libdeflate_compressor *gzip;
    ZSTD_CCtx *zstd;
};

static void zcheck(size_t rc, const char *what)
{
    if (ZSTD_isError(rc))
        die(what, ZSTD_getErrorName(rc));
}

static struct encoder encoder_new(enum codec codec, int level)
{
    struct encoder e = {codec, NULL, NULL};
    if (codec == GZIP) {
        e.gzip = libdeflate_alloc_compressor(level);
        if (!e.gzip)
            die("libdeflate_alloc_compressor", "invalid level or out of memory");
    } else {
        e.zstd = ZSTD_createCCtx();
        if (!e.zstd)
            die("ZSTD_createCCtx", "out of memory");
        /* The order and calls of the zstd crate's constructors and members.rs /
         * tarsplit.rs: level, empty dictionary, checksum (and for members the content
         * size, which the streaming frame cannot know). */
        zcheck(ZSTD_CCtx_setParameter(e.zstd, ZSTD_c_compressionLevel, level), "level");
        zcheck(ZSTD_CCtx_loadDictionary(e.zstd, NULL, 0), "dictionary");
        zcheck(ZSTD_CCtx_setParameter(e.zstd, ZSTD_c_checksumFlag, 1), "checksum flag");
        if (codec == ZSTD)
            zcheck(ZSTD_CCtx_setParameter(e.zstd, ZSTD_c_contentSizeFlag, 1),
                   "content size flag");
    }
    return e;
}

static void encoder_free(struct encoder *e)
{
    if (e->gzip)
        libdeflate_free_compressor(e->gzip);
    if (e->zstd)
        ZSTD_freeCCtx(e->zstd);
}

/* Compresses `in` into `*out` (grown as needed); returns the member's length. */
static size_t compress(struct encoder *e, const uint8_t *in, size_t n, uint8_t **out,
                       size_t *cap)
{
    size_t bound = e->codec == GZIP ? libdeflate_gzip_compress_bound(e->gzip, n)
                                    : ZSTD_compressBound(n);
    size_t got;
    if (bound > *cap) {
        free(*out);
        *out = malloc(bound);
        if (!*out)
            die("malloc", "out of memory");
        *cap = bound;
    }
    if (e->codec == GZIP) {
        got = libdeflate_gzip_compress(e->gzip, in, n, *out, bound);
        if (got == 0)
            die("libdeflate_gzip_compress", "output did not fit its bound");
    } else {
        got = ZSTD_compress2(e->zstd, *out, bound, in, n);
        zcheck(got, "ZSTD_compress2");
    }
    return got;
}

/* Appends `n` bytes at `*len` in `*buf`, growing it. */
static void append(uint8_t **buf, size_t *len, size_t *cap, const void *data, size_t n)
{
    if (*len + n > *cap) {
        size_t want = (*len + n) * 2;
        uint8_t *grown = realloc(*buf, want);
        if (!grown)
            die("realloc", "out of memory");
        *buf = grown;
        *cap = want;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
}

/* One streaming frame of the whole file, fed a line at a time as the tar-split is;
 * returns the frame's length in `*out` and sets `*in_len` to the file's. */
static size_t compress_stream(struct encoder *e, FILE *f, const char *name, uint8_t **out,
                              size_t *cap, size_t *in_len)
{
    static uint8_t piece[1 << 15];
    char *line = NULL;
    size_t line_cap = 0, len = 0, left;
    ssize_t n;
    ZSTD_inBuffer in;
    ZSTD_outBuffer o = {piece, sizeof piece, 0};
    *in_len = 0;
    while ((n = getline(&line, &line_cap, f)) > 0) {
        in = (ZSTD_inBuffer){line, (size_t)n, 0};
        while (in.pos < in.size) {
            o.pos = 0;
            zcheck(ZSTD_compressStream(e->zstd, &o, &in), "ZSTD_compressStream");
            append(out, &len, cap, piece, o.pos);
        }
        *in_len += (size_t)n;
    }
    if (ferror(f))
        die(name, "read error");
    free(line);
    do {
        o.pos = 0;
        left = ZSTD_endStream(e->zstd, &o);
        zcheck(left, "ZSTD_endStream");
        append(out, &len, cap, piece, o.pos);
    } while (left != 0);
    return len;
}

/* The whole of a file (a member is at most a chunk and its tar headers, or a TOC). */
static size_t read_file(const char *name, uint8_t **buf, size_t *cap)
{
    FILE *f = fopen(name, "rb");
    size_t len = 0, n;
    uint8_t piece[1 << 16];
    if (!f)
        die(name, strerror(errno));
    while ((n = fread(piece, 1, sizeof piece, f)) > 0)
        append(buf, &len, cap, piece, n);
    if (ferror(f))
        die(name, "read error");
    fclose(f);
    return len;
}

int main(int argc, char **argv)
{
    int ranges[3][2], have[3] = {0, 0, 0};
    int first_file = argc, i, c, level;
    uint8_t *in = NULL, *out = NULL;
    size_t in_cap = 0, out_cap = 0, n, got;
    char hex[65];

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gzip") && i + 1 < argc) {
            parse_range(argv[++i], &ranges[GZIP][0], &ranges[GZIP][1]);
            have[GZIP] = 1;
        } else if (!strcmp(argv[i], "--zstd") && i + 1 < argc) {
            parse_range(argv[++i], &ranges[ZSTD][0], &ranges[ZSTD][1]);
            have[ZSTD] = 1;
        } else if (!strcmp(argv[i], "--zstd-stream") && i + 1 < argc) {
            parse_range(argv[++i], &ranges[ZSTD_STREAM][0], &ranges[ZSTD_STREAM][1]);
            have[ZSTD_STREAM] = 1;
        } else if (argv[i][0] == '-') {
            die("unknown option", argv[i]);
        } else {
            first_file = i;
            break;
        }
    }
    if (first_file == argc || !(have[GZIP] || have[ZSTD] || have[ZSTD_STREAM]))
        die("usage", "members [--gzip FROM-TO] [--zstd FROM-TO] [--zstd-stream FROM-TO] FILE...");

    for (c = GZIP; c <= ZSTD_STREAM; c++) {
        if (!have[c])
            continue;
        for (level = ranges[c][0]; level <= ranges[c][1]; level++) {
            struct encoder e = encoder_new((enum codec)c, level);
            for (i = first_file; i < argc; i++) {
                if (c == ZSTD_STREAM) {
                    FILE *f = fopen(argv[i], "rb");
                    if (!f)
                        die(argv[i], strerror(errno));
                    got = compress_stream(&e, f, argv[i], &out, &out_cap, &n);
                    fclose(f);
                } else {
                    n = read_file(argv[i], &in, &in_cap);
                    got = compress(&e, in, n, &out, &out_cap);
                }
                sha256_hex(out, got, hex);
                printf("%s %d %d %zu %zu %s\n", codec_names[c], level, i - first_file, n, got,
                       hex);
            }
            encoder_free(&e);
        }
    }
    if (fflush(stdout) != 0 || ferror(stdout))
        die("stdout", "write error");
    return 0;
}
