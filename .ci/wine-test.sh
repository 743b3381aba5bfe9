#!/usr/bin/env bash
# The Windows part of the test suite, run on Linux: cross-builds Peregrine for
# x86_64-pc-windows-gnu and runs it under Wine (correctness only: Wine is 10-20x slower than
# Windows and schedules differently, so nothing here measures speed).
#
#   1. clippy for the Windows target (io-windows and core, all targets);
#   2. the driver conformance suite and io-windows' own tests against the IOCP driver;
#   3. core's unit and integration tests (raw-socket HTTP/1.1, limits, lifecycle, admin);
#   4. a smoke test: `peregrine.exe` under Wine answers `/plaintext` to curl running on Linux,
#      and Ctrl+C (SIGINT, which Wine turns into CTRL_C_EVENT) stops it gracefully;
#   5. the same with `--app`: the hosted app answers, and stops with peregrine.exe;
#   6. a config reload by `POST /reload`, then a binary upgrade by `POST /upgrade` under a
#      curl loop: no failed request.
#
# Called by test.sh; runs on its own too: .ci/wine-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/wine-env.sh
target=x86_64-pc-windows-gnu

cargo clippy --target "$target" -p peregrine-io-windows -p peregrine --all-targets -- -D warnings
cargo test --target "$target" -p peregrine-io-windows -p peregrine

echo "wine-test: smoke test of peregrine.exe"
exe="target/$target/debug/peregrine.exe"
cargo build --target "$target" -p peregrine --bin peregrine
out=$(mktemp -d)
"$WINE" "$exe" --listen 127.0.0.1:0 --threads 2 >"$out/stdout" 2>"$out/stderr" </dev/null &
pid=$!
stop() { kill -KILL "$pid" 2>/dev/null || true; }
# Ctrl+C (SIGINT, which Wine turns into CTRL_C_EVENT), then up to 30 s for the exit.
interrupt_and_wait() {
    kill -INT "$1"
    for _ in $(seq 1 60); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.5
    done
}
trap stop EXIT
addr=""
for _ in $(seq 1 120); do # up to 60 s: the first start in a fresh prefix is slow
    addr=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out/stdout" | head -1 || true)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
done
if [ -z "$addr" ]; then
    echo "wine-test: peregrine.exe did not start" >&2
    cat "$out/stdout" "$out/stderr" >&2
    exit 1
fi
body=$(curl -sS --max-time 10 "$addr/plaintext")
if [ "$body" != "Hello, World!" ]; then
    echo "wine-test: GET $addr/plaintext answered '$body'" >&2
    exit 1
fi
# Several connections, so both reactors (fed by the accept thread in turn) serve some.
for _ in 1 2 3 4; do
    [ "$(curl -sS --max-time 10 "$addr/plaintext")" = "Hello, World!" ]
done
interrupt_and_wait "$pid"
if kill -0 "$pid" 2>/dev/null || ! grep -q "graceful shutdown started" "$out/stderr"; then
    echo "wine-test: Ctrl+C did not stop peregrine.exe gracefully" >&2
    cat "$out/stderr" >&2
    exit 1
fi
trap - EXIT
rm -rf "$out"
echo "wine-test: peregrine.exe served $addr/plaintext under Wine and stopped on Ctrl+C"

# 5. App hosting: `peregrine.exe --app hosted_app.exe` starts the app on the first request,
#    and Ctrl+C stops the app too (Ctrl+Break, else a kill after shutdown_time_limit).
echo "wine-test: app hosting under Wine"
cargo build --target "$target" -p peregrine --example hosted_app
app="target/$target/debug/examples/hosted_app.exe"
out=$(mktemp -d)
"$WINE" "$exe" --listen 127.0.0.1:0 --threads 1 --app "$app" >"$out/stdout" 2>"$out/stderr" </dev/null &
pid=$!
trap stop EXIT
addr=""
for _ in $(seq 1 120); do
    addr=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$out/stdout" | head -1 || true)
    [ -n "$addr" ] && break
    sleep 0.5
done
body=$(curl -sS --max-time 30 "$addr/from-linux" || true)
port=$(printf '%s\n' "$body" | sed -n 's/^port=//p')
if [ -z "$port" ] || ! printf '%s\n' "$body" | grep -qx 'path=/from-linux'; then
    echo "wine-test: the hosted app did not answer: '$body'" >&2
    cat "$out/stderr" >&2
    exit 1
