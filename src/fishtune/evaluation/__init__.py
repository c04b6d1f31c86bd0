"""Automatic evaluation of a fine-tuned voice (stage ``evaluate``): metrics, ASR, checkpoint picking, the report.

- :mod:`.plan`: the texts (test sentences, held-out clips) and systems (base, adapters, merged) compared;
- :mod:`.scoring`: every system speaks every text; each sample is scored and flagged;
- :mod:`.loss`: the held-out loss (one definition, for evaluation and training validation);
- :mod:`.metrics`: character error rate (jiwer), speaker similarity (resemblyzer), duration and silence ratios;
- :mod:`.asr`: Whisper (transformers) from a local folder, never downloaded at evaluation time;
- :mod:`.pick`: the stated rule that names the best checkpoint, and ``best_checkpoint.json`` for ``merge``;
- :mod:`.report`: ``report.json`` and the self-contained ``index.html``.
"""
