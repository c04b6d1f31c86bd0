"""The configuration schema: the type, range and choices of every key of ``configs/config.yaml`` and its groups.

Dataclasses (standard library) describe the config tree; a field's annotation is its type and its metadata the
constraints (``ge``/``gt``/``le``/``lt``, ``choices``, ``check``). Defaults are *not* here: they stay in
``configs/*.yaml``, and every field is required, so a key missing from the YAML (or a key the schema does not
know) is reported as well. :func:`validate` runs on the composed, resolved config before any stage starts and
returns one line per bad value, naming the key, the value and what is allowed.

Hydra's own structured configs (OmegaConf 2.3) were not used for the checking: they stop at the first error,
know neither ranges nor ``a | b`` unions (``train.gradient_checkpointing: auto | true | false | N``), and their
messages span several lines.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

# --- constraints -------------------------------------------------------------------------------------------------


def key(*, ge=None, gt=None, le=None, lt=None, choices=None, check=None) -> Any:
    """A required field with constraints (``check(value) -> None | 'what is allowed'`` for the unusual ones)."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "check": check}
    return field(metadata={k: v for k, v in meta.items() if v is not None})


_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _device(v) -> str | None:
    return None if isinstance(v, str) and _DEVICE_RE.match(v) else "auto, cpu, cuda or cuda:N"


def _checkpointing(v) -> str | None:
    ok = isinstance(v, bool) or v == "auto" or (isinstance(v, int) and v >= 0)
    ok = ok or (isinstance(v, str) and (v.lower() in ("true", "false") or v.isdigit()))
    return None if ok else "auto, true, false or a number of layers >= 0"


def _count(v) -> str | None:
    ok = v == "auto" or (_int(v) and v >= 1)
    return None if ok else "auto or a number >= 1"


def _compile(v) -> str | None:
    return None if isinstance(v, bool) or (isinstance(v, str) and v.strip()) else "true, false or a backend name"


def _betas(v) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v)
    return None if ok else "two numbers in [0, 1), e.g. [0.9,0.95]"


def _pair(v) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and all(_number(b) for b in v) and v[0] <= v[1]
    return None if ok else "[lowest, highest], two numbers with lowest <= highest"


def _checkpoints(v) -> str | None:
    ok = isinstance(v, list) and all((isinstance(c, str) and c) or (_int(c) and c >= 0) for c in v)
    return None if ok else "a list of best, last, merged, steps, step numbers or paths, e.g. [best,last]"


def _sha256(v) -> str | None:
    return None if v is None or (isinstance(v, str) and _SHA256_RE.match(v.lower())) else "null or 64 hex digits"


def _auth(v) -> str | None:
    return None if isinstance(v, bool) or str(v).lower() in ("auto", "true", "false") else "auto, true or false"


def _nonempty(v) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


# --- the tree ----------------------------------------------------------------------------------------------------

DEVICE = {"check": _device}


@dataclass
class Paths:
    data: str = key(check=_nonempty)
    runs: str = key(check=_nonempty)
    cache: str = key(check=_nonempty)


@dataclass
class Doctor:
    min_free_gb: float = key(ge=0)
    require_gpu: bool = key()


@dataclass
class Prepare:
    format: str = key(choices=("auto", "fish", "ljspeech", "css10"))
    sample_rate: int = key(gt=0)
    normalize: str = key(choices=("fi", "none"))
    min_duration: float = key(ge=0)
    max_duration: float = key(gt=0)
    silence_db: float = key(le=0)
    max_chars_per_second: float = key(gt=0)
    max_reject_fraction: float = key(ge=0, le=1)
    workers: int = key(ge=0)


@dataclass
class Extract:
    device: str = key(**DEVICE)
    devices: Any = key(check=_count)
    precision: str = key(choices=("fp32", "bf16"))
    max_batch_seconds: float = key(gt=0)
    max_batch_clips: int = key(ge=1)


@dataclass
class Pack:
    val_fraction: float = key(ge=0, lt=1)
    val_min: int = key(ge=0)
    val_max: int = key(ge=0)
    split_by: str = key(choices=("clip", "speaker"))
    seed: int = key()


@dataclass
class Lora:
    r: int = key(ge=1)
    alpha: float = key(gt=0)
    dropout: float = key(ge=0, lt=1)
    allow_other_base: bool = key()


@dataclass
class EarlyStopping:
    patience: int = key(ge=0)
    min_delta: float = key(ge=0)


