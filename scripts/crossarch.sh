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
# driver, the vendored sources, the flags and the compilers' versions>/, so a rerun takes a
# moment. Only Debian's apt is used. qemu-aarch64 (Debian qemu-user) runs the aarch64 one.
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
# common, compress and decompress but xxhash*.c, the amd64 assembly (empty elsewhere),
# and its defines.
mapfile -t zstd_src < <(cd "$zstd_dir/zstd/lib" && ls common/*.c compress/*.c decompress/*.c | grep -v xxhash | LC_ALL=C sort)
zstd_src=("${zstd_src[@]/#/$zstd_dir/zstd/lib/}" "$zstd_dir/zstd/lib/decompress/huf_decompress_amd64.S")
# What the cc crate passes for an optimized dependency (depotai's dev and release
# profiles build dependencies at opt-level 3), and zstd-sys's own flags and defines.
flags=(-O3 -ffunction-sections -fdata-sections -fPIC -fmerge-all-constants -fvisibility=hidden
  -DZSTD_LIB_DEPRECATED=0 -DXXH_PRIVATE_API= -DZSTDLIB_VISIBILITY= -DZSTDERRORLIB_VISIBILITY=
  -I"$deflate_dir/libdeflate" -I"$zstd_dir/zstd/lib" -I"$zstd_dir/zstd/lib/common")

key="$( {
  sha256sum "$driver" "${BASH_SOURCE[0]}"
  (cd "$deflate_dir" && find libdeflate -type f | LC_ALL=C sort | xargs sha256sum)
  (cd "$zstd_dir" && find zstd/lib -type f | LC_ALL=C sort | xargs sha256sum)
  echo "${flags[@]}"
  cc --version | head -1
  "$cross" --version | head -1
} | sha256sum | cut -c1-16)"
bin="${DEPOTAI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/depotai}/crossarch/$key"
if [[ -x "$bin/members-native" && -x "$bin/members-aarch64" ]]; then
  echo "$bin"
  exit 0
fi
t0=$(date +%s)
mkdir -p "$(dirname "$bin")"
tmp="$(mktemp -d "$(dirname "$bin")/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cc "${flags[@]}" -o "$tmp/members-native" "$driver" "${deflate_src[@]}" "${zstd_src[@]}" >&2
"$cross" "${flags[@]}" -static -o "$tmp/members-aarch64" "$driver" "${deflate_src[@]}" "${zstd_src[@]}" >&2
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "crossarch: drivers built in $(( $(date +%s) - t0 )) s" >&2
echo "$bin"
