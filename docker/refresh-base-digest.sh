#!/usr/bin/env bash
# Pin the Dockerfile's base image by digest: `ARG BASE_IMAGE=<tag>` (or `<tag>@sha256:<old>`) becomes
# `<tag>@sha256:<the tag's current index digest>`. Run where a registry answers (not in this workplace), review the
# diff, commit; rerun to move to a rebuilt tag (Ubuntu's images are refreshed with security updates).
#
#   docker/refresh-base-digest.sh            (make base-digest)
#
# Uses the first of: docker buildx imagetools, skopeo, crane.
set -euo pipefail
cd "$(dirname "$0")/.."

ref=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
tag=${ref%@*}
[ -n "$tag" ] || { echo "error: no 'ARG BASE_IMAGE=' line in Dockerfile" >&2; exit 2; }
if docker buildx version >/dev/null 2>&1; then
  digest=$(docker buildx imagetools inspect "$tag" --format '{{json .Manifest.Digest}}' | tr -d '"')
elif command -v skopeo >/dev/null; then
  digest="sha256:$(skopeo inspect --raw "docker://docker.io/library/$tag" | sha256sum | cut -d' ' -f1)"
elif command -v crane >/dev/null; then
  digest=$(crane digest "$tag")
else
  echo "error: needs docker buildx, skopeo or crane (and a registry that answers)" >&2
  exit 2
fi
[[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "error: no digest for $tag (got '$digest')" >&2; exit 1; }
sed -i -E "s|^ARG BASE_IMAGE=.*|ARG BASE_IMAGE=$tag@$digest|" Dockerfile
echo "BASE_IMAGE: $ref -> $tag@$digest"
