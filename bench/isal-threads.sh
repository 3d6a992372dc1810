#!/usr/bin/env bash
# Is ISA-L's deflate byte-stable across threads? A probe, not a test (README, Encoders:
# "Not byte-stable on every machine").
#
#   bench/isal-threads.sh [RUNS]          (default 400)
#
# Builds the bundled example with --encoder isal, cuts its layer into the plaintext of
# each gzip member, then compiles a small C program against the very libisal.a the
# `isal-sys` crate builds (target/release) and runs it RUNS times, each a new process:
# the main thread compresses every member with isal_deflate_stateless (level 2, a fresh
# stream each call), then one other thread compresses them again, and the outputs are
# compared. Prints how many processes saw a difference, with ASLR on and off
# (`setarch -R`). Needs cc, python3 and a release build with --features isal.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-400}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$root" && cargo build -q --release --locked --features isal --bin depotai)
lib="$(find "$root/target/release/build" -path '*isal-sys*' -name libisal.a | head -1)"
inc="$(find "$root/target/release/build" -path '*isal-sys*/include' -type d | head -1)"
[[ -n "$lib" && -f "$inc/igzip_lib.h" ]] || { echo "isal-threads.sh: no libisal.a/igzip_lib.h under target/release" >&2; exit 1; }
"$root/target/release/depotai" build --from-dir "$root/fixtures/tiny-model" --name depotai/tiny-model \
  --sha 0123456789abcdef0123456789abcdef01234567 --output "$work/out" --encoder isal --quiet
python3 - "$work" <<'PY'
import glob, os, sys, zlib
work = sys.argv[1]
blob = max(glob.glob(os.path.join(work, "out/blobs/sha256/*")), key=os.path.getsize)
b = open(blob, "rb").read()
i = k = 0
while i < len(b):
    d = zlib.decompressobj(31)
    data = d.decompress(b[i:])
    i += len(b) - i - len(d.unused_data)
    if data:
        open(os.path.join(work, "m%02d" % k), "wb").write(data)
        k += 1
open(os.path.join(work, "count"), "w").write(str(k))
PY
cat >"$work/probe.c" <<'C'
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "igzip_lib.h"
static int n; static unsigned char *in[64], *ref[64]; static size_t inl[64], refl[64];
static size_t comp(unsigned char *lb, unsigned char *src, size_t len, unsigned char *out, size_t cap) {
  struct isal_zstream s; memset(&s, 0, sizeof s);
  isal_deflate_stateless_init(&s);
  s.level = 2; s.level_buf = lb; s.level_buf_size = ISAL_DEF_LVL2_DEFAULT;
  s.gzip_flag = IGZIP_DEFLATE; s.flush = NO_FLUSH; s.end_of_stream = 1;
  s.next_in = src; s.avail_in = len; s.next_out = out; s.avail_out = cap;
  if (isal_deflate_stateless(&s) != COMP_OK) abort();
  return s.total_out;
}
static void *other(void *arg) {
  long *bad = arg; unsigned char *lb = calloc(1, ISAL_DEF_LVL2_DEFAULT);
  for (int k = 0; k < n; k++) {
    unsigned char *o = malloc(inl[k] + 1024); size_t l = comp(lb, in[k], inl[k], o, inl[k] + 1024);
    if (l != refl[k] || memcmp(o, ref[k], l)) ++*bad;
    free(o);
  }
  return 0;
}
int main(int argc, char **argv) {
  n = atoi(argv[2]);
  unsigned char *lb = calloc(1, ISAL_DEF_LVL2_DEFAULT);
  for (int k = 0; k < n; k++) {
    char p[4096]; snprintf(p, sizeof p, "%s/m%02d", argv[1], k);
    FILE *f = fopen(p, "rb"); fseek(f, 0, SEEK_END); inl[k] = ftell(f); fseek(f, 0, SEEK_SET);
    in[k] = malloc(inl[k] + 1); if (fread(in[k], 1, inl[k], f) != inl[k]) abort(); fclose(f);
    ref[k] = malloc(inl[k] + 1024); refl[k] = comp(lb, in[k], inl[k], ref[k], inl[k] + 1024);
  }
  long bad = 0; pthread_t t; pthread_create(&t, 0, other, &bad); pthread_join(t, 0);
  return bad != 0;
}
C
cc -O2 -I"$inc" "$work/probe.c" "$lib" -pthread -o "$work/probe"
members="$(cat "$work/count")"
for mode in "" "setarch -R"; do
  differ=0
  for _ in $(seq "$runs"); do $mode "$work/probe" "$work" "$members" || differ=$((differ + 1)); done
  aslr="on"; [[ -n "$mode" ]] && aslr="off (setarch -R)"
  echo "ASLR $aslr: $differ of $runs processes: another thread's ISA-L output differed from the main thread's ($members members each)"
done
