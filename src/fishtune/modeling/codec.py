"""The DAC codec: build it from its Hydra config, load ``codec.pth`` strictly, encode and decode."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fishtune import safeload
from fishtune.errors import InputError
from fishtune.modeling.files import CODEC_CONFIG, CODEC_FILES, check_model_dir

DERIVED_BUFFERS = ("causal_mask", "freqs_cis")


def codec_config_path(model_dir: str | os.PathLike) -> Path:
    """``<model_dir>/codec_config.yaml`` if present, else Fish Speech's config for the s1-mini codec."""
    own = Path(model_dir) / CODEC_CONFIG
    if own.is_file():
        return own
    return fish_speech_codec_config()


def fish_speech_codec_config() -> Path:
    """The s1-mini codec's config shipped in the fish-speech package (a namespace package: no ``__file__``)."""
    from importlib.resources import files

    path = Path(str(files("fish_speech") / "configs" / "modded_dac_vq.yaml"))
    if not path.is_file():
        raise InputError(
            f"fish-speech's codec config {path} is missing",
            hint="reinstall the locked environment (make setup), or put a codec_config.yaml in the model folder",
        )
    return path


# The only classes a codec config may name (Fish Speech's modded_dac_vq.yaml and the tiny test codec use these):
# a model folder is data from someone else, so its YAML must not be able to instantiate anything else.
ALLOWED_TARGETS = (
    "fish_speech.models.dac.modded_dac.DAC",
    "fish_speech.models.dac.modded_dac.ModelArgs",
    "fish_speech.models.dac.modded_dac.WindowLimitedTransformer",
    "fish_speech.models.dac.rvq.DownsampleResidualVectorQuantize",
)
ALLOWED_SPECIAL_KEYS = ("_target_", "_partial_")


def _refuse(path, key: str, what: str) -> InputError:
    return InputError(
        f"codec config {path}: {key} {what}",
        hint=f"a codec config may only build {', '.join(t.rsplit('.', 1)[1] for t in ALLOWED_TARGETS)} "
        "(fish_speech.models.dac); use the codec_config.yaml that belongs to this model, or delete it to use "
        "Fish Speech's own",
    )


def check_codec_config(node, path, key: str = "") -> None:
    """Refuse a config that names anything but the allowed codec classes, Hydra's other special keys
    (``_args_``, ``_convert_``, ``_recursive_``...) or interpolations (resolvers read the environment)."""
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f"{key}.{k}" if key else str(k)
            if str(k).startswith("_") and k not in ALLOWED_SPECIAL_KEYS:
                raise _refuse(path, sub, "is not allowed (only _target_ and _partial_)")
            if k == "_target_" and v not in ALLOWED_TARGETS:
                raise _refuse(path, sub, f"names {v!r}, which is not an allowed codec class")
            check_codec_config(v, path, sub)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_codec_config(v, path, f"{key}[{i}]")
    elif isinstance(node, str) and "${" in node:
        raise _refuse(path, key or "(top)", f"holds an interpolation {node!r}, which is not allowed")


def read_codec_config(config_path: str | os.PathLike) -> dict:
    """The codec config as plain data (OmegaConf's YAML loader is PyYAML's safe loader), checked by
    :func:`check_codec_config` before anything is built."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(config_path)
    try:
        data = OmegaConf.to_container(OmegaConf.load(str(path)), resolve=False)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot read codec config {path}: {first}", hint="fix or delete the file") from err
    if not isinstance(data, dict) or data.get("_target_") != ALLOWED_TARGETS[0]:
        raise _refuse(path, "_target_", f"must be {ALLOWED_TARGETS[0]} at the top")
    check_codec_config(data, path)
    return data


def build_codec(config_path: str | os.PathLike):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return instantiate(OmegaConf.create(read_codec_config(config_path)))


def load_codec(model_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    d = check_model_dir(model_dir, CODEC_FILES)
    path = d / "codec.pth"
    codec = build_codec(codec_config_path(d))
    weights = safeload.load(path, "codec", hint="the file is truncated or corrupt; download it again")
    if "state_dict" in weights and isinstance(weights["state_dict"], dict):
        weights = weights["state_dict"]
    if any("generator" in k for k in weights):  # GAN training checkpoints keep the codec under "generator."
        weights = {k.replace("generator.", "", 1): v for k, v in weights.items() if "generator." in k}
    expected = codec.state_dict()
    # RoPE tables and causal masks are rebuilt by the constructor; checkpoints may or may not carry them.
    missing = [k for k in expected if k not in weights and not k.endswith(DERIVED_BUFFERS)]
    if missing:
        raise InputError(
            f"{path} does not match the codec config {codec_config_path(d)}: {len(missing)} tensors missing "
            f"(e.g. {missing[0]})",
            hint="use the codec.pth that belongs to this model, or add the right codec_config.yaml",
        )
    codec.load_state_dict({k: weights[k] for k in expected if k in weights}, strict=False)
    return codec.eval().to(device)


def num_codebooks(codec) -> int:
    q = codec.quantizer
    return 1 + int(q.quantizer.n_codebooks)


@torch.inference_mode()
def encode(codec, waves: list[torch.Tensor], device: str | torch.device, dtype: torch.dtype = torch.float32):
    """Encode mono waves (1-D float tensors at the codec rate) -> list of int codes ``[num_codebooks, frames]``."""
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), 1, int(lengths.max()), dtype=torch.float32)
    for i, w in enumerate(waves):
        batch[i, 0, : w.numel()] = w
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32)
    with autocast:
        codes, code_lens = codec.encode(batch.to(device), lengths.to(device))
    return [codes[i, :, : int(code_lens[i])].cpu() for i in range(len(waves))]


@torch.inference_mode()
def decode(codec, codes: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """Codes ``[num_codebooks, frames]`` -> mono wave (1-D float tensor at the codec rate)."""
    codes = codes.to(device=device, dtype=torch.long)
    audio, _ = codec.decode(codes[None], torch.tensor([codes.shape[1]], device=device))
    return audio[0, 0].float().cpu()
