"""The benchmark's FLOP counts (bench/flops.py): a hand count on a toy shape, and torch's own FLOP counter on a real
training step of the tiny model."""

from __future__ import annotations

import pytest

from bench import flops

# dim 4, 1 slow layer of 2 query heads / 1 kv head of width 2, ffn 6, vocab 10; 1 fast layer of 1 head of width 4,
# ffn 8; 2 codebooks of 5 entries; LoRA r = 1
TOY = flops.Arch(
    dim=4,
    n_layer=1,
    n_head=2,
    n_local_heads=1,
    head_dim=2,
    ffn=6,
    vocab=10,
    fast_dim=4,
    n_fast_layer=1,
    fast_n_head=1,
    fast_n_local_heads=1,
    fast_head_dim=4,
    fast_ffn=8,
    codebook_size=5,
    num_codebooks=2,
    lora_r=1,
)
# two rows of 3 and 2 real tokens (width 3: one padded position), 4 token targets, 2 audio frames, 4 codebook targets
WORK = flops.Work(lengths=(3, 2), width=3, token_targets=4, frames=2, codebook_targets=4)


def test_model_flops_match_a_hand_count():
    got = flops.model_flops(TOY, WORK)
    # slow linears: wqkv 4x(2+2)*2=4x8, wo 4x4, w1 4x6, w3 4x6, w2 6x4: 32+16+24+24+24 = 120 weights; 5 real tokens;
    # forward 2*5*120 = 1200 and input gradient 1200, no weight gradient (frozen)
    assert got["slow_linears"] == 2400
    # causal attention: (3*3 + 2*2)/2 = 6.5 query-key pairs; QK^T and PV: 2 * 2 FLOPs * 2 heads * width 2 = 16 per
    # pair forward (104), backward twice that (208)
    assert got["slow_attention"] == 312
    # token head 4x10 on the 4 rows with a target: forward 2*4*40 = 320, input gradient 320
    assert got["token_head"] == 640
    assert got["fast_project_in"] == 0  # dim == fast_dim: an identity
    # fast linears: wqkv 4x(1+2)*4=4x12, wo 4x4, w1/w3 4x8, w2 8x4: 48+16+32+32+32 = 160 weights on 2 frames x 2
    # codebooks = 4 rows: 4 FLOPs * 4 rows * 160
    assert got["fast_linears"] == 2560
    # per frame 2*2/2 = 2 pairs (4 in all), 2 * 2 * 1 head * width 4 = 16 per pair forward: 64, x3 with backward
    assert got["fast_attention"] == 192
    assert got["codebook_head"] == 4 * 4 * 4 * 5  # 4 rows with a target, 4x5
    # LoRA, r=1: forward, input gradient, and the gradients of A and B: 6 * rows * (in + out) per adapted linear
    slow_lora = 6 * 5 * ((4 + 8) + (4 + 4) + (4 + 6) + (4 + 6) + (6 + 4))
    fast_lora = 6 * 4 * ((4 + 12) + (4 + 4) + (4 + 8) + (4 + 8) + (8 + 4))
    heads_lora = 6 * 4 * (4 + 10) + 6 * 4 * (4 + 5)
    assert got["lora"] == slow_lora + fast_lora + heads_lora == 1500 + 1440 + 552
    assert got["total"] == 2400 + 312 + 640 + 2560 + 192 + 320 + 1500 + 1440 + 552 == 9916


def test_hardware_flops_add_padding_recompute_full_squares_and_full_logits():
    plain = flops.hardware_flops(TOY, flops.Work((3, 3), 3, 4, 2, 4), flops.Execution())
    # nothing padded, nothing masked, recomputed or extra: the hardware does the model's work
    assert plain["total"] == flops.model_flops(TOY, flops.Work((3, 3), 3, 4, 2, 4))["total"]

    run = flops.Execution(
        checkpointed_slow=1, checkpointed_fast=1, slow_mask=True, fast_mask=True, head_all_rows=True, ce_recompute=False
    )
    got = flops.hardware_flops(TOY, WORK, run)
    rows = 2 * 3  # the padded position runs through every layer
    slow_attention = 3 * 2 * 2 * (2 * 3 * 3) * 2 * 2  # the full 3x3 square of both rows, x3 with backward
    assert got["slow_layers"] == 4 * rows * 120 + 6 * rows * 50 + slow_attention == 2880 + 1800 + 864
    fast_attention = 3 * 2 * 2 * (2 * 2 * 2) * 1 * 4  # each frame's full 2x2 square
    assert got["fast_layers"] == 2560 + 1440 + fast_attention == 4000 + 384
    # the token head over all 6 positions (plus its LoRA), the codebook head over its 4 targets
    assert got["heads"] == 4 * 6 * 40 + 6 * 6 * 14 + 320 + 6 * 4 * 9 == 960 + 504 + 320 + 216
    # one more forward of each checkpointed layer: linears 2*rows*weights, LoRA 2*rows*(in+out), attention forward
    slow_again = 2 * rows * 120 + 2 * rows * 50 + 2 * 2 * 18 * 2 * 2
    fast_again = 2 * 4 * 160 + 2 * 4 * 60 + 2 * 2 * 8 * 1 * 4
    assert got["recompute_layers"] == slow_again + fast_again == 2328 + 1888
    assert got["recompute_heads"] == 0
    chunked = flops.hardware_flops(TOY, WORK, flops.Execution(ce_recompute=True))
    # the chunked cross-entropy recomputes both heads' forward on their targeted rows
    assert chunked["recompute_heads"] == 2 * 4 * 40 + 2 * 4 * 14 + 2 * 4 * 20 + 2 * 4 * 9 == 664


