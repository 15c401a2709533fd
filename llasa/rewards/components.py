"""The reward's component framework: what a component sees (`ScoringBatch`), returns (`ComponentResult`), the
registry that reward configs name components from, and the rules that combine their scores.

A component is a frozen dataclass whose fields are its JSON parameters (checked in `__post_init__`), registered under
a name with `@register_component("name")`. It sees one `ScoringBatch` (generated audio at 16 kHz, reference texts,
Whisper's transcripts and NLL when it sets `needs_asr`, the other dataset columns) and returns a score in [0, 1] or
None per clip, plus raw metrics to log. Where a component returns None for a row, that row's reward combines the
components that did score it, with their weights; a row no component scores gets None.
"""

import hashlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

from llasa.audio import SAMPLE_RATE
from llasa.format import TOKENS_PER_SECOND, codes_from
from llasa.numbers import is_number

logger = logging.getLogger(__name__)

COMBINE_RULES = ("harmonic", "sum", "gated")


@dataclass(frozen=True)
class Gate:
    """The "gated" rule's parameters (the reward config's "gate"): the error-rate component gates the others.

    Where the wer component's ERR (WER or CER) is above `threshold`, the reward is `scale` times the weighted harmonic
    mean of the intelligibility components, times the weighted harmonic mean of the others (1 where there are none):
    prosody, voice or quality earn nothing for speech Whisper cannot follow (their factor is at most 1), but each of
    their failures costs in proportion, so clips Whisper cannot follow (a language it hears poorly) are still ranked
    by their prosody. At or below it (or where ERR could not be measured), every component combines by the harmonic
    mean.
    """

    threshold: float = 0.3  # ERR above which the other components are ignored (a clip counts as collapsed)
    scale: float = 0.5  # factor of the gated reward, in [0, 1]: a failed clip stays below an intelligible one
    components: tuple[str, ...] = ("wer", "nll")  # the intelligibility part

    def __post_init__(self):
        for key in ("threshold", "scale"):
            value = getattr(self, key)
            if not is_number(value) or value < 0:
                raise ValueError(f"The gate's {key} must be a number >= 0, got {value!r}.")
        if self.scale > 1:
            raise ValueError(f"The gate's scale must be in [0, 1], got {self.scale!r}.")
        if isinstance(self.components, str) or not self.components:
            raise ValueError('The gate\'s components must be a list of component names, e.g. ["wer", "nll"].')
        object.__setattr__(self, "components", tuple(self.components))

    def is_closed(self, error: float | None) -> bool:
        return error is not None and error > self.threshold


def combine_scores(
    scores: Sequence[float | None],
    weights: Sequence[float],
    rule: str,
    *,
    names: Sequence[str] | None = None,
    error: float | None = None,
    gate: Gate | None = None,
) -> float | None:
    """Weighted harmonic mean ("harmonic"), weighted mean ("sum") or gated harmonic mean ("gated") of the scores that
    are not None, in [0, 1].

    Components that returned None (and weight-0 components) are left out and the others keep their weights; with
    none left the result is None. In the harmonic mean one score of 0 makes the result 0. "gated" needs the
    components' `names`, the clip's raw `error` (ERR) and the `gate` (see `Gate`).
    """
    if rule not in COMBINE_RULES:
        raise ValueError(f"Unknown combine rule {rule!r}: use one of {list(COMBINE_RULES)}.")
    if rule == "gated":
        if names is None:
            raise ValueError('The "gated" rule needs the components\' names.')
        gate = Gate() if gate is None else gate
        if not gate.is_closed(error):
            return combine_scores(scores, weights, "harmonic")
        gated = [name in gate.components for name in names]
        intelligibility = combine_scores(
            [score if inside else None for score, inside in zip(scores, gated, strict=True)], weights, "harmonic"
        )
        if intelligibility is None:
            return None
        # The other components earn nothing here (a factor of at most 1), but every failure takes away in proportion:
        # a silent tail, a monotone or random jitter under the gate scores below the same clip without it. (Taking
        # the lower of the two means instead let any failure milder than the clip's intelligibility cost nothing.)
        others = [None if inside else score for score, inside in zip(scores, gated, strict=True)]
        rest = combine_scores(others, weights, "harmonic")
        return gate.scale * intelligibility * (1.0 if rest is None else rest)
    pairs = [
        (weight, score) for score, weight in zip(scores, weights, strict=True) if score is not None and weight > 0
    ]
    if not pairs:
        return None
    total = sum(weight for weight, _ in pairs)
    if rule == "harmonic":
        if any(score <= 0 for _, score in pairs):
            return 0.0
        combined = total / sum(weight / score for weight, score in pairs)
    else:
        combined = sum(weight * score for weight, score in pairs) / total
    return min(max(combined, 0.0), 1.0)


