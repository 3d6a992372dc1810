#!/usr/bin/env bash
# Build-time tools cargo needs before it can compile depotai: on x86-64 the pinned
# isal-sys builds ISA-L (for --encoder isal) from its bundled sources with autotools and
# nasm. Installs the missing ones from Debian (root or sudo); does nothing when they are
# all there or on other architectures (ISA-L is not built there).
#
# Run it before the first `cargo build`/`cargo clippy` on a fresh machine; CI (.ci/run)
# and scripts/test.sh call it.
set -euo pipefail

[[ "$(uname -m)" == x86_64 ]] || exit 0

need=()
for t in nasm:nasm autoconf:autoconf automake:automake libtoolize:libtool make:make; do
  command -v "${t%%:*}" >/dev/null || need+=("${t##*:}")
done
[[ ${#need[@]} -eq 0 ]] && exit 0

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup-build-deps.sh: need ${need[*]} (not root, no sudo)" >&2; exit 1; }
  SUDO="sudo"
fi
echo "setup-build-deps.sh: installing ${need[*]} (Debian) to build ISA-L" >&2
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
  || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