@pytest.fixture
def upstream_model(tiny_model):
    from fishtune import lora
    from fishtune.modeling.llm import load_llm

    model = load_llm(tiny_model)
    lora.apply_lora(model, lora.LoraSettings(r=4, alpha=8, dropout=0.01))
    return model.train()


def _padded_batch(model):
    from bench import common
    from fishtune.training.samples import Collate, PackedTrainStream

    nc = model.config.num_codebooks
    utts = common.synthetic_utterances(6, nc, model.config.codebook_size, 32, seed=3)
    collate = Collate(model.tokenizer.get_token_id("<|end_of_text|>"))
    stream = PackedTrainStream([utts], model.tokenizer, nc, 300, 2, collate, seed=0, packing="pad")
    batch = next(stream.batch(b) for b in range(20) if stream.batch(b)["key_padding_mask"].any())
    return batch


def _embedding_lora(arch, work) -> int:
    """The embeddings' LoRA products the count leaves out: an r x dim product per looked-up row, forward, and the
    gradients of the looked-up rows and of B: token and codebook embeddings at every position, fast embeddings at
    each frame's codebooks 0..nc-2."""
    nc = arch.num_codebooks
    lookups = len(work.lengths) * work.width * (1 + nc) + work.frames * (nc - 1)
    return 6 * arch.lora_r * arch.dim * lookups


def test_hardware_flops_equal_torchs_count_of_upstreams_step(upstream_model):
    # torch's FlopCounterMode counts every matmul that runs; with SDPA's math kernel attention is plain matmuls too.
    # Upstream's step (mask always, every layer recomputed, reentrant, full logits) on a padded batch computes
    # exactly what hardware_flops counts, plus the embeddings' LoRA products
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from bench import upstream

    model = upstream_model
    batch = _padded_batch(model)
    opts = {"mask": "always", "gradient_checkpointing": "reentrant", "full_logits": True, "ce_chunk": 0}
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        upstream.loss(model, batch, opts).loss.backward()
    arch = flops.Arch.from_config(model.config, lora_r=4)
    work = flops.Work.from_batch(model, batch)
    assert work.width > min(work.lengths) and work.token_targets < 2 * work.width  # padding, rows without target
    run = flops.Execution(arch.n_layer, arch.n_fast_layer, slow_mask=True, fast_mask=True, head_all_rows=True)
    assert counter.get_total_flops() == flops.hardware_flops(arch, work, run)["total"] + _embedding_lora(arch, work)


def test_hardware_flops_equal_torchs_count_of_the_products_step(upstream_model):
    # the product's step on full rows: causal flash attention without a mask (a kernel torch's counter does not
    # see: its FLOPs are added by hand), the fast transformer's manual attention, the fast layer checkpointed,
    # chunked cross-entropy on targeted rows only, recomputed in backward
    from torch.utils.flop_counter import FlopCounterMode

    from bench import common
    from fishtune.training import forward as fw
    from fishtune.training.samples import Collate, PackedTrainStream

    model = upstream_model
    nc = model.config.num_codebooks
    utts = common.synthetic_utterances(6, nc, model.config.codebook_size, 32, seed=3)
    collate = Collate(model.tokenizer.get_token_id("<|end_of_text|>"))
    batch = PackedTrainStream([utts], model.tokenizer, nc, 300, 2, collate, seed=0).batch(0)
    with FlopCounterMode(display=False) as counter:
        fw.loss(model, batch, gradient_checkpointing=1, ce_chunk=100).loss.backward()
    arch = flops.Arch.from_config(model.config, lora_r=4)
    work = flops.Work.from_batch(model, batch)
    assert work.lengths == (300, 300) and work.token_targets < 600
    run = flops.Execution(checkpointed_fast=1, fast_mask=True, ce_recompute=True)
    flash = 3 * arch.n_layer * 2 * 2 * (2 * 300 * 300 / 2) * arch.n_head * arch.head_dim  # causal half, fwd + bwd
    # non-reentrant checkpointing stops recomputing once it has every tensor backward needs: the layer's last
    # product (LoRA B of w2, 2 * rows * r * dim) is skipped, which the count (one whole layer forward) includes
    early_stop = 2 * work.frames * nc * arch.lora_r * arch.fast_dim
    expected = flops.hardware_flops(arch, work, run)["total"] - flash - early_stop + _embedding_lora(arch, work)
    assert counter.get_total_flops() == expected


def test_arch_linears_are_the_models_adapted_linears(upstream_model):
    from fishtune import lora

    model = upstream_model
    arch = flops.Arch.from_config(model.config, lora_r=4)
    adapted = lora.lora_modules(model)
    for stack, fast in (("layers.0.", False), ("fast_layers.0.", True)):
        shapes = [(m.in_features, m.out_features) for n, m in adapted.items() if n.startswith(stack)]
        assert sorted(shapes) == sorted(arch.layer_linears(fast))
    assert (adapted["output"].in_features, adapted["output"].out_features) == (arch.dim, arch.vocab)