def reference_key(value) -> tuple | None:
    """How a reference is named in a dataset column: ("codes", hash, codes) for XCodec2 codes (a list of ints or a
    string of speech tokens), ("path", path, path) for an audio file, None where there is none."""
    if value is None:
        return None
    if isinstance(value, os.PathLike) or (isinstance(value, str) and not value.lstrip().startswith("<|")):
        path = os.fspath(value)
        return ("path", path, path) if path.strip() else None
    codes = codes_from(value, "A reference column (XCodec2 codes, a speech-token string or an audio file path)")
    if not codes:
        return None
    return ("codes", hashlib.blake2b(np.asarray(codes, dtype=np.int64).tobytes(), digest_size=16).digest(), codes)


class ReferenceAudio:
    """The reference waveforms of one reward call, by dataset column value, each decoded or loaded once.

    GRPO repeats each prompt's row over its group, so the same reference codes come num_generations times: they are
    keyed by a hash, and the new distinct ones a component asks for are decoded together, in one codec call.
    """

    def __init__(self, decode: Callable[[list[list[int]]], list[np.ndarray | None]] | None = None):
        self._decode = decode  # codes -> 16 kHz waveforms (the reward's codec); None: codes cannot be read
        self._waveforms: dict[tuple, np.ndarray | None] = {}

    def waveforms(self, values: Sequence) -> list[np.ndarray | None]:
        """16 kHz mono float32 waveforms of column values (None where a value is None or empty)."""
        from llasa.audio import load_audio

        keys = [reference_key(value) for value in values]
        new = {key[:2]: key[2] for key in keys if key is not None and key[:2] not in self._waveforms}
        codes = {name: payload for name, payload in new.items() if name[0] == "codes"}
        if codes:
            if self._decode is None:
                raise ValueError("Reference codes need the reward's codec to decode them; none was given.")
            self._waveforms.update(zip(codes, self._decode(list(codes.values())), strict=True))
        for name, path in new.items():
            if name[0] == "path":
                try:
                    self._waveforms[name] = load_audio(path, SAMPLE_RATE)
                except (OSError, RuntimeError) as e:  # missing or corrupt: its rows have no reference, as if empty
                    logger.warning("Leaving out the reference audio %s: %s", path, e)
                    self._waveforms[name] = None
        return [None if key is None else self._waveforms[key[:2]] for key in keys]

    def durations(self, values: Sequence) -> list[float | None]:
        """Seconds of each reference: counted from its codes (no decoding), or its audio file's length."""
        seconds = []
        for value in values:
            key = reference_key(value)
            if key is None:
                seconds.append(None)
            elif key[0] == "codes":
                seconds.append(len(key[2]) / TOKENS_PER_SECOND)
            else:
                waveform = self.waveforms([value])[0]
                seconds.append(None if waveform is None else len(waveform) / SAMPLE_RATE)
        return seconds


@dataclass(frozen=True)
class ScoringBatch:
    """What a component sees: the rows of one batch that have speech to score."""

    audio: list[np.ndarray]  # generated speech, 16 kHz mono float32, full length (not cut to 30 s)
    texts: list[str]  # reference texts (the dataset's text column), never empty
    columns: dict[str, list]  # the other dataset columns for these rows, e.g. a reference duration or prompt codes
    language: str  # the config's language code
    transcripts: list[str] | None = None  # Whisper's greedy transcripts (set when a component needs ASR)
    nll: list[float] | None = None  # NLL of each reference text (set when a component needs ASR)
    sample_rate: int = SAMPLE_RATE  # of `audio`
    references: ReferenceAudio = field(default_factory=ReferenceAudio)  # reads reference audio named by columns
    speech: list | None = None  # silero-vad's SpeechActivity of each clip (set when the reward's "vad" is on)
    recognize: Callable[[list[np.ndarray]], list[str]] | None = None  # Whisper's transcripts of other clips (with ASR)

    def first_values(self, names: Sequence[str]) -> list:
        """Per row, the value of the first of the `names` columns that has one (not None, not empty); else None."""
        values = []
        for row in range(len(self.audio)):
            candidates = (self.columns[name][row] for name in names if name in self.columns)
            values.append(next((value for value in candidates if _has_value(value)), None))
        return values


