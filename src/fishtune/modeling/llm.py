"""Loading the dual-AR transformer and its tokenizer with our own code.

We do not call Fish Speech's ``from_pretrained``: depending on the version it set up LoRA before or after
loading weights (the upstream bug that trained adapters on a random base). Here loading is strict: every
parameter must come from the checkpoint with its shape, or loading fails with the names that are missing or
misshapen. Tensors the model does not use (the released ``model.pth`` carries some) are listed in one warning
and ignored.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch

from fishtune import safeload
from fishtune.errors import InputError
from fishtune.modeling.files import LLM_FILES, check_model_dir

log = logging.getLogger("fishtune.model")
DERIVED = ("freqs_cis", "causal_mask", "k_cache", "v_cache")


def load_tokenizer(model_dir: str | os.PathLike):
    """FishTokenizer with the special-token list from ``special_tokens.json`` (ids checked, not assumed)."""
    from fish_speech.tokenizer import FishTokenizer

    d = Path(model_dir)
    path = d / "special_tokens.json"
    try:
        specials: dict[str, int] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {path}: {err}", hint="re-download the model folder") from err
    ordered = sorted(specials.items(), key=lambda kv: kv[1])
    tok = FishTokenizer(str(d / "tokenizer.tiktoken"), [name for name, _ in ordered])
    for name, want in ordered:
        if tok.get_token_id(name) != want:
            raise InputError(
                f"{path}: id of {name} is {want} but the tokenizer assigns {tok.get_token_id(name)}",
                hint="tokenizer.tiktoken and special_tokens.json come from different models",
            )
    return tok


def load_config(model_dir: str | os.PathLike):
    from fish_speech.models.text2semantic.llama import BaseModelArgs

    path = Path(model_dir) / "config.json"
    try:
        return BaseModelArgs.from_pretrained(str(path))
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as err:
        raise InputError(f"cannot read model config {path}: {err}", hint="re-download the model folder") from err


def clean_state_dict(weights: dict) -> OrderedDict:
    """Unwrap Lightning checkpoints and drop the ``model.`` prefix, as Fish Speech's own loader does."""
    if "state_dict" in weights and isinstance(weights["state_dict"], dict):
        weights = weights["state_dict"]
    out = OrderedDict()
    for k, v in weights.items():
        k = k[len("model.") :] if k.startswith("model.") else k
        if "audio_" in k:  # audio projector weights of other variants; unused by s1-mini
            continue
        out[k] = v
    return out


def load_state_dict_file(path: str | os.PathLike) -> OrderedDict:
    weights = safeload.load(path, "weights", hint="the file is truncated or corrupt; download it again")
    return clean_state_dict(weights)


def load_llm(
    model_dir: str | os.PathLike,
    max_seq_len: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
):
    """Build a ``DualARTransformer`` from ``model_dir`` and load every weight strictly."""
    from fish_speech.models.text2semantic.llama import DualARTransformer

    d = check_model_dir(model_dir, LLM_FILES)
    config = load_config(d)
    if max_seq_len is not None:
        config.max_seq_len = int(max_seq_len)
    if config.model_type != "dual_ar":
        raise InputError(f"{d / 'config.json'}: model_type is {config.model_type!r}, expected 'dual_ar'")
    tokenizer = load_tokenizer(d)
    with torch.device("meta"):
        model = DualARTransformer(config, tokenizer=tokenizer)
    weights = load_state_dict_file(d / "model.pth")
    expected = dict(model.state_dict())
    # tables the constructor rebuilds (RoPE, masks, KV caches): other exports may carry them; not weights
    for k in [k for k in weights if k not in expected and k.endswith(DERIVED)]:
        del weights[k]
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    bad_shape = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    if missing or bad_shape:
        what = (
            f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})"
            if missing
            else f"shape mismatch for {', '.join(bad_shape[:3])}"
        )
        raise InputError(
            f"{d / 'model.pth'} does not match {d / 'config.json'}: {what}",
            hint="use a complete base model folder; a LoRA-only checkpoint is not a model",
        )
    adapters = [k for k in unexpected if "lora_" in k]
    if adapters:  # ignoring them would silently drop a trained adapter
        raise InputError(
            f"{d / 'model.pth'} holds {len(adapters)} unmerged LoRA tensors (e.g. {adapters[0]})",
            hint="this is a LoRA checkpoint: merge it first (merge stage), or pass it as an adapter",
        )
    if unexpected:  # the released model.pth carries ~15 MB more than its parameters; Fish Speech ignores them too
        log.warning(
            "%s: ignoring %d tensors the model does not use: %s",
            d / "model.pth",
            len(unexpected),
            ", ".join(unexpected[:8]) + (", …" if len(unexpected) > 8 else ""),
        )
        for k in unexpected:
            del weights[k]
    model.load_state_dict(weights, strict=True, assign=True)
    # Buffers that are not saved (RoPE tables, causal mask) were created on the meta device: rebuild them.
    _rebuild_buffers(model)
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()


def _rebuild_buffers(model) -> None:
    from fish_speech.models.text2semantic.llama import precompute_freqs_cis

    c = model.config
    model.freqs_cis = precompute_freqs_cis(c.max_seq_len, c.head_dim, c.rope_base)
    model.causal_mask = torch.tril(torch.ones(c.max_seq_len, c.max_seq_len, dtype=torch.bool))
    if hasattr(model, "fast_freqs_cis"):
        model.fast_freqs_cis = precompute_freqs_cis(c.num_codebooks, c.fast_head_dim, c.rope_base)
