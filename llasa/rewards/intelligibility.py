"""Intelligibility, the reward of arXiv 2509.18798: how well Whisper recognises the reference text in the speech.

    R_err = 1 - tanh(alpha_err * ERR)        ERR: WER, or CER for languages written without spaces (zh, ja, ko, th...)
    R_nll = exp(-NLL / alpha_nll)            NLL: mean per-token negative log-likelihood of the reference text

ERR compares Whisper's greedy transcript with the reference after text normalisation (llasa.text: "multilingual" by
default, "whisper", the paper's exact rule, or "seed-tts-eval", the benchmark's, with the wer component's
"normalizer"); the NLL is teacher-forced
through Whisper's decoder (llasa.asr).
"""

import math
from dataclasses import dataclass
from typing import ClassVar

from llasa.numbers import is_number
from llasa.rewards.components import ComponentResult, RewardComponent, ScoringBatch, register_component
from llasa.text import DEFAULT_NORMALIZER, check_normalizer, error_metric, error_rate, normalize


def error_reward(err: float, alpha: float) -> float:
    """R_err = 1 - tanh(alpha * ERR): 1 for a perfect transcript, towards 0 as errors grow (ERR may exceed 1)."""
    return 1.0 - math.tanh(alpha * err)


def nll_reward(nll: float, alpha: float) -> float:
    """R_nll = exp(-NLL / alpha): 1 when Whisper is certain of every reference token."""
    return math.exp(-nll / alpha)


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
    "gated" rule set it to the gate's threshold, which already scores such clips down by its scale."""

    alpha: float = 3.0  # steepness
    max_error: float | None = None  # ERR counted at most this much (null: uncapped, the paper's rule)
    metric: str = "auto"  # "auto" (CER for zh/ja/ko/th..., WER otherwise), "wer" or "cer"
    normalizer: str = DEFAULT_NORMALIZER  # "multilingual", "whisper" (the paper's rule) or "seed-tts-eval"
    needs_asr: ClassVar[bool] = True

    def __post_init__(self):
        _check_alpha(self.alpha, "wer")
        if self.max_error is not None and not (is_number(self.max_error) and self.max_error > 0):
            raise ValueError(f"max_error of the wer component must be a number > 0 or null, got {self.max_error!r}.")
        check_normalizer(self.normalizer)
        if self.metric not in ("auto", "wer", "cer"):
            raise ValueError(f"metric of the wer component must be 'auto', 'wer' or 'cer', got {self.metric!r}.")

    def score(self, batch: ScoringBatch) -> ComponentResult:
        metric = error_metric(self.metric, batch.language)
        errors = [
            error_rate(text, transcript, batch.language, metric, normalizer=self.normalizer)
            for text, transcript in zip(batch.texts, batch.transcripts, strict=True)
        ]
        cap = math.inf if self.max_error is None else self.max_error
        scores = [None if err is None else error_reward(min(err, cap), self.alpha) for err in errors]
        unit = "chars" if metric == "cer" else "words"
        lengths = {
            f"{side}_{unit}": [self.normalized_length(text, batch.language, metric) for text in texts]
            for side, texts in (("ref", batch.texts), ("hyp", batch.transcripts))
        }
        return ComponentResult(scores, {metric: errors, **lengths})

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
