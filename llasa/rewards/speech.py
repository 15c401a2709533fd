"""Speaking rate, voice and quality components: duration, speaker_similarity and quality, each around one of
llasa.scores' scorers (intonation and pauses are in llasa.rewards.prosody).

Column contract. TRL passes every dataset column to the reward as a keyword list (one value per completion). The
components read:
- `duration` (float, seconds): the reference recording's length, as create_dataset.py writes it;
- `audio_code_ids` (list of ints): the reference recording's XCodec2 codes, decoded once per distinct reference per
  call (GRPO repeats each reference over its group) for the reference intonation, timing and voice;
- `prompt_code_ids` (list of ints): the voice prompt's codes in voice-cloning GRPO; speaker_similarity prefers this
  voice to the reference recording;
- `prompt_audio`, `reference_audio` (audio file paths): the voice prompt and the reference recording as files.
A code column may also hold a speech-token string; any reference column may hold a path. Which columns a component
reads, in order of preference, is its "duration_column", "reference_columns" or "voice_columns" parameter. A row
without its component's input gets None from it, logged as "<component>/missing".
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

from llasa.format import (
    CODES_COLUMN,
    DURATION_COLUMN,
    REFERENCE_AUDIO_COLUMN,
    VOICE_AUDIO_COLUMN,
    VOICE_CODES_COLUMN,
)
from llasa.numbers import is_number
from llasa.rewards.components import (
    ComponentResult,
    RewardComponent,
    ScoringBatch,
    check_known_parameters,
    register_component,
)
from llasa.scores import (
    DNSMOS_METRICS,
    DnsmosScorer,
    DurationScorer,
    SpeakerSimilarityScorer,
    estimate_speaking_rate,
)
from llasa.text import DEFAULT_CHARS_PER_SECOND

logger = logging.getLogger(__name__)

REFERENCE_COLUMNS = (CODES_COLUMN, REFERENCE_AUDIO_COLUMN)  # where a row's reference recording is read from
VOICE_COLUMNS = (VOICE_CODES_COLUMN, VOICE_AUDIO_COLUMN, *REFERENCE_COLUMNS)  # the voice to keep, best first


def _column_names(value, what: str, *, allow_empty: bool = True) -> tuple[str, ...]:
    """A JSON list of column names as a tuple, checked."""
    names = tuple(value) if isinstance(value, list | tuple) else None
    if names is None or not all(isinstance(name, str) and name for name in names) or not (names or allow_empty):
        need = "a list of column names" + ("" if allow_empty else " (at least one)")
        raise ValueError(f'{what} must be {need}, e.g. ["audio_code_ids", "reference_audio"], got {value!r}.')
    return names


class ScorerComponent(RewardComponent):
    """A component around one of llasa.scores' scorers: its JSON parameters are the component's own (which
    columns to read) and the scorer's, e.g. {"weight": 0.1, "reference_columns": [...], "tolerance": 0.2}."""

    scorer_class: ClassVar[type]

    @classmethod
    def from_params(cls, params: dict, name: str) -> "ScorerComponent":
        what = f"the component {name!r}"
        if not isinstance(params, dict):
            raise ValueError(f"The parameters of {what} must be a JSON object, got {params!r}.")
        own = [f.name for f in fields(cls) if f.init and f.name != "scorer"]
        scorer_params = [f.name for f in fields(cls.scorer_class) if f.init]
        check_known_parameters(params, own + scorer_params, what)
        try:
            scorer = cls.scorer_class(**{key: value for key, value in params.items() if key in scorer_params})
            return cls(scorer=scorer, **{key: value for key, value in params.items() if key in own})
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from e

    def load_models(self) -> None:
        load = getattr(self.scorer, "load", None)  # the scorers with a model
        if load is not None:
            load()


