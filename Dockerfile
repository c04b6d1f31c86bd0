# syntax=docker/dockerfile:1.7
# fishtune: the pipeline in a container for NVIDIA GPUs.
#
#   docker build -t fishtune .                                         # weights fetched at run time into /cache
#   docker build -t fishtune:s1-mini --build-arg WEIGHTS=openaudio-s1-mini \
#       --secret id=hf_token,src=$HOME/.cache/huggingface/token .        # weights baked in (gated: a token)
#   docker run --rm --gpus all --shm-size 8g --stop-timeout 120 -v "$PWD/data:/data" -v fishtune-runs:/runs \
#       -v ~/.cache/huggingface/token:/run/secrets/hf_token:ro -e STAGE=doctor fishtune
#
# Here (no Docker daemon, no registry) `make image` builds this same file with buildah on a local Debian base
# (docker/make-base.sh). Layers go from rarely to often changed: OS packages, the base weights (optional, their
# own layer: `COPY --link` from a stage that needs only python3), the locked Python environment (uv.lock only;
# ~3 GB of torch wheels, kept in a uv cache mount), then our code, so a code or lock change neither downloads
# nor re-pushes the 3.6 GB of weights, and a code change rebuilds in seconds.

# Plain Ubuntu: torch's CUDA wheels bring their own CUDA runtime, cuBLAS, cuDNN and NCCL (nvidia-* wheels in
# uv.lock), so the nvidia/cuda images would only duplicate them; the NVIDIA container runtime mounts the host's
# driver (libcuda) when NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES are set (below). Driver needed:
# docker/driver_requirement.py (from the torch build in uv.lock). Ubuntu 24.04 -> CPython 3.12.
# Pin by digest: docker/refresh-base-digest.sh rewrites this line to ubuntu:24.04@sha256:<index digest>.
ARG BASE_IMAGE=ubuntu:24.04
# none | openaudio-s1-mini (bake the base weights into the image; gated: needs the hf_token secret)
ARG WEIGHTS=none

########## base: OS packages, Python, the unprivileged user
FROM ${BASE_IMAGE} AS base
ARG WITH_ESPEAK=1
ARG APP_UID=1000
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    PYTHONUNBUFFERED=1
# ffmpeg: torchcodec loads its shared libraries (FFmpeg 4-7); libpython3.X: torchcodec's custom ops link
# against the shared libpython, which Debian/Ubuntu's python3 does not pull in; libsndfile: soundfile;
# espeak-ng: the demo dataset and the in-image smoke test (optional: --build-arg WITH_ESPEAK=0);
# libvoikko1 + voikko-fi: Finnish morphology for the text normaliser (case agreement of numbers).
# hadolint ignore=DL3008
RUN espeak="" \
 && if [ "$WITH_ESPEAK" = 1 ]; then espeak="espeak-ng"; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates ffmpeg libsndfile1 libvoikko1 voikko-fi python3 ${espeak:+"$espeak"} \
 && apt-get install -y --no-install-recommends "libpython$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && if getent passwd "$APP_UID" >/dev/null; then userdel --remove "$(getent passwd "$APP_UID" | cut -d: -f1)"; fi \
 && if getent group "$APP_UID" >/dev/null; then groupdel "$(getent group "$APP_UID" | cut -d: -f1)"; fi \
 && groupadd --gid "$APP_UID" fishtune \
 && useradd --uid "$APP_UID" --gid "$APP_UID" --create-home --shell /bin/bash fishtune \
 && mkdir -p /data /runs /cache /app \
 && chown fishtune:fishtune /data /runs /cache

########## uv: the pinned installer (hash-checked wheel from PyPI); only its binary goes on (45 MB)
FROM base AS uv
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
COPY docker/uv-requirements.txt /tmp/uv-requirements.txt
# build_ca: an extra CA bundle for builds behind a TLS-inspecting proxy (optional; not stored in the image).
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi \
 && python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
      --require-hashes -r /tmp/uv-requirements.txt \
 && /opt/uv/bin/uv --version

########## weights-fetch: the base weights at a pinned revision, by fishtune's own installer (src/fishtune/weights.py,
# standard library only: this stage needs python3 and ca-certificates, not the 7 GB environment). The sha256 pins
# are model.files of configs/model/s1-mini.yaml, the ones the fetch stage checks.
FROM base AS weights-fetch
ARG WEIGHTS_REPO=fishaudio/openaudio-s1-mini
# A branch is allowed only because model.pth and codec.pth are pinned by sha256 (WEIGHTS_PINS); the commit it
# resolved to is recorded in WEIGHTS_SOURCE (the label names the revision asked for). Pin a 40-hex commit for a
# fully reproducible image.
ARG WEIGHTS_REVISION=main
ARG WEIGHTS_PINS=configs/model/s1-mini.yaml
# The Hub (tests: a local stand-in); HF_HUB_OFFLINE=1 takes the files from the build's cache mount only.
ARG HF_ENDPOINT=https://huggingface.co
ARG HF_HUB_OFFLINE=0
COPY src/fishtune/weights.py src/fishtune/errors.py /opt/installer/fishtune/
COPY ${WEIGHTS_PINS} /opt/installer/pins.yaml
# The token is a BuildKit secret (a file under /run/secrets), never an ARG or ENV: it is not in the history.
RUN --mount=type=secret,id=hf_token \
    --mount=type=secret,id=build_ca \
    --mount=type=cache,target=/root/.cache/huggingface \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi \
 && touch /opt/installer/fishtune/__init__.py \
 && PYTHONPATH=/opt/installer HF_HUB_OFFLINE="$HF_HUB_OFFLINE" python3 -s -m fishtune.weights \
      --repo "$WEIGHTS_REPO" --revision "$WEIGHTS_REVISION" --pins /opt/installer/pins.yaml \
      --dest /opt/models/openaudio-s1-mini --token-file /run/secrets/hf_token --endpoint "$HF_ENDPOINT" \
      --cache-dir /root/.cache/huggingface/hub --source "baked into the image"

