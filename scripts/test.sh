#!/usr/bin/env bash
# The whole test suite, set-up included: installs the interop toolkit (Debian packages,
# via ../shared/tools/install-interop.sh --probe) when it can, then runs every test.
# Interop tests skip with a message when the tools are absent; with CI=true they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

# nasm and autotools, to build ISA-L (--encoder isal) on x86-64.
bash scripts/setup-build-deps.sh

tools=../shared/tools
if [[ -x "$tools/install-interop.sh" || -f "$tools/install-interop.sh" ]]; then
  if [[ $(id -u) -eq 0 ]] || command -v sudo >/dev/null; then
    bash "$tools/install-interop.sh" --probe
  else
    echo "scripts/test.sh: not root and no sudo; interop tools not installed" >&2
  fi
else
  echo "scripts/test.sh: $tools not found; interop tests will skip (or fail with CI=true)" >&2
fi

# tests/registry.rs makes an htpasswd file for the basic-auth registry test.
if ! command -v htpasswd >/dev/null; then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  if [[ -z "$SUDO" ]] || command -v sudo >/dev/null; then
    $SUDO apt-get install -y -qq --no-install-recommends apache2-utils \
      || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends apache2-utils; } \
      || echo "scripts/test.sh: could not install apache2-utils (htpasswd)" >&2
  fi
fi

cargo test --locked --all-targets
