"""Precision for LoRA training: a bf16 base under fp32 adapters.

Lightning's ``bf16-true`` casts the whole module to bf16, the adapters too, and AdamW then updates bf16 factors:
an update below bf16's resolution (lr 1e-4 on an entry of ~0.1) is lost. This plugin casts the base to bf16 and
keeps every ``lora_`` parameter (and so AdamW's state) in fp32; the layers cast the factors to bf16 for the
matmuls (:mod:`fishtune.lora`).
"""

from __future__ import annotations

from lightning.pytorch.plugins.precision import HalfPrecision
from torch import nn

from fishtune.lora import FACTOR_DTYPE


class Bf16BaseFp32Adapters(HalfPrecision):
    def __init__(self) -> None:
        super().__init__("bf16-true")

    def convert_module(self, module: nn.Module) -> nn.Module:
        module = super().convert_module(module)
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.data = p.data.to(FACTOR_DTYPE)
        return module


def trainer_args(precision: str) -> dict:
    """``L.Trainer`` keywords for a precision name: ``bf16-true`` -> the plugin above; others as Lightning has them."""
    if precision == "bf16-true":
        return {"plugins": [Bf16BaseFp32Adapters()]}
    return {"precision": precision, "plugins": []}
