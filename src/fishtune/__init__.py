"""fishtune: reproducible LoRA fine-tuning of Fish Speech."""

__version__ = "0.1.0"
