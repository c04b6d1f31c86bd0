"""Finnish cardinals and ordinals in every case they agree in, for integers 0 <= n < 10**15.

A Finnish numeral agrees in case and number with its noun, and every part of a compound numeral is
inflected: "25" in the allative is "kahdellekymmenelleviidelle", the 3rd in the adessive is
"kolmannella". Only "toista" in the teens never changes ("yhdessätoista").

Cases are named by :data:`CASES` (nominative, genitive, partitive, essive, translative, inessive,
elative, illative, adessive, ablative, allative). ``plural=True`` gives the plural forms used with
plural-only nouns ("kolmet housut", "kaksissa häissä") and plural ordinals ("ensimmäisissä").

Tables, not rules, hold the cardinal words: each base word lists its eleven singular and eleven plural
forms. Ordinals other than "ensimmäinen" and "toinen" follow one pattern from their stem
(kolma-s, kolma-nnen, kolma-tta, kolma-ntena, ...). The nominative output matches num2words below two
million (groups of thousands separated by a space: "tuhat kaksisataa"), so the old readings do not
change; from two million on "miljoona", "miljardi" and "biljoona" are written apart as Finnish
spelling has it ("kaksi miljoonaa", num2words: "kaksimiljoonaa").
"""

from __future__ import annotations

__all__ = ["CASES", "cardinal", "compound", "ordinal"]

CASES: tuple[str, ...] = ("nom", "gen", "par", "ess", "tra", "ine", "ela", "ill", "ade", "abl", "all")

# Base word -> "singular forms | plural forms", each in the order of CASES.
_CARDINAL_TABLE: dict[str, str] = {
    "nolla": "nolla nollan nollaa nollana nollaksi nollassa nollasta nollaan nollalla nollalta nollalle"
    " | nollat nollien nollia nollina nolliksi nollissa nollista nolliin nollilla nollilta nollille",
    "yksi": "yksi yhden yhtä yhtenä yhdeksi yhdessä yhdestä yhteen yhdellä yhdeltä yhdelle"
    " | yhdet yksien yksiä yksinä yksiksi yksissä yksistä yksiin yksillä yksiltä yksille",
    "kaksi": "kaksi kahden kahta kahtena kahdeksi kahdessa kahdesta kahteen kahdella kahdelta kahdelle"
    " | kahdet kaksien kaksia kaksina kaksiksi kaksissa kaksista kaksiin kaksilla kaksilta kaksille",
    "kolme": "kolme kolmen kolmea kolmena kolmeksi kolmessa kolmesta kolmeen kolmella kolmelta kolmelle"
    " | kolmet kolmien kolmia kolmina kolmiksi kolmissa kolmista kolmiin kolmilla kolmilta kolmille",
    "neljä": "neljä neljän neljää neljänä neljäksi neljässä neljästä neljään neljällä neljältä neljälle"
    " | neljät neljien neljiä neljinä neljiksi neljissä neljistä neljiin neljillä neljiltä neljille",
    "viisi": "viisi viiden viittä viitenä viideksi viidessä viidestä viiteen viidellä viideltä viidelle"
    " | viidet viisien viisiä viisinä viisiksi viisissä viisistä viisiin viisillä viisiltä viisille",
    "kuusi": "kuusi kuuden kuutta kuutena kuudeksi kuudessa kuudesta kuuteen kuudella kuudelta kuudelle"
    " | kuudet kuusien kuusia kuusina kuusiksi kuusissa kuusista kuusiin kuusilla kuusilta kuusille",
    "seitsemän": "seitsemän seitsemän seitsemää seitsemänä seitsemäksi seitsemässä seitsemästä seitsemään"
    " seitsemällä seitsemältä seitsemälle | seitsemät seitsemien seitsemiä seitseminä seitsemiksi"
    " seitsemissä seitsemistä seitsemiin seitsemillä seitsemiltä seitsemille",
    "kahdeksan": "kahdeksan kahdeksan kahdeksaa kahdeksana kahdeksaksi kahdeksassa kahdeksasta kahdeksaan"
    " kahdeksalla kahdeksalta kahdeksalle | kahdeksat kahdeksien kahdeksia kahdeksina kahdeksiksi"
    " kahdeksissa kahdeksista kahdeksiin kahdeksilla kahdeksilta kahdeksille",
    "yhdeksän": "yhdeksän yhdeksän yhdeksää yhdeksänä yhdeksäksi yhdeksässä yhdeksästä yhdeksään"
    " yhdeksällä yhdeksältä yhdeksälle | yhdeksät yhdeksien yhdeksiä yhdeksinä yhdeksiksi yhdeksissä"
    " yhdeksistä yhdeksiin yhdeksillä yhdeksiltä yhdeksille",
    "kymmenen": "kymmenen kymmenen kymmentä kymmenenä kymmeneksi kymmenessä kymmenestä kymmeneen"
    " kymmenellä kymmeneltä kymmenelle | kymmenet kymmenien kymmeniä kymmeninä kymmeniksi kymmenissä"
    " kymmenistä kymmeniin kymmenillä kymmeniltä kymmenille",
    "sata": "sata sadan sataa satana sadaksi sadassa sadasta sataan sadalla sadalta sadalle"
    " | sadat satojen satoja satoina sadoiksi sadoissa sadoista satoihin sadoilla sadoilta sadoille",
    "tuhat": "tuhat tuhannen tuhatta tuhantena tuhanneksi tuhannessa tuhannesta tuhanteen tuhannella"
    " tuhannelta tuhannelle | tuhannet tuhansien tuhansia tuhansina tuhansiksi tuhansissa tuhansista"
    " tuhansiin tuhansilla tuhansilta tuhansille",
    "miljoona": "miljoona miljoonan miljoonaa miljoonana miljoonaksi miljoonassa miljoonasta miljoonaan"
    " miljoonalla miljoonalta miljoonalle | miljoonat miljoonien miljoonia miljoonina miljooniksi"
    " miljoonissa miljoonista miljooniin miljoonilla miljoonilta miljoonille",
    "miljardi": "miljardi miljardin miljardia miljardina miljardiksi miljardissa miljardista miljardiin"
    " miljardilla miljardilta miljardille | miljardit miljardien miljardeja miljardeina miljardeiksi"
    " miljardeissa miljardeista miljardeihin miljardeilla miljardeilta miljardeille",
    "biljoona": "biljoona biljoonan biljoonaa biljoonana biljoonaksi biljoonassa biljoonasta biljoonaan"
    " biljoonalla biljoonalta biljoonalle | biljoonat biljoonien biljoonia biljoonina biljooniksi"
    " biljoonissa biljoonista biljooniin biljoonilla biljoonilta biljoonille",
}

