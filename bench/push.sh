#!/usr/bin/env bash
# Benchmark: `depotai push` of an image layout against `skopeo copy --all` of the same
# layout, to the same kind of registry (Debian's docker-registry, a fresh one for every
# run so no blob is there yet), in one run, the tools taking turns.
#
#   bench/push.sh [--size-mib N] [--shards K] [--repeat R] [--base BIN]
#                 [--push-chunk-size SIZE] [--work DIR] [--keep]
#
# The layout is generated: K incompressible shards of N/K MiB each (so K layers of their
# own) and a config.json, built with `--compression-level 0`; the blobs are then about
# the files' size. Prints, for every tool, the median over R runs of the wall time, the
# tool's CPU seconds (user + system) and the registry's, and MB/s of blob bytes; then
# each tool's wall time against depotai's. Every run's tag must end up with the layout's
# index digest.
#
# --base BIN adds another depotai binary as a tool of its own (e.g. one built from an
# earlier commit, to compare an old push with the new one).
#
# Environment: BENCH_SIZE_MIB (default 1024), BENCH_SHARDS (4), BENCH_REPEAT (3),
# BENCH_WORK (kept, like --work; default a new /tmp/depotai-push.XXXX, removed).
# Needs: cargo, python3, docker-registry, skopeo, curl.
#
# This is a benchmark, not a test: it fails only if something does not run or a pushed
# tag has another digest than the layout.
set -euo pipefail

usage_lines=2,24
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

size_mib="${BENCH_SIZE_MIB:-1024}"
shards="${BENCH_SHARDS:-4}"
repeat="${BENCH_REPEAT:-3}"
base=""
chunk=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --size-mib) size_mib="${2:?}"; shift 2 ;;
    --shards) shards="${2:?}"; shift 2 ;;
    --repeat) repeat="${2:?}"; shift 2 ;;
    --base) base="${2:?}"; shift 2 ;;
    --push-chunk-size) chunk="${2:?}"; shift 2 ;;
    *) bench_common_flag "$@"; shift "$BENCH_SHIFT" ;;
  esac
done
bench_positive size_mib shards repeat
bench_need docker-registry skopeo curl python3
[[ -z "$base" || -x "$base" ]] || die "--base $base is not an executable"

bench_work depotai-push
bench_build --bin depotai
bin="$bin/depotai"

python3 - "$work" "$bin" "$size_mib" "$shards" "$repeat" "$base" "$chunk" <<'PY'
import json, os, random, shutil, statistics, subprocess, sys

sys.path.insert(0, os.environ["BENCH_DIR"])
from lib import Registry, measure

work, depotai, size_mib, shards, repeat, base, chunk = sys.argv[1:]
size_mib, shards, repeat = int(size_mib), int(shards), int(repeat)
sha = "0123456789abcdef0123456789abcdef01234567"
model = os.path.join(work, f"model-{size_mib}x{shards}")
layout = os.path.join(work, f"layout-{size_mib}x{shards}")

if not os.path.isdir(layout):
    shutil.rmtree(model, ignore_errors=True)
    os.makedirs(model)
    rng = random.Random(7)
    per = (size_mib << 20) // shards
    for i in range(shards):
        with open(os.path.join(model, f"model-{i + 1:05d}-of-{shards:05d}.safetensors"), "wb") as f:
            left = per
            while left:
                n = min(left, 16 << 20)
                f.write(rng.randbytes(n))
                left -= n
    with open(os.path.join(model, "config.json"), "w") as f:
        f.write('{"model_type": "bench"}\n')
    subprocess.run([depotai, "build", "--from-dir", model, "--name", "bench/push", "--sha", sha,
                    "--compression-level", "0", "--output", layout, "--quiet"], check=True)
    shutil.rmtree(model)

index = json.load(open(os.path.join(layout, "index.json")))["manifests"][0]["digest"]
blob_bytes = sum(os.path.getsize(os.path.join(layout, "blobs/sha256", b))
                 for b in os.listdir(os.path.join(layout, "blobs/sha256")))


def depotai_cmd(binary):
    def cmd(ref):
        c = [binary, "push", layout, ref, "--insecure", "--quiet"]
        if chunk:
            c += ["--push-chunk-size", chunk]
        return c
    return cmd


tools = []
if base:
    tools.append(("depotai push (base)", depotai_cmd(base)))
tools.append(("depotai push", depotai_cmd(depotai)))
tools.append(("skopeo copy --all", lambda ref: [
    "skopeo", "copy", "-q", "--all", "--preserve-digests", "--dest-tls-verify=false",
    f"oci:{layout}:latest", f"docker://{ref}"]))

results = {name: [] for name, _ in tools}
for r in range(repeat):
    for name, cmd in tools:
        reg = Registry(work)
        ref = f"{reg.addr}/bench/push:latest"
        state = os.path.join(work, "upload-state")
        shutil.rmtree(state, ignore_errors=True)
        env = dict(os.environ, DEPOTAI_UPLOAD_STATE=state)
        m = measure(cmd(ref), env, work, os.path.join(work, "stdout.tmp"), what=name)
        wall, cpu = m["wall"], m["cpu"]
        got = reg.digest("bench/push", "latest")
        reg_cpu = reg.stop(remove=True)
        if got != index:
            raise SystemExit(f"{name}: the registry's tag is {got}, the layout's index {index}")
        results[name].append((wall, cpu, reg_cpu))
        print(f"  run {r + 1}/{repeat} {name}: {wall:.2f}s wall, {cpu:.2f}s CPU, registry {reg_cpu:.2f}s CPU",
              file=sys.stderr)

print(f"layout: {shards} shards, {blob_bytes / 1e6:.0f} MB of blobs; {repeat} runs each, median; "
      f"{os.cpu_count()} cores")
print(f"{'tool':24} {'wall s':>8} {'CPU s':>8} {'registry CPU s':>15} {'MB/s':>8} {'wall vs depotai':>16}")
mine = statistics.median(w for w, _, _ in results["depotai push"])
for name, _ in tools:
    runs = results[name]
    wall = statistics.median(w for w, _, _ in runs)
    cpu = statistics.median(c for _, c, _ in runs)
    reg_cpu = statistics.median(c for _, _, c in runs)
    print(f"{name:24} {wall:8.2f} {cpu:8.2f} {reg_cpu:15.2f} {blob_bytes / 1e6 / wall:8.0f} {wall / mine:15.2f}x")
PY
