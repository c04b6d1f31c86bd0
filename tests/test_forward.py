"""The training forward computes what Fish Speech's inference path computes, and the loss is upstream's."""

from __future__ import annotations

import math

import pytest
import torch

from fishtune.modeling.llm import load_llm
from fishtune.training import forward as fw
from fishtune.training.samples import Utterance, encode


def test_training_forward_equals_inference_path(tiny_model):
    model = load_llm(tiny_model)
    tok, nc = model.tokenizer, model.config.num_codebooks
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 32, (nc, 9), generator=g)
    x, y = encode(tok, nc, [Utterance("Kissa istuu", codes.numpy())])
    T = x.shape[1]
    with torch.no_grad():
        out = fw.forward(model, x[None], y[None])
        model.setup_caches(1, model.config.max_seq_len, dtype=torch.float32)
        # slow transformer: the whole prompt at once, as generation's prefill does
        from fish_speech.models.text2semantic.llama import BaseTransformer

        gen = BaseTransformer.forward_generate(model, x[None], torch.arange(T), return_all=True)
        torch.testing.assert_close(out.token_logits[0], gen.logits[0], rtol=1e-4, atol=1e-5)
        # fast transformer at the first semantic target: hidden state, then teacher-forced codes
        pos = int(fw.semantic_mask(model, y[0]).nonzero()[0])
        target = y[1:, pos]
        for layer in model.fast_layers:
            layer.attention.kv_cache.k_cache.zero_()
            layer.attention.kv_cache.v_cache.zero_()
        hidden = model.fast_project_in(gen.hidden_states[:, pos : pos + 1])
        logits = [model.forward_generate_fast(hidden, torch.tensor([0]))]
        for k in range(1, nc):
            emb = model.fast_embeddings(target[k - 1].view(1, 1))
            logits.append(model.forward_generate_fast(emb, torch.tensor([k])))
        step_by_step = torch.cat(logits, dim=1)[0]
        torch.testing.assert_close(out.codebook_logits[0], step_by_step, rtol=1e-4, atol=1e-5)
        assert torch.equal(out.codebook_labels[0], target)


def test_loss_of_an_untrained_model_is_near_uniform(tiny_model):
    model = load_llm(tiny_model)
    tok, nc = model.tokenizer, model.config.num_codebooks
    codes = torch.randint(0, 32, (nc, 30), generator=torch.Generator().manual_seed(2))
    x, y = encode(tok, nc, [Utterance("Hei", codes.numpy())])
    with torch.no_grad():
        out = fw.loss(model, {"inputs": x[None], "labels": y[None]})
    uniform = math.log(model.config.vocab_size) + math.log(model.config.codebook_size)
    assert abs(float(out.loss) - uniform) < 0.5
    assert out.semantic_targets == 30  # one fast-transformer row per frame
    # top-5 accuracy is the share of codebook labels among the 5 highest codebook logits, counted here directly
    with torch.no_grad():
        fwd = fw.forward(model, x[None], y[None], None)
    logits = fwd.codebook_logits.reshape(-1, fwd.codebook_logits.shape[-1])
    labels = fwd.codebook_labels.reshape(-1)
    keep = labels != fw.IGNORE
    hits = (logits[keep].topk(5, dim=-1).indices == labels[keep, None]).any(dim=-1)
    assert keep.sum() == 30 * nc and float(out.top5_accuracy) == pytest.approx(hits.float().mean().item(), abs=1e-6)


def test_chunked_cross_entropy_gives_the_same_loss_and_gradients(tiny_model):
    from fishtune import lora
    from fishtune.training.samples import Collate

    model = load_llm(tiny_model)
    lora.apply_lora(model, lora.LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    model.train()
    tok, nc = model.tokenizer, model.config.num_codebooks
    g = torch.Generator().manual_seed(3)
    utts = [
        Utterance("Hei maailma", torch.randint(0, 32, (nc, 20), generator=g).numpy()),
        Utterance("Moi", torch.randint(0, 32, (nc, 7), generator=g).numpy()),
    ]
    batch = Collate(tok.get_token_id("<|end_of_text|>"))([encode(tok, nc, utts), encode(tok, nc, utts[1:])])
    results = []
    for chunk in (0, 7, 1000):
        model.zero_grad()
        out = fw.loss(model, batch, ce_chunk=chunk)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((out, grads))
    (ref, ref_g), *others = results
    for out, grads in others:
        torch.testing.assert_close(out.loss, ref.loss)
        torch.testing.assert_close(out.top5_accuracy, ref.top5_accuracy)
        for n in ref_g:
            torch.testing.assert_close(grads[n], ref_g[n], rtol=1e-4, atol=1e-6)
