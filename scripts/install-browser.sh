#!/usr/bin/env bash
# Installs what tests/web.rs drives: Debian's chromium (no browser download of its own)
# and playwright-core from tests/web/package-lock.json (`npm ci`). Idempotent; run by
# scripts/test.sh. Without root or sudo it says so and the browser tests skip (with
# CI=true they fail).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "scripts/install-browser.sh: not root and no sudo; chromium not installed" >&2
  fi
fi

if ! command -v chromium >/dev/null && { [[ $(id -u) -eq 0 ]] || [[ -n "$SUDO" ]]; }; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core \
    || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } \
    || echo "scripts/install-browser.sh: could not install chromium" >&2
fi

if ! command -v npm >/dev/null; then
  if [[ $(id -u) -eq 0 ]] || [[ -n "$SUDO" ]]; then
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm \
      || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends nodejs npm; } \
      || echo "scripts/install-browser.sh: could not install node/npm" >&2
  fi
fi

if command -v npm >/dev/null; then
  # playwright-core never downloads a browser; it drives /usr/bin/chromium.
  (cd tests/web && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) \
    || echo "scripts/install-browser.sh: npm ci in tests/web failed" >&2
fi