@dataclass
class Guard:
    enabled: bool = key()
    max_loss_ratio: float = key(gt=0)
    batches: int = key(ge=1)


@dataclass
class Train:
    device: str = key(**DEVICE)
    devices: Any = key(check=_count)
    num_nodes: Any = key(check=_count)
    strategy: str = key(choices=("auto", "ddp"))
    precision: str = key(choices=("auto", "bf16-true", "bf16-mixed", "32-true"))
    batch_size: int = key(ge=1)
    max_length: int = key(ge=2)
    max_steps: int = key(ge=1)
    lr: float = key(ge=0)  # 0: a frozen run (tests of early stopping)
    betas: Any = key(check=_betas)
    eps: float = key(gt=0)
    weight_decay: float = key(ge=0)
    warmup_steps: int = key(ge=0)
    scheduler: str = key(choices=("constant", "cosine"))
    grad_clip: float = key(ge=0)
    accumulate: int = key(ge=1)
    val_every: int = key(ge=1)
    val_batch_size: int = key(ge=1)
    val_batches: int = key(ge=0)
    ckpt_every: int = key(ge=1)
    keep_checkpoints: int = key(ge=1)
    early_stopping: EarlyStopping = key()
    packing: str = key(choices=("fill", "pad"))
    gradient_checkpointing: Any = key(check=_checkpointing)
    memory_fraction: float = key(ge=0.1, le=1)
    memory_limit_gb: float | None = key(gt=0)
    ce_chunk: int = key(ge=0)
    compile: Any = key(check=_compile)
    num_workers: int = key(ge=0)
    seed: int = key()
    resume: bool = key()
    init_lora: str | None = key()
    log_every: int = key(ge=1)
    guard: Guard = key()


@dataclass
class Rtol:
    float32: float = key(gt=0)
    bfloat16: float = key(gt=0)


@dataclass
class Merge:
    checkpoint: str = key(check=_nonempty)
    output: str = key(check=_nonempty)
    rtol: Rtol = key()


@dataclass
class Synthesize:
    model: str = key(choices=("merged", "lora", "base"))
    text: str | None = key()
    text_file: str | None = key()
    reference_audio: str | None = key()
    reference_text: str | None = key()
    output: str = key(check=_nonempty)
    device: str = key(**DEVICE)
    max_new_tokens: int = key(ge=1)
    temperature: float = key(gt=0)
    top_p: float = key(gt=0, le=1)
    repetition_penalty: float = key(gt=0)
    seed: int = key()


@dataclass
class Sampling:
    temperature: float = key(gt=0)
    top_p: float = key(gt=0, le=1)
    repetition_penalty: float = key(gt=0)
    max_new_tokens: int = key(ge=1)


@dataclass
class Limits:
    temperature: Any = key(check=_pair)
    top_p: Any = key(check=_pair)
    repetition_penalty: Any = key(check=_pair)
    max_new_tokens: Any = key(check=_pair)


@dataclass
class Voice:
    audio: str = key(check=_nonempty)
    text: str = key(check=_nonempty)


@dataclass
class Serve:
    host: str = key(check=_nonempty)
    port: int = key(ge=0, le=65535)
    auth: Any = key(check=_auth)
    model: str = key(choices=("auto", "merged", "lora", "base"))
    device: str = key(**DEVICE)
    after: bool = key()
    max_chars: int = key(ge=1)
    max_queue: int = key(ge=1)
    timeout_seconds: float = key(gt=0)
    max_upload_mb: float = key(gt=0)
    max_reference_seconds: float = key(gt=0)
    default_format: str = key(choices=("wav", "flac", "mp3", "opus", "pcm"))
    defaults: Sampling = key()
    limits: Limits = key()
    voices: dict[str, Voice] = key()


@dataclass
class Sync:
    repo_id: str | None = key()
    private: bool = key()
    revision: str | None = key()
    retry_seconds: float = key(gt=0)
    max_retry_seconds: float = key(gt=0)
    final_wait_seconds: float = key(ge=0)


@dataclass
class Hub:
    endpoint: str | None = key()
    cache_dir: str = key(check=_nonempty)
    sync: Sync = key()


@dataclass
class Dataset:
    path: str | None = key()
    repo_id: str | None = key()
    revision: str | None = key()
    archive: str | None = key()
    sha256: str | None = key(check=_sha256)
    subdir: str | None = key()
    dest: str = key(check=_nonempty)


