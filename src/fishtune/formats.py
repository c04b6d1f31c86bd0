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

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from fishtune import paths
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
    found, problems = scan(root)
    if found or problems:
        return "fish"
    raise InputError(
        f"no dataset found in {root}: expected <speaker>/<clip>.wav + .lab files, metadata.csv (LJSpeech) "
        "or transcript.txt (CSS10)",
        hint="point FISHTUNE_DATA (or paths.data=...) at the dataset folder",
    )


def _is_clip_name(name: str) -> bool:
    ext = Path(name).suffix.lower()
    return ext in AUDIO_EXTENSIONS or ext == ".lab"


def _problem(root: Path, path: Path, why: str) -> Item:
    rel = path.relative_to(root).parts
    speaker = safe_name(rel[0]) if len(rel) > 1 else safe_name(root.name)
    parts = list(rel[1:] if len(rel) > 1 else rel)
    clip = safe_name("_".join([*parts[:-1], Path(parts[-1]).stem]))
    return Item(f"{speaker}/{clip}", speaker, None, None, str(path), problem=why)


def _listdir(root: Path, folder: Path, problems: list[Item]) -> list[Path] | None:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as err:
        why = f"cannot read the folder {folder} ({err.strerror or err})"
        if folder == root:
            raise InputError(f"{why}", hint="make the dataset readable (chmod -R a+rX) and rerun") from err
        problems.append(_problem(root, folder, f"{why}; make it readable (chmod -R a+rX)"))
        return None


def _too_deep(root: Path, folder: Path, problems: list[Item]) -> None:
    for sub, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files + [d for d in dirs if _is_clip_name(d)]):
            if _is_clip_name(name) and not name.startswith("."):
                p = Path(sub) / name
                problems.append(
                    _problem(
                        root,
                        p,
                        f"{p} is {len(p.relative_to(root).parts) - 1} folders deep; the fish layout is "
                        "<speaker>/<clip>.wav + .lab: move it up, or point the dataset at its parent",
                    )
                )


def scan(root: Path, depth: int = 2) -> tuple[list[Path], list[Item]]:
    """The audio and ``.lab`` files of the fish layout (``root/*`` and ``root/<speaker>/*``), and an :class:`Item`
    with a problem for every clip-like entry that cannot be used: deeper files, FIFOs and devices (or links to
    them), folders named like clips, links leading outside ``root`` (resolved for real) and unreadable folders."""
    found: list[Path] = []
    problems: list[Item] = []

    def visit(folder: Path, level: int) -> None:
        for p in _listdir(root, folder, problems) or []:
            clip = _is_clip_name(p.name)
            try:
                mode = p.stat().st_mode  # follows links
            except OSError:
                mode = None
            if p.is_symlink() and not paths.inside(root, p):
                if clip or (mode is not None and stat.S_ISDIR(mode)):
                    where = paths.real(p)
                    problems.append(_problem(root, p, f"{p} is a link to {where}, outside the dataset folder"))
            elif mode is not None and stat.S_ISDIR(mode) and not clip:
                if level < depth:
                    visit(p, level + 1)
                else:
                    _too_deep(root, p, problems)
            elif not clip:
                continue
            elif mode is None:
                problems.append(_problem(root, p, f"{p} is a broken link"))
            elif stat.S_ISDIR(mode):
                problems.append(_problem(root, p, f"{p} is a folder, not an audio or transcript file"))
            elif not stat.S_ISREG(mode):
                problems.append(_problem(root, p, f"{p} is not a regular file (a FIFO, device or socket)"))
            else:
                found.append(p)

    visit(root, 1)
    return found, problems


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
    by_stem: dict[tuple[Path, str], dict[str, list[Path]]] = {}
    found, items = scan(root)
    for p in found:
        ext = p.suffix.lower()
        if ext in AUDIO_EXTENSIONS or ext == ".lab":
            by_stem.setdefault((p.parent, p.stem), {}).setdefault("lab" if ext == ".lab" else "audio", []).append(p)
    for (parent, stem), found in sorted(by_stem.items()):
        speaker = safe_name(parent.name)
        clip_id = f"{speaker}/{safe_name(stem)}"
        audios, lab = found.get("audio", []), found.get("lab", [None])[0]
        if not audios and any(i.source == str(lab.with_suffix(e)) for i in items for e in AUDIO_EXTENSIONS):
            continue  # its audio is already listed with the reason it cannot be used
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
        try:
            text, problem = decode_text(lab.read_bytes(), str(lab))
        except OSError as err:
            text, problem = None, f"cannot read the transcript {lab} ({err.strerror or err}); make it readable"
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


def _table_items(root: Path, table: str, speaker: str, audio_for, columns: str) -> list[Item]:
    if not paths.inside(root, root / table):
        raise InputError(
            f"{root / table} is a link to {paths.real(root / table)}, outside the dataset folder",
            hint="copy the file into the dataset folder",
        )
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
        if len(cols) > columns.count("|") + 1:
            items.append(
                Item(
                    f"{speaker}/{safe_name(Path(cols[0]).stem)}",
                    speaker,
                    None,
                    None,
                    where,
                    problem=f"{len(cols)} columns where {table} has at most {columns.count('|') + 1} ({columns}): "
                    f"is there a '|' inside the text? ({where})",
                )
            )
            continue
        audio = audio_for(cols[0])
        clip_id = f"{speaker}/{safe_name(Path(cols[0]).stem)}"
        texts = [c for c in cols[1:3] if c]
        text = texts[-1] if texts else None
        if not paths.inside(root, audio):
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

    return _table_items(root, "metadata.csv", speaker, audio_for, "id|text|normalized text")


def read_css10(root: Path) -> list[Item]:
    speaker = safe_name(root.name)
    return _table_items(root, "transcript.txt", speaker, lambda rel: root / rel, "path|text|normalized text|duration")
