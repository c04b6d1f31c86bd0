"""The one shape every stage's ``run`` returns.

``outputs`` is the line the run summary prints for the stage (what it produced, or why it did nothing);
``skipped`` says whether the stage found its work already done (or not asked for); ``data`` holds the
stage's figures for callers and tests (plain JSON-able values; each stage also writes them to its own files,
e.g. ``tokens/summary.json``, and the run's status and summary record ``outputs`` and the state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StageResult:
    outputs: str
    skipped: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)
