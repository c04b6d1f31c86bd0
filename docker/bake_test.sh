#!/usr/bin/env bash
# The baked-weights build path (--build-arg WEIGHTS=openaudio-s1-mini) exercised without the Hugging Face Hub:
#  1. tests/hubserver.py, a local stand-in for the Hub (its HTTP API, gated repos, tokens, Range requests), serves
#     the tiny model as a gated fishaudio/openaudio-s1-mini on 127.0.0.1 (buildah's chroot builds share the
#     host's network);
#  2. the real Dockerfile is built with WEIGHTS=openaudio-s1-mini, HF_ENDPOINT pointing at it, the repo's commit,
#     the tiny model's (empty) pins and a throwaway token as the hf_token build secret: the weights stage runs
#     fishtune.weights on the bare python3 of the base stage, as on a real build;
#  3. the smoke test runs with --baked: labels (the weights' licence) and FISHTUNE_MODEL, SHA256SUMS verified
#     inside the image, doctor reports "baked into the image: ...@<commit>", and the token is nowhere in the
#     image's metadata or history; then the usual doctor + STAGE=all run.
#
#   docker/bake_test.sh          (root, buildah; uses .venv for the tiny model and the Hub stand-in)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/fishtune:baked-test}
[ "$(docker/engine.sh)" = buildah ] || { echo "error: bake_test.sh needs buildah" >&2; exit 2; }
work=$(mktemp -d)
hub_pid=
cleanup() {
  [ -n "$hub_pid" ] && kill "$hub_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

printf 'hf_bakeTEST%s\n' "$(date +%s%N)" >"$work/token"
PYTHONPATH=tests .venv/bin/python - "$work" <<'PY' &
import json, sys, time
from pathlib import Path
from fishtune.modeling.tiny import write_tiny_model
from hubserver import FakeHub

work = Path(sys.argv[1])
write_tiny_model(work / "tiny", seed=0)
hub = FakeHub(tokens={(work / "token").read_text().strip()}, lifetime=3600)
files = {p.relative_to(work / "tiny").as_posix(): p.read_bytes() for p in sorted((work / "tiny").rglob("*")) if p.is_file()}
commit = hub.add_repo("fishaudio/openaudio-s1-mini", files, gated=True)
(work / "hub.json").write_text(json.dumps({"url": hub.url, "commit": commit}))
print(f"Hub stand-in at {hub.url}: fishaudio/openaudio-s1-mini@{commit} (gated), {len(files)} files", flush=True)
while True:
    time.sleep(60)
PY
hub_pid=$!
for _ in $(seq 120); do [ -s "$work/hub.json" ] && break; sleep 0.5; done
[ -s "$work/hub.json" ] || { echo "error: the Hub stand-in did not start" >&2; exit 1; }
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$work/hub.json")
commit=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["commit"])' "$work/hub.json")

WEIGHTS=openaudio-s1-mini WEIGHTS_REVISION=$commit WEIGHTS_PINS=configs/model/tiny.yaml HF_ENDPOINT=$url \
  HF_TOKEN_FILE="$work/token" docker/build.sh "$IMAGE"
python3 docker/smoke_test.py --baked --secret-file "$work/token" "$IMAGE"
