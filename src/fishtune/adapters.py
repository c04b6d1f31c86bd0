"""Adapter files: what a trained LoRA is, how it was built and which base it belongs to, in the file itself.

Every adapter fishtune writes (``train/lora.pth``, each ``step_*.ckpt``, ``best.ckpt``) carries, next to the
LoRA tensors (loralib's key names, which upstream's ``merge_lora.py`` reads), a plain-data ``fishtune`` record:

    {"format": 2, "adapter": {"r", "alpha", "dropout", "targets"},
     "base": {"name", "repo_id", "sha256", "path"}, "step": N, "license": ...}

Merge, synthesize, evaluate, publish and incremental training build the adapter from that record, never from
the current config, and refuse a base model whose ``model.pth`` has another sha256 than the one the adapter was
trained on (``lora.allow_other_base=true`` overrides, for deliberate use). Files are read with
``weights_only=True``: loading an adapter never runs code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fishtune import distributed, lora, safeload
from fishtune.errors import InputError
from fishtune.layout import RunLayout
from fishtune.modeling.files import file_hash

log = logging.getLogger("fishtune.adapters")
FORMAT = 2


@dataclass(frozen=True)
class Adapter:
    weights: dict[str, torch.Tensor]
    settings: lora.LoraSettings
    base: dict = field(default_factory=dict)  # name, repo_id, sha256, path of the base model it was trained on
    step: int | None = None
    source: Path = Path()
    described: bool = True  # False: an old or foreign file without settings (r read from shapes, alpha assumed)


def base_identity(model_dir: str | os.PathLike, name: str, repo_id: str | None, cache_dir=None) -> dict:
    """The base model an adapter is trained on: its name, repo and the sha256 of its ``model.pth``."""
    path = Path(model_dir) / "model.pth"
    return {"name": name, "repo_id": repo_id, "sha256": file_hash(path, cache_dir), "path": str(model_dir)}


def record(settings: lora.LoraSettings, base: dict, step: int | None = None, **extra) -> dict:
    """The plain-data record saved next to the LoRA tensors (json-able: loads with ``weights_only=True``)."""
    return {"format": FORMAT, "adapter": settings.to_dict(), "base": dict(base), "step": step, **extra}


def save(path: str | os.PathLike, weights: dict[str, torch.Tensor], meta: dict) -> None:
    """``lora.pth``: ``{"state_dict": LoRA tensors, "fishtune": record}``, written atomically."""
    import io

    from fishtune.runstate import atomic_path

    buf = io.BytesIO()  # torch.save names the zip's folder after the file: in memory, the bytes are reproducible
    torch.save({"state_dict": weights, "fishtune": meta}, buf)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(buf.getbuffer())


def _resolve_file(path: Path) -> Path:
    """A ``train/`` folder -> its ``lora.pth`` (else the newest intact checkpoint); a file -> itself."""
    from fishtune.training import checkpoints

    if not path.is_dir():
        return path
    lora_file, ckpts = RunLayout.lora_in(path), RunLayout.checkpoints_in(path)
    if lora_file.is_file():
        return lora_file
    # a corrupt newest checkpoint is set aside by one process only (under DDP every rank resolves the same folder)
    found = checkpoints.newest_intact(ckpts if ckpts.is_dir() else path, set_aside=distributed.is_rank_zero())
    if found is None:
        raise InputError(
            f"no LoRA weights (lora.pth or step_*.ckpt) in {path}",
            hint="point at a train/ folder, a .ckpt or a lora.pth",
        )
    return found


def load_file(path: Path) -> dict:
    """A ``.pth``/``.ckpt`` as plain data (tensors, dicts, numbers, strings): never runs code from the file."""
    obj = safeload.load(path, "LoRA weights", hint="the file is corrupt or not an adapter; use another checkpoint")
    if not isinstance(obj, dict):
        raise InputError(f"{path} is not an adapter file", hint="use a checkpoint written by the train stage")
    return obj


def read(path: str | os.PathLike, fallback: lora.LoraSettings | None = None) -> Adapter:
    """An adapter from a ``lora.pth``, a Lightning ``.ckpt``, a ``train/`` folder or upstream's LoRA checkpoint.

    Files without fishtune's record (upstream's, or older ones) take r from the tensors' shapes and alpha and
    dropout from ``fallback`` (the config), with a warning."""
    path = _resolve_file(Path(path))
    obj = load_file(path)
    sd = obj.get("state_dict", obj)
    weights = {k.removeprefix("model."): v for k, v in sd.items() if "lora_" in k and isinstance(v, torch.Tensor)}
    if not weights:
        raise InputError(f"{path} holds no LoRA weights", hint="use a checkpoint written by the train stage")
    meta = obj.get("fishtune") if isinstance(obj.get("fishtune"), dict) else {}
    step = obj.get("global_step") if isinstance(obj.get("global_step"), int) else meta.get("step")
    settings_dict = meta.get("adapter") or meta.get("lora")  # "lora": fishtune's first format
    if settings_dict and "r" in settings_dict and "alpha" in settings_dict:
        base = meta.get("base") or {"path": meta.get("base_model")}
        return Adapter(weights, lora.LoraSettings.from_dict(settings_dict), base, step, path)
    if fallback is None:
        raise InputError(f"{path} does not say how it was built (no r/alpha)", hint="give lora.r and lora.alpha")
    r = _rank(weights, path)
    settings = lora.LoraSettings(r=r, alpha=fallback.alpha, dropout=fallback.dropout, targets=_targets_of(weights))
    log.warning(
        "%s carries no LoRA settings (not written by fishtune): r=%d from its shapes, alpha=%g from lora.alpha",
        path,
        r,
        settings.alpha,
    )
    return Adapter(weights, settings, {}, step, path, described=False)


def _rank(weights: dict[str, torch.Tensor], path: Path) -> int:
    ranks = {int(v.shape[0]) for k, v in weights.items() if k.endswith("lora_A") and v.ndim == 2}
    if len(ranks) != 1:
        raise InputError(f"{path}: LoRA factors of different ranks {sorted(ranks)}", hint="the file is not one adapter")
    return ranks.pop()


def _targets_of(weights: dict[str, torch.Tensor]) -> tuple[str, ...]:
    modules = {k.rsplit(".lora_", 1)[0] for k in weights}
    return tuple(t for t in lora.UPSTREAM_TARGETS if any(m == t or m.endswith("." + t) for m in modules))


def check_base(adapter: Adapter, model_dir: str | os.PathLike, cache_dir=None, allow_other: bool = False) -> None:
    """Refuse to apply an adapter to a base other than the one it was trained on (by ``model.pth``'s sha256)."""
    want = (adapter.base or {}).get("sha256")
    if not want:
        return  # older or foreign adapter: nothing to compare against
    have = file_hash(Path(model_dir) / "model.pth", cache_dir)
    if have == want:
        return
    name = adapter.base.get("name") or "another model"
    msg = (
        f"adapter {adapter.source} was trained on {name} (model.pth sha256 {want[:12]}), but "
        f"{Path(model_dir) / 'model.pth'} has sha256 {have[:12]}"
    )
    if allow_other:
        log.warning("%s: applying it anyway (lora.allow_other_base=true)", msg)
        return
    raise InputError(msg, hint="use the base model it was trained on, or set lora.allow_other_base=true on purpose")


def attach(model, adapter: Adapter):
    """Wrap ``model``'s target layers as the adapter says and load its factors. Returns ``model``."""
    lora.apply_lora(model, adapter.settings)
    lora.load_lora_state_dict(model, adapter.weights, source=str(adapter.source))
    return model
