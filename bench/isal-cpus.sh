#!/usr/bin/env bash
# Are --encoder isal's bytes the same on every x86-64 CPU that accepts it? Builds the
# bundled example and a model directory with ISA-L levels 1 and 2 natively and under
# qemu-user as older CPUs (SSE4.2: Nehalem; AVX: SandyBridge; AVX2: Haswell; qemu's
# Icelake-Server, whose AVX-512 TCG lacks, so AVX2 again) and prints the layer digests:
# every row of a column must match the native one. core2duo (no SSE4.2) must refuse.
#
#   bench/isal-cpus.sh [MODEL_DIR]    (default: the bundled example only)
#
# Needs qemu-user (Debian package, installed if missing and root). Not a test: slow.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v qemu-x86_64 >/dev/null || {
  [[ $(id -u) -eq 0 ]] || { echo "isal-cpus.sh: install qemu-user" >&2; exit 1; }
  apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
}
(cd "$root" && cargo build --release --locked --features isal -q)
depotai="${CARGO_TARGET_DIR:-$root/target}/release/depotai"
srcs=("$root/fixtures/tiny-model")
[[ $# -gt 0 ]] && srcs+=("$1")
tmp="$(mktemp -d "${TMPDIR:-/tmp}/isal-cpus.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fail=0
declare -A want
for cpu in native Nehalem SandyBridge Haswell Icelake-Server core2duo; do
  for src in "${srcs[@]}"; do
    for lvl in 1 2; do
      cmd=("$depotai" build --from-dir "$src" --name q/m --sha 0123456789abcdef0123456789abcdef01234567
           --output "$tmp/out" --encoder isal --compression-level "$lvl" --json)
      [[ $cpu == native ]] || cmd=(qemu-x86_64 -cpu "$cpu" "${cmd[@]}")
      rm -rf "$tmp/out"
      if "${cmd[@]}" >"$tmp/json" 2>"$tmp/err"; then
        got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layer"]["digest"])' "$tmp/json")
      else
        got="refused: $(grep -v '^qemu-x86_64: warning' "$tmp/err" | head -1)"
      fi
      key="$(basename "$src")-$lvl"
      [[ $cpu == native ]] && want[$key]="$got"
      verdict=same
      if [[ $cpu == core2duo ]]; then
        [[ $got == refused:*"needs an x86-64 CPU with SSE4.2"* ]] && verdict=refused || { verdict=NOT-REFUSED; fail=1; }
      elif [[ $got != "${want[$key]}" ]]; then
        verdict=DIFFERS; fail=1
      fi
      printf '%-15s %-22s isal-%s %-10s %s\n' "$cpu" "$(basename "$src")" "$lvl" "$verdict" "${got:0:100}"
    done
  done
done
exit $fail