fi
interrupt_and_wait "$pid"
if kill -0 "$pid" 2>/dev/null || ! grep -q "app stopped" "$out/stderr"; then
    echo "wine-test: Ctrl+C did not stop peregrine.exe and its app" >&2
    cat "$out/stderr" >&2
    exit 1
fi
if curl -sS --max-time 2 "http://127.0.0.1:$port/" >/dev/null 2>&1; then
    echo "wine-test: the app on port $port outlived peregrine.exe" >&2
    exit 1
fi
trap - EXIT
rm -rf "$out"
echo "wine-test: peregrine.exe hosted an app under Wine and stopped it with itself"

# 6. Reload and binary upgrade: `POST /reload` and `POST /upgrade` on the admin listener
#    (Windows has no SIGHUP or SIGUSR2). After the reload, the upgrade: the new
#    process gets the listening sockets (WSADuplicateSocketW) and the admin listener's,
#    reports ready, and the old one drains and exits, while curl requests in a loop see no
#    failure.
echo "wine-test: binary upgrade under Wine"
out=$(mktemp -d)
"$WINE" "$exe" --listen 127.0.0.1:0 --threads 2 --admin 127.0.0.1:0 >"$out/stdout" 2>"$out/stderr" </dev/null &
pid=$!
successor=""
stop_all() {
    kill -KILL "$pid" 2>/dev/null || true
    [ -n "$successor" ] && kill -KILL "$successor" 2>/dev/null || true
}
trap stop_all EXIT
addr=""
admin=""
for _ in $(seq 1 120); do
    addr=$(grep -o 'listening on http://127\.0\.0\.1:[0-9]*' "$out/stdout" | head -1 | sed 's/listening on //' || true)
    admin=$(grep -o 'admin listening on http://127\.0\.0\.1:[0-9]*' "$out/stdout" | head -1 | sed 's/admin listening on //' || true)
    [ -n "$addr" ] && [ -n "$admin" ] && break
    sleep 0.5
done
[ "$(curl -sS --max-time 10 "$addr/plaintext")" = "Hello, World!" ]
# A config reload first (POST /reload, Windows' SIGHUP): the listener is kept and serves on.
reloaded=$(curl -sS --max-time 30 -X POST "$admin/reload" || true)
if ! printf '%s\n' "$reloaded" | grep -q '^reloaded: 1 listeners'; then
    echo "wine-test: POST /reload answered '$reloaded'" >&2
    cat "$out/stderr" >&2
    exit 1
fi
[ "$(curl -sS --max-time 10 "$addr/plaintext")" = "Hello, World!" ]
before=$(pgrep -f 'peregrine\.exe' | sort)
(
    while [ ! -e "$out/done" ]; do
        got=$(curl -sS --max-time 10 "$addr/plaintext" 2>&1) || true
        [ "$got" = "Hello, World!" ] || echo "$(date +%T.%N) $got" >>"$out/failures"
    done
) &
loop=$!
answer=$(curl -sS --max-time 90 -X POST "$admin/upgrade" || true)
if ! printf '%s\n' "$answer" | grep -q '^upgraded: pid'; then
    echo "wine-test: POST /upgrade answered '$answer'" >&2
    cat "$out/stdout" "$out/stderr" >&2
    exit 1
fi
for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
done
if kill -0 "$pid" 2>/dev/null; then
    echo "wine-test: the old peregrine.exe did not exit after the upgrade" >&2
    cat "$out/stderr" >&2
    exit 1
fi
sleep 1
touch "$out/done"
wait "$loop"
if [ -s "$out/failures" ]; then
    echo "wine-test: $(wc -l <"$out/failures") requests failed during the upgrade:" >&2
    cat "$out/failures" >&2
    cat "$out/stderr" >&2
    exit 1
fi
[ "$(curl -sS --max-time 10 "$addr/plaintext")" = "Hello, World!" ]
[ "$(curl -sS --max-time 10 "$admin/healthz")" = "ok" ]
successor=$(comm -13 <(printf '%s\n' "$before") <(pgrep -f 'peregrine\.exe' | sort) | head -1)
if [ -z "$successor" ]; then
    echo "wine-test: no new peregrine.exe process" >&2
    exit 1
fi
interrupt_and_wait "$successor"
trap - EXIT
stop_all
rm -rf "$out"
echo "wine-test: peregrine.exe upgraded itself under Wine with no failed request"
