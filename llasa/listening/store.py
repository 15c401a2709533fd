"""The preference store: one SQLite file (WAL) of registered clips, pairs and one row per judgment, never lost."""

import hashlib
import json
import re
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from llasa.listening.clips import Pairing

CHOICES = ("a", "b", "same")  # as shown: the clip played first (A), the second (B), or no preference
TAGS = ("pronunciation", "prosody", "voice", "noise")  # why, optionally
KINDS = ("human", "machine")
MACHINE_PREFIX = "ai:"  # machine raters are named ai:<scorer>; human names cannot hold a colon
HUMAN_RATER = re.compile(r"[\w .@+-]{1,64}")
CLIP_ID = re.compile(r"[A-Za-z0-9_-]{16}")  # what the browser sees of a clip: random, never a path
MAX_SQLITE_INTEGER = 2**63 - 1  # what an INTEGER column holds
BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another's transaction before failing

SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    clip_id TEXT PRIMARY KEY,
    system TEXT NOT NULL,
    stem TEXT NOT NULL,
    path TEXT NOT NULL,
    text TEXT,
    UNIQUE (system, path)
);
CREATE TABLE IF NOT EXISTS pairs (
    pair_id INTEGER PRIMARY KEY,
    clip_a TEXT NOT NULL REFERENCES clips (clip_id),
    clip_b TEXT NOT NULL REFERENCES clips (clip_id),
    text TEXT,
    UNIQUE (clip_a, clip_b)
);
CREATE TABLE IF NOT EXISTS judgments (
    judgment_id INTEGER PRIMARY KEY,
    rater TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('human', 'machine')),
    pair_id INTEGER NOT NULL REFERENCES pairs (pair_id),
    shown_a TEXT NOT NULL REFERENCES clips (clip_id),
    shown_b TEXT NOT NULL REFERENCES clips (clip_id),
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'same')),
    tags TEXT NOT NULL DEFAULT '[]',
    detail TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (rater, pair_id)
);
"""


STORE_TABLES = {"clips", "pairs", "judgments"}


@dataclass(frozen=True)
class Presentation:
    """A pair as one rater hears it: which clip plays as A and which as B (by opaque id), and the text."""

    pair_id: int
    a: str
    b: str
    text: str | None


@dataclass(frozen=True)
class Registered:
    new_clips: int
    new_pairs: int
    total_pairs: int


def check_rater(rater: str, kind: str = "human") -> str:
    """A rater name, checked: humans get letters, digits, spaces and . @ + - _; machines are ai:<name>."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if kind == "machine":
        if not (isinstance(rater, str) and rater.startswith(MACHINE_PREFIX) and len(rater) > len(MACHINE_PREFIX)):
            raise ValueError(f"A machine rater is named {MACHINE_PREFIX}<name>, got {rater!r}.")
        return rater
    if not (isinstance(rater, str) and HUMAN_RATER.fullmatch(rater.strip())):
        raise ValueError(
            f"A rater name is 1-64 letters, digits, spaces or . @ + - _ (no colon: ai: names machines), got {rater!r}."
        )
    return rater.strip()


def check_judgment_fields(pair_id, shown_a, shown_b, choice, tags) -> None:
    """A judgment's fields of the right types (as a web request may not send them), each named when wrong."""
    if isinstance(pair_id, bool) or not isinstance(pair_id, int) or not 0 < pair_id <= MAX_SQLITE_INTEGER:
        raise ValueError(f"pair_id must be a positive integer, got {str(pair_id)[:40]!r}.")
    for name, clip_id in (("a", shown_a), ("b", shown_b)):
        if not isinstance(clip_id, str):
            raise ValueError(f"{name} must be a clip id (a string), got {str(clip_id)[:40]!r}.")
    if not isinstance(choice, str) or choice not in CHOICES:
        raise ValueError(f"choice must be one of {CHOICES}, got {str(choice)[:40]!r}.")
    if not isinstance(tags, list | tuple) or not all(isinstance(tag, str) for tag in tags):
        raise ValueError(f"tags must be a list of {list(TAGS)}, got {str(tags)[:60]!r}.")


