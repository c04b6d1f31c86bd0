#!/usr/bin/env bash
# Run the GPU benchmarks on a machine that has torch but no internet (the device tool's H100/H200), with the
# wheels from bench/device-wheels.sh carried in .whl/. Results (JSON, PNG, report.md) go to $OUT, or
# bench-results/. Parts, so that each fits one 10-minute call:
#   bench/on_device.sh train     the training ladder (upstream -> optimized, one change at a time) + mem24
#   bench/on_device.sh rest      torch.compile, extraction (bucketed, bf16, forced OOM back-off), synthesis
#   bench/on_device.sh all       both
# BENCH_SHAPES (default s1-mini) and BENCH_ARGS (extra arguments for the train runs) are for a quick check of
# this script elsewhere, e.g. BENCH_SHAPES=tiny BENCH_ARGS="--batch-size 2 --max-length 512 --steps 2".
set -euo pipefail
cd "$(dirname "$0")/.."
part="${1:-all}"
out="${OUT:-bench-results}"
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt" || true
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
shapes="${BENCH_SHAPES:-s1-mini}"
read -r -a extra <<<"${BENCH_ARGS:-}"
bench() { python3 -m "bench.$1" --shapes "$shapes" "${@:2}"; }
if [ "$part" = train ] || [ "$part" = all ]; then
  bench train --settings ladder,mem24 "${extra[@]}" --out "$out/train-$shapes.json" >/dev/null
fi
if [ "$part" = rest ] || [ "$part" = all ]; then
  bench train --settings upstream,optimized --compile "${extra[@]}" --out "$out/train-$shapes-compile.json" >/dev/null
  bench extract --clips 200 --bf16 --memory-fraction 0.05 --out "$out/extract-$shapes.json" >/dev/null
  bench synth --frames 300 --out "$out/synth-$shapes.json" >/dev/null
fi
python3 -m bench.report "$out"/*.json | tee "$out/report.md"
