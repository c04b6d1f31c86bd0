"""Dataset formats fishtune reads: a Fish Speech folder, LJSpeech and CSS10.

Each reader turns a folder into :class:`Item`s. A reader never drops anything silently: an item it
cannot use still comes back, with ``problem`` set, so that ``prepare`` can report it.

- ``fish``:     ``<root>/<speaker>/<clip>.<audio>`` + ``<clip>.lab`` (UTF-8 transcript). Clips directly under
                ``<root>`` belong to a speaker named after the folder.
- ``ljspeech``: ``<root>/metadata.csv`` with ``id|text[|normalized text]`` lines, audio in ``<root>/wavs/<id>.wav``.
- ``css10``:    ``<root>/transcript.txt`` with ``relative/path.wav|text|normalized text|duration`` lines.

For the two table formats the last non-empty text column is used (the dataset's own normalised text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fishtune.audio import AUDIO_EXTENSIONS
from fishtune.errors import InputError

FORMATS = ("fish", "ljspeech", "css10")
_SAFE = re.compile(r"[^\w.\-]+", re.UNICODE)


@dataclass
class Item:
    id: str  # "<speaker>/<clip>", unique in the dataset
    speaker: str
    audio: Path | None
    text: str | None
    source: str  # where it came from, for reports: "path" or "metadata.csv:12"
    problem: str | None = None  # why it cannot be used (then it is rejected)


def safe_name(name: str) -> str:
    cleaned = _SAFE.sub("_", name).strip("._")
    return cleaned or "unnamed"


def decode_text(raw: bytes, where: str) -> tuple[str | None, str | None]:
    """Return (text, problem)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, f"transcript is not UTF-8 ({where}); re-save it as UTF-8"
    if not text.strip():
        return None, f"transcript is empty ({where})"
    return text.strip(), None


def detect(root: Path) -> str:
    if (root / "metadata.csv").is_file():
        return "ljspeech"
    if (root / "transcript.txt").is_file():
        return "css10"
    if any(p.suffix.lower() in AUDIO_EXTENSIONS or p.suffix == ".lab" for p in _walk(root, depth=2)):
        return "fish"
    raise InputError(
        f"no dataset found in {root}: expected <speaker>/<clip>.wav + .lab files, metadata.csv (LJSpeech) "
        "or transcript.txt (CSS10)",
        hint="point FISHTUNE_DATA (or paths.data=...) at the dataset folder",
    )


def _walk(root: Path, depth: int):
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file():
            yield p
        elif p.is_dir() and depth > 1:
            yield from _walk(p, depth - 1)


def read(root: str | Path, fmt: str = "auto") -> tuple[str, list[Item]]:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist", hint="mount your data at /data or set FISHTUNE_DATA")
    if fmt == "auto":
        fmt = detect(root)
    readers = {"fish": read_fish, "ljspeech": read_ljspeech, "css10": read_css10}
    if fmt not in readers:
        raise InputError(f"unknown dataset format '{fmt}'", hint=f"use one of: auto, {', '.join(FORMATS)}")
    items = readers[fmt](root)
    return fmt, _mark_duplicates(items)


def _mark_duplicates(items: list[Item]) -> list[Item]:
    seen: dict[str, str] = {}
    for item in items:
        if item.problem:
            continue
        if item.id in seen:
            item.problem = f"duplicate clip id {item.id} (also {seen[item.id]})"
        else:
            seen[item.id] = item.source
    return items


def read_fish(root: Path) -> list[Item]:
    items: list[Item] = []
    by_stem: dict[tuple[Path, str], dict[str, list[Path]]] = {}
    for p in _walk(root, depth=2):
        ext = p.suffix.lower()
        if ext in AUDIO_EXTENSIONS or ext == ".lab":
            by_stem.setdefault((p.parent, p.stem), {}).setdefault("lab" if ext == ".lab" else "audio", []).append(p)
    for (parent, stem), found in sorted(by_stem.items()):
        speaker = safe_name(parent.name)
        clip_id = f"{speaker}/{safe_name(stem)}"
        audios, lab = found.get("audio", []), found.get("lab", [None])[0]
        if not audios:
            items.append(Item(clip_id, speaker, None, None, str(lab), problem=f"transcript {lab} has no audio file"))
            continue
        audio, *extra = audios
        for other in extra:
            items.append(
                Item(
                    clip_id,
                    speaker,
                    other,
                    None,
                    str(other),
                    problem=f"{other.name} and {audio.name} share one name; rename one of them",
                )
            )
        if lab is None:
            items.append(
                Item(
                    clip_id,
                    speaker,
                    audio,
                    None,
                    str(audio),
                    problem=f"missing transcript: create {audio.with_suffix('.lab')}",
                )
            )
            continue
        text, problem = decode_text(lab.read_bytes(), str(lab))
        items.append(Item(clip_id, speaker, audio, text, str(audio), problem=problem))
    return items


def _read_table(path: Path) -> list[tuple[int, list[str] | None, str | None]]:
    rows = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        where = f"{path.name}:{lineno}"
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            rows.append((lineno, None, f"line is not UTF-8 ({where}); re-save the file as UTF-8"))
            continue
        rows.append((lineno, [c.strip() for c in line.split("|")], None))
    return rows


def _table_items(root: Path, table: str, speaker: str, audio_for) -> list[Item]:
    items = []
    for lineno, cols, problem in _read_table(root / table):
        where = f"{table}:{lineno}"
        if cols is None:
            items.append(Item(f"{speaker}/line{lineno}", speaker, None, None, where, problem=problem))
            continue
        if len(cols) < 2 or not cols[0]:
            items.append(
                Item(
                    f"{speaker}/line{lineno}",
                    speaker,
                    None,
                    None,
                    where,
                    problem=f"expected 'id|text' ({where})",
                )
            )
            continue
        audio = audio_for(cols[0])
        clip_id = f"{speaker}/{safe_name(Path(cols[0]).stem)}"
        texts = [c for c in cols[1:3] if c]
        text = texts[-1] if texts else None
        if not audio.resolve().is_relative_to(root.resolve()):
            items.append(
                Item(
                    clip_id,
                    speaker,
                    None,
                    text,
                    where,
                    problem=f"audio path {cols[0]} points outside the dataset folder ({where})",
                )
            )
        elif not audio.is_file():
            items.append(Item(clip_id, speaker, None, text, where, problem=f"audio file {audio} not found ({where})"))
        elif text is None:
            items.append(Item(clip_id, speaker, audio, None, where, problem=f"transcript is empty ({where})"))
        else:
            items.append(Item(clip_id, speaker, audio, text, where))
    return items


def read_ljspeech(root: Path) -> list[Item]:
    speaker = safe_name(root.name)

    def audio_for(clip: str) -> Path:
        for ext in AUDIO_EXTENSIONS:
            cand = root / "wavs" / f"{clip}{ext}"
            if cand.is_file():
                return cand
        return root / "wavs" / f"{clip}.wav"

    return _table_items(root, "metadata.csv", speaker, audio_for)


def read_css10(root: Path) -> list[Item]:
    speaker = safe_name(root.name)
    return _table_items(root, "transcript.txt", speaker, lambda rel: root / rel)
