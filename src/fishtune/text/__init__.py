"""Text normalisation for TTS transcripts.

``normalize(text, language)`` is the single entry point used by the pipeline:

* ``"fi"`` applies :func:`clean` and then the Finnish rules of :mod:`fishtune.text.fi`
  (numbers, dates, times, units and abbreviations written out as words);
* ``"none"``, ``"und"`` and ``""`` apply only :func:`clean`.

:func:`clean` is the language-independent clean-up. It never changes letters or their case: it only
composes Unicode (NFC), unifies quote and dash characters, drops control and invisible format
characters and collapses all whitespace to single spaces.
"""

from __future__ import annotations

import re
import unicodedata

from fishtune.errors import UsageError

__all__ = ["NORMALIZERS", "clean", "normalize", "normalize_report"]

#: Every language name :func:`normalize` accepts. ``"fi"`` and ``"none"`` are the canonical ones;
#: ``"und"`` (ISO 639 "undetermined") and ``""`` are aliases of ``"none"``.
NORMALIZERS: tuple[str, ...] = ("fi", "none", "und", "")

_GENERIC_ONLY = frozenset({"none", "und", ""})

# Typographic quotes become plain ASCII quotes; every kind of dash becomes either a hyphen-minus
# (hyphens and the minus sign, so that "−5" reads as a negative number) or an en dash (dashes used
# as punctuation or in ranges, so "5–10" and "sana — sana" stay distinguishable from hyphenation).
_CHAR_MAP = str.maketrans(
    {
        "\u201c": '"',  # “ left double quotation mark
        "\u201d": '"',  # ” right double quotation mark
        "\u201e": '"',  # „ double low-9 quotation mark
        "\u201f": '"',  # ‟ double high-reversed-9 quotation mark
        "\u00ab": '"',  # « left-pointing double angle quotation mark
        "\u00bb": '"',  # » right-pointing double angle quotation mark
        "\u2018": "'",  # ‘ left single quotation mark
        "\u2019": "'",  # ’ right single quotation mark (also the typographic apostrophe)
        "\u201a": "'",  # ‚ single low-9 quotation mark
        "\u201b": "'",  # ‛ single high-reversed-9 quotation mark
        "\u2039": "'",  # ‹ single left-pointing angle quotation mark
        "\u203a": "'",  # › single right-pointing angle quotation mark
        "\u00b4": "'",  # ´ acute accent, often typed as an apostrophe
        "\u0060": "'",  # ` grave accent, often typed as an apostrophe
        "\u2010": "-",  # ‐ hyphen
        "\u2011": "-",  # ‑ non-breaking hyphen
        "\u2212": "-",  # − minus sign
        "\ufe63": "-",  # ﹣ small hyphen-minus
        "\uff0d": "-",  # － fullwidth hyphen-minus
        "\u2012": "\u2013",  # ‒ figure dash
        "\u2014": "\u2013",  # — em dash
        "\u2015": "\u2013",  # ― horizontal bar
    }
)

# Cc: control characters, Cf: invisible format characters (soft hyphen, zero-width space, BOM, ...),
# Cs: lone surrogates. Whitespace controls (tab, newline, ...) are kept here and collapsed below.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_WHITESPACE_RE = re.compile(r"\s+")


def clean(text: str) -> str:
    """Language-independent clean-up that keeps every letter and its case.

    Drops control and invisible format characters, applies Unicode NFC, replaces typographic quotes
    with ``"`` / ``'`` and dashes with ``-`` (hyphens, minus) or ``–`` (em/en/figure dashes),
    collapses any run of whitespace (spaces, tabs, newlines, non-breaking spaces) to one space and
    strips both ends.
    """
    text = "".join(ch for ch in text if ch.isspace() or unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    text = unicodedata.normalize("NFC", text)
    text = text.translate(_CHAR_MAP)
    return _WHITESPACE_RE.sub(" ", text).strip()


def normalize(text: str, language: str) -> str:
    """Normalise ``text`` for TTS with the rules of ``language`` (one of :data:`NORMALIZERS`).

    Raises :class:`~fishtune.errors.UsageError` for an unknown language name; never raises on the
    text itself.
    """
    return normalize_report(text, language)[0]


def normalize_report(text: str, language: str) -> tuple[str, list[str]]:
    """Like :func:`normalize`, and also the names of the rules that changed the text, in the order they
    ran ("clean" for the clean-up; the Finnish names are those of ``fishtune.text.fi.RULES``)."""
    if language == "fi":
        # Imported here because fishtune.text.fi itself imports clean() from this module.
        from fishtune.text.fi import normalize_fi_report

        return normalize_fi_report(text)
    if language in _GENERIC_ONLY:
        cleaned = clean(text)
        return cleaned, ["clean"] if cleaned != text else []
    raise UsageError(f"unknown text normaliser '{language}'", hint="use one of: fi, none")
