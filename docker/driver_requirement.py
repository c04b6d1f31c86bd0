#!/usr/bin/env python3
"""The NVIDIA driver the image needs, computed from the torch build that uv.lock installs (not from a CUDA base
image: the image has none; torch's wheels bring the CUDA runtime, cuBLAS, cuDNN and NCCL).

    python3 docker/driver_requirement.py [--lock uv.lock]       (prints the requirement; --json for a record)

Inputs: the CUDA runtime wheel in uv.lock (``nvidia-cuda-runtime-cu12`` -> CUDA major.minor), torch's version,
and, where torch is importable (.venv), the GPU architectures its kernels are compiled for
(``torch._C._cuda_getArchFlags()``). NVIDIA's rules, from the CUDA Compatibility guide and the toolkit release notes:

* minor-version compatibility: a CUDA 12.x application runs on any driver of the 12.x family's minimum, >= 525.60.13
  (Linux), as long as it needs no PTX JIT, i.e. its kernels include machine code (SASS) for the GPU;
* without that, or for every feature of the runtime, the driver the toolkit shipped with (CUDA 12.8 Update 1:
  >= 570.124.06).
A100 is sm_80 and H100/H200 sm_90: when both are in the build's SASS list, the first rule applies to them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

FAMILY_MINIMUM = {12: "525.60.13", 11: "450.80.02"}  # CUDA major -> minor-version-compatibility driver (Linux)
TOOLKIT_DRIVER = {(12, 8): "570.124.06", (12, 6): "560.35.03", (12, 4): "550.54.14"}  # with that toolkit (Linux)
GPUS = {"A100": "sm_80", "H100": "sm_90", "H200": "sm_90"}


def compute(lock_path: Path) -> dict:
    lock = {p["name"]: p["version"] for p in tomllib.loads(lock_path.read_text())["package"]}
    runtime = next((lock[n] for n in ("nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11") if n in lock), None)
    if runtime is None:
        raise SystemExit("error: uv.lock has no nvidia-cuda-runtime wheel: a CPU-only torch needs no driver")
    major, minor = (int(x) for x in runtime.split(".")[:2])
    arches = None
    try:
        import torch

        arches = list(torch._C._cuda_getArchFlags().split()) if torch.version.cuda else None
    except Exception:  # torch not installed here: the rule is stated for the SASS the torch build is known to have
        pass
    sass = {gpu: (sm in arches) if arches is not None else None for gpu, sm in GPUS.items()}
    needs_jit = not all(sass.values())  # unknown (no torch here) counts as "may need the JIT": the safe answer
    return {
        "torch": lock.get("torch"),
        "cuda_runtime": runtime,
        "cuda": f"{major}.{minor}",
        "arch_flags": arches,
        "sass_for": sass,
        "minimum_driver": TOOLKIT_DRIVER[(major, minor)] if needs_jit else FAMILY_MINIMUM[major],
        "toolkit_driver": TOOLKIT_DRIVER.get((major, minor)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lock", type=Path, default=Path(__file__).resolve().parents[1] / "uv.lock")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = compute(args.lock)
    if args.json:
        print(json.dumps(r))
        return 0
    have = ", ".join(f"{g} {'yes' if v else 'no' if v is False else 'unknown'}" for g, v in r["sass_for"].items())
    print(
        f"torch {r['torch']} with CUDA {r['cuda']} (runtime {r['cuda_runtime']}); machine code for: {have}\n"
        f"minimum NVIDIA driver: {r['minimum_driver']} (CUDA {r['cuda'].split('.')[0]}.x minor-version "
        f"compatibility); every runtime feature: {r['toolkit_driver']} or newer"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
