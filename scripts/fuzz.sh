#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 600), two at a time,
# under `nice -n 15` (the machine is shared), then prints executions and crashes per
# target. Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain
# RUSTC_BOOTSTRAP=1 lets rustc take the -Z flags cargo-fuzz passes (sanitizers,
# coverage), so no nightly is needed.
#
#   bash scripts/fuzz.sh 600          # 10 minutes per target
#   TARGETS="range_header" bash scripts/fuzz.sh 60
#
# Crashes land in fuzz/artifacts/TARGET/; copy one to fuzz/regressions/TARGET/ and
# `cargo test --test fuzz_regressions` replays it from then on. Logs: fuzz/logs/.
set -euo pipefail

secs=${1:-600}
root=$(cd "$(dirname "$0")/.." && pwd)
export RUSTC_BOOTSTRAP=1
if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz not found: cargo install cargo-fuzz" >&2
    exit 1
fi
read -r -a targets <<<"${TARGETS:-estargz_toc zstd_chunked_toc range_header catalogue_yaml hub_tree_page www_authenticate oci_documents dir_names}"

# Seeds: real layers, documents and headers, so the fuzzer starts from valid input.
seed() {
    local c="$root/fuzz/corpus"
    mkdir -p "$c"/{estargz_toc,zstd_chunked_toc,range_header,catalogue_yaml,hub_tree_page,www_authenticate,oci_documents,dir_names}
    local tmp
    tmp=$(mktemp -d /tmp/depotai-fuzz-seed.XXXXXX)
    local sha=0123456789abcdef0123456789abcdef01234567
    (cd "$root" && cargo run --quiet -- build --from-dir fixtures/tiny-model --name acme/seed --sha $sha \
        --output "$tmp/e" --quiet --chunk-size 64KiB >/dev/null &&
        cargo run --quiet -- build --from-dir fixtures/tiny-model --name acme/seed --sha $sha \
            --output "$tmp/z" --quiet --format zstd-chunked --chunk-size 64KiB >/dev/null)
    for f in "$tmp"/e/blobs/sha256/*; do
        if [ "$(stat -c %s "$f")" -gt 4096 ]; then cp "$f" "$c/estargz_toc/"; else cp "$f" "$c/oci_documents/"; fi
    done
    for f in "$tmp"/z/blobs/sha256/*; do
        if [ "$(stat -c %s "$f")" -gt 4096 ]; then cp "$f" "$c/zstd_chunked_toc/"; fi
    done
    cp "$tmp"/e/index.json "$c/oci_documents/layout-index.json"
    rm -rf "$tmp"
    cp "$root/models/models.yaml" "$c/catalogue_yaml/models.yaml"
    printf '\0\0\x10\0\0\0\0\0bytes=0-99,200-299,-51' >"$c/range_header/multi"
    printf '\0\0\x10\0\0\0\0\0bytes=5-' >"$c/range_header/open"
    printf 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"' \
        >"$c/www_authenticate/bearer"
    printf 'Basic realm="Registry"' >"$c/www_authenticate/basic"
    printf 'config.json\n1_Pooling/config.json\ns -> .\nt -> s/s/../../etc/passwd\nu -> s/config.json\n.wh.w.bin\na\tb\n' \
        >"$c/dir_names/tree"
    cat >"$c/hub_tree_page/page.json" <<'JSON'
[{"type":"file","oid":"e69de29bb2d1d6434b8b29ae775ad8c2e48c5391","size":0,"path":".gitattributes"},
 {"type":"directory","oid":"0000000000000000000000000000000000000000","size":0,"path":"1_Pooling"},
 {"type":"file","oid":"f1b4d8b5b5ad6b1b2ed2b1a1b1e1d1c1b1a19181","size":190,"path":"1_Pooling/config.json"},
 {"type":"file","oid":"a1b2c3d4e5f60718293a4b5c6d7e8f9012345678","size":90868376,"path":"model.safetensors",
  "lfs":{"oid":"53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db","size":90868376,"pointerSize":135}}]
JSON
}

cd "$root/fuzz"
mkdir -p logs
seed
nice -n 15 cargo fuzz build -O >logs/build.log 2>&1 || {
    tail -20 logs/build.log >&2
    exit 1
}

run_one() {
    local t=$1
    mkdir -p "corpus/$t" "artifacts/$t"
    # rss_limit: a target that needs more than 1 GiB for one input is a finding too.
    nice -n 15 cargo fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=1024 -timeout=20 \
        -max_len=1048576 >"logs/$t.log" 2>&1 || true
}

for ((i = 0; i < ${#targets[@]}; i += 2)); do
    run_one "${targets[i]}" &
    if ((i + 1 < ${#targets[@]})); then run_one "${targets[i + 1]}" & fi
    wait
done

printf '%-18s %14s %8s %8s\n' TARGET EXECUTIONS CRASHES CORPUS
for t in "${targets[@]}"; do
    execs=$(grep -h 'stat::number_of_executed_units' "logs/$t.log" | awk '{print $2}' | tail -1)
    crashes=$(find "artifacts/$t" -type f | wc -l)
    corpus=$(find "corpus/$t" -type f | wc -l)
    printf '%-18s %14s %8s %8s\n' "$t" "${execs:-?}" "$crashes" "$corpus"
done
