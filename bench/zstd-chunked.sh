#!/usr/bin/env bash
# Benchmark: depotai --format zstd-chunked vs the reference zstd:chunked writer
# (containers/storage's compressor.ZstdCompressor, zstd level 10 = klauspost "best",
# through zstdchunked-check build, interop/checkers) on a deterministic, weight-like
# model directory, in the same run.
#
#   bench/zstd-chunked.sh [--size-mib N] [--level N] [--ref-level N] [--keep]
#                         [--no-verify] [--model-dir DIR]
#
# --level N       depotai's zstd level (default: depotai's default, 3)
# --ref-level N   the reference writer's level (default 10, its own default)
# --no-verify     skip checking both blobs with zstdchunked-verify (not timed anyway)
# --model-dir DIR benchmark an existing model directory instead of generated data
#
# Environment: BENCH_SIZE_MIB (default 400), BENCH_SEED (generator seed). The reference
# runs with TZ=UTC (its TOC times follow the local zone). Needs: cargo, python3 (+numpy,
# installed with pip if missing), GNU tar, Go (scripts/install-interop.sh --checkers),
# /usr/bin/time (Debian package `time`). Uses $CARGO_TARGET_DIR if set.
#
# This is a benchmark, not a test: it exits non-zero only if something fails to run or
# the outputs are inconsistent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# The reference writer/checker, built from interop/checkers (cached).
checkers="$(bash "$root/scripts/install-interop.sh" --checkers)" \
  || { echo "bench: could not build the reference checkers (scripts/install-interop.sh --checkers)" >&2; exit 1; }
zv="$checkers/zstdchunked-check"

size_mib="${BENCH_SIZE_MIB:-400}"
seed="${BENCH_SEED:-20240601}"
level=""
ref_level=10
keep=0
verify=1
model_dir=""

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "zstd-chunked.sh: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --size-mib) size_mib="${2:?--size-mib needs a value}"; shift 2 ;;
    --size-mib=*) size_mib="${1#*=}"; shift ;;
    --level) level="${2:?--level needs a value}"; shift 2 ;;
    --level=*) level="${1#*=}"; shift ;;
    --ref-level) ref_level="${2:?--ref-level needs a value}"; shift 2 ;;
    --ref-level=*) ref_level="${1#*=}"; shift ;;
    --keep) keep=1; shift ;;
    --no-verify) verify=0; shift ;;
    --model-dir) model_dir="${2:?--model-dir needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ "$size_mib" =~ ^[0-9]+$ && "$size_mib" -gt 0 ]] || die "--size-mib must be a positive integer"
[[ -z "$level" || "$level" =~ ^[0-9]+$ ]] || die "--level must be a number"

# ---------------------------------------------------------------- prerequisites
[[ -x "$zv" ]] || die "reference writer not found at $zv"
command -v python3 >/dev/null 2>&1 || die "python3 not found"
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is required (for --sort=name)"
if [[ ! -x /usr/bin/time ]]; then
  [[ $(id -u) -eq 0 ]] || die "/usr/bin/time missing; run: sudo apt-get install -y time"
  log "installing /usr/bin/time (Debian package 'time')"
  apt-get install -y -q time >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q time >/dev/null; } \
    || die "could not install the 'time' package"
fi
if [[ -z "$model_dir" ]] && ! python3 -c 'import numpy' 2>/dev/null; then
  log "installing numpy (pip)"
  python3 -m pip install -q numpy || die "numpy missing and 'pip install numpy' failed"
fi

# ---------------------------------------------------------------- build
log "cargo build --release --locked"
(cd "$root" && cargo build --release --locked) || die "release build failed"
depotai="${CARGO_TARGET_DIR:-$root/target}/release/depotai"
[[ -x "$depotai" ]] || die "$depotai not found after the build"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/depotai-zbench.XXXXXX")"
cleanup() {
  if [[ $keep -eq 1 ]]; then echo "kept: $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- input
if [[ -n "$model_dir" ]]; then
  [[ -d "$model_dir" ]] || die "--model-dir $model_dir is not a directory"
  model_dir="$(cd "$model_dir" && pwd)"
  log "using existing model directory $model_dir"
  ln -s "$model_dir" "$tmp/model"
else
  log "generating ${size_mib} MiB model directory (seed $seed)"
  python3 "$here/gen_weights.py" "$tmp/model" --size-mib "$size_mib" --seed "$seed"
fi
content_bytes=$(find -L "$tmp/model" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')

# Same bytes, same order, fixed metadata: the reference sees what depotai sees.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/model/" -cf "$tmp/input.tar" .
tar_bytes=$(stat -c %s "$tmp/input.tar")

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
log "reference warm-up (builds the Go binary on first use)"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/model/" -cf "$tmp/warm.tar" ./config.json
TZ=UTC "$zv" build "$tmp/warm.tar" "$tmp/warm.blob" >/dev/null 2>&1 || die "reference warm-up failed"

log "reference: containers/storage ZstdCompressor, level $ref_level, TZ=UTC"
TZ=UTC timed "$tmp/ref" "$zv" build "$tmp/input.tar" "$tmp/ref.blob" --level "$ref_level"
[[ $keep -eq 1 ]] || rm -f "$tmp/input.tar"

# ---------------------------------------------------------------- depotai
sha=0123456789abcdef0123456789abcdef01234567
lvl=()
[[ -n "$level" ]] && lvl=(--compression-level "$level")
log "depotai --format zstd-chunked: default threads ($(nproc) cores)"
timed "$tmp/dep" "$depotai" build --from-dir "$tmp/model/" --name bench/model --sha "$sha" \
  --format zstd-chunked --layers single "${lvl[@]}" --output "$tmp/out-default" --json --quiet

log "depotai --format zstd-chunked --threads 1"
timed "$tmp/dep1" "$depotai" build --from-dir "$tmp/model/" --name bench/model --sha "$sha" \
  --format zstd-chunked --layers single "${lvl[@]}" --output "$tmp/out-t1" --threads 1 --json --quiet
[[ $keep -eq 1 ]] || rm -rf "$tmp/out-t1"

# ---------------------------------------------------------------- verify (not timed)
ref_ok="skipped" dep_ok="skipped"
if [[ $verify -eq 1 ]]; then
  log "zstdchunked-verify on both blobs (not timed)"
  layer="$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["layers"][0]["digest"])' "$tmp/dep.out")"
  idx="$tmp/out-default/blobs/sha256"
  man="$(python3 - "$tmp/out-default" <<'PY'
import json, sys
d = sys.argv[1]
blob = lambda dg: f"{d}/blobs/sha256/{dg.split(':')[1]}"
index = json.load(open(blob(json.load(open(f"{d}/index.json"))["manifests"][0]["digest"])))
print(blob(index["manifests"][0]["digest"]))
PY
)"
  python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["layers"][0]))' "$man" >"$tmp/dep.ann.json"
  if "$zv" verify "$idx/${layer#sha256:}" --annotations "$tmp/dep.ann.json" --require-tar-split >"$tmp/dep.verify" 2>"$tmp/dep.verify.err"; then
    dep_ok="PASS"
  else
    dep_ok="FAIL"; head -5 "$tmp/dep.verify.err" >&2
  fi
  if "$zv" verify "$tmp/ref.blob" --annotations "$tmp/ref.out" >"$tmp/ref.verify" 2>"$tmp/ref.verify.err"; then
    ref_ok="PASS"
  else
    ref_ok="FAIL"; head -5 "$tmp/ref.verify.err" >&2
  fi
