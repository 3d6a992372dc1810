#!/usr/bin/env bash
# The interop toolkit the tests run against depotai's images: Debian packages, plus this
# repository's own Go modules (module mode), each pinned by its go.mod and go.sum:
#   interop/checkers     estargz-check (github.com/containerd/stargz-snapshotter/estargz),
#                        zstdchunked-check (containers/storage pkg/chunked)
#   interop/oras         oras (oras.land/oras v1.3.6), which pulls the ModelPack twin in
#                        tests/modelpack.rs
#   interop/stargz-grpc  containerd-stargz-grpc (the stargz snapshotter v0.19 as
#                        containerd's proxy plugin) and cri-pull (ImageService.PullImage
#                        over a CRI socket, as a kubelet pulls), for tests/lazy_node.rs
#
#   scripts/install-interop.sh              install the packages, build all three modules
#   scripts/install-interop.sh --checkers   only build (or reuse) the checkers
#   scripts/install-interop.sh --oras       only build (or reuse) oras
#   scripts/install-interop.sh --stargz     only build (or reuse) interop/stargz-grpc
#
# The last line of output is the directory holding the binaries (the checkers', unless
# --oras or --stargz); they are cached under
# ${DEPOTAI_CACHE:-${XDG_CACHE_HOME:-~/.cache}/depotai}/<checkers|oras|stargz-grpc>/<hash of the
# sources, go.mod, go.sum and the Go version>/, so a rerun takes a moment. Only Debian's
# apt and the Go module proxy are used; GOTOOLCHAIN=local. Go is
# ${DEPOTAI_GO:-/usr/local/go/bin/go}.
# Services the packages ship (docker-registry, containerd) are not left running.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
go="${DEPOTAI_GO:-/usr/local/go/bin/go}"
export GOTOOLCHAIN=local

PKGS=(
  skopeo          # copy / inspect images
  umoci           # unpack OCI images
  oci-image-tool  # OCI image-layout validation
  docker-registry # the CNCF distribution registry
  buildah podman  # containers/image + containers/storage consumers (podman 4.3: partial pulls)
  fuse-overlayfs  # overlay storage where the kernel's overlayfs cannot mount
  uidmap          # newuidmap for podman
  jq zstd curl
  apache2-utils   # htpasswd, for the basic-auth registry test
  containerd      # containerd 1.6 + ctr: pull, unpack and mount as an image volume (tests/image_volume.rs)
  fuse3           # fusermount3: the stargz snapshotter's FUSE mounts (tests/lazy_node.rs)
)

if [[ "${1:-}" != "--checkers" && "${1:-}" != "--oras" && "${1:-}" != "--stargz" ]]; then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    t0=$(date +%s)
    echo "install-interop: apt-get install ${missing[*]}" >&2
    # A package's postinst must not start its service (docker-registry) behind our back.
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod 755 /usr/sbin/policy-rc.d
      created_policy=1
    fi
    apt=($SUDO apt-get -o DPkg::Lock::Timeout=600 -y -qq)
    rc=0
    { "${apt[@]}" install --no-install-recommends "${missing[@]}" \
        || { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "${missing[@]}"; }; } \
        >/tmp/install-interop.apt.log 2>&1 || rc=$?
    [[ $created_policy -eq 0 ]] || $SUDO rm -f /usr/sbin/policy-rc.d
    if [[ $rc -ne 0 ]]; then
      echo "install-interop: apt-get failed; tail of /tmp/install-interop.apt.log:" >&2
      tail -20 /tmp/install-interop.apt.log >&2
      exit 1
    fi
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      $SUDO systemctl disable --now docker-registry.service containerd.service >/dev/null 2>&1 || true
    fi
    echo "install-interop: packages installed in $(( $(date +%s) - t0 )) s" >&2
  fi
fi

if [[ ! -x "$go" ]]; then
  echo "install-interop: no Go toolchain at $go (set DEPOTAI_GO); the Go tools are not built" >&2
  exit 3
fi
cache="${DEPOTAI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/depotai}"
# oras, from its own module (its dependencies never move the checkers'), cached under
# oras/<hash of go.mod, go.sum and the Go version>/.
build_oras() {
  local mod="$root/interop/oras" okey odir otmp t0
  okey="$( { cat "$mod/go.mod" "$mod/go.sum"; "$go" version; } | sha256sum | cut -c1-16)"
  odir="$cache/oras/$okey"
  if [[ ! -x "$odir/oras" ]]; then
    t0=$(date +%s)
    mkdir -p "$cache/oras"
    otmp="$(mktemp -d "$cache/oras/.build.XXXXXX")"
    if ! ( cd "$mod" && CGO_ENABLED=0 "$go" build -mod=readonly -buildvcs=false -trimpath -o "$otmp/" oras.land/oras/cmd/oras ) >&2; then
      rm -rf "$otmp"
      return 1
    fi
    rm -rf "$odir"
    mv "$otmp" "$odir"
    echo "install-interop: oras built in $(( $(date +%s) - t0 )) s" >&2
  fi
  echo "$odir"
}

# build MODULE PACKAGE...: builds interop/MODULE's packages into the cache (or finds them
# there) and prints the directory.
build() {
  local name="$1"
  shift
  local src="$root/interop/$name"
  local key bin tmp t0 p
  key="$( { cd "$src" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort | xargs sha256sum; "$go" version; } | sha256sum | cut -c1-16)"
  bin="${DEPOTAI_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/depotai}/$name/$key"
  local have=1
  for p in "$@"; do [[ -x "$bin/$p" ]] || have=0; done
  if [[ $have -eq 1 ]]; then
    echo "$bin"
    return
  fi
  t0=$(date +%s)
  mkdir -p "$(dirname "$bin")"
  tmp="$(mktemp -d "$(dirname "$bin")/.build.XXXXXX")"
  # -mod=readonly: go.sum is the pin; nothing is upgraded behind the repository's back.
  if ! ( cd "$src" && CGO_ENABLED=0 "$go" build -mod=readonly -buildvcs=false -trimpath -o "$tmp/" "${@/#/./}" ) >&2; then
    rm -rf "$tmp"
    return 1
  fi
  rm -rf "$bin"
  mv "$tmp" "$bin"
  echo "install-interop: interop/$name built in $(( $(date +%s) - t0 )) s" >&2
  echo "$bin"
}

case "${1:-}" in
  --stargz) build stargz-grpc containerd-stargz-grpc cri-pull ;;
  --checkers) build checkers estargz-check zstdchunked-check ;;
  --oras) build_oras ;;
  *)
    # The checkers first: a failed oras or stargz-grpc build must not cost the other
    # tests them.
    checkers="$(build checkers estargz-check zstdchunked-check)"
    rc=0
    build_oras >/dev/null || { echo "install-interop: oras was not built" >&2; rc=1; }
    build stargz-grpc containerd-stargz-grpc cri-pull >&2 || rc=$?
    echo "$checkers"
    exit $rc
    ;;
esac
