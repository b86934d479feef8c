#!/usr/bin/env bash
# Runs every fuzz target of the project for a bounded time (default 60 s each) and prints
# how many inputs each executed and whether it found anything.
#
#   fuzz/run.sh              # every target, 60 s each
#   fuzz/run.sh 10           # every target, 10 s each
#   fuzz/run.sh 300 duration # one target, 5 minutes
#
# Works on a stable toolchain: cargo fuzz passes nightly-only flags (-Z sanitizer, ...) to
# rustc, which RUSTC_BOOTSTRAP=1 allows. Installs cargo-fuzz from crates.io when missing.
# Targets are built optimized, with AddressSanitizer (cargo fuzz's default) and with debug
# assertions, so an arithmetic overflow is a crash too.
# The corpus grows in fuzz/corpus/<target> (not committed), seeded from fuzz/seeds/<target>;
# a crash is saved in fuzz/artifacts/<target>/ and makes the script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(http_request http_target duration server_attr support_read_line rpc_xdr rpc_record)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build --release --debug-assertions

failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="artifacts/$target/last-run.log"
    echo "==> $target for ${seconds}s"
    status=0
    cargo fuzz run --release --debug-assertions "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corpus=$(ls "corpus/$target" | wc -l)
    if ((status == 0)); then
        summary+=("$target: ${runs:-?} executions in ${seconds}s, corpus $corpus, no crash")
    else
        failed+=("$target")
        summary+=("$target: FAILED (status $status) after ${runs:-?} executions; see $log")
        grep -E "panicked at|SUMMARY|Test unit written" "$log" | head -5 || true
    fi
done

echo
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]}"
    exit 1
fi
