"""Prosody components that hear what listeners hear: intonation's shape (`intonation`, CREPE or pYIN contours) and
timing (`pauses`, silero-vad's speech segments), each against the row's reference recording when it has one
(`audio_code_ids` or `reference_audio`), else against natural ranges."""

from dataclasses import dataclass, field
from typing import ClassVar

from llasa.prosody import IntonationScorer
from llasa.rewards.components import ComponentResult, ScoringBatch, register_component
from llasa.rewards.speech import REFERENCE_COLUMNS, ScorerComponent, _column_names
from llasa.scores import _map_distinct
from llasa.vad import PauseScorer, detect_speech

SILENT_TAIL_SECONDS = 1.0  # trailing silence logged as a silent tail


@register_component("intonation")
@dataclass(frozen=True)
class IntonationComponent(ScorerComponent):
    """Intonation's shape: `IntonationScorer` (movement and roughness of the F0 contour) against the row's reference
    recording (the first of `reference_columns` with a value), else natural ranges. Logs "pitch_movement",
    "pitch_roughness", their reference's, and "intonation/no_reference" (the share scored against natural ranges).
    Each distinct reference is measured once per call."""

    scorer: IntonationScorer = field(default_factory=IntonationScorer)
    reference_columns: tuple[str, ...] = REFERENCE_COLUMNS  # [] scores against the natural ranges
    scorer_class: ClassVar[type] = IntonationScorer

    def __post_init__(self):
        object.__setattr__(self, "reference_columns", _column_names(self.reference_columns, "reference_columns"))

    def input_columns(self) -> tuple[str, ...]:
        return self.reference_columns

    def score(self, batch: ScoringBatch) -> ComponentResult:
        references = batch.references.waveforms(batch.first_values(self.reference_columns))
        measures = self.scorer.measures(batch.audio)
        reference_measures = _map_distinct(self.scorer.measures, references)
        metrics = {
            "pitch_movement": [None if m is None else m.movement for m in measures],
            "pitch_roughness": [None if m is None else m.roughness for m in measures],
            "pitch_reference_movement": [None if m is None else m.movement for m in reference_measures],
            "pitch_reference_roughness": [None if m is None else m.roughness for m in reference_measures],
            "intonation/no_reference": [float(m is None) for m in reference_measures],
        }
        return ComponentResult(self.scorer.score_measures(measures, reference_measures), metrics)


@register_component("pauses")
@dataclass(frozen=True)
class PausesComponent(ScorerComponent):
    """Timing: `PauseScorer` on silero-vad's speech segments (leading and trailing silence, longest pause) against
    the row's reference recording, else natural maxima; no detected speech scores 0. Logs "leading_silence",
    "trailing_silence", "longest_pause", "speech_share" (seconds, share) and "silent_tail" (1 where the clip ends in
    more than a second of silence: its mean is the batch's share of silent tails)."""

    scorer: PauseScorer = field(default_factory=PauseScorer)
    reference_columns: tuple[str, ...] = REFERENCE_COLUMNS
    scorer_class: ClassVar[type] = PauseScorer

    def __post_init__(self):
        object.__setattr__(self, "reference_columns", _column_names(self.reference_columns, "reference_columns"))

    def input_columns(self) -> tuple[str, ...]:
        return self.reference_columns

    def score(self, batch: ScoringBatch) -> ComponentResult:
        activities = batch.speech if batch.speech is not None else detect_speech(batch.audio)
        references = _map_distinct(
            detect_speech, batch.references.waveforms(batch.first_values(self.reference_columns))
        )
        metrics = {
            "leading_silence": [None if a is None else a.leading_silence for a in activities],
            "trailing_silence": [None if a is None else a.trailing_silence for a in activities],
            "longest_pause": [None if a is None else a.longest_pause for a in activities],
            "speech_share": [None if a is None else a.speech_share for a in activities],
            "silent_tail": [
                None if a is None else float(a.trailing_silence > SILENT_TAIL_SECONDS) for a in activities
            ],
        }
        scores = [self.scorer.score(a, r) for a, r in zip(activities, references, strict=True)]
        return ComponentResult(scores, metrics)
