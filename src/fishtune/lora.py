"""LoRA for Fish Speech's dual-AR transformer, written so that the pretrained weights cannot be lost.

Each adapted layer *keeps the very same weight tensor* it wrapped (no layer is re-created after loading, the
upstream bug that trained adapters on a random base), and gains ``lora_A``/``lora_B``. The key names and shapes
match loralib's, which Fish Speech's own checkpoints use:

- Linear ``W [out, in]``:           ``lora_A [r, in]`` (Kaiming), ``lora_B [out, r]`` (zeros);  y = xWᵀ + s·(x Aᵀ) Bᵀ
- Embedding ``E [num, dim]``:       ``lora_A [r, num]`` (zeros), ``lora_B [dim, r]`` (normal);  e = E[i] + s·(Aᵀ[i]) Bᵀ

with ``s = alpha / r``. Because one factor starts at zero, the model's output right after set-up is exactly the
base model's. Merging adds ``s·BA`` (Linear) or ``s·(BA)ᵀ`` (Embedding) to the weight.

The factors are fp32 whatever the base's dtype: over a bf16 base, an AdamW update of 1e-4 on a factor entry of
size ~0.1 is below bf16's resolution and would be lost. The forward casts them to the layer's compute dtype, so
the matmuls run in bf16 while the master copy (and AdamW's state) stays fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fishtune.errors import InputError

# Upstream's LoRA targets for the dual-AR model: embeddings, output heads, attention and MLP of every layer.
EMBEDDINGS = ("embeddings", "codebook_embeddings", "fast_embeddings")
HEADS = ("output", "fast_output")
LAYER_LINEARS = ("attention.wqkv", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


UPSTREAM_TARGETS = (*EMBEDDINGS, *HEADS, *LAYER_LINEARS)
FACTOR_DTYPE = torch.float32


@dataclass(frozen=True)
class LoraSettings:
    """How an adapter is built; saved with every adapter (:mod:`fishtune.adapters`) so a file says how to use it."""

    r: int
    alpha: float
    dropout: float = 0.0
    targets: tuple[str, ...] = UPSTREAM_TARGETS  # model attributes and per-layer linears that get adapters

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def to_dict(self) -> dict:
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout, "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, d: dict) -> LoraSettings:
        targets = tuple(d.get("targets") or UPSTREAM_TARGETS)
        return cls(r=int(d["r"]), alpha=float(d["alpha"]), dropout=float(d.get("dropout", 0.0)), targets=targets)

    @classmethod
    def from_config(cls, cfg) -> LoraSettings:
        """The settings of the run's ``lora:`` config section."""
        from omegaconf import OmegaConf

        return cls.from_dict(OmegaConf.to_container(cfg.lora))


