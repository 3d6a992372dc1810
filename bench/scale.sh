#!/usr/bin/env bash
# Benchmark at real model size on a small machine: a generated model (default 100 GiB:
# one file of half the model, above the Hub CDN's 50 GB whole-file limit, and shards of
# at most 4 GiB) streamed with `depotai build ORG/MODEL --push … --no-cache` from a Hub
# that generates the weights as it serves them into a registry that checks every blob's
# digest and forgets its bytes. Neither server stores the model, so the only disk a run
# uses is depotai's own.
#
#   bench/scale.sh [--size-gib N] [--big-file-threshold SIZE] [--big-file SIZE]
#                  [--encoders "libdeflate isal"] [--check-threads] [--threads-encoder E]
#                  [--work DIR] [--keep]
#
# One run per encoder (libdeflate, the default, and --encoder isal on x86-64), each into
# a fresh registry; with --check-threads one more with --threads 1 (libdeflate, or the
# encoder --threads-encoder names: isal takes half the CPU at 100 GiB), whose
# index digest must equal the default run's. For each run it prints wall time; CPU
# seconds of depotai (and per GiB), of the Hub and of the registry, and their sum over
# the cores (the machine's limit: no run can be faster) beside the wall; peak RSS
# (exact, from wait4, and the process tree's RSS sampled every 0.2 s); peak disk of the
# depotai process tree (its HF_HOME, upload state, TMPDIR and working directory, plus
# files it holds open for writing elsewhere or deleted, sampled every 0.2 s); the bytes
# requested from the Hub (must be the model's size: every byte once); GETs without
# Range of files above the threshold (must be 0: the CDN refuses them with 400); and the
# blobs the registry verified (must be every config and layer, each uploaded once).
#
#   --size-gib N               model size in GiB (default 100; fractions allowed)
#   --big-file SIZE            the one big file (default half the model)
#   --big-file-threshold SIZE  the CDN's whole-file limit (default 50GB). Sizes take
#                              K/M/G/T or KiB…TiB (binary) and KB…TB (decimal)
#   --encoders LIST            default "libdeflate isal" (isal needs the cargo feature,
#                              nasm and autotools; skipped off x86-64)
#   --check-threads            also run with --threads 1 and compare the index digests
#   --threads-encoder E        the encoder of that comparison (default libdeflate)
#   --work DIR                 scratch directory (default a new /tmp/depotai-scale.XXXX)
#
# The generated weights' sha256s are computed once ever and kept in DEPOTAI_GEN_CACHE
# (default ~/.cache/depotai/generated): the first run at 100 GiB hashes 100 GiB first.
# Fails if a check fails: bytes from the Hub ≠ the model, a whole GET of a big file, a
# blob not verified or uploaded twice, differing digests.
set -euo pipefail

usage_lines=2,39
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

size_gib=100
threshold=50GB
big=""
encoders="libdeflate isal"
check_threads=0
threads_encoder=libdeflate

while [[ $# -gt 0 ]]; do
  case "$1" in
    --size-gib) size_gib="${2:?}"; shift 2 ;;
    --big-file-threshold) threshold="${2:?}"; shift 2 ;;
    --big-file) big="${2:?}"; shift 2 ;;
    --encoders) encoders="${2:?}"; shift 2 ;;
    --check-threads) check_threads=1; shift ;;
    --threads-encoder) threads_encoder="${2:?}"; shift 2 ;;
    *) bench_common_flag "$@"; shift "$BENCH_SHIFT" ;;
  esac
