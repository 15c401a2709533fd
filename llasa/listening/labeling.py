"""Machine judgments: pairs labelled by a scoring function (e.g. the Whisper reward) into the preference store."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from llasa.listening.store import MACHINE_PREFIX, PreferenceStore

logger = logging.getLogger(__name__)

# A scorer takes 16 kHz waveforms and their texts and returns one score per clip (higher is better, None: cannot).
Scorer = Callable[[list[np.ndarray], list[str | None]], Sequence[float | None]]
SCORE_CHUNK = 32  # clips scored at once


@dataclass(frozen=True)
class Labelled:
    new: int  # judgments written
    already: int  # pairs this rater had judged before
    unscored: int  # pairs left out because a clip could not be scored (or read)


def machine_rater(name: str) -> str:
    """ai:<name>, the rater a scorer's judgments are stored under."""
    return name if name.startswith(MACHINE_PREFIX) else f"{MACHINE_PREFIX}{name}"


def label_pairs(
    store: PreferenceStore, score: Scorer, rater: str, load: Callable[[str], np.ndarray], margin: float = 0.0
) -> Labelled:
    """Judge every pair `rater` has not judged: the clip with the higher score wins, "same" within `margin`.

    Each clip is loaded and scored once, `SCORE_CHUNK` at a time. A pair with a clip that cannot be read or scored is
    skipped and counted, never guessed. The scores go into each judgment's detail.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}.")
    rater = machine_rater(rater)
    judged = store.judged_pairs(rater)
    pairs = [pair for pair in store.pairs() if pair["pair_id"] not in judged]
    clips = {}
    for pair in pairs:
        for side in ("a", "b"):
            clips.setdefault(pair[f"clip_{side}"], (pair[f"path_{side}"], pair["text"]))
    scores = _score_clips(clips, score, load)
    new = unscored = 0
    for pair in pairs:
        first, second = scores.get(pair["clip_a"]), scores.get(pair["clip_b"])
        if first is None or second is None:
            unscored += 1
            continue
        choice = "same" if abs(first - second) <= margin else ("a" if first > second else "b")
        detail = {"score_a": first, "score_b": second, "margin": margin}
        new += store.record(
            rater, pair["pair_id"], pair["clip_a"], pair["clip_b"], choice, kind="machine", detail=detail
        )
    if unscored:
        logger.warning(
            "%d of %d pairs have a clip that could not be read or scored: left unlabelled.", unscored, len(pairs)
        )
    return Labelled(new=new, already=len(judged), unscored=unscored)


def _score_clips(clips: dict[str, tuple[str, str | None]], score: Scorer, load) -> dict[str, float | None]:
    scores: dict[str, float | None] = {}
    ids = list(clips)
    for start in range(0, len(ids), SCORE_CHUNK):
        chunk = ids[start : start + SCORE_CHUNK]
        audio = {}
        for clip_id in chunk:
            try:
                audio[clip_id] = load(clips[clip_id][0])
            except (OSError, RuntimeError) as e:
                logger.warning("%s", e)
        readable = list(audio)
        if readable:
            values = score([audio[i] for i in readable], [clips[i][1] for i in readable])
            scores.update(zip(readable, (None if v is None else float(v) for v in values), strict=True))
    return scores
