#!/usr/bin/env bash
# Benchmark: ranged reads of one layer blob from `depotai serve` and from nginx serving
# the very same blob files, measured with wrk in the same run.
#
#   bench/serve.sh [--size-mib N] [--duration S] [--connections C] [--threads T]
#                  [--rounds R] [--max-windows W] [--keep]
#
# Each request reads a random range made of 1..W consecutive 50 000-byte windows at a
# random 50 000-byte-aligned offset (the stargz snapshotter's read unit), so ranges are
# 50 KB to W x 50 KB (default W=20: up to 1 MB). Both servers are measured R times,
# alternately (depotai, nginx, depotai, ...), after a warm-up that puts the blob in the
# page cache; the script prints requests/s and MB/s for each and the depotai/nginx ratio.
#
# Environment: BENCH_SIZE_MIB (default 256), BENCH_DURATION (10), BENCH_CONNECTIONS
# (64), BENCH_THREADS (2), BENCH_ROUNDS (2), BENCH_MAX_WINDOWS (20).
# Needs: cargo, curl, python3, and the Debian packages wrk and nginx (installed with
# apt-get when missing and running as root). nginx runs as an ordinary foreground
# process with a config in a temporary directory, on its own port.
#
# This is a benchmark, not a test: it fails only if something does not run or the two
# servers disagree on a byte.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

size_mib="${BENCH_SIZE_MIB:-256}"
duration="${BENCH_DURATION:-10}"
connections="${BENCH_CONNECTIONS:-64}"
threads="${BENCH_THREADS:-2}"
rounds="${BENCH_ROUNDS:-2}"
max_windows="${BENCH_MAX_WINDOWS:-20}"
keep=0

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "serve.sh: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --size-mib) size_mib="${2:?}"; shift 2 ;;
    --duration) duration="${2:?}"; shift 2 ;;
    --connections) connections="${2:?}"; shift 2 ;;
    --threads) threads="${2:?}"; shift 2 ;;
    --rounds) rounds="${2:?}"; shift 2 ;;
    --max-windows) max_windows="${2:?}"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
for v in size_mib duration connections threads rounds max_windows; do
  [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || die "--${v//_/-} must be a positive integer"
done

# ---------------------------------------------------------------- prerequisites
need_pkgs=()
command -v wrk >/dev/null 2>&1 || need_pkgs+=(wrk)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_pkgs+=(nginx-light)
if [[ ${#need_pkgs[@]} -gt 0 ]]; then
  [[ $(id -u) -eq 0 ]] || die "missing ${need_pkgs[*]}; run: sudo apt-get install -y ${need_pkgs[*]}"
  log "apt-get install ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null; } \
    || die "could not install ${need_pkgs[*]}"
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
for t in curl python3 cargo; do command -v "$t" >/dev/null || die "'$t' not found"; done

# ---------------------------------------------------------------- build
target="${CARGO_TARGET_DIR:-$root/target}"
log "cargo build --release --locked"
(cd "$root" && cargo build --release --locked -q) || die "release build failed"
depotai="$target/release/depotai"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/depotai-serve-bench.XXXXXX")"
# nginx's workers run as its own user (www-data) when started as root: let them in.
chmod 755 "$tmp"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ $keep -eq 1 ]]; then echo "kept: $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # url
  for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  die "nothing answers at $1"
}

# ---------------------------------------------------------------- input
log "generating a ${size_mib} MiB model and building its image"
src="$tmp/model"
mkdir -p "$src"
head -c $((size_mib << 20)) /dev/urandom > "$src/model.safetensors"
echo '{"model_type": "bench"}' > "$src/config.json"
"$depotai" build --from-dir "$src" --name bench/model \
  --sha 0123456789abcdef0123456789abcdef01234567 --output "$tmp/root/bench/model" --quiet
layout="$tmp/root/bench/model"
read -r layer size < <(python3 - "$layout" <<'EOF'
import json, sys, os
d = sys.argv[1]
blob = lambda dg: os.path.join(d, "blobs", "sha256", dg.split(":", 1)[1])
idx = json.load(open(os.path.join(d, "index.json")))["manifests"][0]["digest"]
man = json.load(open(blob(idx)))["manifests"][0]["digest"]
layer = json.load(open(blob(man)))["layers"][0]["digest"]
print(layer, os.path.getsize(blob(layer)))
EOF
)
rm -rf "$src"
log "layer $layer, $size bytes"

# ---------------------------------------------------------------- servers
port_d="$(free_port)"
"$depotai" serve --root "$tmp/root" --addr "127.0.0.1:$port_d" --quiet >"$tmp/depotai.out" 2>&1 &
pids+=($!)

port_n="$(free_port)"
mkdir -p "$tmp/nginx/tmp"
cat > "$tmp/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  default_type application/octet-stream;
  client_body_temp_path $tmp/nginx/tmp/body;
  proxy_temp_path $tmp/nginx/tmp/proxy;
  fastcgi_temp_path $tmp/nginx/tmp/fastcgi;
  uwsgi_temp_path $tmp/nginx/tmp/uwsgi;
  scgi_temp_path $tmp/nginx/tmp/scgi;
  server {
    listen 127.0.0.1:$port_n;
    root $layout;
    location /blobs/ { }
  }
}
EOF
"$nginx_bin" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" &
pids+=($!)