@dataclass
class Fetch:
    model: str = key(choices=("auto", "always", "never"))
    dataset: Dataset = key()


@dataclass
class Publish:
    repo_id: str | None = key()
    private: bool = key()
    revision: str | None = key()
    commit_message: str | None = key()
    attempts: int = key(ge=1)
    retry_seconds: float = key(ge=0)


@dataclass
class Pick:
    min_similarity: float = key(ge=0, le=1)


@dataclass
class Evaluate:
    sentences_file: str | None = key()
    max_sentences: int = key(ge=0)
    heldout_clips: int = key(ge=0)
    checkpoints: Any = key(check=_checkpoints)
    pick: Pick = key()
    asr_model: str | None = key()
    asr_language: str | None = key()
    asr_max_new_tokens: int = key(ge=1)
    silence_db: float = key(le=0)
    chars_per_second: float | None = key(gt=0)
    embed_audio: bool = key()
    device: str = key(**DEVICE)
    output: str = key(check=_nonempty)


@dataclass
class FilePin:
    sha256: str = key(check=_sha256)
    bytes: int = key(ge=0)


@dataclass
class Model:
    name: str = key(check=_nonempty)
    path: str = key(check=_nonempty)
    repo_id: str | None = key()
    revision: str | None = key()
    sample_rate: int = key(gt=0)
    allow_untrained: bool = key()
    license: str | None = key()
    files: dict[str, FilePin] = key()
    verify_files: bool = key()


@dataclass
class Recipe:
    name: str = key(check=_nonempty)
    language: str = key(check=_nonempty)
    normalize: str = key(choices=("fi", "none"))
    samples: list[str] = key()


@dataclass
class FishtuneConfig:
    paths: Paths = key()
    run_name: str = key(check=_nonempty)
    run_dir: str = key(check=_nonempty)
    doctor: Doctor = key()
    prepare: Prepare = key()
    extract: Extract = key()
    pack: Pack = key()
    lora: Lora = key()
    train: Train = key()
    merge: Merge = key()
    synthesize: Synthesize = key()
    serve: Serve = key()
    hub: Hub = key()
    fetch: Fetch = key()
    publish: Publish = key()
    evaluate: Evaluate = key()
    recipe: Recipe = key()
    model: Model = key()


def _cross(c: dict, bad: set[str]) -> list[tuple[str, Any, str]]:
    """Constraints between keys: (key, value, what is allowed) for each one broken (not when either key is
    already reported on its own)."""
    g = lambda dotted: _get(c, dotted)  # noqa: E731
    rules = [
        ("prepare.min_duration", "prepare.max_duration", lambda v, p: _below(v, p), "< prepare.max_duration"),
        ("pack.val_min", "pack.val_max", lambda v, p: _below(v, p, strict=False), "<= pack.val_max"),
        ("hub.sync.retry_seconds", "hub.sync.max_retry_seconds", lambda v, p: _below(v, p, strict=False),
         "<= hub.sync.max_retry_seconds"),
        ("synthesize.reference_text", "synthesize.reference_audio", lambda v, p: bool(v) or not p,
         "the transcript of synthesize.reference_audio (required with it)"),
        ("fetch.dataset.repo_id", "fetch.dataset.path", lambda v, p: not (v and p),
         "null when fetch.dataset.path is set (one dataset source, not both)"),
    ]  # fmt: skip
    return [(k, g(k), allowed) for k, p, ok, allowed in rules if not ({k, p} & bad or ok(g(k), g(p)))]


# --- checking ----------------------------------------------------------------------------------------------------


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _below(v, limit, strict: bool = True) -> bool:
    """``v < limit`` (``<=``); an invalid ``limit`` passes here: it is reported on its own key."""
    if not _number(limit):
        return True
    return _number(v) and (v < limit if strict else v <= limit)


def _get(c: dict, dotted: str) -> Any:
    node: Any = c
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def show(v) -> str:
    """A value as it would be written on the command line."""
    return v if isinstance(v, str) and v else json.dumps(v) if not isinstance(v, str) else "''"


