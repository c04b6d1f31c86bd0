#!/usr/bin/env bash
# The baked-weights build path (--build-arg WEIGHTS=openaudio-s1-mini) exercised without the Hugging Face Hub:
#  1. the tiny model is laid out as a Hub cache snapshot (blobs, snapshots/<commit>, refs/main) in buildah's
#     cache mount for /root/.cache/huggingface, where the real download would have put it;
#  2. the real Dockerfile is built with WEIGHTS=openaudio-s1-mini, the pinned commit, WEIGHTS_OFFLINE=1 and a
#     throwaway token as the hf_token build secret;
#  3. the smoke test runs with --baked: labels and FISHTUNE_MODEL, SHA256SUMS verified inside the image,
#     doctor reports "baked into the image: ...@<commit>", and the token is nowhere in the image's metadata
#     or history; then the usual doctor + STAGE=all run.
#
#   docker/bake_test.sh          (root, buildah; uses .venv for the tiny model)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/fishtune:baked-test}
[ "$(docker/engine.sh)" = buildah ] || { echo "error: bake_test.sh needs buildah" >&2; exit 2; }
# buildah keeps RUN --mount=type=cache folders here (buildah >= 1.30 adds -<uid>), keyed by the target path.
root=${BUILDAH_CACHE:-}
if [ -z "$root" ]; then
  root=/var/tmp/buildah-cache
  [ -d "/var/tmp/buildah-cache-$(id -u)" ] && root=/var/tmp/buildah-cache-$(id -u)
fi
hub="$root/root/.cache/huggingface/hub"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

revision=$(printf 'fishtune bake test' | sha1sum | cut -d' ' -f1)
printf 'hf_bakeTEST%s\n' "$(date +%s%N)" >"$work/token"
.venv/bin/python - "$work/tiny" "$hub" "$revision" <<'PY'
import hashlib, os, shutil, sys
from pathlib import Path
from fishtune.modeling.tiny import write_tiny_model

model, hub, revision = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
write_tiny_model(model, seed=0)
repo = hub / "models--fishaudio--openaudio-s1-mini"
snap = repo / "snapshots" / revision
shutil.rmtree(snap, ignore_errors=True)
snap.mkdir(parents=True)
(repo / "blobs").mkdir(exist_ok=True)
(repo / "refs").mkdir(exist_ok=True)
(repo / "refs" / "main").write_text(revision)
for f in sorted(p for p in model.rglob("*") if p.is_file()):
    data = f.read_bytes()
    name = hashlib.sha256(data).hexdigest() if f.suffix == ".pth" else hashlib.sha1(data).hexdigest()
    (repo / "blobs" / name).write_bytes(data)
    link = snap / f.relative_to(model)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(repo / "blobs" / name, link.parent))
print(f"Hub cache snapshot {revision} in {repo}")
PY

WEIGHTS=openaudio-s1-mini WEIGHTS_REVISION=$revision WEIGHTS_OFFLINE=1 HF_TOKEN_FILE="$work/token" \
  docker/build.sh "$IMAGE"
python3 docker/smoke_test.py --baked --secret-file "$work/token" "$IMAGE"
