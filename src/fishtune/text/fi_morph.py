"""Finnish morphology through Voikko (Debian ``libvoikko1`` + ``voikko-fi``, PyPI binding ``libvoikko``).

Used to find the case a number must agree with: the case and number of the noun after it. When Voikko
or its Finnish dictionary is missing, :func:`nominal_case` answers None (numbers stay nominative) and a
warning says so once in the log.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

__all__ = ["analyze", "available", "baseforms", "nominal_case"]

log = logging.getLogger("fishtune.text")

#: Voikko's SIJAMUOTO values -> the case names of :mod:`fishtune.text.fi_numerals`.
VOIKKO_CASES: dict[str, str] = {
    "nimento": "nom",
    "omanto": "gen",
    "osanto": "par",
    "olento": "ess",
    "tulento": "tra",
    "sisaolento": "ine",
    "sisaeronto": "ela",
    "sisatulento": "ill",
    "ulkoolento": "ade",
    "ulkoeronto": "abl",
    "ulkotulento": "all",
}

#: Word classes a numeral agrees with: common nouns, adjectives and numerals. Proper names are left
#: out ("syntyi 1985 Helsingissä": the year does not agree with the place), as are participles
#: ("1985 syntyneet") and pronouns.
NOMINAL_CLASSES = frozenset({"nimisana", "laatusana", "nimisana_laatusana", "lukusana"})

_lock = threading.Lock()  # one Voikko handle must not be used by two threads at once (prepare's pool)


@functools.cache
def _voikko() -> Any:
    try:
        import libvoikko

        return libvoikko.Voikko("fi")
    except Exception as err:  # missing binding, library or dictionary: numbers stay nominative
        log.warning(
            "Voikko is not available (%s): Finnish numbers stay in the nominative; "
            "install libvoikko1 and voikko-fi (make install does)",
            str(err).splitlines()[0] if str(err) else type(err).__name__,
        )
        return None


def available() -> bool:
    """True when Voikko and its Finnish dictionary load."""
    return _voikko() is not None


@functools.lru_cache(maxsize=65536)
def analyze(word: str) -> tuple[dict[str, str], ...]:
    """Voikko's analyses of one word (empty when unknown or when Voikko is missing)."""
    voikko = _voikko()
    if voikko is None or not word:
        return ()
    with _lock:
        return tuple(dict(a) for a in voikko.analyze(word))


def baseforms(word: str) -> frozenset[str]:
    """The base forms Voikko gives for ``word``, lowercased ("sivulla" -> {"sivu"})."""
    return frozenset(a["BASEFORM"].lower() for a in analyze(word) if "BASEFORM" in a)


def nominal_case(word: str) -> tuple[str, bool] | None:
    """(case, plural) of ``word`` as a common noun or adjective, or None when it is no such word, when
    its analyses disagree, or when Voikko is missing: "luokalla" -> ("ade", False)."""
    nominal = [
        a
        for a in analyze(word)
        if a.get("CLASS") in NOMINAL_CLASSES and "PARTICIPLE" not in a and a.get("SIJAMUOTO") in VOIKKO_CASES
    ]
    # A reading with a possessive suffix counts only when there is no other ("kerrokseen" is the
    # illative of "kerros", not "kerto" + translative + possessive).
    plain = [a for a in nominal if "POSSESSIVE" not in a] or nominal
    found = {(VOIKKO_CASES[a["SIJAMUOTO"]], a.get("NUMBER") == "plural") for a in plain}
    return found.pop() if len(found) == 1 else None
