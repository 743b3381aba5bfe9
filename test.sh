#!/usr/bin/env bash
# Runs Peregrine's whole test suite: formatting, lints, unit and integration tests (over real
# loopback sockets, with both IO drivers), and the container image's contents (a static musl
# build run in an empty root; see core/tests/container.rs), then the Windows build under Wine
# (.ci/wine-test.sh). Installs the tools the tests use (curl, wrk, nghttp2-client, strace,
# musl-tools, busybox-static, podman, the musl Rust target; mingw-w64, Wine and the Windows target)
# when they are missing. Usage: ./test.sh
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v strace >/dev/null || missing+=(strace)       # the seccomp profile's syscall check
command -v openssl >/dev/null || missing+=(openssl)     # the development certificate, mTLS tests
command -v systemd-socket-activate >/dev/null || missing+=(systemd) # socket activation test
command -v musl-gcc >/dev/null || missing+=(musl-tools) # C (mimalloc) for the static build
[ -e /bin/busybox ] || missing+=(busybox-static)        # the image's HEALTHCHECK client
command -v podman >/dev/null || missing+=(podman)       # builds the container image
if ((${#missing[@]})); then
    echo "test.sh: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Kubernetes manifests' schema check (core/tests/container.rs), from PyPI.
command -v kubernetes-validate >/dev/null || python3 -m pip install -q kubernetes-validate
for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# What core/tests/container.rs runs but cannot build itself: the seccomp launcher and the
# image's static binary (debug profile: the optimised build is the image's own job). With
# PEREGRINE_CONTAINER_TESTS=require, a missing one fails those tests instead of skipping
# them; only a machine that cannot get the musl target at all (rustup needs to download it
# once) runs them without, skipping what needs the static binary, with a warning.
cargo build -p peregrine-seccomp-run
musl=x86_64-unknown-linux-musl
if rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl"; then
    cargo build --target "$musl" -p peregrine
    export PEREGRINE_CONTAINER_TESTS=require
else
    echo "test.sh: WARNING: no $musl target; skipping the static-binary container tests" >&2
fi
cargo test --workspace

# --- Soak ----------------------------------------------------------------------------------
# One minute of the soak (bench/README.md, `--soak`) on the debug build: wrk, h2load, new TLS
# connections and /echo round trips, all of which must succeed, while 10,000 idle
# connections, slowloris and the HTTP/2 floods run; RSS must stay flat and within budget,
# and the descriptors come back to rest. PEREGRINE_SOAK_SECONDS changes the time; 0 skips.
soak_seconds=${PEREGRINE_SOAK_SECONDS:-60}
if [ "$soak_seconds" != 0 ]; then
    cargo run -q -p peregrine-bench -- --soak "$soak_seconds" --no-pin \
        --peregrine target/debug/peregrine --out target/soak
fi

# --- Fuzzing -------------------------------------------------------------------------------
# Every parser's fuzz target for 30 s (fuzz/README.md; a workspace of its own, built on the
# stable toolchain): a crash that shows up that quickly fails the run, with its input in
# fuzz/artifacts/. PEREGRINE_FUZZ_SECONDS changes the time; 0 leaves this part out.
fuzz_seconds=${PEREGRINE_FUZZ_SECONDS:-30}
if [ "$fuzz_seconds" != 0 ]; then
    (cd fuzz && cargo fmt -- --check)
    fuzz/run.sh "$fuzz_seconds"
fi

# --- Windows, under Wine -----------------------------------------------------------------
# Cross-builds for x86_64-pc-windows-gnu and runs the IOCP driver's conformance suite, core's
# tests and a peregrine.exe smoke test under Wine (installs mingw-w64 and Wine when missing;
# the prefix lives in target/wine-prefix). PEREGRINE_SKIP_WINE=1 leaves this part out.
if [ "${PEREGRINE_SKIP_WINE:-0}" != 1 ]; then
    .ci/wine-test.sh
fi
