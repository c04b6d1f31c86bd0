"""Text normalisation: the generic clean-up, the Finnish rules and the dispatcher.

The expected number words below were produced by num2words 0.5.14 (lang="fi"), not written by hand;
``test_expected_words_come_from_num2words`` re-checks the building blocks.
"""

from __future__ import annotations

import pytest
from num2words import num2words

from fishtune.errors import UsageError
from fishtune.text import NORMALIZERS, clean, normalize
from fishtune.text.fi import normalize_fi

FI_CASES: list[tuple[str, str]] = [
    # integers
    ("3 koiraa", "kolme koiraa"),
    ("2026", "kaksituhatta kaksikymmentäkuusi"),
    ("Vuonna 2026 oli kylmä.", "Vuonna kaksituhatta kaksikymmentäkuusi oli kylmä."),
    ("10 000", "kymmenentuhatta"),
    ("10\u00a0000 euroa", "kymmenentuhatta euroa"),
    ("1 000 000", "miljoona"),
    ("007", "nolla nolla seitsemän"),
    # negative numbers
    ("-5", "miinus viisi"),
    ("Tulos oli -5.", "Tulos oli miinus viisi."),
    ("(-5)", "(miinus viisi)"),
    ("COVID-19", "COVID-yhdeksäntoista"),
    # decimals
    ("3,5", "kolme pilkku viisi"),
    ("3,05", "kolme pilkku nolla viisi"),
    ("2,50 €", "kaksi pilkku viisikymmentä euroa"),
    # ordinals and sentence-final numbers
    ("3. päivä", "kolmas päivä"),
    ("21. kerta", "kahdeskymmenesensimmäinen kerta"),
    ("Hän tuli 3. Sitten lähti.", "Hän tuli kolme. Sitten lähti."),
    ("Luku on 3.", "Luku on kolme."),
    # dates
    ("25.11.2026", "kahdeskymmenesviides marraskuuta kaksituhatta kaksikymmentäkuusi"),
    ("1.1.2000", "ensimmäinen tammikuuta kaksituhatta"),
    ("25.11. alkaen", "kahdennestakymmenennestäviidennestä marraskuuta alkaen"),
    ("Tulen 24.12. Sitten", "Tulen kahdeskymmenesneljäs joulukuuta. Sitten"),
    ("13.13.2026", "kolmetoista piste kolmetoista piste kaksituhatta kaksikymmentäkuusi"),
    # times
    ("klo 14.30", "kello neljätoista kolmekymmentä"),
    ("kello 9.05", "kello yhdeksän nolla viisi"),
    ("Klo 14:30 alkaa.", "Kello neljätoista kolmekymmentä alkaa."),
    ("klo 14", "kello neljätoista"),
    # percent, currency and units
    ("5 %", "viisi prosenttia"),
    ("1 %", "yksi prosentti"),
    ("5%", "viisi prosenttia"),
    ("20 €", "kaksikymmentä euroa"),
    ("$5", "viisi dollaria"),
    ("5 $", "viisi dollaria"),
    ("1 km", "yksi kilometri"),
    ("5km", "viisi kilometriä"),
    ("100 m", "sata metriä"),
    ("2 cm", "kaksi senttimetriä"),
    ("Putki on 5 mm.", "Putki on viisi millimetriä."),
    ("3 kg", "kolme kilogrammaa"),
    ("250 g", "kaksisataaviisikymmentä grammaa"),
    ("Lämpötila oli −5 °C.", "Lämpötila oli miinus viisi astetta."),
    ("-1 °C", "miinus yksi aste"),
    ("3 h", "kolme tuntia"),
    ("2 min", "kaksi minuuttia"),
    ("10 s", "kymmenen sekuntia"),
    ("Hän on m ja s", "Hän on m ja s"),
    # abbreviations
    ("esim. koira", "esimerkiksi koira"),
    ("Esim. koira", "Esimerkiksi koira"),
    ("mm. koirat", "muun muassa koirat"),
    ("Koiria, kissoja jne.", "Koiria, kissoja ja niin edelleen."),
    ("Koiria jne. Sitten", "Koiria ja niin edelleen. Sitten"),
    ("kirjat ym. tavarat", "kirjat ynnä muuta tavarat"),
    ("kirjat yms.", "kirjat ynnä muuta sellaista."),
    ("ns. asiantuntija", "niin sanottu asiantuntija"),
    ("kynä tms.", "kynä tai muuta sellaista."),
    ("n. 5 km", "noin viisi kilometriä"),
    ("Se on n. kaunis", "Se on n. kaunis"),
    ("ks. sivu", "katso sivu"),
    ("vrt. kuva", "vertaa kuva"),
    ("Se oli 753 eKr. Se kasvoi.", "Se oli seitsemänsataaviisikymmentäkolme ennen Kristusta. Se kasvoi."),
    ("vuonna 5 jKr.", "vuonna viisi jälkeen Kristuksen."),
    ("tri Virtanen", "tohtori Virtanen"),
    ("prof. Virtanen", "professori Virtanen"),
    ("engl. speech", "englanniksi speech"),
    ("Suomi vs. Ruotsi", "Suomi versus Ruotsi"),
    ("5 milj. euroa", "viisi miljoonaa euroa"),
    ("1 milj. €", "yksi miljoona euroa"),
    ("3 mrd. dollaria", "kolme miljardia dollaria"),
    ("Ab & Co", "Ab ja Co"),
    # punctuation is kept, spaces collapse
    ("Onko se 1?", "Onko se yksi?"),
    ("Vastaus on 42!", "Vastaus on neljäkymmentäkaksi!"),
    ("Nousu 2,5 % eli n. 1 200 €.", "Nousu kaksi pilkku viisi prosenttia eli noin tuhat kaksisataa euroa."),
    # unknown things pass through
    ("5G", "5G"),
    ("5:n", "viiden"),
    ("5:xyz", "5:xyz"),
    ("Hei maailma", "Hei maailma"),
]

