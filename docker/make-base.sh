#!/usr/bin/env bash
# Make a local stand-in for the CUDA base image where none can be pulled (no registry, no Docker daemon):
# Debian bookworm (minbase, debootstrap) + Python 3.11, imported into buildah's image store as
# localhost/fishtune-base:bookworm. The real Dockerfile then builds on it with
#   --build-arg BASE_IMAGE=localhost/fishtune-base:bookworm
# Torch's CUDA wheels bring their own CUDA libraries, so the image runs the same on CPU; on a GPU host the
# NVIDIA container toolkit injects the driver into either base.
#
#   docker/make-base.sh [IMAGE_NAME]      (root; needs debootstrap and buildah: apt-get install debootstrap buildah)
set -euo pipefail

NAME=${1:-localhost/fishtune-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
INCLUDE=${INCLUDE:-python3,ca-certificates}

if buildah inspect --type image "$NAME" >/dev/null 2>&1 && [ "${FORCE:-0}" != 1 ]; then
  echo "base image $NAME exists (FORCE=1 to remake it)"
  exit 0
fi
for tool in debootstrap buildah; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done

root=$(mktemp -d /var/tmp/fishtune-base.XXXXXX)
ctr=""
cleanup() {
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$root"
}
trap cleanup EXIT

echo "debootstrap $SUITE (minbase + $INCLUDE) into $root"
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# The same apt sources a pulled debian:bookworm image has (security updates included); no caches.
cat >"$root/etc/apt/sources.list" <<SRC
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SRC
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/log/*.log

ctr=$(buildah from scratch)
mnt=$(buildah mount "$ctr")
tar -C "$root" -cf - . | tar -C "$mnt" -xpf -
buildah umount "$ctr" >/dev/null
buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --cmd /bin/bash \
  --label org.opencontainers.image.description="fishtune local base: debian $SUITE minbase + python3 (stand-in for the CUDA base)" \
  "$ctr"
buildah commit --rm --squash "$ctr" "$NAME" >/dev/null
ctr=""
echo "made $NAME ($(buildah inspect --type image --format '{{.Docker.Size}}' "$NAME" 2>/dev/null || echo '?') bytes)"
