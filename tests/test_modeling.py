"""Strict loading of the model folder: the tiny model loads through the real path; broken folders fail loudly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fishtune.errors import InputError
from fishtune.modeling import codec as codec_mod
from fishtune.modeling import llm


def test_tiny_model_has_the_real_layout_and_loads(tiny_model):
    for name in ("model.pth", "config.json", "tokenizer.tiktoken", "special_tokens.json", "codec.pth"):
        assert (tiny_model / name).is_file()
    model = llm.load_llm(tiny_model)
    saved = torch.load(tiny_model / "model.pth", weights_only=True)
    for k, v in model.state_dict().items():
        if k in saved:
            assert torch.equal(v, saved[k]), k
    assert set(saved) <= set(model.state_dict())
    assert type(model).__name__ == "DualARTransformer"
    assert model.config.num_codebooks == 4 and model.config.codebook_size == 64
    tok = model.tokenizer
    assert tok.semantic_end_id - tok.semantic_begin_id + 1 == 64
    assert tok.decode(tok.encode("Hyvää päivää")) == "Hyvää päivää"


def test_forward_runs(tiny_model):
    model = llm.load_llm(tiny_model)
    inp = torch.zeros(1, 5, 7, dtype=torch.long)
    out = super(type(model), model).forward(inp)  # the slow transformer's training forward
    assert out.logits.shape == (1, 7, model.config.vocab_size)


def _with_weights(tiny_model, tmp_path, name: str, edit) -> Path:
    """A copy of the tiny model whose ``name`` (model.pth or codec.pth) holds ``edit(state_dict)``."""
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    torch.save(edit(torch.load(folder / name, weights_only=True)), folder / name)
    return folder


def test_missing_tensor_is_an_error(tiny_model, tmp_path):
    def drop(sd):
        sd.pop("layers.0.attention.wqkv.weight")
        return sd

    broken = _with_weights(tiny_model, tmp_path, "model.pth", drop)
    with pytest.raises(InputError, match="missing 1 tensors.*layers.0.attention.wqkv.weight"):
        llm.load_llm(broken)


def test_lora_checkpoint_is_not_a_model(tiny_model, tmp_path):
    def as_lora_checkpoint(sd):
        sd["layers.0.attention.wqkv.lora_A"] = torch.zeros(8, 64)
        return {"state_dict": {f"model.{k}": v for k, v in sd.items()}}

    broken = _with_weights(tiny_model, tmp_path, "model.pth", as_lora_checkpoint)
    with pytest.raises(InputError, match="merge it first"):
        llm.load_llm(broken)


def test_derived_tables_in_the_weights_file_are_ignored(tiny_model, tmp_path):
    # Fish Speech loads non-strictly, so exports may carry RoPE tables, masks or KV caches: not weights
    extra = {
        "freqs_cis": torch.zeros(3, 2),
        "causal_mask": torch.zeros(3, 3, dtype=torch.bool),
        "layers.0.attention.kv_cache.k_cache": torch.ones(1, 2),
    }
    other = _with_weights(tiny_model, tmp_path, "model.pth", lambda sd: sd | extra)
    reference = llm.load_llm(tiny_model)
    model = llm.load_llm(other)
    assert torch.equal(model.freqs_cis, reference.freqs_cis) and torch.equal(model.causal_mask, reference.causal_mask)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())


def test_truncated_weights_are_an_error(tiny_model, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(tiny_model, broken)
    data = (broken / "model.pth").read_bytes()
    (broken / "model.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        llm.load_llm(broken)


def test_special_token_ids_must_match(tiny_model, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(tiny_model, broken)
    specials = json.loads((broken / "special_tokens.json").read_text())
    specials["<|im_end|>"] += 1000
    (broken / "special_tokens.json").write_text(json.dumps(specials))
    with pytest.raises(InputError, match="different models"):
        llm.load_tokenizer(broken)


def test_codec_with_missing_weights_is_an_error(tiny_model, tmp_path):
    def gan_checkpoint_without_quantizer(sd):
        return {"state_dict": {f"generator.{k}": v for k, v in sd.items() if not k.startswith("quantizer.")}}

    broken = _with_weights(tiny_model, tmp_path, "codec.pth", gan_checkpoint_without_quantizer)
    with pytest.raises(InputError, match="does not match the codec config"):
        codec_mod.load_codec(broken)


def test_missing_model_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        llm.load_llm(tmp_path / "none")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="lacks model.pth"):
        llm.load_llm(tmp_path / "half")


@pytest.mark.slow
def test_model_folder_without_codec_config_uses_fish_speechs_s1_mini_codec(tmp_path):
    # the released s1-mini folder has no codec_config.yaml: the codec's architecture comes from the fish-speech
    # package (a namespace package without __file__, which once made this path crash)
    import torch

    from fishtune.modeling import codec

    path = codec.codec_config_path(tmp_path)
    assert path.name == "modded_dac_vq.yaml" and path.is_file()
    model = codec.build_codec(path).eval()
    with torch.inference_mode():
        (codes,) = codec.encode(model, [torch.randn(22050) * 0.1], "cpu")
    assert codes.shape == (10, 11)  # s1-mini: 10 codebooks, 44100 / 2048 frames per second
