"""Stage ``doctor`` (alias ``preflight``): check everything a run needs before any money is spent.

Prints one line per check (ok / warn / FAIL) and fails when something would make a later stage fail:
missing or incomplete base weights, no dataset, too little disk, a broken audio decoder, the wrong protobuf.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import shutil
from pathlib import Path

from omegaconf import DictConfig

from fishtune import formats, versions
from fishtune.datasets import data_root
from fishtune.errors import FishtuneError, StageFailed
from fishtune.layout import RunLayout
from fishtune.modeling import files
from fishtune.results import StageResult
from fishtune.runstate import write_json_atomic

log = logging.getLogger("fishtune.doctor")


class Report:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, name: str, status: str, detail: str) -> None:
        self.rows.append({"check": name, "status": status, "detail": detail})
        level = {"ok": logging.INFO, "warn": logging.WARNING, "FAIL": logging.ERROR}[status]
        log.log(level, "%-5s %-12s %s", status, name, detail)

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "FAIL"]


def _check_software(rep: Report) -> None:
    v = versions.package_versions()
    rep.add("python", "ok", f"{platform.python_version()} ({platform.machine()})")
    rep.add("packages", "ok", ", ".join(f"{k} {v[k]}" for k in versions.TRACKED if k != "python"))
    if not v["protobuf"].startswith("3.20."):
        rep.add(
            "protobuf",
            "FAIL",
            f"protobuf {v['protobuf']} installed; the packed data format needs 3.20.x "
            "(reinstall from the lock: make setup)",
        )
    if v["fish-speech"] == "missing":
        rep.add("fish-speech", "FAIL", "fish-speech is not installed (make setup)")
    try:
        from torchcodec.decoders import AudioDecoder  # noqa: F401  (loads the FFmpeg libraries)

        rep.add("torchcodec", "ok", f"{v['torchcodec']} with FFmpeg libraries")
    except Exception as err:  # pragma: no cover - depends on the system
        rep.add(
            "torchcodec",
            "FAIL",
            f"cannot load torchcodec/FFmpeg: {str(err).splitlines()[0]} "
            "(install FFmpeg 4-7 shared libraries, e.g. apt-get install ffmpeg)",
        )


def _check_gpu(rep: Report, cfg: DictConfig) -> dict:
    import torch

    if not torch.cuda.is_available():
        status = "FAIL" if cfg.doctor.require_gpu else "warn"
        rep.add(
            "gpu",
            status,
            "no GPU: CPU mode (fine for tests; training a real model needs a CUDA GPU; "
            "run the container with --gpus all)",
        )
        return {"cuda": False}
    info = {"cuda": True, "cuda_version": torch.version.cuda, "devices": []}
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        name = torch.cuda.get_device_name(i)
        cap = ".".join(map(str, torch.cuda.get_device_capability(i)))
        info["devices"].append({"name": name, "free_gb": round(free / 2**30, 1), "total_gb": round(total / 2**30, 1)})
        rep.add(
            "gpu",
            "ok",
            f"cuda:{i} {name} (sm {cap}), {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, "
            f"CUDA {torch.version.cuda}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}",
        )
    try:
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode == 0:
            info["driver"] = out.stdout.strip().splitlines()[0]
            rep.add("driver", "ok", f"NVIDIA driver {info['driver']}")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def _check_disk(rep: Report, run: RunLayout, cfg: DictConfig) -> None:
    run_dir = run.root
    probe = run_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 2**30
    need = float(cfg.doctor.min_free_gb)
    status = "ok" if free_gb >= need else "FAIL"
    rep.add(
        "disk",
        status,
        f"{free_gb:.1f} GiB free at {probe} (run dir {run_dir}; need >= {need:g}, set doctor.min_free_gb to change)",
    )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        test = run.write_probe
        test.write_text("ok")
        test.unlink()
    except OSError as err:
        rep.add(
            "run dir",
            "FAIL",
            f"cannot write to {run_dir}: {err.strerror} (mount a writable volume at /runs or set FISHTUNE_RUNS)",
        )


def _check_model(rep: Report, cfg: DictConfig) -> dict:
    d = Path(cfg.model.path)
    if not d.is_dir():
        rep.add(
            "base model",
            "FAIL",
            f"{d} not found: run the fetch stage, use an image with baked weights, or set FISHTUNE_MODEL / model.path",
        )
        return {}
    missing = files.missing_files(d)
    if missing:
        rep.add("base model", "FAIL", f"{d} lacks {', '.join(missing)}")
        return {}
    hashes = {}
    for name in ("model.pth", "codec.pth", "config.json", "tokenizer.tiktoken", "special_tokens.json"):
        hashes[name] = files.file_hash(d / name, Path(cfg.paths.cache))
    baked = (d / "WEIGHTS_SOURCE").read_text().strip() if (d / "WEIGHTS_SOURCE").is_file() else "local folder"
    rep.add(
        "base model",
        "ok",
        f"{cfg.model.name} at {d} ({baked}); model.pth sha256 {hashes['model.pth'][:12]}, "
        f"codec.pth sha256 {hashes['codec.pth'][:12]}",
    )
    pins = files.pinned_files(cfg.model)
    if pins:
        problems = files.pin_problems(d, pins, Path(cfg.paths.cache))
        if problems:
            rep.add("released files", "FAIL", f"{problems[0]}: {files.PIN_HINT}")
        else:
            rep.add("released files", "ok", f"{', '.join(sorted(pins))} match the released {cfg.model.name}")
    try:
        from fishtune.modeling.llm import load_config, load_tokenizer

        conf = load_config(d)
        tok = load_tokenizer(d)
        rep.add(
            "model config",
            "ok",
            f"{conf.n_layer}+{conf.n_fast_layer} layers, dim {conf.dim}, "
            f"{conf.num_codebooks} codebooks x {conf.codebook_size}, vocab {conf.vocab_size}, "
            f"{tok.semantic_end_id - tok.semantic_begin_id + 1} semantic tokens",
        )
    except FishtuneError as err:
        rep.add("model config", "FAIL", err.one_line())
    _check_sums(rep, d, Path(cfg.paths.cache))
    _check_weights(rep, d)
    return hashes


def _check_sums(rep: Report, d: Path, cache: Path) -> None:
    """``SHA256SUMS`` (written by fetch and the image build), when the folder has one: every file it names."""
    sums = d / "SHA256SUMS"
    if not sums.is_file():
        return
    bad = []
    lines = [line.split(None, 1) for line in sums.read_text(encoding="utf-8").splitlines() if line.strip()]
    for digest, name in ((parts[0], parts[1].strip().lstrip("*")) for parts in lines if len(parts) == 2):
        path = d / name
        if not path.is_file():
            bad.append(f"{name} is missing")
        elif files.file_hash(path, cache) != digest.lower():
            bad.append(f"{name} does not match its sha256")
    if bad:
        rep.add(
            "SHA256SUMS",
            "FAIL",
            f"{sums}: {'; '.join(bad)} (download the weights again: STAGE=fetch fetch.model=always)",
        )
    else:
        rep.add("SHA256SUMS", "ok", f"{len(lines)} files match {sums}")


def _check_weights(rep: Report, d: Path) -> None:
    """Load the weights as the stages will: every tensor of model.pth by name and shape (on the meta device, so
    nothing is copied), and the codec with its config; a truncated or mismatching file fails here, not later."""
    from fishtune.modeling import codec, llm

    for name, load in (
        ("model weights", lambda: llm.load_llm(d, device="meta")),
        ("codec", lambda: codec.load_codec(d)),
    ):
        try:
            load()
            rep.add(
                name, "ok", f"{'model.pth' if name == 'model weights' else 'codec.pth'} loads and matches its config"
            )
        except FishtuneError as err:
            rep.add(name, "FAIL", err.one_line())
        except Exception as err:  # a broken config or shape mismatch inside the model code
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            rep.add(
                name, "FAIL", f"cannot load the {name} in {d}: {type(err).__name__}: {first[:200]} (download it again)"
            )


def _check_data(rep: Report, cfg: DictConfig) -> dict:
    try:
        root = data_root(cfg)  # paths.data, or where the fetch stage put the dataset
        fmt, items = formats.read(root, str(cfg.prepare.format))
    except FishtuneError as err:
        rep.add("dataset", "FAIL", err.one_line())
        return {}
    bad = [i for i in items if i.problem]
    speakers = {i.speaker for i in items if not i.problem}
    status = "ok" if len(items) > len(bad) else "FAIL"
    rep.add(
        "dataset",
        status,
        f"{root}: format {fmt}, {len(items)} inputs, {len(items) - len(bad)} with audio "
        f"and transcript, {len(speakers)} speaker(s)" + (f"; {len(bad)} unusable (prepare lists why)" if bad else ""),
    )
    return {"format": fmt, "inputs": len(items), "usable": len(items) - len(bad), "speakers": len(speakers)}


def _check_text(rep: Report, cfg: DictConfig) -> None:
    """The Finnish normaliser inflects numbers by case with Voikko; without it they stay nominative."""
    if str(cfg.prepare.normalize) != "fi":
        return
    from fishtune.text import fi_morph

    if fi_morph.available():
        rep.add("voikko", "ok", "Finnish morphology for the normaliser (numbers agree in case)")
    else:
        rep.add(
            "voikko",
            "warn",
            "Voikko is missing: Finnish numbers stay in the nominative (apt-get install libvoikko1 voikko-fi)",
        )


def _check_compile(rep: Report, cfg: DictConfig) -> None:
    from fishtune.training import compiler

    setting = cfg.train.compile
    if compiler.backend_of(setting) is not None:
        import torch

        problem = compiler.compile_problem(setting, "cuda" if torch.cuda.is_available() else "cpu")
        rep.add(
            "compile", "FAIL" if problem else "ok", f"{problem} (fix: {compiler.HINT})" if problem else str(setting)
        )


def run(cfg: DictConfig) -> StageResult:
    run_layout = RunLayout.of(cfg)
    rep = Report()
    _check_software(rep)
    _check_compile(rep, cfg)
    _check_text(rep, cfg)
    gpu = _check_gpu(rep, cfg)
    _check_disk(rep, run_layout, cfg)
    hashes = _check_model(rep, cfg)
    data = _check_data(rep, cfg)
    result = {
        "checks": rep.rows,
        "gpu": gpu,
        "model_sha256": hashes,
        "dataset": data,
        "versions": versions.package_versions(),
    }
    with contextlib.suppress(OSError):  # an unwritable run dir is already a failed check
        write_json_atomic(run_layout.doctor, result)
    if rep.failures:
        raise StageFailed(
            f"{len(rep.failures)} preflight check(s) failed: "
            + "; ".join(f"{r['check']}: {r['detail']}" for r in rep.failures)
        )
    log.info("doctor: all checks passed")
    return StageResult(f"{run_layout.relative(run_layout.doctor)} ({len(rep.rows)} checks passed)", data=result)
