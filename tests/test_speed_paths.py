"""The speed paths of training compute the same thing as the plain ones: filled packing, flash attention without a
mask, SDPA in the fast transformer, the fast transformer in row chunks, partial gradient checkpointing; and the
auto checkpointing plan's search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fishtune import lora
from fishtune.modeling.llm import load_llm
from fishtune.training import forward as fw
from fishtune.training import memory
from fishtune.training.samples import Collate, PackedTrainStream, Utterance


def _utterances(nc: int, n: int, seed: int) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    words = ["kissa", "istuu", "puussa", "ja", "katsoo", "alas", "koira", "haukkuu"]
    return [
        Utterance(" ".join(rng.choice(words, 3)), rng.integers(0, 32, (nc, int(rng.integers(5, 30))))) for _ in range(n)
    ]


def _stream(model, packing: str, max_length: int = 160, batch_size: int = 2, n: int = 12) -> PackedTrainStream:
    tok, nc = model.tokenizer, model.config.num_codebooks
    collate = Collate(tok.get_token_id("<|end_of_text|>"))
    return PackedTrainStream([_utterances(nc, n, 1)], tok, nc, max_length, batch_size, collate, seed=3, packing=packing)


@pytest.fixture
def lora_model(tiny_model):
    model = load_llm(tiny_model)
    lora.apply_lora(model, lora.LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # non-zero adapters, so every gradient path is live
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    model.train()
    return model


def _loss_and_grads(model, batch, **kw):
    model.zero_grad(set_to_none=True)
    out = fw.loss(model, batch, **kw)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert a[1].keys() == b[1].keys()
    for n in a[1]:
        torch.testing.assert_close(a[1][n], b[1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_fill_packing_makes_full_rows_and_pad_packing_does_not(tiny_model):
    model = load_llm(tiny_model)
    fill, pad = _stream(model, "fill"), _stream(model, "pad")
    for b in range(4):
        batch = fill.batch(b)
        assert batch["inputs"].shape[-1] == 160 and not batch["key_padding_mask"].any()
        again = _stream(model, "fill").batch(b)  # a function of (seed, batch index) only: resumable
        assert torch.equal(batch["inputs"], again["inputs"]) and torch.equal(batch["labels"], again["labels"])
    padded = [pad.sample(k)[0].shape[1] for k in range(8)]
    assert max(padded) <= 160 and min(padded) < 160  # stops before the utterance that does not fit
    # filled rows start like the padded ones (same utterances first) and go on where those stop
    x_fill, _ = fill.sample(0)
    x_pad, _ = pad.sample(0)
    assert torch.equal(x_fill[:, : x_pad.shape[1]], x_pad)
    # a group shorter than max_length gives a short row (every utterance once) either way
    short = _stream(model, "fill", max_length=4000, n=3)
    x_short, _ = short.sample(0)
    assert x_short.shape[1] < 4000 and int(fw.semantic_mask(model, x_short[0]).sum()) == sum(
        u.codes.shape[1] for u in short.groups[0]
    )
    with pytest.raises(ValueError, match="fill or pad"):
        _stream(model, "squeeze")


def test_flash_attention_without_mask_equals_the_masked_path(lora_model):
    batch = _stream(lora_model, "fill").batch(0)
    x = fw.embed(lora_model, batch["inputs"])
    assert fw.flash_ok(lora_model.layers, x) and not fw.flash_ok(lora_model.fast_layers, x)  # Fish Speech's default
    flash = _loss_and_grads(lora_model, batch)
    for layer in lora_model.layers:  # manual attention: the explicit causal mask is passed
        layer.attention.use_sdpa = False
    assert not fw.flash_ok(lora_model.layers, x)
    _assert_same(flash, _loss_and_grads(lora_model, batch))
    # a padded batch keeps its key-padding mask: each row's logits equal that row run alone, unpadded (flash)
    for layer in lora_model.layers:
        layer.attention.use_sdpa = True
    padded = _stream(lora_model, "pad").batch(0)
    assert padded["key_padding_mask"].any()
    lora_model.eval()
    with torch.no_grad():
        together = fw.forward(lora_model, padded["inputs"], padded["labels"], padded["key_padding_mask"])
        for i in range(padded["inputs"].shape[0]):
            n = int((~padded["key_padding_mask"][i]).sum())
            alone = fw.forward(lora_model, padded["inputs"][i : i + 1, :, :n], padded["labels"][i : i + 1, :, :n])
            torch.testing.assert_close(together.token_logits[i, :n], alone.token_logits[0], rtol=1e-4, atol=1e-5)


def test_fast_transformer_sdpa_and_row_chunks_equal_the_manual_path(lora_model, monkeypatch):
    batch = _stream(lora_model, "fill").batch(1)
    manual = _loss_and_grads(lora_model, batch)
    fw.use_sdpa_everywhere(lora_model)
    assert all(layer.attention.use_sdpa for layer in lora_model.fast_layers)
    _assert_same(manual, _loss_and_grads(lora_model, batch))
    monkeypatch.setattr(fw, "FAST_ROWS", 7)  # many chunks, the last one partial
    _assert_same(manual, _loss_and_grads(lora_model, batch))


@pytest.mark.slow
@pytest.mark.parametrize("ckpt", [True, 1, 2, 3])
def test_partial_gradient_checkpointing_gives_the_same_gradients(lora_model, ckpt):
    fw.use_sdpa_everywhere(lora_model)
    batch = _stream(lora_model, "fill").batch(2)
    units = fw.num_units(lora_model)
    assert fw.checkpointed_units(lora_model, ckpt) == (units if ckpt is True else ckpt)
    _assert_same(_loss_and_grads(lora_model, batch), _loss_and_grads(lora_model, batch, gradient_checkpointing=ckpt))
    # checkpointed layers start forward twice (the recomputation in backward stops early, so a pre-hook);
    # fast layers are checkpointed first
    calls = {}
    layers = list(lora_model.fast_layers) + list(lora_model.layers)
    hooks = [
        layer.register_forward_pre_hook(lambda m, i, k=k: calls.__setitem__(k, calls.get(k, 0) + 1))
        for k, layer in enumerate(layers)
    ]
    _loss_and_grads(lora_model, batch, gradient_checkpointing=ckpt)
    for h in hooks:
        h.remove()
    n = fw.checkpointed_units(lora_model, ckpt)
    assert [calls[k] for k in range(len(layers))] == [2 if k < n else 1 for k in range(len(layers))]


def test_checkpointing_applies_in_training_only(lora_model):
    batch = _stream(lora_model, "fill").batch(0)
    lora_model.eval()
    with torch.no_grad():
        a = fw.loss(lora_model, batch, gradient_checkpointing=True).loss
        b = fw.loss(lora_model, batch).loss
    assert torch.equal(a, b)


def test_memory_plan_search_finds_the_fewest_checkpointed_layers():
    for n_max in (1, 2, 5, 32):
        for need in range(n_max + 1):
            calls = []

            def fits(n, need=need, calls=calls):
                calls.append(n)
                return n >= need

            assert memory.smallest_fitting(n_max, fits) == need
            assert len(calls) <= 2 + int(np.ceil(np.log2(n_max))) if n_max > 1 else len(calls) <= 2
            assert calls[0] == 0  # the common case (everything fits) costs one probe
    assert memory.smallest_fitting(8, lambda n: False) is None


def test_memory_plan_on_cpu_checkpoints_nothing(lora_model):
    def no_batch_needed():
        raise AssertionError("the CPU plan builds no probe batch")

    plan = memory.plan(lora_model, no_batch_needed, 0, torch.device("cpu"), 0.9)
    assert plan == {"checkpointed": 0, "units": fw.num_units(lora_model), "reason": "cpu"}


@pytest.mark.parametrize(
    ("value", "parsed"), [("auto", "auto"), (True, True), ("false", False), (3, 3), ("12", 12), (False, False)]
)
def test_gradient_checkpointing_values(value, parsed):
    assert memory.parse(value) == parsed


@pytest.mark.parametrize("value", ["sometimes", -1, "1.5"])
def test_bad_gradient_checkpointing_values_are_refused(value):
    with pytest.raises(ValueError, match="auto, true, false or a layer count"):
        memory.parse(value)


@pytest.mark.slow
def test_compiled_layers_give_the_same_loss_gradients_and_names(lora_model):
    # aot_eager: Dynamo capture + AOTAutograd, as inductor does, without needing a C compiler
    fw.use_sdpa_everywhere(lora_model)
    batch = _stream(lora_model, "fill").batch(0)
    names = list(lora_model.state_dict())
    eager = _loss_and_grads(lora_model, batch, gradient_checkpointing=1)
    fw.compile_layers(lora_model, "aot_eager")
    assert list(lora_model.state_dict()) == names  # checkpoints and LoRA files keep their keys
    _assert_same(eager, _loss_and_grads(lora_model, batch, gradient_checkpointing=1))
    _assert_same(eager, _loss_and_grads(lora_model, batch, gradient_checkpointing=1))  # compiled graph reused


def test_cached_tokenizer_gives_the_same_samples_and_pickles(tiny_model):
    import pickle

    from fishtune.training.samples import CachedTokenizer, encode

    model = load_llm(tiny_model)
    tok, nc = model.tokenizer, model.config.num_codebooks
    cached = pickle.loads(pickle.dumps(CachedTokenizer(tok)))  # DataLoader workers may receive it pickled
    utts = _utterances(nc, 6, 4)
    for _ in range(2):  # second round: from the memo
        for a, b in zip(encode(tok, nc, utts), encode(cached, nc, utts), strict=True):
            assert torch.equal(a, b)
    assert cached.encode("<|speaker:0|>kissa", allowed_special={"<|speaker:0|>"}) == tok.encode(
        "<|speaker:0|>kissa", allowed_special={"<|speaker:0|>"}
    )
    assert cached.semantic_begin_id == tok.semantic_begin_id


def test_probe_batch_is_the_one_with_the_most_audio_frames(tiny_model):
    from fishtune.training.memory import probe_batch

    model = load_llm(tiny_model)
    stream = _stream(model, "fill", n=30)
    frames = [int(fw.semantic_mask(model, stream.batch(b)["labels"][:, 0]).sum()) for b in range(8)]
    chosen = probe_batch(model, stream)
    assert int(fw.semantic_mask(model, chosen["labels"][:, 0]).sum()) == max(frames)
    assert len(set(frames)) > 1  # the choice matters


def test_a_batch_without_audio_frames_trains(lora_model):
    # rows cut inside their text (max_length shorter than a transcript): no fast-transformer rows at all
    stream = _stream(lora_model, "fill", max_length=6)
    batch = stream.batch(0)
    assert not fw.semantic_mask(lora_model, batch["labels"][:, 0]).any()
    for ckpt in (False, True):
        loss, grads = _loss_and_grads(lora_model, batch, gradient_checkpointing=ckpt, ce_chunk=4)
        assert torch.isfinite(loss) and grads
        assert not any(n.startswith("fast_layers") for n in grads)  # untouched, not NaN
