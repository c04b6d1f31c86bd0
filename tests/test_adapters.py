"""Adapters at real dtypes: fp32 factors over a bf16 base, settings and base identity carried in the file,
the loader's handling of unknown tensors at full size, and the released files' pins."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from conftest import copy_run, run_inprocess, stage_cmd
from fishtune import adapters, lora
from fishtune.errors import InputError
from fishtune.modeling import files, llm
from fishtune.modeling.tiny import write_tiny_model
from fishtune.training import forward as fw
from fishtune.training.precision import Bf16BaseFp32Adapters
from fishtune.training.samples import Collate, Utterance, encode


def _batch(model):
    g = torch.Generator().manual_seed(0)
    nc = model.config.num_codebooks
    utt = Utterance("Hyvää huomenta", torch.randint(0, 32, (nc, 12), generator=g).numpy())
    return Collate(model.tokenizer.get_token_id("<|end_of_text|>"))([encode(model.tokenizer, nc, [utt])])


def _one_adamw_step(model, factor_dtype) -> float:
    """Share of lora_B entries that one AdamW step at lr 1e-4 changes, with the factors held in ``factor_dtype``."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.data = (torch.randn(p.shape, generator=g) * 0.1).to(factor_dtype)
            elif name.endswith("lora_A"):
                p.data = p.data.to(factor_dtype)
    factors = [p for n, p in model.named_parameters() if n.endswith("lora_B")]
    before = [p.detach().clone() for p in factors]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    fw.loss(model, _batch(model)).loss.backward()
    opt.step()
    changed = sum(int((p != b).sum()) for p, b in zip(factors, before, strict=True))
    return changed / sum(p.numel() for p in factors)


def test_adamw_step_changes_every_fp32_factor_over_a_bf16_base(tiny_model):
    model = llm.load_llm(tiny_model, dtype=torch.bfloat16)
    lora.apply_lora(model, lora.LoraSettings(r=4, alpha=8))
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    assert _one_adamw_step(model, torch.float32) == 1.0
    state = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad]).state
    assert not state or all(s["exp_avg"].dtype == torch.float32 for s in state.values())
    # the same step on bf16 factors loses most updates below bf16's resolution (why the factors are fp32)
    bf16 = llm.load_llm(tiny_model, dtype=torch.bfloat16)
    lora.apply_lora(bf16, lora.LoraSettings(r=4, alpha=8))
    assert _one_adamw_step(bf16, torch.bfloat16) < 0.5


def test_lightning_bf16_plugin_keeps_the_factors_fp32(tiny_model):
    model = llm.load_llm(tiny_model)
    lora.apply_lora(model, lora.LoraSettings(r=4, alpha=8))
    Bf16BaseFp32Adapters().convert_module(model)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    out = fw.loss(model, _batch(model))  # runs: the factors are cast to bf16 for the matmuls
    assert out.loss.dtype in (torch.float32, torch.bfloat16) and torch.isfinite(out.loss)


def test_fold_equals_the_merged_weights(tiny_model):
    model = llm.load_llm(tiny_model)
    lora.apply_lora(model, lora.LoraSettings(r=4, alpha=12))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.02)
    merged = lora.merged_state_dict(model)
    lora.fold(model)
    assert not lora.lora_modules(model)
    state = model.state_dict()
    assert set(state) == set(merged) and all(torch.equal(state[k], v) for k, v in merged.items())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, packed_run, finnish_data, tiny_model):
    run = copy_run(packed_run, tmp_path_factory.mktemp("adapters") / "runs" / "a")
    assert (
        run_inprocess(run, finnish_data, tiny_model, "train", "train.max_steps=6", "train.val_every=3", "lora.alpha=24")
        == 0
    )
    return run


@pytest.mark.slow
def test_every_adapter_file_says_how_it_was_built_and_on_which_base(trained, tiny_model):
    want_sha = files.file_hash(tiny_model / "model.pth")
    paths = [trained / "train" / "lora.pth", trained / "train" / "best.ckpt"]
    paths += sorted((trained / "train" / "checkpoints").glob("step_*.ckpt"))
    for path in paths:
        a = adapters.read(path)
        assert a.described and (a.settings.r, a.settings.alpha, a.settings.dropout) == (8, 24.0, 0.01), path
        assert a.settings.targets == lora.UPSTREAM_TARGETS
        assert a.base["sha256"] == want_sha and a.base["name"] == "tiny"
        assert {v.dtype for v in a.weights.values()} == {torch.float32}
    raw = torch.load(trained / "train" / "lora.pth", weights_only=True)  # plain data: no code on load
    assert raw["fishtune"]["step"] == 6 and "layers.0.attention.wqkv.lora_A" in raw["state_dict"]


