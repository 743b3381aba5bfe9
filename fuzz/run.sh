#!/usr/bin/env bash
# Builds the fuzz targets on the stable toolchain (libFuzzer's coverage instrumentation
# through stable codegen flags: what `cargo fuzz build -s none` does) and runs each for
# SECONDS (default 30), corpus in fuzz/corpus/<target>, seeded from fuzz/seeds/<target>.
# A crash stops the run and leaves its input in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#   FUZZ_RUNS=10000000 fuzz/run.sh 0 [TARGET...]   # a number of executions instead of a time
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(h1_request h1_body h1_response h2_frames hpack h2_server proxy_protocol config)
fi
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# An explicit target keeps RUSTFLAGS off build scripts (they must not be instrumented).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --bins --target "$host"
bin="$CARGO_TARGET_DIR/$host/release"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    echo "fuzz: $t for ${seconds}s"
    budget=(-max_total_time="$seconds")
    [ -n "${FUZZ_RUNS:-}" ] && budget=(-runs="$FUZZ_RUNS")
    "$bin/$t" "${budget[@]}" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" "${seeds[@]}" 2>&1 |
        grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE|==[0-9]+==|SUMMARY|.*panicked)" || true
    # libFuzzer exits non-zero on a crash; the pipe hides it, the artifact does not.
    if compgen -G "artifacts/$t/crash-*" >/dev/null || compgen -G "artifacts/$t/oom-*" >/dev/null ||
        compgen -G "artifacts/$t/timeout-*" >/dev/null; then
        echo "fuzz: $t found a failing input:"
        ls "artifacts/$t"
        exit 1
    fi
done