########## weights: nothing (the fetch stage downloads into the /cache volume at run time) ...
FROM base AS weights-none
LABEL org.opencontainers.image.licenses="Apache-2.0"

########## ... or the base weights as one layer of their own, independent of the layers below (--link)
FROM base AS weights-openaudio-s1-mini
ARG WEIGHTS_REPO=fishaudio/openaudio-s1-mini
ARG WEIGHTS_REVISION=main
COPY --link --from=weights-fetch /opt/models/openaudio-s1-mini /opt/models/openaudio-s1-mini
ENV FISHTUNE_MODEL=/opt/models/openaudio-s1-mini
# The image carries the weights, so it is bound by their licence (non-commercial, share-alike), not only the code's.
LABEL io.github.fishtune.weights="${WEIGHTS_REPO}@${WEIGHTS_REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0 AND CC-BY-NC-SA-4.0" \
      io.github.fishtune.weights-license="CC-BY-NC-SA-4.0" \
      io.github.fishtune.code-license="Apache-2.0"

########## deps: the locked environment in /opt/venv (rebuilt only when uv.lock or pyproject.toml change)
# hadolint ignore=DL3006
FROM weights-${WEIGHTS} AS deps
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=/usr/bin/python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
# (Copied, not bind-mounted: buildah 1.28 cannot bind-mount from a stage that came from the layer cache.)
COPY --from=uv /opt/uv/bin/uv /usr/local/bin/uv
WORKDIR /app
COPY pyproject.toml uv.lock /app/
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi \
 && uv sync --frozen --no-dev --no-install-project \
 && /opt/venv/bin/python -c "import torch, torchcodec, google.protobuf as pb; print('torch', torch.__version__, 'protobuf', pb.__version__)"

########## app: our code (seconds to rebuild)
FROM deps AS app
ARG BASE_IMAGE
ARG WEIGHTS
ARG APP_UID=1000
ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG SOURCE_URL=
ARG TORCH_VERSION=2.9.1
ARG TORCHCODEC_VERSION=0.8.1
ARG PROTOBUF_VERSION=3.20.3
ARG FISH_SPEECH_VERSION=0.1.0
COPY README.md entrypoint.py pyproject.toml uv.lock /app/
COPY configs /app/configs
COPY src /app/src
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi \
 && uv sync --frozen --no-dev \
 && /opt/venv/bin/python -m compileall -q /app/src /app/entrypoint.py

LABEL org.opencontainers.image.title="fishtune" \
      org.opencontainers.image.description="LoRA fine-tuning pipeline for the Fish Speech TTS model (openaudio-s1-mini)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.github.fishtune.weights-baked="${WEIGHTS}" \
      io.github.fishtune.torch="${TORCH_VERSION}" \
      io.github.fishtune.torchcodec="${TORCHCODEC_VERSION}" \
      io.github.fishtune.protobuf="${PROTOBUF_VERSION}" \
      io.github.fishtune.fish-speech="${FISH_SPEECH_VERSION}"

# Expandable segments: less fragmentation with variable-length batches. torch >= 2.9 reads PYTORCH_ALLOC_CONF
# and warns on every start when only the older PYTORCH_CUDA_ALLOC_CONF is set; both are set.
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
    PYTORCH_ALLOC_CONF=expandable_segments:True \
    FISHTUNE_DATA=/data \
    FISHTUNE_RUNS=/runs \
    FISHTUNE_CACHE=/cache \
    FISHTUNE_CONFIGS=/app/configs \
    HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache/xdg \
    TRITON_CACHE_DIR=/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/cache/torchinductor \
    MPLCONFIGDIR=/tmp/matplotlib \
    SERVE_HOST=0.0.0.0 \
    SERVE_PORT=8080
USER ${APP_UID}:${APP_UID}
WORKDIR /runs
VOLUME ["/data", "/runs", "/cache"]
# STAGE=serve (or serve.after=true): the page and the speech API; off loopback it needs SERVE_TOKEN.
EXPOSE 8080
# docker stop / Kubernetes send SIGTERM (SIGINT works the same): the stage stops cleanly (exit 130) and a rerun
# resumes where it left off; serve exits 0. Give it time: docker run --stop-timeout 120 (default 10 s).
ENTRYPOINT ["python", "/app/entrypoint.py"]
CMD []