def _has_value(value) -> bool:
    if value is None:
        return False
    if isinstance(value, str | list | tuple | np.ndarray):
        return len(value) > 0
    return not (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class ComponentResult:
    """A component's verdict on a batch: one score in [0, 1] or None per row, and raw metrics to log per row.

    `missing` flags the rows whose input (a dataset column) the component did not get: their score is None, the
    reward logs their share as `<component>/missing` and warns once per call.
    """

    scores: list[float | None]
    metrics: dict[str, list[float | None]] = field(default_factory=dict)
    missing: list[bool] | None = None


def build_dataclass(cls, params: dict, what: str):
    """`cls(**params)`, refusing unknown names with the list of valid ones."""
    if not isinstance(params, dict):
        raise ValueError(f"The parameters of {what} must be a JSON object, got {params!r}.")
    check_known_parameters(params, [f.name for f in fields(cls) if f.init], what)
    return cls(**params)


def check_known_parameters(params: dict, valid: list[str], what: str) -> None:
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"Unknown parameter(s) {unknown} for {what}: valid ones are {valid}.")


class RewardComponent:
    """Base of reward components: frozen dataclasses whose fields are their JSON parameters (checked in
    `__post_init__`). `score` sees one `ScoringBatch`; set `needs_asr` to receive Whisper's transcripts and NLL."""

    needs_asr: ClassVar[bool] = False

    @classmethod
    def from_params(cls, params: dict, name: str) -> "RewardComponent":
        """Build from the config's parameters (without "weight"); override to wrap another scorer."""
        return build_dataclass(cls, params, f"the component {name!r}")

    def score(self, batch: ScoringBatch) -> ComponentResult:
        raise NotImplementedError

    def input_columns(self) -> tuple[str, ...]:
        """The dataset columns the component reads (named in the warning about rows missing them)."""
        return ()

    def load_models(self) -> None:
        """Load the component's own models now, before the first step (the reward calls it outside ZeRO-3)."""


COMPONENTS: dict[str, type[RewardComponent]] = {}

# Components that were dropped, with what replaces them: a config that still names one is told what to write.
RETIRED_COMPONENTS = {
    "pitch": 'use "intonation" instead, which scores the F0 contour\'s shape rather than its pYIN spread (noise '
    'widened that spread, and any large spread passed as lively); for pYIN\'s contour give it "estimator": "pyin", '
    'e.g. "intonation": {"weight": 0.1, "estimator": "pyin"}',
}


def register_component(name: str):
    """Class decorator: make a `RewardComponent` available to reward configs under `name`."""

    def register(cls):
        if name in COMPONENTS:
            raise ValueError(f"A reward component named {name!r} is already registered ({COMPONENTS[name].__name__}).")
        COMPONENTS[name] = cls
        return cls

    return register


def build_component(name: str, params: dict) -> tuple[RewardComponent, float]:
    """The component `name` and its weight from the config's `{"weight": w, **params}`."""
    if name in RETIRED_COMPONENTS:
        raise ValueError(f"The reward component {name!r} was removed: {RETIRED_COMPONENTS[name]}.")
    if name not in COMPONENTS:
        raise ValueError(f"Unknown reward component {name!r}: registered ones are {sorted(COMPONENTS)}.")
    if not isinstance(params, dict) or "weight" not in params:
        raise ValueError(f"The component {name!r} needs a JSON object with a 'weight', e.g. {{\"weight\": 1.0}}.")
    params = dict(params)
    weight = params.pop("weight")
    if not is_number(weight) or weight < 0:
        raise ValueError(f"The weight of the component {name!r} must be a number >= 0, got {weight!r}.")
    return COMPONENTS[name].from_params(params, name), float(weight)
