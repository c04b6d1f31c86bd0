"""A tiny, randomly initialised openaudio-s1-mini look-alike for tests and the demo.

Same classes (Fish Speech's ``DualARTransformer``, ``FishTokenizer``, DAC codec) and the same folder layout
as the real model, with small sizes: a byte-level tokenizer (256 ranks), 2 slow + 1 fast layer of width 64,
and a codec with 1 semantic (64 entries) + 3 residual (32 entries) codebooks at 44.1 kHz, 2048 samples/frame.

    python -m fishtune.modeling.tiny OUT_DIR [--seed N]
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

SEMANTIC_SIZE = 64  # codebook 0 (semantic) entries = number of <|semantic:i|> tokens
RESIDUAL_SIZE = 32
RESIDUAL_CODEBOOKS = 3


def _transformer(n_layer: int, dim: int) -> dict:
    return {
        "_target_": "fish_speech.models.dac.modded_dac.ModelArgs",
        "block_size": 1024,  # frames at 21.5 Hz: clips up to ~47 s
        "n_layer": n_layer,
        "n_head": 2,
        "dim": dim,
        "intermediate_size": dim * 2,
        "n_local_heads": -1,
        "head_dim": dim // 2,
        "rope_base": 10000,
        "norm_eps": 1e-5,
        "dropout_rate": 0.0,
        "attn_dropout_rate": 0.0,
        "channels_first": True,
    }


def codec_config() -> dict:
    window = {
        "_target_": "fish_speech.models.dac.modded_dac.WindowLimitedTransformer",
        "causal": True,
        "window_size": 32,
        "input_dim": 128,
        "config": _transformer(1, 32),
    }
    return {
        "_target_": "fish_speech.models.dac.modded_dac.DAC",
        "sample_rate": 44100,
        "encoder_dim": 8,
        "encoder_rates": [2, 4, 8, 8],
        "decoder_dim": 32,
        "decoder_rates": [8, 8, 4, 2],
        "encoder_transformer_layers": [0, 0, 0, 1],
        "decoder_transformer_layers": [0, 0, 0, 0],
        "transformer_general_config": {
            "_target_": "fish_speech.models.dac.modded_dac.ModelArgs",
            "_partial_": True,
            "block_size": 4096,  # frames at 86 Hz: clips up to ~47 s
            "n_local_heads": -1,
            "head_dim": 64,
            "rope_base": 10000,
            "norm_eps": 1e-5,
            "dropout_rate": 0.0,
            "attn_dropout_rate": 0.0,
            "channels_first": True,
        },
        "quantizer": {
            "_target_": "fish_speech.models.dac.rvq.DownsampleResidualVectorQuantize",
            "input_dim": 128,
            "n_codebooks": RESIDUAL_CODEBOOKS,
            "codebook_size": RESIDUAL_SIZE,
            "codebook_dim": 8,
            "quantizer_dropout": 0.0,
            "downsample_factor": [2, 2],
            "post_module": window,
            "pre_module": window,
            "semantic_codebook_size": SEMANTIC_SIZE,
        },
    }


def special_tokens(num_semantic: int = SEMANTIC_SIZE) -> list[str]:
    """Fish Speech's special tokens followed by ``num_semantic`` ``<|semantic:i|>`` tokens."""
    from fish_speech.tokenizer import ALL_SPECIAL_TOKENS, SEMANTIC_TOKEN_TEMPLATE

    base = [t for t in ALL_SPECIAL_TOKENS if not t.startswith("<|semantic:")]
    return base + [SEMANTIC_TOKEN_TEMPLATE.format(i=i) for i in range(num_semantic)]


def write_byte_tokenizer(path: str | Path) -> Path:
    """A byte-level tiktoken file: 256 ranks, one per byte (``base64(byte) rank`` lines)."""
    path = Path(path)
    path.write_text("".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256)))
    return path


def model_args(num_special_tokens: int) -> dict:
    """``DualARModelArgs`` keywords of the tiny model."""
    return dict(
        model_type="dual_ar",
        vocab_size=256 + num_special_tokens,
        n_layer=2,
        n_head=4,
        dim=64,
        head_dim=16,
        intermediate_size=128,
        n_local_heads=2,
        codebook_size=SEMANTIC_SIZE,
        num_codebooks=1 + RESIDUAL_CODEBOOKS,
        n_fast_layer=1,
        max_seq_len=4096,  # Fish Speech generation needs prompt <= max_seq_len - 2048
        tie_word_embeddings=False,
        attention_qk_norm=True,
        scale_codebook_embeddings=True,
        use_gradient_checkpointing=False,
        norm_eps=1e-6,
        rope_base=10000,
    )


def write_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny model folder atomically (built in a temp dir, then renamed). Returns ``out_dir``."""
    from fish_speech.models.text2semantic.llama import DualARModelArgs, DualARTransformer
    from fish_speech.tokenizer import FishTokenizer

    from fishtune.modeling.codec import DERIVED_BUFFERS, build_codec
    from fishtune.runstate import atomic_dir

    with atomic_dir(out_dir) as tmp:
        torch.manual_seed(seed)
        specials = special_tokens()
        tokenizer = FishTokenizer(str(write_byte_tokenizer(tmp / "tokenizer.tiktoken")), specials)
        (tmp / "special_tokens.json").write_text(
            json.dumps(tokenizer.all_special_tokens_with_ids, indent=2, ensure_ascii=False)
        )
        args = DualARModelArgs(**model_args(len(specials)))
        model = DualARTransformer(args, tokenizer=tokenizer)
        args.save(str(tmp / "config.json"))
        torch.save(model.state_dict(), tmp / "model.pth")
        cfg = codec_config()
        (tmp / "codec_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
        codec = build_codec(tmp / "codec_config.yaml")
        torch.save({k: v for k, v in codec.state_dict().items() if not k.endswith(DERIVED_BUFFERS)}, tmp / "codec.pth")
        (tmp / "README.md").write_text(
            "# tiny test model\n\nRandomly initialised, made by `python -m fishtune.modeling.tiny`. "
            "Not a speech model: for tests of the pipeline only.\n"
        )
    return Path(out_dir)


def cli(writer, doc: str, argv: list[str] | None = None) -> int:
    """``python -m <module> OUT_DIR [--seed N]`` for a model-folder writer."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(writer(args.out_dir, args.seed))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(write_tiny_model, __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