fi
[[ $keep -eq 1 ]] || rm -rf "$tmp/out-default" "$tmp/ref.blob"

# ---------------------------------------------------------------- report
python3 - "$tmp" "$content_bytes" "$tar_bytes" "$(nproc)" "$ref_ok" "$dep_ok" <<'PY'
import json, re, sys

tmp, content, tar_bytes, ncpu, ref_ok, dep_ok = sys.argv[1:]
content, tar_bytes = int(content), int(tar_bytes)
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
if dep1["layers"][0]["digest"] != dep["layers"][0]["digest"]:
    errors.append("layer digest differs between default threads and --threads 1")
if "FAIL" in (ref_ok, dep_ok):
    errors.append(f"zstdchunked-verify: reference {ref_ok}, depotai {dep_ok}")

ref_secs = float(ref["seconds"])
ref_blob, dep_blob = int(ref["blob_size"]), int(dep["layers"][0]["size"])
ref_mbs_wall = content / MB / ref_wall
ref_mbs_self = content / MB / ref_secs
dep_mbs = content / MB / dep_wall
dep1_mbs = content / MB / dep1_wall

w = 47
def row(k, v): print(f"  {k:<{w}} {v}")
print()
print("=" * 78)
print(f"zstd:chunked benchmark: depotai (zstd {dep.get('compression_level')}, {dep['chunk_size'] >> 20} MiB chunks)")
print(f"vs containers/storage ZstdCompressor (level {ref.get('level')}, rolling-checksum chunks)")
print("=" * 78)
row("input content bytes", f"{content:,} ({content / MIB:.1f} MiB, tar {tar_bytes:,})")
print(f" reference ({ref.get('writer')}, TZ {ref.get('tz')})")
row("wall seconds (whole cmd, incl. re-read)", f"{ref_wall:.2f} s  -> {ref_mbs_wall:.1f} MB/s")
row("own 'seconds' (compress + write only)", f"{ref_secs:.2f} s  -> {ref_mbs_self:.1f} MB/s")
row("blob size", f"{ref_blob:,}  ({ref_blob / content:.2%} of input)")
row("blob digest", ref["blob_digest"])
row("peak RSS", f"{ref_rss / MIB:.1f} MiB")
row("CPU user+sys (cores busy)", f"{ref_cpu:.2f} s ({ref_cpu / ref_wall:.2f})")
row("zstdchunked-verify", ref_ok)
print(f" depotai (default threads = {ncpu} cores)")
row("wall seconds", f"{dep_wall:.2f} s  -> {dep_mbs:.1f} MB/s")
row("blob size", f"{dep_blob:,}  ({dep_blob / content:.2%} of input)")
row("layer digest", dep["layers"][0]["digest"])
row("peak RSS", f"{dep_rss / MIB:.1f} MiB")
row("CPU user+sys (cores busy)", f"{dep_cpu:.2f} s ({dep_cpu / dep_wall:.2f})")
row("zstdchunked-verify --require-tar-split", dep_ok)
print(" depotai --threads 1")
row("wall seconds", f"{dep1_wall:.2f} s  -> {dep1_mbs:.1f} MB/s")
row("peak RSS", f"{dep1_rss / MIB:.1f} MiB")
row("same digest as default threads", "yes" if dep1["layers"][0]["digest"] == dep["layers"][0]["digest"] else "NO")
print(" comparison")
row("throughput ratio depotai/ref (wall)", f"{dep_mbs / ref_mbs_wall:.2f}x")
row("throughput ratio depotai/ref (ref own secs)", f"{dep_mbs / ref_mbs_self:.2f}x")
row("throughput ratio depotai --threads 1/ref", f"{dep1_mbs / ref_mbs_self:.2f}x (ref own secs)")
row("blob size ratio depotai/ref", f"{dep_blob / ref_blob:.4f}  ({dep_blob - ref_blob:+,} bytes)")
print("-" * 78)
for e in errors:
    print(f"ERROR: {e}")
sys.exit(1 if errors else 0)
PY
