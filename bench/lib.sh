# The prologue the bench scripts share: sourced, never run. A script sets `usage_lines`
# (the range of its header comment that --help prints), sources this file, parses its
# own flags and hands the rest to `bench_common_flag`, then calls `bench_work PREFIX`
# and `bench_build CARGO-ARGS...`. The helpers of their embedded Python are in lib.py
# (found through BENCH_DIR, exported here).

here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
script="$(basename "${BASH_SOURCE[1]}")"
export BENCH_DIR="$here"
# Importing lib.py leaves no __pycache__ in the source tree.
export PYTHONDONTWRITEBYTECODE=1

work="${BENCH_WORK:-}"
keep=0

usage() { sed -n "${usage_lines:?}p" "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "$script: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

# The flags every script takes: --work DIR, --keep, -h/--help. Anything else is an
# error. Sets BENCH_SHIFT to the number of arguments used.
bench_common_flag() {
  case "$1" in
    --work) work="${2:?}"; BENCH_SHIFT=2 ;;
    --keep) keep=1; BENCH_SHIFT=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
}

# Fails unless every named variable holds a positive integer (named as its flag).
bench_positive() {
  local v
  for v in "$@"; do
    [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || die "--${v//_/-} must be a positive integer"
  done
}

# Fails unless every command is on PATH.
bench_need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || die "$t is missing"
  done
}

# The scratch directory: --work DIR or BENCH_WORK (the caller's, kept), else a new
# /tmp/PREFIX.XXXXXX removed on exit unless --keep. `bench_on_exit`, if the script
# defines it, runs first (e.g. to stop a server the script started).
bench_work() {
  if [[ -z "$work" ]]; then
    work="$(mktemp -d "/tmp/$1.XXXXXX")"
  else
    keep=1
  fi
  mkdir -p "$work"
  trap bench_cleanup EXIT
}

bench_cleanup() {
  if declare -F bench_on_exit >/dev/null; then bench_on_exit || true; fi
  if [[ $keep -eq 0 ]]; then rm -rf "$work"; fi
}

# Builds release binaries of the workspace (`cargo build -q --release --locked ARGS`);
# they are in $bin.
bench_build() {
  bench_need cargo
  log "building (release): $*"
  (cd "$root" && cargo build -q --release --locked "$@") || die "release build failed"
  bin="$root/target/release"
}
