"""Listening judgments as preference data: one row per decided pair, Llasa's prompt and the two clips' own speech
tokens as `chosen` and `rejected` (TRL's preference format with an explicit prompt), for train_dpo.py.

The prompt is Llasa's chat (`llasa.format.build_messages`, voice prompt included) ending in the opened assistant
turn, as GRPO's prompts do; `chosen`/`rejected` are the completions that continue it: speech tokens, then
<|SPEECH_GENERATION_END|>. The codes are those written beside each clip (llasa.clip_codes); a clip without them is
encoded with the codec. A pair every judgment called "same" (a tie), or judged both ways (inconsistent), is left
out and counted, as are pairs whose clips were asked for differently (another voice prompt) or whose text is unknown.
"""

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from llasa.clip_codes import ClipCodes, read_clip_codes
from llasa.format import completion_text

logger = logging.getLogger(__name__)

# Clip paths -> (codes, samples) per clip, from the audio (the codec's encoder); None where a clip cannot be read.
Encoder = Callable[[list[str]], list[tuple[list[int], int] | None]]


LEFT_OUT = {
    "tie": "ties (every judgment 'same')",
    "inconsistent": "judged both ways",
    "different_prompts": "clips asked for differently (another voice prompt or text)",
    "no_text": "text unknown",
    "unreadable": "a clip that could not be encoded",
}


@dataclass
class PreferenceData:
    """The rows, and the pairs left out by reason (LEFT_OUT's keys)."""

    rows: list[dict] = field(default_factory=list)
    pairs: int = 0  # pairs with at least one judgment
    left_out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEFT_OUT, 0))
    encoded: int = 0  # clips encoded with the codec (no codes beside them)

    def report(self) -> str:
        reasons = ", ".join(f"{self.left_out[key]} {what}" for key, what in LEFT_OUT.items())
        return (
            f"{len(self.rows)} preference pairs from {self.pairs} judged pairs ({self.encoded} clips encoded); "
            f"left out: {reasons}"
        )


@dataclass(frozen=True)
class Decided:
    pair_id: int
    text: str | None
    winner: dict  # {"clip", "system", "path"}
    loser: dict
    votes: int  # judgments for the winner
    raters: list[str]


def decide_pairs(judgments: list[dict]) -> tuple[list[Decided], PreferenceData]:
    """Each pair's winner over its judgments (from PreferenceStore.judgments): the clip some judgment preferred and
    none rejected; the ties and inconsistent pairs are counted in the PreferenceData that comes with them."""
    by_pair = defaultdict(list)
    for judgment in judgments:
        by_pair[judgment["pair_id"]].append(judgment)
    decided, data = [], PreferenceData(pairs=len(by_pair))
    for pair_id, pair_judgments in by_pair.items():
        winners = [j["winner_clip"] for j in pair_judgments if j["winner_clip"] is not None]
        if not winners or len(set(winners)) > 1:
            data.left_out["inconsistent" if winners else "tie"] += 1
            continue
        first = pair_judgments[0]
        clips = {
            first["clip_a"]: {"clip": first["clip_a"], "system": first["system_a"], "path": first["path_a"]},
            first["clip_b"]: {"clip": first["clip_b"], "system": first["system_b"], "path": first["path_b"]},
        }
        winner = winners[0]
        loser = next(clip for clip in clips if clip != winner)
        raters = sorted({j["rater"] for j in pair_judgments})
        decided.append(Decided(pair_id, first["text"], clips[winner], clips[loser], len(winners), raters))
    return decided, data


def clips_to_encode(decided: list[Decided]) -> list[str]:
    """The clips of decided pairs, of a known text, with no usable codes file beside them: the codec encodes them."""
    paths = {side["path"] for pair in decided if pair.text for side in (pair.winner, pair.loser)}
    return sorted(path for path in paths if read_clip_codes(path) is None)


def preference_rows(judgments: list[dict], encode: Encoder | None = None) -> PreferenceData:
    """The DPO rows of the judgments. Clips without codes beside them are encoded with `encode`; without one, a
    ValueError names the first such clip."""
    decided, data = decide_pairs(judgments)
    missing = clips_to_encode(decided)
    if missing and encode is None:
        raise ValueError(
            f"{len(missing)} clips have no speech codes beside them (e.g. {missing[0]}): pass --codec_id to encode them."
        )
    encoded = dict(zip(missing, encode(missing), strict=True)) if missing else {}
    data.encoded = sum(value is not None for value in encoded.values())
    for pair in decided:
        sides = [_clip_codes(side["path"], pair.text, encoded) for side in (pair.winner, pair.loser)]
        problem = next((side for side in sides if isinstance(side, str)), None)
        if problem is None and sides[0].prompt != sides[1].prompt:
            problem = "different_prompts"
        if problem is not None:
            data.left_out[problem] += 1
            continue
        chosen, rejected = sides
        data.rows.append(
            {
                "prompt": chosen.prompt,
                "chosen": completion_text(chosen.codes),
                "rejected": completion_text(rejected.codes),
                "text": chosen.text,
                "pair_id": pair.pair_id,
                "chosen_system": pair.winner["system"],
                "rejected_system": pair.loser["system"],
                "chosen_audio": pair.winner["path"],
                "rejected_audio": pair.loser["path"],
                "votes": pair.votes,
                "raters": pair.raters,
            }
        )
    return data


def _clip_codes(path: str, text: str | None, encoded: dict) -> ClipCodes | str:
    """The clip's codes and prompt: written beside it, else encoded for the pair's text; else why not (a LEFT_OUT
    key)."""
    written = read_clip_codes(path)
    if written is not None:
        return written
    if not text:
        return "no_text"
    if encoded.get(path) is None:
        return "unreadable"
    codes, samples = encoded[path]
    return ClipCodes.for_text(text, codes, samples)


def codec_encoder(codec_loader: Callable[[], object]) -> Encoder:
    """An Encoder over the codec `codec_loader()` returns (called only when a clip needs encoding)."""
    from llasa.audio import SAMPLE_RATE, load_audio

    def encode(paths: list[str]) -> list[tuple[list[int], int] | None]:
        waveforms = {}
        for path in paths:
            try:
                waveforms[path] = load_audio(path, SAMPLE_RATE)
            except (OSError, RuntimeError) as e:
                logger.warning("%s", e)
        codec = codec_loader()
        codes = dict(zip(waveforms, codec.encode(list(waveforms.values())), strict=True)) if waveforms else {}
        return [(codes[path], len(waveforms[path])) if path in codes else None for path in paths]

    return encode
