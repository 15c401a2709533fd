"""The clips a listening test compares: found in the folders the project writes, with their texts, and paired."""

import csv
import itertools
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llasa.audio import count_identical, identical_clips_note
from llasa.clip_codes import clip_text

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")  # what a listening page can play
PAIR_BY = ("auto", "text", "id")  # auto: by text when every clip has one, else by file stem
SYSTEM_NAME = re.compile(r"[\w.+-]+")  # as evaluate.py names systems


@dataclass(frozen=True)
class Clip:
    """One audio file of one system, with the text it speaks when the folder says it."""

    system: str
    stem: str  # the file name without its suffix: evaluate.py's and inference.py's <id>, train.py's sample-K
    path: Path  # absolute
    text: str | None = None


@dataclass(frozen=True)
class Pairing:
    """Pairs of clips (a, b) of two systems speaking the same item, and what could not be paired."""

    pairs: list[tuple[Clip, Clip]]
    by: str  # "text" or "id"
    unpaired: list[Clip] = field(default_factory=list)  # items only one system has


def parse_system(value: str) -> tuple[str, Path]:
    """NAME=DIR, checked: a name evaluate.py would accept and an existing folder."""
    name, sep, folder = value.partition("=")
    if not sep or not name or not folder:
        raise ValueError(f"expected NAME=DIR (e.g. base=eval/run/audio/base), got {value!r}")
    if not SYSTEM_NAME.fullmatch(name):
        raise ValueError(f"system name {name!r} must be letters, digits, '.', '+', '-' or '_'")
    if not Path(folder).is_dir():
        raise ValueError(f"{folder} is not a folder: give a folder of audio files for the system {name!r}")
    return name, Path(folder)


def find_clips(system: str, folder) -> list[Clip]:
    """The audio files directly in `folder`, with texts from whatever the project wrote beside them: evaluate.py's
    clips.jsonl (two levels up, for audio/<system>/), train.py's samples.jsonl, best-of-N's <id>.json, a
    dataset folder's metadata.jsonl / metadata.csv (file_name, text), or the clip's <id>.codes.json."""
    folder = Path(folder).resolve()
    texts = _texts_beside(folder)
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file())
    return [
        Clip(system, path.stem, path, texts.get(path.name) or _best_of_n_text(path) or clip_text(path))
        for path in files
    ]


def _texts_beside(folder: Path) -> dict[str, str]:
    """File name -> text, from the lists the project writes next to (or above) its clips."""
    texts: dict[str, str] = {}
    evaluation = folder.parent.parent / "clips.jsonl"
    if folder.parent.name == "audio" and evaluation.is_file():
        for record in _jsonl(evaluation):
            if record.get("system") == folder.name and record.get("audio") and record.get("text"):
                texts[Path(record["audio"]).name] = record["text"]
    if (folder / "samples.jsonl").is_file():
        texts.update(
            {r["file"]: r["text"] for r in _jsonl(folder / "samples.jsonl") if r.get("file") and r.get("text")}
        )
    if (folder / "metadata.jsonl").is_file():
        for record in _jsonl(folder / "metadata.jsonl"):
            if record.get("file_name") and record.get("text"):
                texts[Path(record["file_name"]).name] = record["text"]
    if (folder / "metadata.csv").is_file():
        with open(folder / "metadata.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("file_name") and row.get("text"):
                    texts[Path(row["file_name"]).name] = row["text"]
    return texts


def _jsonl(path: Path) -> Iterable[dict]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number} is not valid JSON ({e}): fix or remove that line.") from e
            if isinstance(record, dict):
                yield record


def _best_of_n_text(path: Path) -> str | None:
    """inference.py's best-of-N writes <id>.json beside <id>.wav, holding the text."""
    scores = path.with_suffix(".json")
    if not scores.is_file():
        return None
    try:
        record = json.loads(scores.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record.get("text") if isinstance(record, dict) and isinstance(record.get("text"), str) else None


def text_key(text: str) -> str:
    """Texts that differ only in case or spacing name the same item."""
    return " ".join(text.split()).casefold()


def pair_clips(clips: dict[str, list[Clip]], by: str = "auto") -> Pairing:
    """Every pair of systems that spoke the same item: the same text (the n-th clip of a text in one system with the
    n-th in another, as a training step repeats a prompt over its group), else the same file stem."""
    if by not in PAIR_BY:
        raise ValueError(f"Pair by one of {PAIR_BY}, got {by!r}.")
    everything = [clip for system_clips in clips.values() for clip in system_clips]
    if by == "auto":
        by = "text" if everything and all(clip.text for clip in everything) else "id"
    if by == "text":
        untexted = [clip for clip in everything if not clip.text]
        if untexted:
            raise ValueError(
                f"{len(untexted)} clip(s) have no known text (e.g. {untexted[0].path}): pair by id, or put a "
                "metadata.csv (file_name,text) beside them."
            )
    items: dict[tuple, dict[str, Clip]] = {}
    for system, system_clips in clips.items():
        seen: dict[str, int] = {}
        for clip in system_clips:
            name = text_key(clip.text) if by == "text" else clip.stem
            occurrence = seen[name] = seen.get(name, -1) + 1
            items.setdefault((name, occurrence), {})[system] = clip
    pairs, unpaired = [], []
    for by_system in items.values():
        if len(by_system) < 2:
            unpaired += by_system.values()
        pairs += itertools.combinations(by_system.values(), 2)
    return Pairing(pairs=pairs, by=by, unpaired=unpaired)


def identical_notes(pairs: list[tuple[Clip, Clip]]) -> list[str]:
    """A note per two systems some of whose paired clips are identical files."""
    by_systems = defaultdict(list)
    for a, b in pairs:
        by_systems[a.system, b.system].append((a.path, b.path))
    notes = [identical_clips_note(a, b, count_identical(paths), len(paths)) for (a, b), paths in by_systems.items()]
    return [note for note in notes if note]
