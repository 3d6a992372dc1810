#!/usr/bin/env bash
# A virtualenv with the Python tools of tests/tools/requirements.txt (from PyPI, pinned),
# cached by the file's hash so a rerun takes no time. Prints the venv's python.
#   scripts/install-pytools.sh            install (if needed) and print the python path
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/tools/requirements.txt
hash=$(sha256sum "$req" | cut -c1-16)
venv="${XDG_CACHE_HOME:-$HOME/.cache}/depotai/pytools-$hash"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import in_toto_attestation' 2>/dev/null; then
  rm -rf "$venv.partial"
  python3 -m venv "$venv.partial" >&2
  "$venv.partial/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  rm -rf "$venv"
  mv "$venv.partial" "$venv"
  # A venv records its path; recreate the entry points where it now lives.
  python3 -m venv --upgrade "$venv" >&2
fi
echo "$venv/bin/python"
