"""The Hydra configuration: defaults, environment variables, groups and presets compose as documented."""

from __future__ import annotations

import pytest

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