url_d="http://127.0.0.1:$port_d/v2/bench/model/blobs/$layer"
url_n="http://127.0.0.1:$port_n/blobs/sha256/${layer#sha256:}"
wait_http "http://127.0.0.1:$port_d/v2/"
wait_http "$url_n"

# Both serve the same bytes (a few ranges, and the whole blob once, which also warms
# the page cache).
for r in "0-99" "1000000-1049999" "$((size - 51))-$((size - 1))"; do
  a="$(curl -fsS -H "Range: bytes=$r" "$url_d" | sha256sum)"
  b="$(curl -fsS -H "Range: bytes=$r" "$url_n" | sha256sum)"
  [[ "$a" == "$b" ]] || die "the servers disagree on bytes $r"
done
whole_d="$(curl -fsS "$url_d" | sha256sum | cut -d' ' -f1)"
whole_n="$(curl -fsS "$url_n" | sha256sum | cut -d' ' -f1)"
[[ "sha256:$whole_d" == "$layer" && "$whole_d" == "$whole_n" ]] || die "whole-blob digests differ"

# ---------------------------------------------------------------- load
cat > "$tmp/ranges.lua" <<'EOF'
-- Random ranges of 1..MAX_WINDOWS 50 000-byte windows; counts non-206 replies.
local size = tonumber(os.getenv("BLOB_SIZE"))
local windows = math.floor(size / 50000)
local max_windows = tonumber(os.getenv("MAX_WINDOWS"))
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + id)
  bad = 0
end

function request()
  local n = math.random(1, max_windows)
  local first = math.random(0, windows - n)
  local a = first * 50000
  local b = math.min((first + n) * 50000, size) - 1
  return wrk.format("GET", nil, { ["Range"] = "bytes=" .. a .. "-" .. b })
end

function response(status, headers, body)
  if status ~= 206 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local bad_total = 0
  for _, t in ipairs(threads) do bad_total = bad_total + t:get("bad") end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %.3f %.3f\n",
    summary.requests, summary.bytes, summary.duration, bad_total,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
EOF

run_wrk() { # url seconds -> RESULT line
  BLOB_SIZE="$size" MAX_WINDOWS="$max_windows" wrk -t "$threads" -c "$connections" \
    -d "${2}s" --timeout 30s -s "$tmp/ranges.lua" "$1" | grep '^RESULT'
}

log "warm-up (2 s each)"
run_wrk "$url_d" 2 >/dev/null
run_wrk "$url_n" 2 >/dev/null

declare -A reqs bytes secs bad errs p50 p99
for who in depotai nginx; do reqs[$who]=0; bytes[$who]=0; secs[$who]=0; bad[$who]=0; errs[$who]=0; done
for round in $(seq "$rounds"); do
  for who in depotai nginx; do
    url="$url_d"; [[ $who == nginx ]] && url="$url_n"
    log "round $round/$rounds: $who, ${duration}s, $connections connections, $threads wrk threads"
    read -r _ r b us nb ne l50 l99 < <(run_wrk "$url" "$duration")
    reqs[$who]=$((reqs[$who] + r)); bytes[$who]=$((bytes[$who] + b))
    secs[$who]=$(python3 -c "print(${secs[$who]} + $us / 1e6)")
    bad[$who]=$((bad[$who] + nb)); errs[$who]=$((errs[$who] + ne))
    p50[$who]="$l50"; p99[$who]="$l99"
  done
done

# ---------------------------------------------------------------- report
echo
echo "ranged reads of a ${size}-byte eStargz layer blob: 50 KB..$((max_windows * 50)) KB per request,"
echo "${connections} connections, ${threads} wrk threads, ${rounds} x ${duration}s per server, $(nproc) cores"
printf '%-8s %12s %10s %12s %10s %10s %8s %8s\n' server requests 'req/s' 'MB/s' 'p50 ms' 'p99 ms' non-206 errors
for who in depotai nginx; do
  python3 - "$who" "${reqs[$who]}" "${bytes[$who]}" "${secs[$who]}" "${p50[$who]}" "${p99[$who]}" "${bad[$who]}" "${errs[$who]}" <<'EOF'
import sys
who, r, b, s, l50, l99, bad, err = sys.argv[1:]
r, b, s = int(r), int(b), float(s)
print(f"{who:<8} {r:>12} {r/s:>10.0f} {b/s/1e6:>12.1f} {float(l50):>10.2f} {float(l99):>10.2f} {bad:>8} {err:>8}")
EOF
done
python3 - "${reqs[depotai]}" "${secs[depotai]}" "${bytes[depotai]}" "${reqs[nginx]}" "${secs[nginx]}" "${bytes[nginx]}" <<'EOF'
import sys
rd, sd, bd, rn, sn, bn = map(float, sys.argv[1:])
print(f"ratio depotai/nginx: {(rd/sd)/(rn/sn):.2f}x requests/s, {(bd/sd)/(bn/sn):.2f}x MB/s")
EOF
[[ ${bad[depotai]} -eq 0 && ${bad[nginx]} -eq 0 ]] || die "some replies were not 206"
