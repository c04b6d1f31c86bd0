#!/usr/bin/env bash
# The whole GPU check in one go, sized for one 10-minute call on an H100/H200 (about 8 minutes; parts that would
# start after BENCH_BUDGET_S, default 510 s, are skipped and say so):
#   train     the training ladder on s1-mini shapes at 8 x 4096 (upstream -> optimized, one change at a time),
#             plus train.memory_limit_gb=72 (mem72) and preset=24gb (mem24); MFU/HFU against a bf16 matmul
#             measured in the same run
#   extract   codec extraction: one clip at a time vs bucketed batches, fp32 / TF32 / bf16 (code agreement), OOM
#             back-off under a memory cap
#   synth     synthesis latency and real-time factor
#   fullsize  make rehearse's random full-size model through the product's train (3 steps) and merge stages
#   compile   the optimized setting with torch.compile (last: the first to go when time is short)
# Results in $OUT (or bench-results): JSON, PNG, a log per part, env.txt and report.md.
# Packages: the machine's own always win. Wheels carried in .whl/ (make device-wheels) are installed into
# /tmp/site only for distributions the machine lacks (bench/device_site.py), so nothing shadows its packages.
# Elsewhere, a quick check of this script: BENCH_SHAPES=tiny BENCH_DEVICE=cpu BENCH_ARGS="--batch-size 2
# --max-length 512 --steps 2 --warmup 1 --clips 40" bench/on_device.sh
set -uo pipefail # no -e: a failing part is recorded and the others still run
cd "$(dirname "$0")/.." || exit 1
out="${OUT:-bench-results}"
budget="${BENCH_BUDGET_S:-510}"
shapes="${BENCH_SHAPES:-s1-mini}"
device="${BENCH_DEVICE:-cuda}"
read -r -a extra <<<"${BENCH_ARGS:-}"
mkdir -p "$out"
if [ -d .whl ]; then
  python3 bench/device_site.py .whl /tmp/site | tee "$out/env.txt" || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$out/env.txt" 2>&1
python3 - >>"$out/env.txt" 2>&1 <<'PY'
import importlib
for name in ("torch", "numpy", "google.protobuf", "tensorboard", "lightning", "fish_speech", "fishtune"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", ""), m.__file__)
    except Exception as e:  # recorded, not fatal: the parts that need it fail with their own message
        print(name, "IMPORT FAILED:", repr(e))
PY
cat "$out/env.txt"
summary=()
part() { # part NAME LIMIT_S COMMAND...: run with a time limit, log to $out/NAME.log
  local name=$1 limit=$2 left=$((budget - SECONDS)) start=$SECONDS rc
  shift 2
  if [ "$left" -lt 30 ]; then
    summary+=("$name: skipped (time budget spent)")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name at ${SECONDS}s (limit ${limit}s)"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  summary+=("$name: exit $rc after $((SECONDS - start)) s")
  echo "   exit $rc after $((SECONDS - start)) s"
}
fullsize_model=s1-mini
[ "$shapes" = tiny ] && fullsize_model=tiny
part train 300 python3 -m bench.train --shapes "$shapes" --settings ladder,mem72,mem24 --steps 6 --warmup 2 \
  "${extra[@]}" --out "$out/train-$shapes.json"
part extract 100 python3 -m bench.extract --shapes "$shapes" --clips 100 --precisions tf32,bf16 \
  --memory-fraction 0.05 --out "$out/extract-$shapes.json"
part synth 90 python3 -m bench.synth --shapes "$shapes" --frames 200 --out "$out/synth-$shapes.json"
part fullsize 240 python3 -m bench.fullsize --model "$fullsize_model" --device "$device" --dir /tmp/fullsize \
  --out "$out/fullsize-$fullsize_model.json"
cp /tmp/fullsize/*.log "$out/" 2>/dev/null
part compile 150 python3 -m bench.train --shapes "$shapes" --settings optimized --compile --steps 6 --warmup 2 \
  "${extra[@]}" --out "$out/train-$shapes-compile.json"
{
  python3 -m bench.report "$out"/*.json
  echo
  echo "### parts"
  echo
  printf -- '- %s\n' "${summary[@]}"
  echo
  echo '```'
  cat "$out/env.txt"
  echo '```'
} >"$out/report.md"
cat "$out/report.md"
