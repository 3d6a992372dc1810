#!/usr/bin/env bash
# Builds BuildKit's `buildkitd` and `buildctl` from Go modules at the version pinned in
# interop/buildkit/go.mod (+ go.sum), and installs Debian's runc and fuse3, which the
# stargz snapshotter inside buildkitd needs (runc for the OCI worker, fusermount3 for the
# lazily pulled layers).
#
#   scripts/install-buildkit.sh            build (or reuse) and print the bin directory
#   scripts/install-buildkit.sh --print    print the bin directory if built, else exit 1
#
# Binaries are cached under ${DEPOTAI_CACHE:-${XDG_CACHE_HOME:-~/.cache}/depotai}/buildkit/
# <version>-<hash of go.mod, go.sum and the Go version>/bin, so a rerun takes a moment.
# The last line of output is that bin directory (tests/buildkit.rs finds it the same way).
# Only the Go module proxy and Debian's apt are used; GOTOOLCHAIN=local (no toolchain
# download). The Go toolchain is ${DEPOTAI_GO:-/usr/local/go/bin/go}.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$root/interop/buildkit"
go="${DEPOTAI_GO:-/usr/local/go/bin/go}"
export GOTOOLCHAIN=local

if [[ ! -x "$go" ]]; then
  echo "install-buildkit: no Go toolchain at $go (set DEPOTAI_GO)" >&2
  exit 3
fi

version="$(awk '{ for (i = 1; i < NF; i++) if ($i == "github.com/moby/buildkit") print $(i + 1) }' "$mod/go.mod")"
[[ -n "$version" ]] || { echo "install-buildkit: no github.com/moby/buildkit in $mod/go.mod" >&2; exit 3; }
key="$( { cat "$mod/go.mod" "$mod/go.sum"; "$go" version; } | sha256sum | cut -c1-16)"
cache="${DEPOTAI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/depotai}/buildkit/$version-$key"
bin="$cache/bin"

if [[ "${1:-}" == "--print" ]]; then
  [[ -x "$bin/buildkitd" && -x "$bin/buildctl" ]] || exit 1
  echo "$bin"
  exit 0
fi

# Debian packages (runtime only: nothing here is needed to build).
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in runc fuse3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-buildkit: apt-get install ${missing[*]}" >&2
  # Other installs may hold the dpkg lock for a while: wait for it rather than fail.
  apt=($SUDO apt-get -o DPkg::Lock::Timeout=600 -y -qq)
  "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2 \
    || { "${apt[@]}" update >&2 && "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2; }
fi

if [[ -x "$bin/buildkitd" && -x "$bin/buildctl" ]]; then
  echo "install-buildkit: BuildKit $version cached" >&2
  echo "$bin"
  exit 0
fi

t0=$(date +%s)
echo "install-buildkit: building BuildKit $version (buildkitd, buildctl) into $bin" >&2
mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# -mod=readonly: go.sum is the pin; a missing or changed checksum is an error, not an update.
# The version string is what `buildkitd --version` prints (BuildKit sets it with -X, as
# its own Makefile does).
( cd "$mod" && CGO_ENABLED=0 nice -n 10 "$go" build -mod=readonly -buildvcs=false -trimpath \
    -ldflags "-s -w -X github.com/moby/buildkit/version.Version=$version -X github.com/moby/buildkit/version.Package=github.com/moby/buildkit" \
    -o "$tmp/" github.com/moby/buildkit/cmd/buildkitd github.com/moby/buildkit/cmd/buildctl ) >&2
"$tmp/buildkitd" --version >&2
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "install-buildkit: built in $(( $(date +%s) - t0 )) s" >&2
echo "$bin"
