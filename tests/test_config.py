"""The Hydra configuration: defaults, environment variables, groups and presets compose as documented."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import ENTRYPOINT
from fishtune.config import load_config
from fishtune.errors import UsageError


def test_defaults_follow_the_recipe(monkeypatch):
    for var in ("FISHTUNE_DATA", "FISHTUNE_RUNS", "FISHTUNE_CACHE", "FISHTUNE_MODEL", "RUN_NAME"):
        monkeypatch.delenv(var, raising=False)
    cfg = load_config([])
    assert cfg.paths.data == "/data" and cfg.run_dir == "/runs/default"
    assert cfg.model.name == "openaudio-s1-mini" and cfg.model.path == "/cache/models/openaudio-s1-mini"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 16, 0.01)
    t = cfg.train
    assert (t.lr, list(t.betas), t.val_every) == (1e-4, [0.9, 0.95], 100)
    assert t.precision == "auto" and t.early_stopping.patience > 0
    assert cfg.recipe.normalize == "fi" and cfg.prepare.sample_rate == 44100


def test_environment_variables_set_the_paths(monkeypatch):
    monkeypatch.setenv("FISHTUNE_RUNS", "/tmp/r")
    monkeypatch.setenv("RUN_NAME", "fi-1")
    monkeypatch.setenv("FISHTUNE_MODEL", "/m")
    cfg = load_config(["model=tiny"])
    assert cfg.run_dir == "/tmp/r/fi-1" and cfg.model.path == "/m" and cfg.model.allow_untrained


@pytest.mark.parametrize(
    ("preset", "expect"),
    [
        ("tiny", {"batch_size": 2, "max_length": 1024, "gradient_checkpointing": "auto"}),
        ("24gb", {"batch_size": 8, "gradient_checkpointing": "auto", "memory_limit_gb": 22, "ce_chunk": 1024}),
    ],
)
def test_presets_override_training_settings(preset, expect):
    cfg = load_config([f"preset={preset}"])
    for key, value in expect.items():
        assert cfg.train[key] == value, key
    default = load_config(["preset=default"]).train
    assert default.ce_chunk == 4096 and default.packing == "fill" and default.memory_limit_gb is None


def test_command_line_beats_presets():
    assert load_config(["preset=tiny", "train.max_steps=7"]).train.max_steps == 7


def test_generic_recipe_does_not_normalise_numbers():
    assert load_config(["recipe=generic"]).prepare.normalize == "none"


def test_unknown_group_option_is_a_usage_error():
    with pytest.raises(UsageError, match="bad configuration override"):
        load_config(["preset=huge"])


# --- the schema (fishtune.schema): every bad value is one line naming the key, the value and what is allowed ---

BAD = [  # (override, the line's start, what it says is allowed): the values issue 13 found crashing or accepted
    ("train.lr=abc", "train.lr=abc", "a number >= 0"),
    ("lora.alpha=abc", "lora.alpha=abc", "a number > 0"),
    ("train.batch_size=0", "train.batch_size=0", "an integer >= 1"),
    ("train.batch_size=-1", "train.batch_size=-1", "an integer >= 1"),
    ("train.max_length=0", "train.max_length=0", "an integer >= 2"),
    ("lora.r=0", "lora.r=0", "an integer >= 1"),
    ("train.val_every=0", "train.val_every=0", "an integer >= 1"),
    ("train.precision=fp64", "train.precision=fp64", "one of auto, bf16-true, bf16-mixed, 32-true"),
    ("train.betas=[0.9]", "train.betas=[0.9]", "two numbers in [0, 1)"),
    ("train.scheduler=linear", "train.scheduler=linear", "one of constant, cosine"),
    ("extract.max_batch_seconds=0", "extract.max_batch_seconds=0", "a number > 0"),
    ("pack.val_fraction=2", "pack.val_fraction=2", "a number >= 0 and < 1"),
    ("train.max_steps=0", "train.max_steps=0", "an integer >= 1"),
    ("prepare.min_duration=-1", "prepare.min_duration=-1", "a number >= 0"),
    ("prepare.max_duration=-5", "prepare.max_duration=-5", "a number > 0"),
    ("train.batch_size=2.5", "train.batch_size=2.5", "an integer >= 1"),
    ("train.resume=maybe", "train.resume=maybe", "true or false"),
    ("train.lr=nan", "train.lr=NaN", "a number >= 0"),
    ("train.memory_fraction=2", "train.memory_fraction=2", "a number >= 0.1 and <= 1"),
    ("train.gradient_checkpointing=sometimes", "train.gradient_checkpointing=sometimes", "auto, true, false or a"),
    ("train.compile=''", "train.compile=''", "true, false or a backend name"),
    ("serve.port=70000", "serve.port=70000", "an integer >= 0 and <= 65535"),
    ("serve.limits.top_p=[0.9,0.1]", "serve.limits.top_p=[0.9, 0.1]", "lowest <= highest"),
    ("evaluate.pick.min_similarity=1.5", "evaluate.pick.min_similarity=1.5", "a number >= 0 and <= 1"),
    ("fetch.dataset.sha256=abc", "fetch.dataset.sha256=abc", "null or 64 hex digits"),
    ("merge.rtol.bfloat16=0", "merge.rtol.bfloat16=0", "a number > 0"),
    ("+train.learning_rate=1", "train.learning_rate=1", "no such key"),
    ("~train.lr", "train.lr=(missing)", "a number >= 0"),
    ("prepare.min_duration=40", "prepare.min_duration=40", "< prepare.max_duration"),  # max_duration is 30
    ("pack.val_min=300", "pack.val_min=300", "<= pack.val_max"),
    ("synthesize.reference_audio=/a.wav", "synthesize.reference_text=null", "required with it"),
    ("fetch.dataset.path=/d", "fetch.dataset.repo_id=x/y", "one dataset source, not both"),
]


def _enumerated() -> list[tuple[str, str]]:
    """(key, 'one of ...') for every option of the schema that is a choice."""
    import dataclasses
    import typing

    from fishtune import schema

    out = []

    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            elif "choices" in f.metadata:
                out.append((prefix + f.name, "one of " + ", ".join(f.metadata["choices"])))
            elif f.metadata.get("check") in (schema._device, schema._auth):
                out.append((prefix + f.name, f.metadata["check"]("bogus")))

    walk(schema.FishtuneConfig, "")
    return out


ENUMERATED = _enumerated()


def _main(tmp_path, monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    from fishtune import cli

    monkeypatch.setenv("FISHTUNE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("FISHTUNE_DATASET_REPO", "x/y") if any("fetch.dataset.path" in a for a in args) else None
    capsys.readouterr()
    code = cli.main(["train", "model=tiny", "preset=tiny", *args])
    err = capsys.readouterr().err
    return code, [x for x in err.splitlines() if x.startswith("error:")]


@pytest.mark.parametrize(("override", "start", "allowed"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_one_line_naming_key_value_and_allowed(tmp_path, monkeypatch, capsys, override, start, allowed):
    code, lines = _main(tmp_path, monkeypatch, capsys, override)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {start}: expected ") and allowed in lines[0], lines[0]
    assert not (tmp_path / "runs").exists(), "nothing is written before the config is checked"


@pytest.mark.parametrize(("key", "allowed"), ENUMERATED, ids=[e[0] for e in ENUMERATED])
def test_unknown_choice_of_every_enumerated_option(tmp_path, monkeypatch, capsys, key, allowed):
    code, lines = _main(tmp_path, monkeypatch, capsys, f"{key}=bogus")
    assert code == 2 and lines == [f"error: {key}=bogus: expected {allowed}"]


def test_enumerated_options_cover_the_documented_ones():
    keys = {k for k, _ in ENUMERATED}
    for k in ("prepare.format", "train.precision", "train.scheduler", "train.packing", "pack.split_by",
              "extract.precision", "synthesize.model", "serve.model", "serve.auth", "serve.default_format",
              "fetch.model", "recipe.normalize", "train.device", "extract.device", "evaluate.device"):  # fmt: skip
        assert k in keys, k


def test_every_bad_value_is_reported_at_once_before_any_work_in_a_real_process(tmp_path):
    """The issue's list in one command: one line each, exit 2, in well under 5 s, and no run directory made."""
    bad = list({b[0].split("=")[0]: b[0] for b in BAD[:15]}.values())  # one value per key
    env = {**os.environ, "FISHTUNE_RUNS": str(tmp_path / "runs"), "FISHTUNE_MODEL": str(tmp_path / "no-model")}
    started = time.monotonic()
    p = subprocess.run([sys.executable, str(ENTRYPOINT), "train", *bad], env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    lines = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert p.returncode == 2 and len(lines) == len(bad), p.stderr
    assert {x.split("=")[0].removeprefix("error: ") for x in lines} == {b.split("=")[0] for b in bad}
    assert seconds < 5, seconds
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("recipe", ["finnish", "generic"])
@pytest.mark.parametrize(("model", "preset"), [("s1-mini", "default"), ("s1-mini", "24gb"), ("tiny", "tiny")])
def test_every_shipped_config_passes_the_schema(recipe, model, preset):
    load_config([f"recipe={recipe}", f"model={model}", f"preset={preset}"])


def test_valid_unusual_values_pass_and_environment_strings_are_converted(monkeypatch):
    monkeypatch.setenv("SERVE_PORT", "9090")
    monkeypatch.setenv("SERVE_AFTER", "true")
    cfg = load_config(
        ["train.gradient_checkpointing=2", "train.compile=aot_eager", "serve.auth=true", "train.lr=0",
         "evaluate.checkpoints=[best,last,20]", "synthesize.text=42", "train.memory_limit_gb=22"]
    )  # fmt: skip
    assert cfg.serve.port == 9090 and cfg.serve.after is True and cfg.synthesize.text == "42"