# "ensimmäinen" and "toinen" are inflected like "-inen" adjectives, the rest follow _ORDINAL_ENDINGS.
_ORDINAL_TABLE: dict[str, str] = {
    "ensimmäinen": "ensimmäinen ensimmäisen ensimmäistä ensimmäisenä ensimmäiseksi ensimmäisessä"
    " ensimmäisestä ensimmäiseen ensimmäisellä ensimmäiseltä ensimmäiselle | ensimmäiset ensimmäisten"
    " ensimmäisiä ensimmäisinä ensimmäisiksi ensimmäisissä ensimmäisistä ensimmäisiin ensimmäisillä"
    " ensimmäisiltä ensimmäisille",
    "toinen": "toinen toisen toista toisena toiseksi toisessa toisesta toiseen toisella toiselta toiselle"
    " | toiset toisten toisia toisina toisiksi toisissa toisista toisiin toisilla toisilta toisille",
}

# Ordinal endings after the stem (kolma-, viide-, sada-, ...); "A" is a or ä by vowel harmony.
_ORDINAL_ENDINGS: str = (
    "s nnen ttA ntenA nneksi nnessA nnestA nteen nnellA nneltA nnelle"
    " | nnet nsien nsiA nsinA nsiksi nsissA nsistA nsiin nsillA nsiltA nsille"
)

# Cardinal base word -> ordinal stem. 1 and 2 have two ordinals: "ensimmäinen"/"toinen" as the last
# part of a numeral, "yhdes"/"kahdes" in the teens and before a multiplier ("kahdeskymmenes").
_ORDINAL_STEMS: dict[str, str] = {
    "nolla": "nolla",
    "yksi": "yhde",
    "kaksi": "kahde",
    "kolme": "kolma",
    "neljä": "neljä",
    "viisi": "viide",
    "kuusi": "kuude",
    "seitsemän": "seitsemä",
    "kahdeksan": "kahdeksa",
    "yhdeksän": "yhdeksä",
    "kymmenen": "kymmene",
    "sata": "sada",
    "tuhat": "tuhanne",
    "miljoona": "miljoona",
    "miljardi": "miljardi",
    "biljoona": "biljoona",
}

_DIGIT_WORDS = ("nolla", "yksi", "kaksi", "kolme", "neljä", "viisi", "kuusi", "seitsemän", "kahdeksan", "yhdeksän")
# Powers of a thousand, largest first: each starts a space-separated group.
_MAGNITUDES: tuple[tuple[int, str], ...] = (
    (10**12, "biljoona"),
    (10**9, "miljardi"),
    (10**6, "miljoona"),
    (10**3, "tuhat"),
)

