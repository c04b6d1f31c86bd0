"""openaudio-s1-mini's architecture, and a randomly initialised model folder laid out and typed like the release.

The values are the released files' (config.json and special_tokens.json, as found in a public copy:
github.com/zeropointnine/tts-audiobook-tool @ fa6ce9964a2623d851a3d115867c1673fac82f49,
checkpoints/openaudio-s1-mini/; consistent with model.pth's size). The codec is Fish Speech's
``configs/modded_dac_vq.yaml`` (the wheel's copy).

``write_random_model(out)`` makes the folder ``make rehearse`` runs on: ``model.pth`` with every key, shape and
dtype (bf16) of the release plus extra tensors (the released file is ~14.8 MB larger than its parameters; the
loader must ignore what it does not know), ``config.json``, ``special_tokens.json`` with the real ids,
``tokenizer.tiktoken`` with the real number of ranks (151,643; synthetic byte strings), and ``codec.pth``: the
full-size codec in fp32 with its RoPE tables and causal masks, as the released file has them (~1.87 GB).

    python -m fishtune.modeling.s1mini OUT_DIR [--seed N]
"""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path

import torch

ARGS = dict(
    model_type="dual_ar",
    vocab_size=155776,
    n_layer=28,
    n_head=16,
    n_local_heads=8,
    head_dim=128,
    dim=1024,
    intermediate_size=3072,
    rope_base=1000000,
    norm_eps=1e-6,
    max_seq_len=8192,
    dropout=0.0,
    tie_word_embeddings=False,
    attention_qkv_bias=False,
    attention_o_bias=False,
    attention_qk_norm=True,
    codebook_size=4096,
    num_codebooks=10,
    scale_codebook_embeddings=True,
    use_gradient_checkpointing=True,
    initializer_range=0.03125,
    n_fast_layer=4,
    fast_dim=1024,
    fast_n_head=16,
    fast_n_local_heads=8,
    fast_head_dim=64,
    fast_intermediate_size=3072,
    fast_attention_qkv_bias=False,
    fast_attention_qk_norm=False,
    fast_attention_o_bias=False,
)
RESIDUAL_SIZE = 1024  # entries of each residual codebook of the codec; codebook 0 (semantic) has 4096
TEXT_RANKS = 151643  # BPE ranks of the released tokenizer: <|begin_of_text|> is 151643, <|semantic:0|> 151658
PARAMETERS = 860_169_216
RELEASED_EXTRA_BYTES = 1_735_122_974 - 2 * PARAMETERS  # model.pth beyond its bf16 parameters (names unknown)


def write_tokenizer(path: Path, ranks: int = TEXT_RANKS) -> Path:
    """A tiktoken file with ``ranks`` entries: the 256 bytes, every byte pair, then printable-ASCII triples."""
    singles = (bytes([i]) for i in range(256))
    pairs = (bytes([a, b]) for a in range(256) for b in range(256))
    triples = (bytes(t) for t in itertools.product(range(0x20, 0x7F), repeat=3))
    tokens = itertools.islice(itertools.chain(singles, pairs, triples), ranks)
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(tokens)))
    return path


def _extras(model) -> dict[str, torch.Tensor]:
    """Tensors the released file carries beyond the parameters: a RoPE table (rebuilt by the model, dropped
    silently) and an unknown rest of the released size (the loader must warn and ignore it)."""
    rope = model.freqs_cis.to(torch.bfloat16)
    rest = max(0, RELEASED_EXTRA_BYTES - rope.numel() * rope.element_size()) // 2
    return {"freqs_cis": rope, "unreleased_extra.table": torch.zeros(rest, dtype=torch.bfloat16)}


def write_random_model(out_dir: str | Path, seed: int = 0) -> Path:
    """The random full-size folder (atomically: built in a temp folder, then renamed). Returns ``out_dir``."""
    from fish_speech.models.text2semantic.llama import DualARModelArgs, DualARTransformer
    from fish_speech.tokenizer import FishTokenizer

    from fishtune.modeling.codec import build_codec, fish_speech_codec_config
    from fishtune.modeling.tiny import special_tokens
    from fishtune.runstate import atomic_dir

    with atomic_dir(out_dir) as tmp:
        torch.manual_seed(seed)
        specials = special_tokens(ARGS["codebook_size"])
        tokenizer = FishTokenizer(str(write_tokenizer(tmp / "tokenizer.tiktoken")), specials)
        ids = tokenizer.all_special_tokens_with_ids
        (tmp / "special_tokens.json").write_text(json.dumps(ids, indent=2, ensure_ascii=False))
        args = DualARModelArgs(**ARGS)
        args.save(str(tmp / "config.json"))
        model = DualARTransformer(args, tokenizer=tokenizer).to(torch.bfloat16)
        torch.save(model.state_dict() | _extras(model), tmp / "model.pth")
        del model
        codec = build_codec(fish_speech_codec_config())
        torch.save(codec.state_dict(), tmp / "codec.pth")
        (tmp / "README.md").write_text(
            "# random openaudio-s1-mini look-alike\n\nReleased shapes, dtypes and file layout with random weights, "
            "made by `python -m fishtune.modeling.s1mini` for `make rehearse`. Not a speech model.\n"
        )
    return Path(out_dir)


def main(argv: list[str] | None = None) -> int:
    from fishtune.modeling.tiny import cli

    return cli(write_random_model, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