def _optional(tp) -> Any:
    """``X | None`` -> X; anything else -> None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None))
    return None


def _describe(tp, meta: dict) -> str:
    if (inner := _optional(tp)) is not None:
        return "null or " + _describe(inner, meta)
    if "choices" in meta:
        return "one of " + ", ".join(meta["choices"])
    base = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))
    bounds = [f"{op} {meta[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in meta]
    return base + (" " + " and ".join(bounds) if bounds else "")


def _coerce(tp, v) -> tuple[bool, Any]:
    """(type fits, the value in that type): environment variables arrive as strings (``SERVE_PORT=8080``)."""
    if tp is bool:
        if isinstance(v, str) and v.lower() in ("true", "false"):
            return True, v.lower() == "true"
        return isinstance(v, bool), v
    if tp is int:
        if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v.strip()):
            return True, int(v)
        if isinstance(v, float) and v.is_integer():
            return True, int(v)
        return _int(v), v
    if tp is float:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                return False, v
        return _number(v), float(v) if _number(v) else v
    if tp is str:
        return (isinstance(v, (str, int, float)) and not isinstance(v, bool)), str(v) if _number(v) else v
    return True, v


def _in_range(v, meta: dict) -> bool:
    return all(
        k not in meta or cmp(v, meta[k])
        for k, cmp in (
            ("ge", lambda a, b: a >= b),
            ("gt", lambda a, b: a > b),
            ("le", lambda a, b: a <= b),
            ("lt", lambda a, b: a < b),
        )
    )


def _check_leaf(tp, meta: dict, v, where: str, out: list, fixes: dict) -> None:
    if (inner := _optional(tp)) is not None:
        if v is None:
            return
        tp = inner
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        _check_node(tp, v, where, out, fixes)
    elif origin is list:
        if not isinstance(v, list):
            out.append((where, v, f"a list of {_describe(args[0], {})}s"))
        for i, item in enumerate(v if isinstance(v, list) else []):
            _check_leaf(args[0], {}, item, f"{where}[{i}]", out, fixes)
    elif origin is dict:
        if not isinstance(v, dict):
            out.append((where, v, "a mapping of names to entries ({} for none)"))
        for name, item in (v if isinstance(v, dict) else {}).items():
            _check_leaf(args[1], {}, item, f"{where}.{name}", out, fixes)
    elif "check" in meta:
        if (allowed := meta["check"](v)) is not None:
            out.append((where, v, allowed))
    else:
        fits, value = _coerce(tp, v)
        ok = fits and ("choices" not in meta or value in meta["choices"]) and (tp is str or _in_range(value, meta))
        if not ok:
            out.append((where, v, _describe(tp, meta)))
        elif isinstance(v, str) != isinstance(value, str):  # SERVE_PORT=8080 -> 8080; synthesize.text=42 -> "42"
            fixes[where] = value


def _check_node(cls, data, where: str, out: list, fixes: dict) -> None:
    if not isinstance(data, dict):
        out.append((where, data, f"a section with keys {', '.join(f.name for f in dataclasses.fields(cls))}"))
        return
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in known:
            sub = f"{where}.{name}" if where else str(name)
            out.append((sub, data[name], f"no such key (known in {where or 'the top level'}: {', '.join(known)})"))
    for name, f in known.items():
        sub = f"{where}.{name}" if where else name
        if name not in data:
            out.append((sub, "(missing)", f"{_describe(hints[name], dict(f.metadata))}, set in configs/"))
            continue
        _check_leaf(hints[name], dict(f.metadata), data[name], sub, out, fixes)


def validate(data: dict, aliases: set[str] = frozenset()) -> tuple[list[str], dict[str, Any]]:
    """-> (one line per bad value, ``{key: value}`` conversions of valid strings such as ``SERVE_PORT``).

    ``aliases``: keys that only repeat another key (``serve.device: ${synthesize.device}``); a bad value is
    reported once, on the key it was set on."""
    out: list[tuple[str, Any, str]] = []
    fixes: dict[str, Any] = {}
    _check_node(FishtuneConfig, data, "", out, fixes)
    bad = {k for k, _, _ in out}
    out += _cross(data, bad)
    out = [x for x in out if x[0] not in aliases]
    return [f"{k}={show(v)}: expected {allowed}" for k, v, allowed in out], fixes


_ALIAS_RE = re.compile(r"^\$\{[A-Za-z_][\w.]*\}$")


def aliases(raw: Any, where: str = "") -> set[str]:
    """Keys of an unresolved config whose value is just ``${other.key}``."""
    found: set[str] = set()
    if isinstance(raw, dict):
        for k, v in raw.items():
            sub = f"{where}.{k}" if where else str(k)
            found |= {sub} if isinstance(v, str) and _ALIAS_RE.match(v) else aliases(v, sub)
    return found
