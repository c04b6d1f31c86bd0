"""The merge check catches wrong merges that "weights differ from the base" would let through."""

from __future__ import annotations

import pytest
import torch

from fishtune import lora
from fishtune.errors import StageFailed
from fishtune.modeling.llm import load_llm
from fishtune.stages.merge import check_deltas


@pytest.fixture
def adapted(tiny_model):
    model = load_llm(tiny_model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    lora.apply_lora(model, lora.LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    return model, base


def test_correct_merge_passes(adapted):
    model, base = adapted
    info = check_deltas(base, lora.merged_state_dict(model), model)
    assert info["adapted_tensors"] == info["nonzero_deltas"] == 20


def test_merge_onto_a_random_base_fails(adapted):
    model, base = adapted
    merged = lora.merged_state_dict(model)
    random_base = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in base.items()}
    with pytest.raises(StageFailed):
        check_deltas(random_base, merged, model)  # weights "differ from base", but not by B@A


def test_wrong_scale_or_transposed_delta_fails(adapted):
    model, base = adapted
    merged = lora.merged_state_dict(model)
    key = "layers.0.feed_forward.w1.weight"
    merged[key] = base[key] + 2 * model.layers[0].feed_forward.w1.delta()
    with pytest.raises(StageFailed, match="LoRA product"):
        check_deltas(base, merged, model)


def test_changed_norm_weight_fails(adapted):
    model, base = adapted
    merged = lora.merged_state_dict(model)
    merged["norm.weight"] = merged["norm.weight"] * 1.01
    with pytest.raises(StageFailed, match="not adapted by LoRA"):
        check_deltas(base, merged, model)
