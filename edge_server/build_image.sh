#!/bin/sh
# Build the edge-server image from edge_server/Dockerfile with podman, without Docker and
# without a registry: the base image is a Debian 12 root file system made by mmdebstrap
# (Python 3.11, as in python:3.11-slim), imported into podman, and passed to the Dockerfile
# as its BASE. The Dockerfile stays the one recipe; this only supplies what a registry would.
#
#   edge_server/build_image.sh [TAG]          (from the repo root, as root; default TAG
#                                              splitnet-edge:latest)
#
# Environment: TORCH_INDEX and PIP_FIND_LINKS are passed to the build (where the CPU torch
# wheel comes from); a folder in PIP_FIND_LINKS is mounted read-only into the build.
set -eu
TAG=${1:-splitnet-edge:latest}
BASE=localhost/splitnet-base:bookworm
WORK=${WORK:-runs/image}
mkdir -p "$WORK"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need podman || ! need mmdebstrap; then
    echo "installing podman and mmdebstrap (Debian packages)"
    apt-get update -qq && apt-get install -y -qq podman mmdebstrap uidmap >/dev/null
fi

if ! podman image exists "$BASE"; then
    echo "base: Debian bookworm + python3 (mmdebstrap)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$WORK/base.tar"
    podman import --quiet "$WORK/base.tar" "$BASE" >/dev/null
    rm -f "$WORK/base.tar"
fi

MOUNTS=""
if [ -n "${PIP_FIND_LINKS:-}" ] && [ -d "$PIP_FIND_LINKS" ]; then
    MOUNTS="--volume $PIP_FIND_LINKS:$PIP_FIND_LINKS:ro"
fi
# the host's CA bundle, for a network that inspects TLS
[ -f /etc/ssl/certs/ca-certificates.crt ] && \
    MOUNTS="$MOUNTS --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"

echo "image: $TAG (edge_server/Dockerfile, BASE=$BASE)"
# chroot isolation: RUN steps need no OCI runtime (crun refuses hybrid cgroup hosts, such as
# the sandbox this was first built in); docker format keeps the HEALTHCHECK
# shellcheck disable=SC2086
podman build --quiet --format docker --network host --isolation chroot $MOUNTS \
    --build-arg BASE="$BASE" \
    --build-arg TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" \
    --build-arg PIP_FIND_LINKS="${PIP_FIND_LINKS:-}" \
    --file edge_server/Dockerfile --tag "$TAG" . >/dev/null
podman image inspect "$TAG" --format 'built {{.Id}}: {{.Size}} bytes, user {{.Config.User}}'
