#!/usr/bin/env bash
# The whole test suite, set-up included: installs the interop toolkit (Debian packages and
# the repository's own reference checkers, scripts/install-interop.sh), BuildKit
# (scripts/install-buildkit.sh) and the cross-architecture check's compilers and qemu
# (scripts/crossarch.sh) when it can, then runs every test. Interop tests skip with
# a message when a tool is absent; with CI=true they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

# nasm and autotools, to build ISA-L (the feature `isal`, for --encoder isal) on x86-64.
bash scripts/setup-build-deps.sh

if [[ $(id -u) -eq 0 ]] || command -v sudo >/dev/null; then
  bash scripts/install-interop.sh || echo "scripts/test.sh: install-interop.sh failed; interop tests will skip (or fail with CI=true)" >&2
  bash scripts/install-buildkit.sh || echo "scripts/test.sh: install-buildkit.sh failed; the BuildKit test will skip (or fail with CI=true)" >&2
  bash scripts/crossarch.sh >/dev/null || echo "scripts/test.sh: crossarch.sh failed; tests/crossarch.rs will skip (or fail with CI=true)" >&2
else
  echo "scripts/test.sh: not root and no sudo; interop tools not installed" >&2
fi

# tests/verify.rs validates provenance with in-toto's own Python bindings (PyPI, pinned).
bash scripts/install-pytools.sh >/dev/null

# tests/web.rs drives Debian's chromium with playwright-core (tests/web/package-lock.json).
bash scripts/install-browser.sh || echo "scripts/test.sh: browser set-up failed; tests/web.rs will skip (or fail with CI=true)" >&2

cargo test --locked --workspace --all-targets --features isal
