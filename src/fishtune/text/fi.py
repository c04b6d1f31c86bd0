"""Finnish text normalisation: numbers, dates, times, units and abbreviations written out as words, numbers
in the case their sentence needs.

The TTS model is trained on text that matches what the speaker says, so digits and abbreviations are
expanded the way they are usually read aloud. Punctuation (commas, full stops, question and
exclamation marks) is kept because the model uses it for prosody.

Rule order (:data:`RULES`; each step works on the output of the previous one, and the order matters because
the later number rules would otherwise eat the digits of dates, times and units):

1. :func:`fishtune.text.clean` (NFC, quotes, dashes, whitespace, control characters).
2. ``noin``: "n." directly before a number ("n. 5" -> "noin 5").
3. ``phone``: digit groups starting with "0" or "+" (7-15 digits) digit by digit ("040 123 4567").
4. ``time``: "klo 14.30", "7:45"; minutes below ten are read "nolla <digit>".
5. ``date``: ``d.m.yyyy`` and ``d.m.``: ordinal day, month in the partitive, year as a cardinal.
6. ``section``: "5 §" -> "viides pykälä", "§ 5" -> "pykälä 5", "§§" -> "pykälät"; not read twice after
   the word "pykälä" itself.
7. ``page``: "s. 5" -> "sivu 5", "ss." and page ranges -> "sivut".
8. ``abbreviation``: :data:`ABBREVIATIONS` and ``&``; "ns." agrees with its noun ("niin sanotulle").
9. ``unit``: a number and a unit, percent or currency sign ("5 km" -> "viisi kilometriä").
10. ``compound``: "1990-luvulla" -> "tuhatyhdeksänsataayhdeksänkymmentäluvulla", "5-vuotias".
11. ``case_suffix``: a case ending after a colon ("5:n" -> "viiden", "10:ssä" -> "kymmenessä").
12. ``ordinal``: a number, a full stop and a lowercase word ("3. luokalla" -> "kolmannella luokalla").
13. ``fraction``: "5/5" -> "viisi viidestä".
14. ``range``: "5–10 minuutissa" -> "viidessä–kymmenessä minuutissa".
15. ``dotted``: "18.30" as a time, other dotted digit groups part by part with "piste".
16. ``cardinal``: remaining numbers (sign, decimal comma, thousands separated by spaces).
17. ``tidy``: runs of spaces collapse to one, both ends are stripped.

Case. Numbers are inflected with :mod:`fishtune.text.fi_numerals`; the case comes from
:func:`_context_case`: a cardinal after a label noun ("vuonna 1985", "sivulla 5") stays nominative; a
postposition after it (:data:`POSTPOSITIONS`: "klo 5 jälkeen" -> "kello viiden jälkeen") or a preposition
before it (:data:`PREPOSITIONS`) decides; otherwise the number agrees with the common noun or adjective
after it as Voikko analyses it, except that a cardinal before a singular nominative or partitive stays
nominative ("kolme huonetta"). Proper names, participles, ambiguous analyses and a missing Voikko all
leave the nominative.

Reading conventions: integers with a leading zero ("007") and integers longer than
:data:`MAX_CARDINAL_DIGITS` digits are read digit by digit. Decimal parts of one or two digits without
a leading zero are read as a number ("2,50" -> "kaksi pilkku viisikymmentä"), others digit by digit
("3,05" -> "kolme pilkku nolla viisi").

Not handled, on purpose or not yet (the strict xfails of tests/data/fi_pairs.tsv):

* decimals and units with a case ending stay nominative ("5 %:lla" -> "viisi %:lla");
* a date used as a time adverbial is not put in the essive ("5.6. Helsingissä" -> "viides kesäkuuta");
* compounds use the plain nominative ("3-osainen" -> "kolmeosainen", not "kolmiosainen");
* comma-separated digits without spaces ("1,2,3") are left as they are;
* ``t.`` ("tai") and capitalised ``Mm.`` are not expanded (initials, the interjection "Mm.");
* abbreviations that introduce something (esim., ns., prof., vs., ...) keep a full stop only at the
  end of the text, since a capital letter after them is normally a name, not a new sentence.

:func:`normalize_fi` never raises: a step that fails on some odd input is skipped.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable

from fishtune.text import clean, fi_morph
from fishtune.text.fi_numerals import CASES, LIMIT, cardinal, compound, ordinal

__all__ = ["ABBREVIATIONS", "MONTHS", "UNITS", "normalize_fi", "normalize_fi_report"]

#: Longer integers are read digit by digit (phone numbers, ids), not as "...kvadriljoonaa".
MAX_CARDINAL_DIGITS = 15

DIGITS: tuple[str, ...] = (
    "nolla",
    "yksi",
    "kaksi",
    "kolme",
    "neljä",
    "viisi",
    "kuusi",
    "seitsemän",
    "kahdeksan",
    "yhdeksän",
)

#: Month number -> month name in the partitive, as read after an ordinal day ("viides toukokuuta").
MONTHS: dict[int, str] = {
    1: "tammikuuta",
    2: "helmikuuta",
    3: "maaliskuuta",
    4: "huhtikuuta",
    5: "toukokuuta",
    6: "kesäkuuta",
    7: "heinäkuuta",
    8: "elokuuta",
    9: "syyskuuta",
    10: "lokakuuta",
    11: "marraskuuta",
    12: "joulukuuta",
}

# Longest possible day of each month; February allows the 29th unless the year is known.
_MONTH_DAYS: dict[int, int] = {
    1: 31,
    2: 29,
    3: 31,
    4: 30,
    5: 31,
    6: 30,
    7: 31,
    8: 31,
    9: 30,
    10: 31,
    11: 30,
    12: 31,
}

#: Unit written after a number -> (form after any other number: partitive, form after "yksi").
UNITS: dict[str, tuple[str, str]] = {
    "%": ("prosenttia", "prosentti"),
    "€": ("euroa", "euro"),
    "$": ("dollaria", "dollari"),
    "km/h": ("kilometriä tunnissa", "kilometri tunnissa"),
    "km": ("kilometriä", "kilometri"),
    "m": ("metriä", "metri"),
    "cm": ("senttimetriä", "senttimetri"),
    "mm": ("millimetriä", "millimetri"),
    "kg": ("kilogrammaa", "kilogramma"),
    "g": ("grammaa", "gramma"),
    "mg": ("milligrammaa", "milligramma"),
    "l": ("litraa", "litra"),
    "dl": ("desilitraa", "desilitra"),
    "ml": ("millilitraa", "millilitra"),
    "°C": ("astetta", "aste"),
    "℃": ("astetta", "aste"),
    "°": ("astetta", "aste"),
    "h": ("tuntia", "tunti"),
    "min": ("minuuttia", "minuutti"),
    "s": ("sekuntia", "sekunti"),
}

#: Currency signs that may also be written before the number ("$5", "€ 10").
CURRENCY_PREFIXES: tuple[str, ...] = ("€", "$")

#: Abbreviation -> expansion. Whole words only. An entry starting with a lowercase letter also
#: matches its capitalised form (at the start of a sentence) and then expands capitalised, unless it
#: is listed in CASE_SENSITIVE_ABBREVIATIONS. "n." (noin) is handled separately: only before a number.
ABBREVIATIONS: dict[str, str] = {
    "esim.": "esimerkiksi",
    "mm.": "muun muassa",  # after a number "mm" is a unit and has already become "millimetriä"
    "jne.": "ja niin edelleen",
    "ym.": "ynnä muuta",
    "yms.": "ynnä muuta sellaista",
    "ns.": "niin sanottu",
    "tms.": "tai muuta sellaista",
    "klo": "kello",
    "ks.": "katso",
    "vrt.": "vertaa",
    "eKr.": "ennen Kristusta",
    "jKr.": "jälkeen Kristuksen",
    "tri": "tohtori",
    "prof.": "professori",
    "engl.": "englanniksi",
    "vs.": "versus",
    "milj.": "miljoonaa",
    "mrd.": "miljardia",
    "nro": "numero",
    "puh.": "puhelin",
}

#: Abbreviations that often end a sentence: their full stop is kept before a capital letter too.
#: The others keep it only at the end of the text ("prof. Virtanen" is no sentence end).
SENTENCE_FINAL_ABBREVIATIONS = frozenset({"jne.", "ym.", "yms.", "tms.", "eKr.", "jKr.", "milj.", "mrd."})

#: Abbreviations that are units right after a number ("5 mm." is millimetres, "mm. koirat" is not).
UNIT_LIKE_ABBREVIATIONS = frozenset({"mm."})

#: Abbreviations matched only exactly as written.
CASE_SENSITIVE_ABBREVIATIONS = frozenset({"eKr.", "jKr.", "mm."})

#: Forms used right after "yksi" ("yksi miljoona", not "yksi miljoonaa").
SINGULAR_AFTER_ONE: dict[str, str] = {"milj.": "miljoona", "mrd.": "miljardi"}

#: Symbols read as words wherever they stand.
SYMBOLS: dict[str, str] = {"&": "ja"}

# --- case agreement ------------------------------------------------------------------------------

NOM = ("nom", False)

#: A word right after a number that decides its case: "klo 5 jälkeen" -> "kello viiden jälkeen".
POSTPOSITIONS: dict[str, str] = {
    "jälkeen": "gen",
    "aikaan": "gen",
    "maissa": "gen",
    "paikkeilla": "gen",
    "paikkeille": "gen",
    "tienoilla": "gen",
    "mukaan": "gen",
    "mennessä": "ill",
    "asti": "ill",
    "saakka": "ill",
    "alkaen": "ela",
    "lähtien": "ela",
}

#: A word right before a number that decides its case: "ennen 5" -> "ennen viittä".
PREPOSITIONS: dict[str, str] = {"ennen": "par", "ilman": "par", "vailla": "par"}

#: Nouns (base forms) after which a cardinal is a name or label in the nominative, whatever follows:
#: "vuonna 1985 Helsingissä", "sivulla 5 kerrotaan", "luvussa 3 esitetään".
LABEL_NOUNS = frozenset(
    [
        "vuosi",
        "sivu",
        "luku",
        "kohta",
        "pykälä",
        "numero",
        "huone",
        "linja",
        "bussi",
        "raide",
        "laituri",
        "portti",
        "kerros",
        "taulukko",
        "kuva",
        "kuvio",
        "liite",
        "tehtävä",
        "osa",
        "jakso",
        "kausi",
        "versio",
        "rivi",
        "momentti",
        "tie",
        "valtatie",
        "lause",
        "esimerkki",
        "kanava",
        "sija",
    ]
)
#: The commonest forms of those, for when Voikko is missing.
LABEL_FORMS = frozenset(
    ["vuonna", "vuoden", "vuodesta", "vuoteen", "vuosi", "sivu", "sivulla", "sivun", "sivut", "numero", "nro"]
)

#: Clock words: the number after them agrees only with a postposition ("kello viiden jälkeen"), never
#: with the next noun ("kello viisi aamulla").
CLOCK_WORDS = frozenset({"kello", "klo"})

#: Indeclinable words skipped when looking for the noun after a number ("viidessä eri maassa").
SKIPPED_WORDS = frozenset({"eri"})

#: Case ending written after a colon ("5:n", "§:ssä") -> case.
SUFFIX_CASES: dict[str, str] = {
    "n": "gen",
    **dict.fromkeys(("a", "ä", "ta", "tä"), "par"),
    **dict.fromkeys(("na", "nä"), "ess"),
    "ksi": "tra",
    **dict.fromkeys(("ssa", "ssä"), "ine"),
    **dict.fromkeys(("sta", "stä"), "ela"),
    **dict.fromkeys(("een", "ään", "aan", "iin", "teen", "seen"), "ill"),
    **dict.fromkeys(("lla", "llä"), "ade"),
    **dict.fromkeys(("lta", "ltä"), "abl"),
    "lle": "all",
}

# Word -> "singular forms | plural forms" in the order of fi_numerals.CASES.
_NOUN_FORMS: dict[str, str] = {
    "pykälä": "pykälä pykälän pykälää pykälänä pykäläksi pykälässä pykälästä pykälään pykälällä pykälältä"
    " pykälälle | pykälät pykälien pykäliä pykälinä pykäliksi pykälissä pykälistä pykäliin pykälillä"
    " pykäliltä pykälille",
    "sivu": "sivu sivun sivua sivuna sivuksi sivussa sivusta sivuun sivulla sivulta sivulle"
    " | sivut sivujen sivuja sivuina sivuiksi sivuissa sivuista sivuihin sivuilla sivuilta sivuille",
    "sanottu": "sanottu sanotun sanottua sanottuna sanotuksi sanotussa sanotusta sanottuun sanotulla"
    " sanotulta sanotulle | sanotut sanottujen sanottuja sanottuina sanotuiksi sanotuissa sanotuista"
    " sanottuihin sanotuilla sanotuilta sanotuille",
}

# --- regular expressions -------------------------------------------------------------------------

# An unsigned integer: groups of three digits separated by single spaces ("10 000") or plain digits.
_INT = r"[0-9]{1,3}(?: [0-9]{3})+(?![0-9])|[0-9]+"
# A number: optional sign attached to the digits and preceded by the start, a space or "(", the
# integer (not glued to a letter, digit, dot or comma before it), an optional decimal comma part.
_NUMBER = r"(?:(?<![^\s(])(?P<sign>[-–+]))?(?<![\w.,])(?P<int>" + _INT + r")(?:,(?P<frac>[0-9]+))?"
# What may not follow a number: a letter or digit, or a dot/comma and more digits.
_NUMBER_END = r"(?!\w|[.,][0-9])"

_NOIN_RE = re.compile(r"(?:(?<!\w)n|(?:^|(?<=[.!?] ))N)\. ?(?=[-–+]?[0-9])")
_TIME_RE = re.compile(r"(?<!\w)(?P<word>[Kk]lo|[Kk]ello) (?P<h>[0-9]{1,2})[.:](?P<m>[0-9]{2})(?![0-9]|[.:][0-9])")
_COLON_TIME_RE = re.compile(r"(?<![\w.,:])(?P<h>[0-9]{1,2}):(?P<m>[0-9]{2})(?![0-9]|[.:,][0-9]|:\w)")
# Phone-number-like digit groups: "+358 40 123 4567", "040 123 4567", "09-123 4567" (7-15 digits).
_PHONE_RE = re.compile(r"(?<![\w.,+])(?:\+[0-9]{1,3}|0[0-9]{1,4})(?:[ -][0-9]{2,8}){1,4}(?![\w]|[.,][0-9])")
_SUFFIXED_RE = re.compile(r"(?<![\w.,:])(?P<int>[0-9]+):(?P<suf>[^\W\d_]+)")
_COMPOUND_RE = re.compile(r"(?<![\w.,])(?P<int>[0-9]+)-(?P<word>[a-zåäö][^\W\d_]*)")
_FRACTION_RE = re.compile(r"(?<![\w.,/])(?P<a>[0-9]+)/(?P<b>[0-9]+)(?![\w/]|[.,][0-9])")
_RANGE_RE = re.compile(r"(?<![\w.,–-])(?P<a>[0-9]+)(?P<dash> ?– ?|-)(?P<b>[0-9]+)(?!\w|[.,:/][0-9]|:\w|[–-][0-9])")
_SECTION_AFTER_RE = re.compile(r"(?<![\w.,])(?P<int>[0-9]+) ?§(?::(?P<suf>[^\W\d_]+))?")
_SECTION_BEFORE_RE = re.compile(
    r"(?P<signs>§§?)(?::(?P<suf>[^\W\d_]+))? ?(?P<num>[0-9]+(?:[–-][0-9]+)?)(?::(?P<nsuf>[^\W\d_]+))?"
)
_PAGE_RE = re.compile(r"(?<!\w)(?P<abbr>[Ss]s?)\. ?(?P<num>[0-9]+(?:[–-][0-9]+)?)")
_WORD_AFTER_RE = re.compile(r" (?P<w>[^\W\d_]+)")
_WORD_BEFORE_RE = re.compile(r"(?P<w>[^\W\d_]+)\.? $")
_DATE_RE = re.compile(
    r"(?<![\w.,])(?P<d>[0-9]{1,2})\.(?P<m>[0-9]{1,2})\."
    r"(?:(?P<y>[0-9]{4})" + _NUMBER_END + r"|(?![\w]|[.,]?[0-9]))"
)
_UNIT_ALTERNATIVES = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
_UNIT_RE = re.compile(_NUMBER + r" ?(?P<unit>" + _UNIT_ALTERNATIVES + r")(?!\w|:\w)")
_CURRENCY_FIRST_RE = re.compile(
    r"(?<!\w)(?P<unit>" + "|".join(re.escape(c) for c in CURRENCY_PREFIXES) + r") ?"
    r"(?P<int>" + _INT + r")(?:,(?P<frac>[0-9]+))?" + _NUMBER_END
)
_ORDINAL_RE = re.compile(r"(?<![Kk]lo )(?<![Kk]ello )(?<![\w.,])(?P<int>" + _INT + r")\.(?= (?P<next>\w))")
_DOTTED_RE = re.compile(r"(?<![\w.,])[0-9]+(?:\.[0-9]+)+" + _NUMBER_END)
_CARDINAL_RE = re.compile(_NUMBER + r"(?!\w|[.,][0-9]|:[^\W\d_])")
_MULTIPLIER_CURRENCY_RE = re.compile(r"(?<!\w)(?P<abbr>[Mm]ilj\.|[Mm]rd\.) ?(?P<unit>[€$])(?!\w)")
_SYMBOL_RE = re.compile(r" *(?:" + "|".join(re.escape(s) for s in SYMBOLS) + r") *")
_SPACES_RE = re.compile(r" {2,}")
# "1 " or "yksi " right before a multiplier abbreviation ("1 milj." -> "yksi miljoona").
_ONE_BEFORE_RE = re.compile(r"(?:(?<![\w.,])1|\b[Yy]ksi) $")


def _abbreviation_variants() -> dict[str, tuple[str, str]]:
    """Every spelling matched -> (table key, expansion in the matching case)."""
    variants: dict[str, tuple[str, str]] = {}
    for key, expansion in ABBREVIATIONS.items():
        variants[key] = (key, expansion)
        if key not in CASE_SENSITIVE_ABBREVIATIONS and key[0].islower():
            variants[key[0].upper() + key[1:]] = (key, expansion[0].upper() + expansion[1:])
    return variants


_ABBREVIATION_VARIANTS = _abbreviation_variants()
_ABBREVIATION_RE = re.compile(
    r"(?<!\w)(?:"
    + "|".join(
        ("(?<![0-9] )(?<![0-9])" if _ABBREVIATION_VARIANTS[v][0] in UNIT_LIKE_ABBREVIATIONS else "")
        + re.escape(v)
        + ("" if v.endswith(".") else r"(?!\w)")
        for v in sorted(_ABBREVIATION_VARIANTS, key=len, reverse=True)
    )
    + ")"
)

# --- number reading ------------------------------------------------------------------------------


def _digits(digits: str) -> str:
    """Read each digit on its own: "05" -> "nolla viisi"."""
    return " ".join(DIGITS[int(d)] for d in digits if d.isdigit())


def _readable(digits: str) -> bool:
    """True when an integer is read as a number, not digit by digit (no leading zero, not too long)."""
    return not (len(digits) > 1 and digits.startswith("0")) and len(digits) <= MAX_CARDINAL_DIGITS


def _cardinal(digits: str, case: tuple[str, bool] = NOM) -> str:
    """Read an integer written with ASCII digits (spaces between groups allowed) as a cardinal."""
    digits = digits.replace(" ", "")
    if not _readable(digits) or int(digits) >= LIMIT:
        return _digits(digits)
    return cardinal(int(digits), *case)


def _ordinal(digits: str, case: tuple[str, bool] = NOM) -> str | None:
    """The ordinal of an integer ("3" -> "kolmas"), or None when it cannot be read as one."""
    digits = digits.replace(" ", "")
    if len(digits) > MAX_CARDINAL_DIGITS or int(digits) >= LIMIT:
        return None
    return ordinal(int(digits), *case)


def _fraction(digits: str) -> str:
    """Read the part after a decimal comma: "5" -> "viisi", "50" -> "viisikymmentä", "05" digit-wise."""
    if len(digits) <= 2 and not digits.startswith("0"):
        return _cardinal(digits)
    return _digits(digits)


def _number(sign: str | None, integer: str, fraction: str | None, case: tuple[str, bool] = NOM) -> str:
    """Words for a possibly signed number with an optional decimal part (decimals stay nominative)."""
    words = _cardinal(integer) + " pilkku " + _fraction(fraction) if fraction is not None else _cardinal(integer, case)
    if sign in ("-", "–"):
        words = "miinus " + words
    elif sign == "+":
        words = "plus " + words
    return words


def _is_one(integer: str, fraction: str | None) -> bool:
    return fraction is None and integer == "1"


def _time(hours: str, minutes: str, case: tuple[str, bool] = NOM) -> str | None:
    """Words for a clock time, or None when it is no valid time."""
    h, m = int(hours), int(minutes)
    if h > 24 or m > 59 or (h == 24 and m != 0):
        return None
    minute_words = f"nolla {cardinal(m, *case)}" if m < 10 else cardinal(m, *case)
    return f"{cardinal(h, *case)} {minute_words}"


def _noun(word: str, case: tuple[str, bool]) -> str:
    """A word of _NOUN_FORMS in a case: _noun("sivu", ("ade", False)) -> "sivulla"."""
    singular, plural = _NOUN_FORMS[word].split(" | ")
    return (plural if case[1] else singular).split()[CASES.index(case[0])]


def _ends_sentence(text: str, pos: int) -> bool:
    """True when a full stop just before ``pos`` ends a sentence: end of text or space + capital.

    Closing quotes and brackets right after the full stop are skipped.
    """
    while pos < len(text) and text[pos] in "\"')]":
        pos += 1
    if pos >= len(text):
        return True
    return text[pos] == " " and pos + 1 < len(text) and text[pos + 1].isupper()


# --- finding the case ----------------------------------------------------------------------------


def _word_after(text: str, end: int) -> str | None:
    """The word after ``end`` (one space between), skipping indeclinable words such as "eri"."""
    m = _WORD_AFTER_RE.match(text, end)
    while m is not None and m["w"].lower() in SKIPPED_WORDS:
        m = _WORD_AFTER_RE.match(text, m.end())
    return None if m is None else m["w"]


def _word_before(text: str, start: int) -> str:
    m = _WORD_BEFORE_RE.search(text, 0, start)
    return "" if m is None else m["w"]


def _is_label(word: str) -> bool:
    low = word.lower()
    return low in LABEL_FORMS or bool(fi_morph.baseforms(word) & LABEL_NOUNS)


def _context_case(text: str, start: int, end: int, *, ordinal: bool = False, agree: bool = True) -> tuple[str, bool]:
    """(case, plural) for the number at text[start:end], from the words around it.

    In order: a cardinal after a label noun ("vuonna 1985") stays nominative; a postposition after the
    number or a preposition before it decides; after "kello" nothing else does; otherwise the number
    agrees with the common noun or adjective after it (``agree``), except that a cardinal before a
    singular partitive or nominative stays nominative ("kolme huonetta"). Anything unclear: nominative.
    """
    before = _word_before(text, start).lower()
    after = _word_after(text, end)
    if not ordinal and before not in CLOCK_WORDS and before and _is_label(before):
        return NOM
    if after is not None and after.lower() in POSTPOSITIONS:
        return POSTPOSITIONS[after.lower()], False
    if before in PREPOSITIONS:
        return PREPOSITIONS[before], False
    if not agree or before in CLOCK_WORDS or after is None or not after[0].islower():
        return NOM
    found = fi_morph.nominal_case(after)
    if found is None or (not ordinal and not found[1] and found[0] in ("nom", "par")):
        return NOM
    return found


def _suffix_case(suffix: str | None) -> tuple[str, bool] | None:
    """The case of an ending written after a colon ("n" -> genitive), None when it is no case ending."""
    if suffix is None:
        return None
    case = SUFFIX_CASES.get(suffix.lower())
    return None if case is None else (case, False)


# --- rules ---------------------------------------------------------------------------------------


def _noin(text: str) -> str:
    return _NOIN_RE.sub(lambda m: "Noin " if m.group(0).startswith("N") else "noin ", text)


def _phones(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        number = m.group(0)
        if not 7 <= sum(c.isdigit() for c in number) <= 15:
            return number
        groups = re.split(r"[ -]", number)
        return " ".join(("plus " + _digits(g[1:])) if g.startswith("+") else _digits(g) for g in groups)

    return _PHONE_RE.sub(replace, text)


def _times(text: str) -> str:
    def clock(m: re.Match[str]) -> str:
        words = _time(m["h"], m["m"], _context_case(m.string, m.start(), m.end(), agree=False))
        if words is None:
            return m.group(0)
        word = "Kello" if m["word"][0] == "K" else "kello"
        return f"{word} {words}"

    def colon(m: re.Match[str]) -> str:
        words = _time(m["h"], m["m"], _context_case(m.string, m.start(), m.end(), agree=False))
        return m.group(0) if words is None else words

    return _COLON_TIME_RE.sub(colon, _TIME_RE.sub(clock, text))


def _dates(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        day, month = int(m["d"]), int(m["m"])
        year = m["y"]
        last_day = _MONTH_DAYS.get(month, 0)
        if month == 2 and year is not None and not calendar.isleap(int(year)):
            last_day = 28
        if not 1 <= day <= last_day:
            return m.group(0)  # not a date: the dotted-number rule reads it
        case = _context_case(m.string, m.start(), m.end(), ordinal=True, agree=False)
        words = f"{ordinal(day, *case)} {MONTHS[month]}"
        if year is not None:
            return f"{words} {_cardinal(year)}"
        # "d.m." : the final dot belongs to the date, but also ends the sentence when one ends here.
        return words + "." if _ends_sentence(m.string, m.end()) else words

    return _DATE_RE.sub(replace, text)


def _sections(text: str) -> str:
    """ "5 §" -> "viides pykälä", "5 §:ssä" -> "viidennessä pykälässä", "§ 5" -> "pykälä 5"; after a form of
    "pykälä" the sign is dropped instead of read twice."""

    def after(m: re.Match[str]) -> str:
        if _word_before(m.string, m.start()).lower().startswith("pykäl"):
            return m["int"]
        case = _suffix_case(m["suf"]) or _context_case(m.string, m.start(), m.end(), ordinal=True, agree=False)
        words = _ordinal(m["int"], case)
        return m.group(0) if words is None else f"{words} {_noun('pykälä', case)}"

    def before(m: re.Match[str]) -> str:
        if _word_before(m.string, m.start()).lower().startswith("pykäl"):
            return m["num"]
        # The ending belongs to the word "pykälä" whether written after the sign or the number.
        case = _suffix_case(m["suf"]) or _suffix_case(m["nsuf"]) or NOM
        if m["nsuf"] and not _suffix_case(m["nsuf"]):
            return m.group(0)
        plural = len(m["signs"]) == 2 or not m["num"].isdigit()
        return f"{_noun('pykälä', (case[0], plural))} {m['num']}"

    return _SECTION_BEFORE_RE.sub(before, _SECTION_AFTER_RE.sub(after, text))


def _pages(text: str) -> str:
    """ "s. 5" -> "sivu 5" ("sivut" for "ss." and page ranges), in the case a postposition asks for."""

    def replace(m: re.Match[str]) -> str:
        plural = m["abbr"].lower() == "ss" or not m["num"].isdigit()
        case = _context_case(m.string, m.start(), m.end(), ordinal=True, agree=False)[0]
        word = _noun("sivu", (case, plural))
        return f"{word.capitalize() if m['abbr'][0] == 'S' else word} {m['num']}"

    return _PAGE_RE.sub(replace, text)


def _abbreviations(text: str) -> str:
    def currency(m: re.Match[str]) -> str:
        return f"{m['abbr']} {UNITS[m['unit']][0]}"

    def replace(m: re.Match[str]) -> str:
        key, expansion = _ABBREVIATION_VARIANTS[m.group(0)]
        if key in SINGULAR_AFTER_ONE and _ONE_BEFORE_RE.search(m.string, 0, m.start()):
            expansion = SINGULAR_AFTER_ONE[key]
        if key == "ns.":  # "ns. asiantuntijalle" -> "niin sanotulle asiantuntijalle"
            after = _word_after(m.string, m.end() - 1 if m.string[m.end() - 1 : m.end()] == " " else m.end())
            case = fi_morph.nominal_case(after) if after is not None and after[0].islower() else None
            expansion = expansion.split()[0] + " " + _noun("sanottu", case or NOM)
        if not key.endswith("."):
            return expansion
        end = m.end()
        following = m.string[end : end + 1]
        if following == "." or end >= len(m.string):
            return expansion + "."
        if key in SENTENCE_FINAL_ABBREVIATIONS and _ends_sentence(m.string, end):
            return expansion + "."
        return expansion + " " if following.isalnum() else expansion

    text = _MULTIPLIER_CURRENCY_RE.sub(currency, text)
    text = _ABBREVIATION_RE.sub(replace, text)
    return _SYMBOL_RE.sub(lambda m: f" {SYMBOLS[m.group(0).strip()]} ", text)


def _units(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        plural, singular = UNITS[m["unit"]]
        sign = m["sign"] if "sign" in m.re.groupindex else None
        unit = singular if _is_one(m["int"], m["frac"]) else plural
        return f"{_number(sign, m['int'], m['frac'])} {unit}"

    return _CURRENCY_FIRST_RE.sub(replace, _UNIT_RE.sub(replace, text))


def _compounds(text: str) -> str:
    """ "1990-luvulla" -> "tuhatyhdeksänsataayhdeksänkymmentäluvulla", "5-vuotias" -> "viisivuotias"."""

    def replace(m: re.Match[str]) -> str:
        if not _readable(m["int"]) or int(m["int"]) >= LIMIT:
            return m.group(0)
        return compound(int(m["int"]), decade=m["word"].startswith(("luku", "luvu", "luvi"))) + m["word"]

    return _COMPOUND_RE.sub(replace, text)


def _suffixed(text: str) -> str:
    """ "5:n" -> "viiden", "10:ssä" -> "kymmenessä": the case ending written after a colon."""

    def replace(m: re.Match[str]) -> str:
        case = _suffix_case(m["suf"])
        if case is None or not _readable(m["int"]):
            return m.group(0)
        return _cardinal(m["int"], case)

    return _SUFFIXED_RE.sub(replace, text)


def _ordinals(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        following = m["next"]
        if not (following.isalpha() and following.islower()):
            return m.group(0)  # cardinal + full stop: left for the number rule
        words = _ordinal(m["int"], _context_case(m.string, m.start(), m.end(), ordinal=True))
        return m.group(0) if words is None else words

    return _ORDINAL_RE.sub(replace, text)


def _fractions(text: str) -> str:
    """Scores and fractions: "5/5" -> "viisi viidestä"."""

    def replace(m: re.Match[str]) -> str:
        if not (_readable(m["a"]) and _readable(m["b"])):
            return m.group(0)
        case = _context_case(m.string, m.start(), m.end())
        return f"{_cardinal(m['a'], case)} {_cardinal(m['b'], ('ela', False))}"

    return _FRACTION_RE.sub(replace, text)


def _ranges(text: str) -> str:
    """ "5–10 minuutissa" -> "viidessä–kymmenessä minuutissa": both ends in the case of the noun."""

    def replace(m: re.Match[str]) -> str:
        case = _context_case(m.string, m.start(), m.end())
        return f"{_cardinal(m['a'], case)}{m['dash'].strip() or '–'}{_cardinal(m['b'], case)}"

    return _RANGE_RE.sub(replace, text)


def _dotted(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        parts = m.group(0).split(".")
        if len(parts) == 2 and len(parts[0]) <= 2 and len(parts[1]) == 2:
            words = _time(parts[0], parts[1], _context_case(m.string, m.start(), m.end(), agree=False))
            if words is not None:
                return words
        return " piste ".join(_cardinal(p) for p in parts)

    return _DOTTED_RE.sub(replace, text)


def _cardinals(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        case = _context_case(m.string, m.start(), m.end()) if m["frac"] is None else NOM
        return _number(m["sign"], m["int"], m["frac"], case)

    return _CARDINAL_RE.sub(replace, text)


def _tidy(text: str) -> str:
    return _SPACES_RE.sub(" ", text).strip()


#: The rules after clean(), in the order they run, by the names stats.json reports.
RULES: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("noin", _noin),
    ("phone", _phones),
    ("time", _times),
    ("date", _dates),
    ("section", _sections),
    ("page", _pages),
    ("abbreviation", _abbreviations),
    ("unit", _units),
    ("compound", _compounds),
    ("case_suffix", _suffixed),
    ("ordinal", _ordinals),
    ("fraction", _fractions),
    ("range", _ranges),
    ("dotted", _dotted),
    ("cardinal", _cardinals),
    ("tidy", _tidy),
)


def normalize_fi_report(text: str) -> tuple[str, list[str]]:
    """Normalise Finnish ``text`` and name the rules that changed it ("clean" for the clean-up).

    Never raises: a rule that fails on some input is skipped and the text passes through it unchanged.
    """
    fired = []
    cleaned = clean(text)
    if cleaned != text:
        fired.append("clean")
    text = cleaned
    for name, rule in RULES:
        try:
            result = rule(text)
        except Exception:  # defensive: one odd input must not stop a whole data-preparation run
            continue
        if result != text:
            fired.append(name)
        text = result
    return text, fired


def normalize_fi(text: str) -> str:
    """Normalise Finnish ``text`` for TTS (see :func:`normalize_fi_report`)."""
    return normalize_fi_report(text)[0]
