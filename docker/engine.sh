#!/usr/bin/env bash
# Print the container engine to use: $ENGINE when set (docker | buildah), else docker when a Docker daemon
# answers and buildx is there, else buildah when installed. Exit 1 with a hint when there is none.
set -euo pipefail
if [ -n "${ENGINE:-}" ] && [ "$ENGINE" != auto ]; then
  echo "$ENGINE"
elif command -v docker >/dev/null && docker info >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
  echo docker
elif command -v buildah >/dev/null; then
  echo buildah
else
  echo "error: no container engine: install Docker (with buildx) or buildah (apt-get install buildah)" >&2
  exit 1
fi