SENTENCES: list[str] = [
    "Kokous on 3.5.2026 klo 9.00–11.30 Helsingissä.",
    "Voittaja juoksi 100 m ajassa 9,58 s.",
    "Tri Virtanen ja prof. Korhonen puhuivat esim. 3. päivänä.",
    "Ks. taulukko 3. Siinä on mm. luvut 1 000 ja −2,5.",
    "  Äiti  SANOI\n'hei'\t“lainaus” —  jne. ",
    "Tilillä on 1 milj. € & 20 %.",
]


@pytest.mark.parametrize(("text", "expected"), FI_CASES)
def test_finnish_rules(text: str, expected: str) -> None:
    assert normalize_fi(text) == expected


@pytest.mark.parametrize("text", [text for text, _ in FI_CASES] + SENTENCES)
def test_finnish_normalisation_is_idempotent(text: str) -> None:
    once = normalize_fi(text)
    assert normalize_fi(once) == once


def test_expected_words_come_from_num2words() -> None:
    assert num2words(3, lang="fi") == "kolme"
    assert num2words(2026, lang="fi") == "kaksituhatta kaksikymmentäkuusi"
    assert num2words(10000, lang="fi") == "kymmenentuhatta"
    assert num2words(-5, lang="fi") == "miinus viisi"
    assert num2words(3.5, lang="fi") == "kolme pilkku viisi"
    assert num2words(3, lang="fi", to="ordinal") == "kolmas"
    assert num2words(25, lang="fi", to="ordinal") == "kahdeskymmenesviides"
    assert num2words(21, lang="fi", to="ordinal") == "kahdeskymmenesensimmäinen"
    assert num2words(14, lang="fi") == "neljätoista"
    assert num2words(753, lang="fi") == "seitsemänsataaviisikymmentäkolme"
    assert num2words(1200, lang="fi") == "tuhat kaksisataa"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        ".",
        "n.",
        "klo",
        "klo 25.70",
        "31.2.",
        "99.99.9999",
        "1,2,3",
        "1.2.3.4.5",
        "123456789012345678901234567890",
        "--5 ++5 -–5",
        "€ $ % °C km",
        "\ud800 lone surrogate",
        "\x00\x07\x1b control",
        "jne.jne.jne.",
        "5 mm.mm.",
    ],
)
def test_finnish_never_raises(text: str) -> None:
    result = normalize_fi(text)
    assert isinstance(result, str)
    assert normalize_fi(result) == result


def test_long_digit_strings_are_read_digit_by_digit() -> None:
    assert normalize_fi("0401234567") == "nolla neljä nolla yksi kaksi kolme neljä viisi kuusi seitsemän"


# --- generic clean-up ----------------------------------------------------------------------------


def test_clean_keeps_letters_and_case() -> None:
    assert clean("Äiti  SANOI\n'hei'") == "Äiti SANOI 'hei'"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  a\t\tb\r\n c  ", "a b c"),
        ("a\u00a0b\u202fc", "a b c"),
        ("A\u0308iti", "Äiti"),  # NFC composes A + combining diaeresis
        ("\u201cHei\u201d, \u201esanoi\u201d \u00bbhän\u00ab", '"Hei", "sanoi" "hän"'),
        ("It\u2019s \u2018ok\u2019", "It's 'ok'"),
        ("a \u2014 b \u2013 c", "a \u2013 b \u2013 c"),
        ("\u22125", "-5"),
        ("ta\u00adlo\u200b \x00x\x07", "talo x"),
        ("\ufeffAlku", "Alku"),
        ("Ei 3 numeroita muuteta, EI ISOJA.", "Ei 3 numeroita muuteta, EI ISOJA."),
    ],
)
def test_clean(text: str, expected: str) -> None:
    assert clean(text) == expected
    assert clean(expected) == expected


# --- dispatcher ----------------------------------------------------------------------------------


def test_dispatch_fi() -> None:
    assert normalize("3 koiraa", "fi") == "kolme koiraa"


@pytest.mark.parametrize("language", ["none", "und", ""])
def test_dispatch_generic_only(language: str) -> None:
    assert normalize("  Äiti  SANOI\n3 'hei' ", language) == "Äiti SANOI 3 'hei'"


def test_normalizers_lists_accepted_names() -> None:
    assert {"fi", "none"} <= set(NORMALIZERS)
    for name in NORMALIZERS:
        normalize("x", name)


@pytest.mark.parametrize("language", ["sv", "FI", "finnish"])
def test_dispatch_unknown_language(language: str) -> None:
    with pytest.raises(UsageError) as excinfo:
        normalize("3 koiraa", language)
    assert excinfo.value.exit_code == 2
    assert f"unknown text normaliser '{language}'" in str(excinfo.value)
    assert "use one of: fi, none" in str(excinfo.value)


def test_command_line_prints_the_normalised_text() -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "fishtune.text", "fi", "-v", "Olen 3. luokalla."]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
    assert proc.stdout == "Olen kolmannella luokalla.\n"
    assert proc.stderr == "rules: ordinal\n"
    bad = subprocess.run([sys.executable, "-m", "fishtune.text", "sv", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown text normaliser 'sv'" in bad.stderr
