#!/usr/bin/env bash
# The cross-architecture check's tools (tests/crossarch.rs): interop/crossarch/members.c
# compiled against the EXACT C sources the pinned crates build (libdeflate-sys 1.26.1's
# vendored libdeflate, zstd-sys 2.0.16's bundled zstd 1.5.7, found through `cargo
# metadata`), once natively with `cc` and once for aarch64 with Debian's cross compiler
# (static, so qemu-user runs it without a sysroot), with the flags their build scripts use.
#
#   scripts/crossarch.sh           install the Debian packages if missing, build the drivers
#   scripts/crossarch.sh --build   only build (or reuse) the drivers
#
# The last line of output is the directory holding `members-native` and `members-aarch64`,
# cached under ${DEPOTAI_CACHE:-${XDG_CACHE_HOME:-~/.cache}/depotai}/crossarch/<hash of the
# driver and the libraries' key>/; the libraries' objects under objects-<hash of the
# vendored sources, the files and flags compiled and the compilers' versions>/. So a rerun
# takes a moment, and a changed driver only relinks. Only Debian's apt is used.
# qemu-aarch64 (Debian qemu-user) runs the aarch64 driver.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
driver="$root/interop/crossarch/members.c"
cross=aarch64-linux-gnu-gcc

PKGS=(
  gcc-aarch64-linux-gnu   # the cross compiler (Debian's gcc, as on an arm64 machine)
  libc6-dev-arm64-cross   # its libc, for -static
  qemu-user               # qemu-aarch64
)

if [[ "${1:-}" != "--build" ]]; then
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    t0=$(date +%s)
    echo "crossarch: apt-get install ${missing[*]}" >&2
    apt=($SUDO apt-get -o DPkg::Lock::Timeout=600 -y -qq)
    { "${apt[@]}" install --no-install-recommends "${missing[@]}" \
        || { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "${missing[@]}"; }; } \
        >/tmp/crossarch.apt.log 2>&1 || {
      echo "crossarch: apt-get failed; tail of /tmp/crossarch.apt.log:" >&2
      tail -20 /tmp/crossarch.apt.log >&2
      exit 1
    }
    echo "crossarch: packages installed in $(( $(date +%s) - t0 )) s" >&2
  fi
fi

for t in cc "$cross" qemu-aarch64 python3 cargo rustc; do
  command -v "$t" >/dev/null || { echo "crossarch: $t is missing (run scripts/crossarch.sh without --build)" >&2; exit 3; }
