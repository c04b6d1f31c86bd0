"""Finnish sentence pairs (tests/data/fi_pairs.tsv): input -> the spoken form Finnish grammar asks for.

Each pair runs through the real normaliser with the real Voikko (make install puts libvoikko1 and voikko-fi
in place). A third column "xfail: <why>" marks a known gap; those run too and must still fail (strict).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fishtune.text import fi_morph, normalize

PAIRS_FILE = Path(__file__).parent / "data" / "fi_pairs.tsv"


def _read_pairs() -> list:
    params = []
    for number, line in enumerate(PAIRS_FILE.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        assert len(fields) in (2, 3), f"{PAIRS_FILE.name}:{number}: expected 2 or 3 tab-separated fields"
        marks = []
        if len(fields) == 3:
            assert fields[2].startswith("xfail: "), f"{PAIRS_FILE.name}:{number}: third field is 'xfail: why'"
            marks.append(pytest.mark.xfail(reason=fields[2][len("xfail: ") :], strict=True))
        params.append(pytest.param(fields[0], fields[1], marks=marks, id=f"{number}"))
    return params


PAIRS = _read_pairs()


def test_enough_pairs() -> None:
    assert len(PAIRS) >= 150


def test_voikko_is_installed() -> None:
    assert fi_morph.available(), "Voikko is missing: make install installs libvoikko1 and voikko-fi"


@pytest.mark.parametrize(("text", "expected"), PAIRS)
def test_pair(text: str, expected: str) -> None:
    assert normalize(text, "fi") == expected


@pytest.mark.parametrize("text", [p.values[0] for p in PAIRS])
def test_pair_is_idempotent(text: str) -> None:
    once = normalize(text, "fi")
    assert normalize(once, "fi") == once


def test_without_voikko_numbers_stay_nominative_and_the_log_says_so_once() -> None:
    # A fresh interpreter in which the libvoikko binding cannot be imported (as on a machine without it).
    code = (
        "import logging, sys; sys.modules['libvoikko'] = None; logging.basicConfig(level=logging.WARNING)\n"
        "from fishtune.text import normalize\n"
        "print(normalize('Hän juoksi sen alle 10 sekunnissa.', 'fi'))\n"
        "print(normalize('Olen 3. luokalla, klo 5 jälkeen.', 'fi'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert proc.stdout.splitlines() == [
        "Hän juoksi sen alle kymmenen sekunnissa.",
        "Olen kolmas luokalla, kello viiden jälkeen.",  # postpositions need no Voikko
    ]
    assert proc.stderr.count("Voikko is not available") == 1