#: The largest integer (exclusive) these functions read.
LIMIT = 10**15

# A part of a numeral: (base word, role). Roles: "unit" (inflected in the case asked for), "mult" (a
# multiplier after a count: partitive in the singular nominative, "kaksikymmentä", otherwise like a
# unit), "teen" (the invariable "toista").
Part = tuple[str, str]


def _forms(table_entry: str, case: str, plural: bool) -> str:
    singular, plurals = table_entry.split(" | ")
    return (plurals if plural else singular).split()[CASES.index(case)]


def _below_thousand(n: int) -> list[Part]:
    parts: list[Part] = []
    hundreds, rest = divmod(n, 100)
    if hundreds == 1:
        parts.append(("sata", "unit"))
    elif hundreds > 1:
        parts += [(_DIGIT_WORDS[hundreds], "unit"), ("sata", "mult")]
    tens, ones = divmod(rest, 10)
    if rest == 10:
        parts.append(("kymmenen", "unit"))
    elif 10 < rest < 20:
        parts += [(_DIGIT_WORDS[ones], "unit"), ("toista", "teen")]
    else:
        if tens:
            parts += [(_DIGIT_WORDS[tens], "unit"), ("kymmenen", "mult")]
        if ones:
            parts.append((_DIGIT_WORDS[ones], "unit"))
    return parts


def _groups(n: int) -> list[list[Part]]:
    """The parts of ``n`` in space-separated groups, as num2words writes them ("tuhat | kaksisataa")."""
    if n == 0:
        return [[("nolla", "unit")]]
    groups: list[list[Part]] = []
    for size, word in _MAGNITUDES:
        count, n = divmod(n, size)
        if count == 1:
            groups.append([(word, "unit")])
        elif count > 1 and size < 10**6:
            groups.append(_below_thousand(count) + [(word, "mult")])
        elif count > 1:  # "miljoona" and up are nouns, written apart: "kaksi miljoonaa"
            groups += [_below_thousand(count), [(word, "mult")]]
    if n:
        groups.append(_below_thousand(n))
    return groups


def _check(n: int, case: str) -> None:
    if not 0 <= n < LIMIT:
        raise ValueError(f"{n} is outside 0..{LIMIT - 1}")
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; use one of {', '.join(CASES)}")


def cardinal(n: int, case: str = "nom", plural: bool = False) -> str:
    """``n`` as a cardinal in ``case``: cardinal(25, "all") == "kahdellekymmenelleviidelle"."""
    _check(n, case)
    words = []
    for group in _groups(n):
        word = ""
        for base, role in group:
            if role == "teen":
                word += base
            elif role == "mult" and case == "nom" and not plural:
                word += _forms(_CARDINAL_TABLE[base], "par", False)
            else:
                word += _forms(_CARDINAL_TABLE[base], case, plural)
        words.append(word)
    return " ".join(words)


def _ordinal_word(base: str, case: str, plural: bool, last: bool) -> str:
    if last and base in ("yksi", "kaksi"):
        return _forms(_ORDINAL_TABLE["ensimmäinen" if base == "yksi" else "toinen"], case, plural)
    stem = _ORDINAL_STEMS[base]
    vowel = "a" if any(v in stem for v in "aou") else "ä"
    return stem + _forms(_ORDINAL_ENDINGS, case, plural).replace("A", vowel)


def ordinal(n: int, case: str = "nom", plural: bool = False) -> str:
    """``n`` as an ordinal in ``case``: ordinal(3, "ade") == "kolmannella"."""
    _check(n, case)
    groups = _groups(n)
    words = []
    for g, group in enumerate(groups):
        word = ""
        for i, (base, role) in enumerate(group):
            if role == "teen":
                word += base
            else:
                # "ensimmäinen"/"toinen" only as the very last part; "yhdes"/"kahdes" before "toista".
                last = g == len(groups) - 1 and i == len(group) - 1
                word += _ordinal_word(base, case, plural, last)
        words.append(word)
    return " ".join(words)


def compound(n: int, decade: bool = False) -> str:
    """``n`` as the first part of a compound word, without spaces: the decade of 1990 is
    compound(1990, decade=True) + "luku" == "tuhatyhdeksänsataayhdeksänkymmentäluku"; in a decade a
    final ten is "kymmen" ("kaksituhattakymmenluku")."""
    words = cardinal(n).replace(" ", "")
    if decade and n % 100 == 10:
        words = words[: -len("kymmenen")] + "kymmen"
    return words
