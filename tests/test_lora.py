"""fishtune's LoRA: set-up keeps every loaded weight and the model's outputs; merge is exactly W + s·BA."""

from __future__ import annotations

import pytest
import torch

from fishtune import lora
from fishtune.errors import InputError
from fishtune.modeling.llm import load_llm
from fishtune.training import forward as fw
from fishtune.training.samples import Collate, Utterance, encode


def _batch(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    nc = model.config.num_codebooks
    utts = [
        Utterance("Hyvää huomenta", torch.randint(0, 32, (nc, 12), generator=g).numpy()),
        Utterance("Näkemiin", torch.randint(0, 32, (nc, 5), generator=g).numpy()),
    ]
    tok = model.tokenizer
    return Collate(tok.get_token_id("<|end_of_text|>"))([encode(tok, nc, utts), encode(tok, nc, utts[1:])])


def test_setup_keeps_every_loaded_weight_and_the_output(tiny_model):
    model = load_llm(tiny_model)
    saved = torch.load(tiny_model / "model.pth", weights_only=True)
    batch = _batch(model)
    before = fw.forward(model, batch["inputs"], batch["labels"], batch["key_padding_mask"])
    keys_before = set(model.state_dict())
    wrapped = lora.apply_lora(model, lora.LoraSettings(r=4, alpha=8, dropout=0.0))
    assert len(wrapped) == 2 * 5 + 1 * 5 + 3 + 2  # 2 slow + 1 fast layer x 5 linears, 3 embeddings, 2 heads
    state = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key], value), f"{key} changed by LoRA set-up"
    assert {k for k in state if "lora_" not in k} == keys_before  # no base key renamed, dropped or added
    assert {k for k in state if "lora_" in k} == {f"{name}.lora_{ab}" for name in wrapped for ab in "AB"}
    after = fw.forward(model, batch["inputs"], batch["labels"], batch["key_padding_mask"])
    assert torch.equal(before.token_logits, after.token_logits)
    assert torch.equal(before.codebook_logits, after.codebook_logits)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert len(trainable) == 2 * len(wrapped)


def test_lora_keys_and_shapes_match_loralib(tiny_model):
    model = load_llm(tiny_model)
    lora.apply_lora(model, lora.LoraSettings(r=8, alpha=16))
    sd = lora.lora_state_dict(model)
    assert sd["layers.0.attention.wqkv.lora_A"].shape == (8, 64)  # [r, in]
    assert sd["layers.0.attention.wqkv.lora_B"].shape == (model.layers[0].attention.wqkv.out_features, 8)
    assert sd["embeddings.lora_A"].shape == (8, model.config.vocab_size)  # [r, num_embeddings]
    assert sd["embeddings.lora_B"].shape == (64, 8)  # [dim, r]


def test_merged_weights_are_base_plus_scaled_product(tiny_model):
    model = load_llm(tiny_model)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    s = lora.LoraSettings(r=4, alpha=12)
    lora.apply_lora(model, s)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    batch = _batch(model)
    with torch.no_grad():
        ref = fw.forward(model, batch["inputs"], batch["labels"], batch["key_padding_mask"])
    merged = lora.merged_state_dict(model)
    lin = model.layers[1].feed_forward.w2
    want = base["layers.1.feed_forward.w2.weight"] + s.scaling * (lin.lora_B @ lin.lora_A)
    torch.testing.assert_close(merged["layers.1.feed_forward.w2.weight"], want)
    emb = model.codebook_embeddings
    want = base["codebook_embeddings.weight"] + s.scaling * (emb.lora_B @ emb.lora_A).T
    torch.testing.assert_close(merged["codebook_embeddings.weight"], want)
    plain = load_llm(tiny_model)
    plain.load_state_dict(merged, strict=True)
    with torch.no_grad():
        out = fw.forward(plain, batch["inputs"], batch["labels"], batch["key_padding_mask"])
    torch.testing.assert_close(out.token_logits, ref.token_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.codebook_logits, ref.codebook_logits, rtol=1e-4, atol=1e-5)


def test_loading_lora_of_another_rank_is_a_clear_error(tiny_model):
    a = load_llm(tiny_model)
    lora.apply_lora(a, lora.LoraSettings(r=4, alpha=8))
    b = load_llm(tiny_model)
    lora.apply_lora(b, lora.LoraSettings(r=8, alpha=16))
    with pytest.raises(InputError, match="shape mismatch"):
        lora.load_lora_state_dict(b, lora.lora_state_dict(a))
    with pytest.raises(InputError, match="missing"):
        lora.load_lora_state_dict(b, {})