@register_component("duration")
@dataclass(frozen=True)
class DurationComponent(ScorerComponent):
    """Speaking rate: `DurationScorer` (1 within `tolerance` of the expected duration, exp(-d / falloff) beyond).

    The expected duration of a row is, in order: its `duration_column` value (the reference audio's seconds), the
    length of its reference audio (the first of `reference_columns` with a value: codes are counted, not decoded),
    or its text's length over `chars_per_second`. Unset, that rate is estimated once, from the first batch that needs
    it, as the median over its rows that have both a text and a duration. Logs "duration_ratio" (clip seconds over
    expected seconds).
    """

    scorer: DurationScorer = field(default_factory=DurationScorer)
    duration_column: str | None = DURATION_COLUMN  # seconds of the reference audio; None: not read
    reference_columns: tuple[str, ...] = REFERENCE_COLUMNS  # where no duration is given
    scorer_class: ClassVar[type] = DurationScorer
    _estimated: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # the estimated rate

    def __post_init__(self):
        if self.duration_column is not None and not (isinstance(self.duration_column, str) and self.duration_column):
            raise ValueError(f"duration_column must be a column name or null, got {self.duration_column!r}.")
        object.__setattr__(self, "reference_columns", _column_names(self.reference_columns, "reference_columns"))

    def input_columns(self) -> tuple[str, ...]:
        return (*([self.duration_column] if self.duration_column else []), *self.reference_columns)

    def score(self, batch: ScoringBatch) -> ComponentResult:
        n = len(batch.audio)
        column = batch.columns.get(self.duration_column, [None] * n) if self.duration_column else [None] * n
        durations = [float(value) if _is_duration(value) else None for value in column]
        lacking = [row for row, duration in enumerate(durations) if duration is None]
        if lacking and self.reference_columns:
            references = batch.first_values(self.reference_columns)
            for row, seconds in zip(
                lacking, batch.references.durations([references[i] for i in lacking]), strict=True
            ):
                durations[row] = seconds
        scorer = self.scorer
        if scorer.chars_per_second is None and any(duration is None for duration in durations):
            rate = self._speaking_rate(batch.texts, durations)
            scorer = scorer if rate is None else replace(scorer, chars_per_second=rate)
        expected = scorer.expected_durations(n, durations, batch.texts)
        ratios = [
            None if seconds is None else len(wav) / batch.sample_rate / seconds
            for wav, seconds in zip(batch.audio, expected, strict=True)
        ]
        return ComponentResult(
            scorer(batch.audio, reference_durations=expected),
            {"duration_ratio": ratios},
            missing=[seconds is None for seconds in expected],
        )

    def _speaking_rate(self, texts: Sequence[str], durations: Sequence[float | None]) -> float | None:
        """chars_per_second estimated from (text, duration) pairs, once: later batches reuse it. None while no
        batch has had a duration: those rows are left unscored (counted as missing), with a warning."""
        if "chars_per_second" not in self._estimated:
            pairs = [(text, duration) for text, duration in zip(texts, durations, strict=True) if duration is not None]
            if not pairs:
                logger.warning(
                    "duration: rows without a reference duration (columns %s) and no chars_per_second to derive "
                    'one from the text are left unscored. Set "chars_per_second" in the duration component (letters and '
                    "digits per second: %s for English read speech; `llasa.scores.estimate_speaking_rate` measures a "
                    "dataset's), or pass the reference durations.",
                    list(self.input_columns()),
                    DEFAULT_CHARS_PER_SECOND,
                )
                return None
            rate = estimate_speaking_rate(*zip(*pairs, strict=True))
            self._estimated["chars_per_second"] = rate.chars_per_second
            logger.info(
                "duration: chars_per_second not set, estimated %.2f from %d (text, duration) pairs of the batch; "
                "set it in the reward config to fix it.",
                rate.chars_per_second,
                rate.n_pairs,
            )
        return self._estimated["chars_per_second"]


def _is_duration(value) -> bool:
    return is_number(value) and value > 0


@register_component("speaker_similarity")
@dataclass(frozen=True)
class SpeakerSimilarityComponent(ScorerComponent):
    """Voice: `SpeakerSimilarityScorer`, the cosine of speaker embeddings (resemblyzer, or with "backend": "wavlm"
    and "model" a WavLMForXVector checkpoint) of the clip and the row's voice, the first of `voice_columns` with a
    value: the voice prompt (voice cloning) before the reference audio. A row with none scores None. Logs
    "speaker_cosine"."""

    scorer: SpeakerSimilarityScorer = field(default_factory=SpeakerSimilarityScorer)
    voice_columns: tuple[str, ...] = VOICE_COLUMNS
    scorer_class: ClassVar[type] = SpeakerSimilarityScorer

    def __post_init__(self):
        columns = _column_names(self.voice_columns, "voice_columns", allow_empty=False)
        object.__setattr__(self, "voice_columns", columns)

    def input_columns(self) -> tuple[str, ...]:
        return self.voice_columns

    def score(self, batch: ScoringBatch) -> ComponentResult:
        voices = batch.first_values(self.voice_columns)
        cosines = self.scorer.similarities(batch.audio, batch.references.waveforms(voices))
        return ComponentResult(
            self.scorer.score_cosines(cosines), {"speaker_cosine": cosines}, missing=[v is None for v in voices]
        )


@register_component("quality")
@dataclass(frozen=True)
class QualityComponent(ScorerComponent):
    """Perceived quality without a reference: `DnsmosScorer` (DNSMOS P.835), scoring (MOS - 1) / 4 of `metric`.
    Logs "dnsmos_sig", "dnsmos_bak" and "dnsmos_ovrl" (1-5)."""

    scorer: DnsmosScorer = field(default_factory=DnsmosScorer)
    scorer_class: ClassVar[type] = DnsmosScorer

    def score(self, batch: ScoringBatch) -> ComponentResult:
        moses = self.scorer.mos(batch.audio)
        metrics = {f"dnsmos_{name}": [None if mos is None else mos[name] for mos in moses] for name in DNSMOS_METRICS}
        return ComponentResult(self.scorer.score_mos(moses), metrics)
