#!/usr/bin/env bash
# Builds Peregrine's container image from a static binary built on this machine: the final
# stage of deploy/Dockerfile (the same files, user, environment, entry point, health check and
# labels), with the builder's outputs taken from a small build context instead, so no base
# image is pulled. For machines that cannot reach a registry; deploy/Dockerfile remains the
# way to build from source.
#
#   cargo build --release --target x86_64-unknown-linux-musl -p peregrine
#   deploy/build-local-image.sh [BINARY [TAG]]
#
# BINARY defaults to target/x86_64-unknown-linux-musl/release/peregrine, TAG to
# peregrine:local. /bin/busybox must be static (Debian's busybox-static): the health check
# runs its wget. PODMAN names the engine (default podman; docker works too) and PODMAN_ARGS
# adds global options, e.g. "--storage-driver=vfs --root DIR --runroot DIR".
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-$repo/target/x86_64-unknown-linux-musl/release/peregrine}
tag=${2:-peregrine:local}
engine=${PODMAN:-podman}
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

install -m 0755 "$binary" "$context/peregrine"
install -m 0755 /bin/busybox "$context/busybox"
install -m 0644 "$repo/deploy/container.toml" "$context/container.toml"
# The last stage, from its FROM on, with each COPY's source renamed to the context's copy.
awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END {printf "%s", stage}' "$repo/deploy/Dockerfile" |
    sed -e 's#^COPY --from=builder /out/peregrine #COPY peregrine #' \
        -e 's#^COPY --from=builder /bin/busybox #COPY busybox #' \
        -e 's#^COPY deploy/container.toml #COPY container.toml #' >"$context/Containerfile"
if grep -q '^COPY --from=' "$context/Containerfile"; then
    echo "build-local-image: the final stage copies something this script does not provide:" >&2
    grep '^COPY --from=' "$context/Containerfile" >&2
    exit 1
fi
# Docker's format: the OCI format has no HEALTHCHECK.
# shellcheck disable=SC2086 # PODMAN_ARGS is a list of options
$engine ${PODMAN_ARGS:-} build --format docker -f "$context/Containerfile" -t "$tag" "$context"
