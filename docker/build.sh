#!/usr/bin/env bash
# Build the image from the real Dockerfile: `docker buildx` where a Docker daemon answers, else buildah
# (chroot isolation: no daemon, no runc needed), which is what this workplace has.
#
#   docker/build.sh [IMAGE]                                   (make image)
#
# Environment:
#   ENGINE=auto|docker|buildah     auto: docker when `docker info` works, else buildah
#   BASE_IMAGE                     default: the Dockerfile's CUDA base with docker; with buildah the local
#                                  Debian stand-in made by docker/make-base.sh (no registry here)
#   WEIGHTS=none|openaudio-s1-mini, WEIGHTS_REVISION=<commit or branch; default main, content pinned by sha256>,
#   HF_TOKEN_FILE=<file with the token>, WEIGHTS_PINS=<model config with the pins>, HF_ENDPOINT=<Hub URL>
#   WEIGHTS_OFFLINE=1              bake from the build's download cache mount only
#   BUILD_CA                       extra CA bundle for TLS-inspecting proxies (default: the host's bundle)
#   CONTEXT                        build context (default: the repository)
#   BUILD_FLAGS                    extra flags for the engine (e.g. --no-cache)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${1:-${IMAGE:-localhost/fishtune:dev}}
ENGINE=$(docker/engine.sh)
CONTEXT=${CONTEXT:-.}
WEIGHTS=${WEIGHTS:-none}
PY=${PYTHON:-python3}

# Versions for the OCI labels, read from pyproject.toml and uv.lock (tomllib: Python >= 3.11).
mapfile -t version_args < <("$PY" - <<'PY'
import subprocess, tomllib
lock = {p["name"]: p["version"] for p in tomllib.load(open("uv.lock", "rb"))["package"]}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
try:
    ref = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout:
        ref += "-dirty"
except (OSError, subprocess.CalledProcessError):
    ref = "unknown"
for key, value in [
    ("VERSION", project["version"]), ("VCS_REF", ref), ("TORCH_VERSION", lock["torch"]),
    ("TORCHCODEC_VERSION", lock["torchcodec"]), ("PROTOBUF_VERSION", lock["protobuf"]),
    ("FISH_SPEECH_VERSION", lock["fish-speech"]),
]:
    print("--build-arg")
    print(f"{key}={value}")
PY
)

# WEIGHTS is always passed explicitly: buildah 1.28 does not apply a global ARG's default when it picks the
# stages a `FROM weights-${WEIGHTS}` needs.
args=(-f Dockerfile -t "$IMAGE" --build-arg "WEIGHTS=$WEIGHTS" "${version_args[@]}")
[ -n "${WEIGHTS_REVISION:-}" ] && args+=(--build-arg "WEIGHTS_REVISION=$WEIGHTS_REVISION")
[ -n "${WITH_ESPEAK:-}" ] && args+=(--build-arg "WITH_ESPEAK=$WITH_ESPEAK")
[ -n "${WEIGHTS_PINS:-}" ] && args+=(--build-arg "WEIGHTS_PINS=$WEIGHTS_PINS")
[ -n "${HF_ENDPOINT:-}" ] && args+=(--build-arg "HF_ENDPOINT=$HF_ENDPOINT")
[ "${WEIGHTS_OFFLINE:-0}" = 1 ] && args+=(--build-arg "HF_HUB_OFFLINE=1")
if [ "$WEIGHTS" != none ]; then
  if [ -z "${HF_TOKEN_FILE:-}" ] || [ ! -s "$HF_TOKEN_FILE" ]; then
    echo "error: WEIGHTS=$WEIGHTS needs HF_TOKEN_FILE=<file holding a Hugging Face token> (passed as a build secret)" >&2
    exit 2
  fi
  args+=(--secret "id=hf_token,src=$HF_TOKEN_FILE")
fi
BUILD_CA=${BUILD_CA-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
[ -n "$BUILD_CA" ] && [ -s "$BUILD_CA" ] && args+=(--secret "id=build_ca,src=$BUILD_CA")

start=$(date +%s)
case "$ENGINE" in
  docker)
    [ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    echo "+ docker buildx build ${args[*]} ${BUILD_FLAGS:-} $CONTEXT"
    # shellcheck disable=SC2086
    DOCKER_BUILDKIT=1 docker buildx build --load "${args[@]}" ${BUILD_FLAGS:-} "$CONTEXT"
    size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
    ;;
  buildah)
    free_gb=$(df -P --block-size=1G /var/lib/containers 2>/dev/null | awk 'NR==2 {print $4}')
    if [ "${free_gb:-100}" -lt "${MIN_FREE_GB:-25}" ]; then
      # Each lock change leaves a ~9 GB layer behind; the uv cache mount keeps the next rebuild at minutes.
      echo "only ${free_gb} GB free for container storage: removing dangling images (buildah rmi --prune)"
      buildah rmi --prune >/dev/null || true
    fi
    BASE_IMAGE=${BASE_IMAGE:-localhost/fishtune-base:bookworm}
    if [ "$BASE_IMAGE" = localhost/fishtune-base:bookworm ]; then docker/make-base.sh "$BASE_IMAGE"; fi
    args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    # buildah 1.28 does not know COPY --link (BuildKit: the weights layer does not depend on the layers below it);
    # the same file without the flag builds the same layers.
    nolink=$(mktemp)
    trap 'rm -f "$nolink"' EXIT
    sed -E 's/^COPY --link /COPY /' Dockerfile >"$nolink"
    args[1]=$nolink
    # --layers: reuse unchanged layers between builds; cache mounts persist under /var/tmp/buildah-cache*.
    # --force-rm: no working containers left behind by a failed step.
    # --format docker: keeps SHELL and STOPSIGNAL as written.
    echo "+ buildah bud --isolation chroot --layers --force-rm --format docker ${args[*]} ${BUILD_FLAGS:-} $CONTEXT"
    # shellcheck disable=SC2086
    buildah bud --isolation chroot --layers --force-rm --format docker "${args[@]}" ${BUILD_FLAGS:-} "$CONTEXT"
    size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)
    ;;
  *) echo "error: unknown ENGINE '$ENGINE'" >&2; exit 2 ;;
esac
echo "built $IMAGE with $ENGINE in $(( $(date +%s) - start )) s; size $size"