done
# -static needs the cross libc (libc6-dev-arm64-cross), which the compiler only recommends.
[[ "$("$cross" -print-file-name=libc.a)" == /* ]] \
  || { echo "crossarch: no aarch64 libc.a (libc6-dev-arm64-cross; run scripts/crossarch.sh without --build)" >&2; exit 3; }

# The crates' directories as cargo resolves them from Cargo.lock: the very sources linked
# into depotai, wherever the registry keeps them (this host's dependencies only, so
# nothing needs downloading).
host="$(rustc -vV | sed -n 's/^host: //p')"
meta="$(cd "$root" && cargo metadata --format-version 1 --locked --offline --filter-platform "$host")" \
  || { echo "crossarch: cargo metadata failed (fetch the dependencies first: cargo fetch --locked)" >&2; exit 1; }
read -r deflate_dir zstd_dir < <(python3 -c '
import json, os, sys
pkgs = {p["name"]: p for p in json.load(sys.stdin)["packages"]}
print(*(os.path.dirname(pkgs[n]["manifest_path"]) for n in ("libdeflate-sys", "zstd-sys")))' <<<"$meta")
[[ -d "$deflate_dir/libdeflate/lib" && -d "$zstd_dir/zstd/lib" ]] || {
  echo "crossarch: no vendored sources found through cargo metadata (libdeflate-sys: '$deflate_dir', zstd-sys: '$zstd_dir')" >&2
  exit 1
}

# libdeflate-sys's build.rs: these files, -I libdeflate, no defines (its only one,
# FREESTANDING, belongs to a feature depotai does not turn on).
deflate_src=(arm/cpu_features.c x86/cpu_features.c adler32.c crc32.c deflate_compress.c
  deflate_decompress.c gzip_compress.c gzip_decompress.c utils.c zlib_compress.c zlib_decompress.c)
deflate_src=("${deflate_src[@]/#/$deflate_dir/libdeflate/lib/}")
# zstd-sys's build.rs without features (depotai: default-features = false): every .c of
# common, compress and decompress but xxhash*.c, the amd64 assembly (empty elsewhere).
mapfile -t zstd_src < <(cd "$zstd_dir/zstd/lib" && ls common/*.c compress/*.c decompress/*.c | grep -v xxhash | LC_ALL=C sort)
zstd_src=("${zstd_src[@]/#/$zstd_dir/zstd/lib/}" "$zstd_dir/zstd/lib/decompress/huf_decompress_amd64.S")
# What the cc crate passes to gcc for an optimized dependency (depotai's dev and release
# profiles build dependencies at opt-level 3; debug-info flags left out), then each build
# script's own flags and defines.
cc_flags=(-O3 -ffunction-sections -fdata-sections -fPIC)
deflate_flags=("${cc_flags[@]}" -I"$deflate_dir/libdeflate")
zstd_flags=("${cc_flags[@]}" -I"$zstd_dir/zstd/lib" -I"$zstd_dir/zstd/lib/common"
  -DZSTD_LIB_DEPRECATED=0 -fmerge-all-constants
  -fvisibility=hidden -DXXH_PRIVATE_API= -DZSTDLIB_VISIBILITY= -DZSTDERRORLIB_VISIBILITY=)
driver_flags=(-O2 -I"$deflate_dir/libdeflate" -I"$zstd_dir/zstd/lib")

cache="${DEPOTAI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/depotai}/crossarch"
# The libraries' objects are keyed by what they are built from, the driver by that and
# itself, so changing the driver does not recompile zstd.
lib_key="$( {
  echo "${deflate_flags[*]} ${deflate_src[*]} ${zstd_flags[*]} ${zstd_src[*]}"
  (cd "$deflate_dir" && find libdeflate -type f | LC_ALL=C sort | xargs sha256sum)
  (cd "$zstd_dir" && find zstd/lib -type f | LC_ALL=C sort | xargs sha256sum)
  cc --version | head -1
  "$cross" --version | head -1
} | sha256sum | cut -c1-16)"
key="$( { echo "$lib_key"; sha256sum <"$driver"; } | sha256sum | cut -c1-16)"
bin="$cache/$key"
if [[ -x "$bin/members-native" && -x "$bin/members-aarch64" ]]; then
  echo "$bin"
  exit 0
fi
t0=$(date +%s)
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
for arch in native aarch64; do
  compiler=cc
  [[ $arch == aarch64 ]] && compiler="$cross"
  objs="$cache/objects-$lib_key/$arch"
  if [[ ! -d "$objs" ]]; then
    mkdir -p "$tmp/$arch" "$(dirname "$objs")"
    n=0
    for f in "${deflate_src[@]}"; do
      "$compiler" "${deflate_flags[@]}" -c "$f" -o "$tmp/$arch/deflate-$((n++))-$(basename "$f").o" >&2
    done
    for f in "${zstd_src[@]}"; do
      "$compiler" "${zstd_flags[@]}" -c "$f" -o "$tmp/$arch/zstd-$((n++))-$(basename "$f").o" >&2
    done
    # Complete or absent: a concurrent build that got there first wins.
    mv -T "$tmp/$arch" "$objs" 2>/dev/null || [[ -d "$objs" ]]
  fi
  static=()
  [[ $arch == aarch64 ]] && static=(-static)
  "$compiler" "${driver_flags[@]}" "${static[@]}" -o "$tmp/members-$arch" "$driver" "$objs"/*.o >&2
done
rm -rf "$tmp/native" "$tmp/aarch64"
mv -T "$tmp" "$bin" 2>/dev/null || [[ -x "$bin/members-aarch64" ]]
echo "crossarch: drivers built in $(( $(date +%s) - t0 )) s" >&2
echo "$bin"