class LoraLinear(nn.Linear):
    def __init__(self, base: nn.Linear, s: LoraSettings):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # the loaded tensor itself
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        dev, dt = base.weight.device, FACTOR_DTYPE
        self.lora_A = nn.Parameter(torch.empty(s.r, self.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, s.r, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = s.scaling
        self.lora_dropout = nn.Dropout(s.dropout) if s.dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        a, b = self.lora_A.to(out.dtype), self.lora_B.to(out.dtype)  # fp32 master factors, compute dtype matmuls
        return out + F.linear(F.linear(self.lora_dropout(x).to(out.dtype), a), b) * self.scaling

    def delta(self) -> torch.Tensor:
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling


class LoraEmbedding(nn.Embedding):
    def __init__(self, base: nn.Embedding, s: LoraSettings):
        nn.Module.__init__(self)
        self.num_embeddings, self.embedding_dim = base.num_embeddings, base.embedding_dim
        self.padding_idx, self.max_norm, self.norm_type = base.padding_idx, base.max_norm, base.norm_type
        self.scale_grad_by_freq, self.sparse = base.scale_grad_by_freq, base.sparse
        self.weight = base.weight
        self.weight.requires_grad_(False)
        dev, dt = base.weight.device, FACTOR_DTYPE
        self.lora_A = nn.Parameter(torch.zeros(s.r, self.num_embeddings, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.empty(self.embedding_dim, s.r, device=dev, dtype=dt))
        nn.init.normal_(self.lora_B)
        self.scaling = s.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.embedding(x, self.weight, self.padding_idx)
        rows = F.embedding(x, self.lora_A.T, self.padding_idx)  # a gather: cheap in fp32
        return out + ((rows @ self.lora_B.T) * self.scaling).to(out.dtype)

    def delta(self) -> torch.Tensor:
        return (self.lora_B.float() @ self.lora_A.float()).T * self.scaling


def _targets(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    unknown = sorted(set(targets) - set(UPSTREAM_TARGETS))
    if unknown:
        raise InputError(f"unknown LoRA targets {unknown}", hint=f"use some of {list(UPSTREAM_TARGETS)}")
    top = [n for n in targets if n in (*EMBEDDINGS, *HEADS)]
    names = [n for n in top if isinstance(getattr(model, n, None), nn.Embedding | nn.Linear)]
    for stack in ("layers", "fast_layers"):
        for i in range(len(getattr(model, stack, []))):
            names += [f"{stack}.{i}.{leaf}" for leaf in LAYER_LINEARS if leaf in targets]
    return names


def apply_lora(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Wrap the target layers in place; freeze everything but the LoRA factors. Returns the wrapped names."""
    wrapped = []
    for name in _targets(model, settings.targets):
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, leaf)
        if isinstance(base, LoraLinear | LoraEmbedding):
            raise ValueError(f"{name} already has LoRA")
        if isinstance(base, nn.Embedding):
            setattr(parent, leaf, LoraEmbedding(base, settings))
        elif isinstance(base, nn.Linear):
            setattr(parent, leaf, LoraLinear(base, settings))
        else:
            continue
        wrapped.append(name)
    for pname, p in model.named_parameters():
        p.requires_grad_("lora_" in pname)
    return wrapped


def lora_modules(model: nn.Module) -> dict[str, LoraLinear | LoraEmbedding]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear | LoraEmbedding)}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def load_lora_state_dict(model: nn.Module, weights: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load LoRA factors (kept fp32 whatever the file's dtype); every adapter must be present with the right shape."""
    weights = {k[len("model.") :] if k.startswith("model.") else k: v for k, v in weights.items() if "lora_" in k}
    expected = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    bad = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or extra or bad:
        detail = (
            f"missing {missing[:2]}"
            if missing
            else f"unexpected {extra[:2]}"
            if extra
            else f"shape mismatch for {bad[:2]} (different LoRA rank or base model?)"
        )
        raise InputError(
            f"LoRA weights in {source} do not fit this model: {detail}",
            hint="use lora.r/lora.alpha of the run that made them, on the same base model",
        )
    model.load_state_dict(weights, strict=False)  # copy_ into the fp32 factors


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The base state dict with every adapter folded in (fp32 arithmetic, stored in the weight's dtype)."""
    out = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" not in k}
    for name, mod in lora_modules(model).items():
        key = f"{name}.weight"
        out[key] = (mod.weight.float() + mod.delta()).to(mod.weight.dtype)
    return out


@torch.no_grad()
def fold(model: nn.Module) -> nn.Module:
    """Replace every adapted layer by a plain one holding ``W + s·BA`` (fp32 sum, cast once): the model then runs
    at the base model's speed, as if loaded from a merged folder. In place; returns ``model``."""
    for name, mod in lora_modules(model).items():
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        weight = nn.Parameter((mod.weight.float() + mod.delta()).to(mod.weight.dtype), requires_grad=False)
        with torch.device("meta"):
            if isinstance(mod, LoraLinear):
                plain = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
            else:
                plain = nn.Embedding(mod.num_embeddings, mod.embedding_dim, padding_idx=mod.padding_idx)
        plain.weight = weight
        if isinstance(mod, LoraLinear):
            plain.bias = mod.bias
        setattr(parent, leaf, plain)
    return model