@pytest.mark.slow
def test_merge_uses_the_adapters_settings_not_the_config(tmp_path, trained, finnish_data, tiny_model):
    a = copy_run(trained, tmp_path / "runs" / "a", skip=("model",))
    b = copy_run(trained, tmp_path / "runs" / "b", skip=("model",))
    assert run_inprocess(a, finnish_data, tiny_model, "merge") == 0
    assert run_inprocess(b, finnish_data, tiny_model, "merge", "lora.alpha=2", "lora.r=4") == 0
    wa = torch.load(a / "model" / "model.pth", weights_only=True)
    wb = torch.load(b / "model" / "model.pth", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    state = json.loads((b / "model" / "state.json").read_text())
    assert state["lora"]["alpha"] == 24.0 and state["lora"]["r"] == 8
    base = llm.load_llm(tiny_model).state_dict()
    assert any(not torch.equal(wa[k], base[k]) for k in base)  # the adapter was really merged


@pytest.mark.slow
def test_an_adapter_is_refused_on_another_base(tmp_path, trained, finnish_data, tiny_model):
    other = write_tiny_model(tmp_path / "other", seed=7)
    run = copy_run(trained, tmp_path / "runs" / "o", skip=("model",))
    p = subprocess.run(stage_cmd(run, finnish_data, other, "merge"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert "was trained on tiny" in p.stderr and "lora.allow_other_base=true" in p.stderr
    assert not (run / "model").exists()
    cmd = stage_cmd(run, finnish_data, other, "merge", "lora.allow_other_base=true")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "applying it anyway" in p.stdout + p.stderr


@pytest.mark.slow  # the module's trained run
def test_an_upstream_adapter_without_settings_takes_rank_from_shapes(tmp_path, trained):
    weights = adapters.read(trained / "train" / "lora.pth").weights
    path = tmp_path / "upstream.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in weights.items()}}, path)
    with pytest.raises(InputError, match="does not say how it was built"):
        adapters.read(path)
    a = adapters.read(path, fallback=lora.LoraSettings(r=99, alpha=16))
    assert not a.described and a.settings.r == 8 and a.settings.alpha == 16
    assert a.settings.targets == lora.UPSTREAM_TARGETS


def _full_size_weights(tmp_path, edit=None):
    """A model folder with the real s1-mini config and a full-size bf16 model.pth (values uninitialised)."""
    from fish_speech.models.text2semantic.llama import DualARModelArgs, DualARTransformer

    from fishtune.modeling import s1mini

    folder = tmp_path / "s1"
    folder.mkdir()
    s1mini.write_tokenizer(folder / "tokenizer.tiktoken")
    tok_args = DualARModelArgs(**s1mini.ARGS)
    tok_args.save(str(folder / "config.json"))
    from fish_speech.tokenizer import FishTokenizer

    from fishtune.modeling.tiny import special_tokens

    tok = FishTokenizer(str(folder / "tokenizer.tiktoken"), special_tokens(4096))
    (folder / "special_tokens.json").write_text(json.dumps(tok.all_special_tokens_with_ids))
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in DualARTransformer(tok_args, tokenizer=tok).state_dict().items()}
    sd = {k: torch.zeros(s, dtype=torch.bfloat16) for k, (s, _) in shapes.items()}
    sd["unreleased_extra.table"] = torch.zeros(7_000_000, dtype=torch.bfloat16)
    torch.save(edit(sd) if edit else sd, folder / "model.pth")
    return folder


@pytest.mark.slow
def test_full_size_weights_with_unknown_extras_load_with_one_warning(tmp_path, caplog):
    folder = _full_size_weights(tmp_path)
    assert (folder / "model.pth").stat().st_size > 1_730_000_000
    model = llm.load_llm(folder)
    assert sum(p.numel() for p in model.parameters()) == 860_169_216
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    warnings = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(warnings) == 1 and "unreleased_extra.table" in warnings[0]
    del model
    shutil.rmtree(folder)
    bad = _full_size_weights(tmp_path, lambda sd: sd | {"fast_output.weight": torch.zeros(10, 1024)})
    with pytest.raises(InputError, match="shape mismatch for fast_output.weight"):
        llm.load_llm(bad)


def test_pins_name_the_file_and_the_fix(tmp_path, tiny_model):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    size = (folder / "model.pth").stat().st_size
    good = {"model.pth": {"sha256": files.file_hash(folder / "model.pth"), "bytes": size}}
    assert files.pin_problems(folder, good) == []
    wrong_sha = {"model.pth": {"sha256": "0" * 64, "bytes": size}}
    have = good["model.pth"]["sha256"][:12]
    want = f"{folder / 'model.pth'} has sha256 {have}…, the released file has 000000000000…"
    assert files.pin_problems(folder, wrong_sha) == [want]
    wrong_size = {"model.pth": {"sha256": "0" * 64, "bytes": 1_735_122_974}}
    assert "the released file is 1,735,122,974 bytes" in files.pin_problems(folder, wrong_size)[0]


@pytest.mark.slow
def test_doctor_and_fetch_check_the_released_files(tmp_path, packed_run, finnish_data, tiny_model):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    sha = files.file_hash(folder / "model.pth")
    size = (folder / "model.pth").stat().st_size
    pin = f"++model.files={{model.pth:{{sha256:{'f' * 64},bytes:{size}}}}}"
    run = tmp_path / "runs" / "p"
    for stage in ("fetch", "doctor"):
        p = subprocess.run(stage_cmd(run, finnish_data, folder, stage, pin), capture_output=True, text=True)
        assert p.returncode == 1, (stage, p.stdout, p.stderr)
        assert f"{folder / 'model.pth'} has sha256 {sha[:12]}" in p.stderr + p.stdout, stage
        assert "model.verify_files=false" in p.stderr + p.stdout
    good = f"++model.files={{model.pth:{{sha256:{sha},bytes:{size}}}}}"
    p = subprocess.run(stage_cmd(run, finnish_data, folder, "doctor", good), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads((run / "doctor.json").read_text())
    p = subprocess.run(
        stage_cmd(run, finnish_data, folder, "doctor", pin, "model.verify_files=false"), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
