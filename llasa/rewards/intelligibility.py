"""Intelligibility, the reward of arXiv 2509.18798: how well Whisper recognises the reference text in the speech.

    R_err = 1 - tanh(alpha_err * ERR)        ERR: WER, or CER for languages written without spaces (zh, ja, ko, th...)
    R_nll = exp(-NLL / alpha_nll)            NLL: mean per-token negative log-likelihood of the reference text

ERR compares Whisper's greedy transcript with the reference after text normalisation (llasa.text: "multilingual" by
default, "whisper", the paper's exact rule, or "seed-tts-eval", the benchmark's, with the wer component's
"normalizer"); the NLL is teacher-forced through Whisper's decoder (llasa.asr). With "relative_to_reference", the ERR
counted is only what Whisper gets wrong beyond its own error on the row's reference recording of the same text.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from llasa.numbers import is_number
from llasa.rewards.components import ComponentResult, RewardComponent, ScoringBatch, register_component
from llasa.rewards.speech import REFERENCE_COLUMNS, _column_names
from llasa.scores import _map_distinct
from llasa.text import DEFAULT_NORMALIZER, check_normalizer, error_metric, error_rate, normalize


def error_reward(err: float, alpha: float) -> float:
    """R_err = 1 - tanh(alpha * ERR): 1 for a perfect transcript, towards 0 as errors grow (ERR may exceed 1)."""
    return 1.0 - math.tanh(alpha * err)


def nll_reward(nll: float, alpha: float) -> float:
    """R_nll = exp(-NLL / alpha): 1 when Whisper is certain of every reference token."""
    return math.exp(-nll / alpha)


def counted_error(metrics: dict) -> float | None:
    """The ERR a clip is scored (and gated) by, from the wer component's metrics: its WER or CER, less the error
    Whisper made on the row's reference recording where one was heard ("reference_wer" or "reference_cer"), never
    below 0. None where no ERR was measured."""
    metric = "wer" if "wer" in metrics else "cer"
    error, floor = metrics.get(metric), metrics.get(f"reference_{metric}")
    if error is None or not math.isfinite(error):
        return None
    return max(0.0, error - floor) if floor is not None and math.isfinite(floor) else float(error)


def _check_alpha(alpha, what: str) -> None:
    if not is_number(alpha) or alpha <= 0:
        raise ValueError(f"alpha of the {what} component must be a number > 0, got {alpha!r}.")


@register_component("wer")
@dataclass(frozen=True)
class ErrorRateComponent(RewardComponent):
    """R_err = 1 - tanh(alpha * min(ERR, max_error)): ERR 0.1 -> 0.71 and ERR 0.3 -> 0.28 with alpha 3. Logs "wer"
    or "cer" (uncapped), and the length of the normalised reference and transcript ("ref_words" and "hyp_words", or
    "ref_chars" and "hyp_chars" for CER; numbers in their first reading): what the error was counted over.

    `max_error` caps the ERR the score counts. Beyond a collapse level more misheard words say nothing more about
    the clip: they swing by a word or two between near-identical clips, and in a harmonic mean those swings of a
    near-zero score (0.05 at ERR 0.62, 0.02 at 0.8) are ratios that outweigh every other component. Capped, all
    collapsed clips share one ERR score and the other components (NLL, prosody, quality) rank them; with the
    "gated" rule set it to the gate's threshold, which already scores such clips down by its scale.

    `relative_to_reference` counts only the ERR beyond Whisper's own on the row's reference recording (the first of
    `reference_columns` with a value: the dataset's recording of the same text), which Whisper hears once per
    distinct recording and call. Where Whisper mishears the real recording (an accent, a noisy room, a language it
    knows poorly), a clip that it mishears as much is as intelligible as the data, not collapsed: without the floor
    the gate closes on such rows whatever their prosody, and speaking slower, which Whisper hears better, pays. A
    recording Whisper cannot follow at all forgives every error of its row: there only the NLL, which stays absolute,
    tells right words from wrong ones. Logs
    "reference_wer" (or "reference_cer") and "wer/no_reference" (the share of rows without a reference, whose ERR
    counts in full); "wer" stays the clip's own."""

    alpha: float = 3.0  # steepness
    max_error: float | None = None  # ERR counted at most this much (null: uncapped, the paper's rule)
    metric: str = "auto"  # "auto" (CER for zh/ja/ko/th..., WER otherwise), "wer" or "cer"
    normalizer: str = DEFAULT_NORMALIZER  # "multilingual", "whisper" (the paper's rule) or "seed-tts-eval"
    relative_to_reference: bool = False  # count only the ERR beyond the reference recording's
    reference_columns: tuple[str, ...] = REFERENCE_COLUMNS  # where the reference recording is read from
    needs_asr: ClassVar[bool] = True

    def __post_init__(self):
        _check_alpha(self.alpha, "wer")
        if not isinstance(self.relative_to_reference, bool):
            raise ValueError(
                f"relative_to_reference of the wer component must be true or false, got {self.relative_to_reference!r}."
            )
        object.__setattr__(self, "reference_columns", _column_names(self.reference_columns, "reference_columns"))
        if self.max_error is not None and not (is_number(self.max_error) and self.max_error > 0):
            raise ValueError(f"max_error of the wer component must be a number > 0 or null, got {self.max_error!r}.")
        check_normalizer(self.normalizer)
        if self.metric not in ("auto", "wer", "cer"):
            raise ValueError(f"metric of the wer component must be 'auto', 'wer' or 'cer', got {self.metric!r}.")

    def input_columns(self) -> tuple[str, ...]:
        return self.reference_columns if self.relative_to_reference else ()

    def score(self, batch: ScoringBatch) -> ComponentResult:
        metric = error_metric(self.metric, batch.language)
        metrics = {metric: self.errors(batch.texts, batch.transcripts, batch.language, metric)}
        if self.relative_to_reference:
            metrics[f"reference_{metric}"] = self.reference_errors(batch, metric)
            metrics["wer/no_reference"] = [float(error is None) for error in metrics[f"reference_{metric}"]]
        cap = math.inf if self.max_error is None else self.max_error
        counted = [counted_error(dict(zip(metrics, row, strict=True))) for row in zip(*metrics.values(), strict=True)]
        scores = [None if err is None else error_reward(min(err, cap), self.alpha) for err in counted]
        unit = "chars" if metric == "cer" else "words"
        lengths = {
            f"{side}_{unit}": [self.normalized_length(text, batch.language, metric) for text in texts]
            for side, texts in (("ref", batch.texts), ("hyp", batch.transcripts))
        }
        return ComponentResult(scores, {**metrics, **lengths})

    def errors(self, texts: Sequence[str], transcripts: Sequence[str], language: str, metric: str) -> list:
        return [
            error_rate(text, transcript, language, metric, normalizer=self.normalizer)
            for text, transcript in zip(texts, transcripts, strict=True)
        ]

    def reference_errors(self, batch: ScoringBatch, metric: str) -> list[float | None]:
        """Whisper's ERR on each row's reference recording against the row's text (None without a recording)."""
        references = batch.references.waveforms(batch.first_values(self.reference_columns))
        if batch.recognize is None and any(wav is not None for wav in references):
            raise ValueError(
                "relative_to_reference needs the batch's `recognize` (Whisper's transcription of the reference "
                "recordings), which the reward sets when it runs Whisper: score through load_reward, or pass it."
            )
        heard = _map_distinct(batch.recognize, references)
        rows = [row for row, transcript in enumerate(heard) if transcript is not None]
        errors = self.errors([batch.texts[row] for row in rows], [heard[row] for row in rows], batch.language, metric)
        found = dict(zip(rows, errors, strict=True))
        return [found.get(row) for row in range(len(heard))]

    def normalized_length(self, text: str, language: str, metric: str) -> int:
        """Characters (CER) or words (WER) of the text as the error rate compares it."""
        normalized = normalize(text, language, metric, normalizer=self.normalizer)
        return len(normalized) if metric == "cer" else len(normalized.split())


@register_component("nll")
@dataclass(frozen=True)
class NllComponent(RewardComponent):
    """R_nll = exp(-NLL / alpha): NLL 0.3 -> 0.90 and NLL 3 -> 0.37 with alpha 3. Logs "nll"."""

    alpha: float = 3.0  # temperature, in nats
    needs_asr: ClassVar[bool] = True

    def __post_init__(self):
        _check_alpha(self.alpha, "nll")

    def score(self, batch: ScoringBatch) -> ComponentResult:
        # An infinite NLL (a reference token of probability 0) scores 0; a NaN one cannot be scored.
        scores = [None if math.isnan(nll) else nll_reward(nll, self.alpha) for nll in batch.nll]
        return ComponentResult(scores, {"nll": list(batch.nll)})
