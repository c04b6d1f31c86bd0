"""Stage ``merge``: fold the trained LoRA into the base weights and write a standalone, validated model folder.

Validation (each one fails the stage):
1. every adapted weight changed by exactly ``s·BA`` (the LoRA product; ``(BA)ᵀ`` for embeddings) and every other
   tensor is bit-identical to the base — "differs from the base" alone would pass a broken merge;
2. the merged model's outputs equal the base+LoRA model's outputs on held-out data, within ``merge.rtol`` of
   the output's magnitude for the weights' dtype (bf16 weights: the one rounding of ``W + s·BA`` to bf16);
3. the written folder loads through fishtune's strict loader *and* Fish Speech's own ``from_pretrained``, and
   both give the same outputs.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from fishtune import adapters, faults, lora, modelcard, paths
from fishtune.errors import InputError, StageFailed, UsageError
from fishtune.generation import adapter_for, resolve_checkpoint
from fishtune.layout import RunLayout
from fishtune.modeling.files import CODEC_CONFIG
from fishtune.modeling.llm import load_llm
from fishtune.results import StageResult
from fishtune.runstate import (
    RunState,
    atomic_dir,
    check_replaceable,
    clean_leftovers,
    link_or_copy,
    sha256_file,
    sha256_json,
    write_json_atomic,
)
from fishtune.training import forward as fw

log = logging.getLogger("fishtune.merge")
COPIED = ("config.json", "tokenizer.tiktoken", "special_tokens.json", "codec.pth", CODEC_CONFIG)


def probe_batch(cfg: DictConfig, model) -> dict:
    """A held-out batch to compare outputs on (falls back to a synthetic one when nothing is packed)."""
    from fishtune.evaluation.loss import heldout_set
    from fishtune.training.samples import Collate

    tok, nc = model.tokenizer, model.config.num_codebooks
    collate = Collate(tok.get_token_id("<|end_of_text|>"))
    ds = heldout_set(RunLayout.of(cfg).shards("val"), model, 1024) or []
    if len(ds):
        return collate([ds[i] for i in range(min(2, len(ds)))])
    g = torch.Generator().manual_seed(0)
    from fishtune.training.samples import Utterance, encode

    u = Utterance("Tämä on testi.", torch.randint(0, model.config.codebook_size, (nc, 16), generator=g).numpy())
    return collate([encode(tok, nc, [u])])


@torch.no_grad()
def outputs(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    out = fw.forward(model, batch["inputs"], batch["labels"], batch["key_padding_mask"])
    return out.token_logits.float(), out.codebook_logits.float()


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> float:
    """Max abs difference relative to the outputs' magnitude, checked against ``rtol``."""
    diff = float((a - b).abs().max())
    scale = float(b.abs().max()) or 1.0
    if diff > rtol * scale:
        raise StageFailed(
            f"merged model output differs from base+LoRA by {diff:.3g} (> {rtol:g} x {scale:.3g})",
            hint="report this: the merge is wrong",
        )
    return diff / scale


def tolerance(rtol: DictConfig, model) -> float:
    """``merge.rtol`` for the dtype the weights are stored in (bf16 rounding of ``W + s·BA`` is inherent)."""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if dtype not in rtol:
        raise InputError(f"no merge.rtol for {dtype} weights", hint=f"add merge.rtol.{dtype}=<tolerance>")
    return float(rtol[dtype])


@torch.no_grad()
def check_deltas(base: dict, merged: dict, model) -> dict:
    mods = lora.lora_modules(model)
    adapted = {f"{n}.weight" for n in mods}
    for k, v in base.items():
        if k not in merged:
            raise StageFailed(f"merged weights lack {k}")
        if k not in adapted and not torch.equal(v, merged[k]):
            raise StageFailed(f"{k} is not adapted by LoRA but changed in the merge")
    worst = 0.0
    for name, mod in mods.items():
        key = f"{name}.weight"
        got = merged[key].float() - base[key].float()
        want = mod.delta()
        eps = torch.finfo(merged[key].dtype).eps
        tol = 4 * eps * (base[key].float().abs() + want.abs()) + 1e-12
        bad = (got - want).abs() > tol
        if bad.any():
            raise StageFailed(f"merged {key} - base != LoRA product (max error {float((got - want).abs().max()):.3g})")
        worst = max(worst, float((got - want).abs().max()))
    nonzero = sum(int(mods[n].delta().abs().max() > 0) for n in mods)
    return {"adapted_tensors": len(mods), "nonzero_deltas": nonzero, "max_delta_error": worst}


