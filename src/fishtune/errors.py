"""Errors that end a stage with a one-line message instead of a traceback."""

from __future__ import annotations


class FishtuneError(Exception):
    """A problem the user can fix. ``str(err)`` is one line: what is wrong, where, and what to do.

    ``exit_code`` follows the CLI's convention: 1 for a failed stage, 2 for a usage error.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if self.hint:
            text += f". Fix: {self.hint}"
        return " ".join(text.split())

    def lines(self) -> list[str]:
        """What the CLI prints, one ``error:`` line each."""
        return [self.one_line()]


class UsageError(FishtuneError):
    """Wrong stage name, bad override or bad argument."""

    exit_code = 2


class ConfigError(UsageError):
    """Values the config schema (:mod:`fishtune.schema`) rejects: one line per bad value."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} bad configuration value(s): " + "; ".join(problems))

    def lines(self) -> list[str]:
        return [" ".join(p.split()) for p in self.problems]


class InputError(FishtuneError):
    """A file or folder given to a stage is missing, unreadable or malformed."""


class StageFailed(FishtuneError):
    """A stage ran but its result is not good enough to go on (e.g. too many rejected clips)."""