class PreferenceStore:
    """The SQLite file behind a listening test. Every call opens its own connection, so threads, processes and
    several raters can share one file; a judgment is committed (WAL, synchronous=FULL) before `record` returns."""

    def __init__(self, path, create: bool = True):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise ValueError(f"{self.path} is not a file: give the path of a .sqlite file for --db.")
        if not create and not self.path.exists():
            raise FileNotFoundError(f"No store at {self.path}: pairs are registered by `listen.py pairs` or `serve`.")
        if self.path.exists() and self.path.stat().st_size > 0:
            self._check_is_store()  # another program's database is read, never changed
            return
        if not create:
            raise ValueError(f"{self.path} is an empty file, not a listening-test store.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _check_is_store(self) -> None:
        try:
            with self._connect() as db:
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            raise ValueError(
                f"{self.path} is not a listening-test store ({e}): give a new or existing .sqlite file."
            ) from e
        if not STORE_TABLES <= tables:
            raise ValueError(
                f"{self.path} is not a listening-test store but another database (tables: "
                f"{', '.join(sorted(tables)) or 'none'}), left as it is: give a new .sqlite file for --db."
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")  # a committed judgment survives a power cut, not only a killed server
        db.execute("PRAGMA foreign_keys=ON")
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- clips and pairs

    def register(self, pairing: Pairing) -> Registered:
        """Add the pairing's clips and pairs; those already registered keep their ids (registering is idempotent)."""
        with self._transaction() as db:
            before = _count(db, "clips"), _count(db, "pairs")
            for a, b in pairing.pairs:
                ids = [self._clip_id(db, clip) for clip in (a, b)]
                db.execute(
                    "INSERT OR IGNORE INTO pairs (clip_a, clip_b, text) VALUES (?, ?, ?)", (*ids, a.text or b.text)
                )
            after = _count(db, "clips"), _count(db, "pairs")
        return Registered(new_clips=after[0] - before[0], new_pairs=after[1] - before[1], total_pairs=after[1])

    @staticmethod
    def _clip_id(db: sqlite3.Connection, clip) -> str:
        row = db.execute("SELECT clip_id FROM clips WHERE system = ? AND path = ?", (clip.system, str(clip.path)))
        found = row.fetchone()
        if found:
            return found["clip_id"]
        clip_id = secrets.token_urlsafe(12)  # 16 characters of [A-Za-z0-9_-]
        db.execute(
            "INSERT INTO clips (clip_id, system, stem, path, text) VALUES (?, ?, ?, ?, ?)",
            (clip_id, clip.system, clip.stem, str(clip.path), clip.text),
        )
        return clip_id

    def clip_path(self, clip_id: str) -> Path | None:
        """The file of a registered clip; None for anything else (the only way from a request to a file)."""
        if not isinstance(clip_id, str) or not CLIP_ID.fullmatch(clip_id):
            return None
        with self._connect() as db:
            row = db.execute("SELECT path FROM clips WHERE clip_id = ?", (clip_id,)).fetchone()
        return None if row is None else Path(row["path"])

    def pair_count(self) -> int:
        with self._connect() as db:
            return _count(db, "pairs")

    def pairs(self) -> list[dict]:
        """Every pair with both clips' systems, paths and texts."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT p.pair_id, p.text, p.clip_a, p.clip_b, a.system AS system_a, b.system AS system_b, "
                "a.path AS path_a, b.path AS path_b FROM pairs p JOIN clips a ON a.clip_id = p.clip_a "
                "JOIN clips b ON b.clip_id = p.clip_b ORDER BY p.pair_id"
            ).fetchall()
        return [dict(row) for row in rows]

    # --- judgments

    def next_pair(self, rater: str) -> Presentation | None:
        """A pair this rater has not judged, in random order and sides; None when they have judged them all.

        The pairs fewest people have judged come first (coverage), the rest in an order fixed per rater, so raters
        who start together spread out and the same rater resumes where the order left off.
        """
        rater = check_rater(rater)
        with self._connect() as db:
            rows = db.execute(
                "SELECT p.pair_id, p.clip_a, p.clip_b, p.text, "
                "(SELECT COUNT(*) FROM judgments j WHERE j.pair_id = p.pair_id AND j.kind = 'human') AS n_judged "
                "FROM pairs p WHERE p.pair_id NOT IN (SELECT pair_id FROM judgments WHERE rater = ?)",
                (rater,),
            ).fetchall()
        if not rows:
            return None
        row = min(rows, key=lambda r: (r["n_judged"], _rater_order(rater, r["pair_id"])))
        a, b = (row["clip_a"], row["clip_b"]) if secrets.randbelow(2) else (row["clip_b"], row["clip_a"])
        return Presentation(pair_id=row["pair_id"], a=a, b=b, text=row["text"])

    def record(
        self,
        rater: str,
        pair_id: int,
        shown_a: str,
        shown_b: str,
        choice: str,
        tags=(),
        *,
        kind: str = "human",
        detail: dict | None = None,
    ) -> bool:
        """Commit one judgment; True if new, False if this rater had already judged the pair (a resent click:
        the first judgment is kept). Raises ValueError on anything inconsistent with the registered pair."""
        rater = check_rater(rater, kind)
        check_judgment_fields(pair_id, shown_a, shown_b, choice, tags)
        tags = list(dict.fromkeys(tags))
        unknown = [tag for tag in tags if tag not in TAGS]
        if unknown:
            raise ValueError(f"Unknown tag(s) {unknown}: use {list(TAGS)}.")
        with self._transaction() as db:
            pair = db.execute("SELECT clip_a, clip_b FROM pairs WHERE pair_id = ?", (pair_id,)).fetchone()
            if pair is None:
                raise ValueError(f"No pair {pair_id!r} is registered.")
            if {shown_a, shown_b} != {pair["clip_a"], pair["clip_b"]} or shown_a == shown_b:
                raise ValueError(f"The clips shown ({shown_a}, {shown_b}) are not pair {pair_id}'s.")
            cursor = db.execute(
                "INSERT OR IGNORE INTO judgments (rater, kind, pair_id, shown_a, shown_b, choice, tags, detail, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rater,
                    kind,
                    pair_id,
                    shown_a,
                    shown_b,
                    choice,
                    json.dumps(tags),
                    None if detail is None else json.dumps(detail),
                    datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                ),
            )
            return cursor.rowcount == 1

    def progress(self, rater: str) -> tuple[int, int]:
        """(pairs this rater has judged, pairs registered)."""
        with self._connect() as db:
            done = db.execute("SELECT COUNT(*) FROM judgments WHERE rater = ?", (rater,)).fetchone()[0]
            return done, _count(db, "pairs")

    def judged_pairs(self, rater: str) -> set[int]:
        with self._connect() as db:
            rows = db.execute("SELECT pair_id FROM judgments WHERE rater = ?", (rater,)).fetchall()
        return {row["pair_id"] for row in rows}

    def judgments(self, kinds: tuple[str, ...] = KINDS) -> list[dict]:
        """Every judgment with its pair's systems, paths and text; `winner`/`loser` are systems (None for "same"),
        `winner_clip` the preferred clip's id. In the order they were made."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT j.judgment_id, j.rater, j.kind, j.pair_id, p.text, p.clip_a, p.clip_b, "
                "a.system AS system_a, b.system AS system_b, a.path AS path_a, b.path AS path_b, "
                "j.shown_a, j.shown_b, j.choice, j.tags, j.detail, j.created_at "
                "FROM judgments j JOIN pairs p ON p.pair_id = j.pair_id "
                "JOIN clips a ON a.clip_id = p.clip_a JOIN clips b ON b.clip_id = p.clip_b "
                f"WHERE j.kind IN ({','.join('?' * len(kinds))}) ORDER BY j.judgment_id",
                kinds,
            ).fetchall()
        return [_judgment_record(dict(row)) for row in rows]


def _count(db: sqlite3.Connection, table: str) -> int:
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def _rater_order(rater: str, pair_id: int) -> bytes:
    return hashlib.blake2b(f"{rater}\0{pair_id}".encode(), digest_size=8).digest()


def _judgment_record(row: dict) -> dict:
    systems = {row["clip_a"]: row["system_a"], row["clip_b"]: row["system_b"]}
    shown = {"a": row["shown_a"], "b": row["shown_b"]}
    winner_clip = shown.get(row["choice"])
    loser_clip = None if winner_clip is None else shown["b" if row["choice"] == "a" else "a"]
    row.update(
        tags=json.loads(row["tags"]),
        detail=None if row["detail"] is None else json.loads(row["detail"]),
        shown_first=systems[row["shown_a"]],
        winner_clip=winner_clip,
        winner=None if winner_clip is None else systems[winner_clip],
        loser=None if loser_clip is None else systems[loser_clip],
    )
    return row