def check_output(out_dir: Path, base_dir: Path) -> None:
    """merge.output must not be (or hold, or lie in) the base model folder, and must be fishtune's to replace."""
    out, base = paths.real(out_dir), paths.real(base_dir)
    if out == base or out.is_relative_to(base) or base.is_relative_to(out):
        raise UsageError(
            f"merge.output {out_dir} would replace the base model folder model.path={base_dir}",
            hint="set merge.output to a new folder (default: <run>/model)",
        )
    check_replaceable(out_dir, "merge.output folder")


def run(cfg: DictConfig) -> StageResult:
    started = time.time()
    run = RunLayout.of(cfg)
    out_dir = run.model
    base_dir = Path(cfg.model.path)
    check_output(out_dir, base_dir)  # before any work
    ckpt = resolve_checkpoint(cfg)
    clean_leftovers(out_dir)  # temp folders of a killed merge
    log.info("merging %s into %s -> %s", ckpt, base_dir, out_dir)
    adapter = adapter_for(cfg, ckpt)
    model = load_llm(base_dir)
    base_sd = {k: v.clone() for k, v in model.state_dict().items()}
    adapters.attach(model, adapter)  # r, alpha, targets from the adapter file, not the current config
    batch = probe_batch(cfg, model)
    ref_tok, ref_cb = outputs(model, batch)
    merged = lora.merged_state_dict(model)
    deltas = check_deltas(base_sd, merged, model)
    if deltas["nonzero_deltas"] == 0:
        log.warning("every LoRA product is zero: the merged model equals the base model (was it trained?)")

    with atomic_dir(out_dir) as tmp:
        torch.save(merged, tmp / "model.pth")
        faults.point("merge:written")  # tests: kill -9 with the new model half-assembled
        for name in COPIED:
            if (base_dir / name).is_file():
                link_or_copy(base_dir / name, tmp / name, copy=shutil.copy2)
        rtol = tolerance(cfg.merge.rtol, model)
        ours = load_llm(tmp)
        diff_ours = max(_close(a, b, rtol) for a, b in zip(outputs(ours, batch), (ref_tok, ref_cb), strict=True))
        diff_fish = _check_with_fish_speech(tmp, batch, (ref_tok, ref_cb), rtol)
        validation = {
            **deltas,
            "max_rel_diff": round(max(diff_ours, diff_fish), 8),
            "rel_diff": {"fishtune_loader": round(diff_ours, 8), "fish_speech_loader": round(diff_fish, 8)},
            "rtol": rtol,
            "fish_speech_loader": True,
            "probe_tokens": int((~batch["key_padding_mask"]).sum()),
        }
        settings = adapter.settings.to_dict()
        card = modelcard.render(run, str(cfg.model.name), settings, str(ckpt), validation, cfg.model.license)
        (tmp / "README.md").write_text(card)
        write_json_atomic(
            tmp / run.merge_record.name,
            {
                "base_model": str(base_dir),
                "checkpoint": str(ckpt),
                "lora": settings,
                "base": adapter.base,
                "license": cfg.model.license,
                "validation": validation,
                "sha256": {"model.pth": sha256_file(tmp / "model.pth")},
            },
        )
    log.info(
        "merge: %d adapted tensors (%d changed), weight deltas equal the LoRA products (max error %.2g), "
        "outputs match base+LoRA (max diff %.2g of the outputs' magnitude, tolerance %g), loads in Fish Speech's "
        "own loader -> %s",
        deltas["adapted_tensors"],
        deltas["nonzero_deltas"],
        deltas["max_delta_error"],
        validation["max_rel_diff"],
        rtol,
        out_dir,
    )
    RunState(run).record(
        "merge",
        fingerprint=sha256_json([str(ckpt), validation]),
        started=started,
        output=str(out_dir),
        checkpoint=str(ckpt),
    )
    line = f"{run.relative(out_dir)}/ (merged, validated: max output diff {validation['max_rel_diff']})"
    return StageResult(line, data=validation)


def _check_with_fish_speech(folder: Path, batch, ref, rtol: float) -> float:
    """Load the folder with Fish Speech 0.1.0's own ``from_pretrained`` and compare outputs."""
    from fish_speech.models.text2semantic.llama import DualARTransformer

    model = DualARTransformer.from_pretrained(str(folder), load_weights=True)
    return max(_close(a, b, rtol) for a, b in zip(outputs(model, batch), ref, strict=True))