done
[[ "$size_gib" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--size-gib must be a number"
if [[ $check_threads -eq 1 && " $encoders " != *" $threads_encoder "* ]]; then
  encoders="$threads_encoder $encoders"  # --threads 1 is compared with that encoder's default run
fi
for e in $encoders; do
  [[ "$e" == libdeflate || "$e" == isal ]] || die "unknown encoder $e (libdeflate, isal)"
done
if [[ " $encoders " == *" isal "* && "$(uname -m)" != x86_64 ]]; then
  log "--encoder isal is x86-64 only: skipped"
  encoders="${encoders//isal/}"
fi
bench_need python3

features=()
[[ " $encoders " == *" isal "* ]] && features=(--features isal)
bench_build "${features[@]}" --bin depotai --example bench_hub --example forgetful_registry
bench_work depotai-scale

python3 - "$bin" "$work" "$size_gib" "$threshold" "$big" "$encoders" "$check_threads" "$threads_encoder" <<'PY'
import json, os, subprocess, sys

sys.path.insert(0, os.environ["BENCH_DIR"])
from lib import CORES, GIB, MIB, command, cpu, fresh, measure, parse_size, wait_for

bin_dir, work, size_gib, threshold, big, encoders, check_threads, threads_encoder = sys.argv[1:]
NAME, SHA = "scale/model", "0123456789abcdef0123456789abcdef01234567"


total = int(float(size_gib) * GIB)
limit = parse_size(threshold)
big = parse_size(big) if big else total // 2
if big <= limit:
    print(f"note: the big file ({big} bytes) is not above the threshold ({limit}): the Range "
          "rule is not exercised at this size (lower it with --big-file-threshold)", file=sys.stderr)


base_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DEPOTAI_", "HUGGING"))}
if "DEPOTAI_GEN_CACHE" in os.environ:
    base_env["DEPOTAI_GEN_CACHE"] = os.environ["DEPOTAI_GEN_CACHE"]

def run(hub, endpoint, label, extra):
    """One build into a fresh registry, measured."""
    reg_file = os.path.join(work, f"registry-{label}.addr")
    reg = subprocess.Popen([os.path.join(bin_dir, "examples/forgetful_registry"), reg_file],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        addr = wait_for(reg_file, reg, "forgetful_registry", 60)
        command(hub, "clear")
        d = {k: os.path.join(work, f"{label}-{k}") for k in ("home", "state", "tmp", "cwd")}
        fresh(*d.values())
        env = dict(base_env, HF_ENDPOINT=endpoint, HF_HOME=d["home"],
                   DEPOTAI_UPLOAD_STATE=d["state"], TMPDIR=d["tmp"])
        cmd = [os.path.join(bin_dir, "depotai"), "build", NAME, "--sha", SHA, "--push",
               f"{addr}/{NAME}:latest", "--insecure", "--no-cache", "--json"] + extra
        print(f"==> {label}: depotai {' '.join(cmd[1:])}", file=sys.stderr)
        hub_cpu0, reg_cpu0 = cpu(hub.pid), cpu(reg.pid)
        m = measure(cmd, env, d["cwd"], os.path.join(work, f"{label}.json"),
                    watch=d.values(), what=f"depotai ({label})")
        hub_cpu, reg_cpu = cpu(hub.pid) - hub_cpu0, cpu(reg.pid) - reg_cpu0
        built = json.loads(m["stdout"])
        hs = command(hub, "stats")
        rs = command(reg, "stats")
    finally:
        reg.kill()
        reg.wait()
    verified = {b["digest"]: b["uploads"] for b in rs["blobs"]}
    wanted = set(built["config_digests"] + [l["digest"] for l in built["layers"]])
    dep_cpu = m["cpu"]
    return {
        "label": label, "wall": m["wall"], "cpu": dep_cpu, "hub_cpu": hub_cpu, "reg_cpu": reg_cpu,
        "floor": (dep_cpu + hub_cpu + reg_cpu) / CORES,
        "rss": m["rss"], "disk": m["disk"],
        "hub_bytes": hs["file_bytes"], "refused": hs["refused"],
        "big_files": sum(1 for f in hs["files"].values() if f["size"] > limit),
        "whole_big": sum(f["gets_without_range"] for f in hs["files"].values() if f["size"] > limit),
        "blobs_ok": sum(1 for w in wanted if verified.get(w) == 1), "blobs": len(wanted),
        "all_once": all(v == 1 for v in verified.values()), "mismatches": rs["digest_mismatches"],
        "index": built["index_digest"], "stored": built["stored_bytes"], "layers": len(built["layers"]),
    }


print(f"==> starting the generating Hub ({total} bytes; new files are hashed once)", file=sys.stderr)
ep_file = os.path.join(work, "hub.endpoint")
hub = subprocess.Popen([os.path.join(bin_dir, "examples/bench_hub"), "--whole-file-limit", str(limit),
                        "--generate", str(total), "--big", str(big), NAME, SHA, ep_file],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=base_env)
try:
    endpoint = wait_for(ep_file, hub, "bench_hub", 6 * 3600)
    runs = [run(hub, endpoint, e, ["--encoder", e]) for e in encoders.split()]
    if check_threads == "1":
        runs.append(run(hub, endpoint, f"{threads_encoder}-threads1",
                        ["--encoder", threads_encoder, "--threads", "1"]))
finally:
    hub.kill()
    hub.wait()

gib = total / GIB
print()
print(f"model: {gib:g} GiB ({total} bytes), big file {big} bytes, whole-file limit {limit} bytes "
      f"({runs[0]['big_files']} file above it); {runs[0]['layers']} layers; {CORES} cores")
head = (f"{'run':<21}{'wall s':>8}{'floor s':>9}{'CPU s':>8}{'CPU s/GiB':>10}{'Hub CPU':>9}"
        f"{'reg CPU':>9}{'peak RSS':>10}{'peak disk':>11}{'Hub bytes':>11}{'whole GETs':>11}"
        f"{'verified':>10}")
print(head)
for r in runs:
    print(f"{r['label']:<21}{r['wall']:>8.1f}{r['floor']:>9.1f}{r['cpu']:>8.1f}{r['cpu'] / gib:>10.2f}"
          f"{r['hub_cpu']:>9.1f}{r['reg_cpu']:>9.1f}{r['rss'] / MIB:>6.0f} MiB{r['disk'] / 1024:>7.0f} KiB"
          f"{r['hub_bytes'] / total:>10.4f}x{r['whole_big']:>11}{r['blobs_ok']:>5}/{r['blobs']:<4}")
print("floor s = (depotai + Hub + registry CPU seconds) / cores: no wall time can be lower.")
print("Hub bytes = file bytes the Hub served / model size (1 = every byte once).")
failed = []
for r in runs:
    if r["hub_bytes"] != total:
        failed.append(f"{r['label']}: the Hub served {r['hub_bytes']} bytes of a {total}-byte model")
    if r["whole_big"] or r["refused"]:
        failed.append(f"{r['label']}: {r['whole_big']} GETs without Range of a file above the limit, "
                      f"{r['refused']} refused requests")
    if r["blobs_ok"] != r["blobs"] or not r["all_once"] or r["mismatches"]:
        failed.append(f"{r['label']}: the registry verified {r['blobs_ok']} of {r['blobs']} blobs once "
                      f"({r['mismatches']} digest mismatches)")
    print(f"{r['label']}: index {r['index']}, layers {r['stored']} bytes "
          f"({r['stored'] / total:.3f} of the model); peak RSS {r['rss'] / MIB:.0f} MiB (target <= 512), "
          f"peak disk {r['disk'] / 1024:.0f} KiB (target <= 64 MiB)")
if check_threads == "1":
    a = next(r for r in runs if r["label"] == threads_encoder)
    b = runs[-1]
    same = a["index"] == b["index"]
    print(f"--threads 1 gives the same index digest as the default: {'yes' if same else 'NO'}")
    if not same:
        failed.append("--threads 1 changed the index digest")
for f in failed:
    print("FAILED: " + f, file=sys.stderr)
sys.exit(1 if failed else 0)
PY
