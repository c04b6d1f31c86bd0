#!/usr/bin/env bash
# Wheels for bench/device-requirements.txt in .whl/ (for a GPU machine without internet): binary wheels for
# CPython 3.12 on manylinux where PyPI has them, else built here from the sdist (all such are pure Python).
# Usage: bench/device-wheels.sh [python-version]   (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
pyver="${1:-3.12}"
out=.whl
mkdir -p "$out"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
grep -v '^#' bench/device-requirements.txt | while read -r req; do
  [ -n "$req" ] || continue
  if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
      "${platforms[@]}" -d "$out" "$req" >/dev/null 2>&1; then
    echo "building $req (no wheel on PyPI)"
    python3 -m pip wheel -q --no-deps -w "$out" "$req" >/dev/null 2>&1
  fi
done
echo "$(find "$out" -type f -name '*.whl' | wc -l) wheels in $out ($(du -sh "$out" | cut -f1))"
