#!/usr/bin/env bash
# Pushes a generated 512 MiB model from the Hub emulator to the forgetful registry, with and
# without --modelpack: wall time, peak RSS, bytes the Hub served, bytes the registry took.
# Needs the debug binary and examples: cargo build --example bench_hub --example forgetful_registry
set -euo pipefail
W="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; T="$(mktemp -d)"; HUB=; REG=
# The two servers this script starts, and its files, go whatever happens.
trap 'kill $HUB $REG 2>/dev/null || true; rm -rf "$T"' EXIT
SHA=0123456789abcdef0123456789abcdef01234567
mkfifo $T/hub.in $T/reg.in
$W/target/debug/examples/bench_hub --generate 536870912 --big 268435456 acme/bench $SHA $T/hub.ep < $T/hub.in > $T/hub.out 2>$T/hub.err & HUB=$!
$W/target/debug/examples/forgetful_registry $T/reg.addr < $T/reg.in > $T/reg.out 2>$T/reg.err & REG=$!
exec 3>$T/hub.in 4>$T/reg.in
while [[ ! -s $T/hub.ep || ! -s $T/reg.addr ]]; do sleep 0.2; done
EP=$(cat $T/hub.ep); ADDR=$(cat $T/reg.addr)
for mode in plain modelpack; do
  extra=(); [[ $mode == modelpack ]] && extra=(--modelpack)
  echo clear >&3; echo clear >&4
  /usr/bin/time -f "$mode wall=%e s peak_rss=%M KiB" env HF_ENDPOINT=$EP HF_HOME=$T/hf-$mode DEPOTAI_UPLOAD_STATE=$T/up-$mode \
    $W/target/debug/depotai build acme/bench --sha $SHA --push $ADDR/acme/bench-$mode:v1 --insecure --no-cache --quiet "${extra[@]}"
  echo stats >&3; echo stats >&4; sleep 1
  python3 - "$mode" $T/hub.out $T/reg.out <<'PY'
import json,sys
mode,h,r=sys.argv[1:]
hub=json.loads(open(h).read().strip().splitlines()[-1]); reg=json.loads(open(r).read().strip().splitlines()[-1])
print(mode, "hub_file_bytes_served=%s" % hub["file_bytes"], "registry_bytes_in=%s" % reg["bytes_in"])
PY
done
exec 3>&- 4>&-
