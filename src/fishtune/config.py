"""Loading the Hydra configuration (``configs/``) with command-line overrides."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fishtune import schema
from fishtune.errors import ConfigError, UsageError


def config_dir() -> Path:
    """``$FISHTUNE_CONFIGS`` or the ``configs/`` folder of the source tree (also ``/app/configs`` in the image)."""
    env = os.environ.get("FISHTUNE_CONFIGS")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "configs", Path("/app/configs")]
    for cand in candidates:
        if (cand / "config.yaml").is_file():
            return cand
    raise UsageError(
        f"no config.yaml found in {', '.join(map(str, candidates))}",
        hint="set FISHTUNE_CONFIGS to the fishtune configs/ folder",
    )


def load_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``config.yaml`` with Hydra overrides (``key=value``, ``group=option``) and resolve it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        aliases = schema.aliases(OmegaConf.to_container(cfg, resolve=False))
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"bad configuration override in {' '.join(overrides) or '(none)'}: {first}",
            hint="use key=value for existing keys (see configs/config.yaml)",
        ) from err
    check_run_name(cfg)
    check(cfg, aliases)
    return cfg


def check(cfg: DictConfig, aliases: set[str] = frozenset()) -> None:
    """Every value against :mod:`fishtune.schema` (types, ranges, choices), before any stage starts: one line per
    bad value (exit 2). Valid strings from environment variables are converted in place (``SERVE_PORT``)."""
    problems, fixes = schema.validate(OmegaConf.to_container(cfg, resolve=True), aliases)
    if problems:
        raise ConfigError(problems)
    for dotted, value in fixes.items():
        *parents, last = dotted.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[last] = value


def check_run_name(cfg: DictConfig) -> None:
    """The run goes to ``$FISHTUNE_RUNS/$RUN_NAME``: the name must be one plain folder name, so that a run never
    writes outside the runs root (``../../x``) or into the root itself (empty)."""
    name = "" if cfg.run_name is None else str(cfg.run_name)
    if not name.strip() or name.strip() in (".", "..") or any(c in name for c in "/\\\0"):
        raise UsageError(
            f"RUN_NAME (run_name) {name!r} is not a plain folder name",
            hint="use letters, digits, '-', '_' or '.', e.g. RUN_NAME=fi-2024-06 (the run is $FISHTUNE_RUNS/<name>)",
        )


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
