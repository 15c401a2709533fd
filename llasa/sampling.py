"""Speech-only sampling: only Llasa's 65536 speech tokens and <|SPEECH_GENERATION_END|> can be drawn, and the end
not before a minimum number of speech tokens, a share of the text's expected length.

Without it, Llasa can draw text tokens, markers or <|eot_id|> in the middle of speech: the codec never hears them
(they are dropped) or the clip stops early, yet GRPO still credits or blames the policy for them. With it, every
sampled token is a code the reward hears. `SpeechOnlyLogitsProcessor` does it for transformers' `generate` (training
and inference), with a per-row minimum; vLLM gets `allowed_token_ids` and one `min_tokens` for the whole run.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from llasa.format import TOKENS_PER_SECOND, ParsedSpeech, SpeechVocab
from llasa.numbers import is_number
from llasa.text import DEFAULT_CHARS_PER_SECOND, text_length

# END may come once this share of the expected speech tokens is generated. Half: speech faster than twice the
# assumed rate is rare, while an end before it is almost always a clip cut off mid-sentence.
DEFAULT_MIN_SPEECH_FRACTION = 0.5


def check_min_speech_fraction(value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"--min_speech_fraction must be in [0, 1], got {value!r}.")


def expected_speech_tokens(text: str, duration: float | None, chars_per_second: float) -> int:
    """Speech tokens the utterance should take, END included: from its duration, else from its letters and digits
    at `chars_per_second` (the duration reward's speaking-rate rule)."""
    seconds = duration if duration is not None and duration > 0 else text_length(text) / chars_per_second
    return math.ceil(seconds * TOKENS_PER_SECOND) + 1


@dataclass(frozen=True)
class SpeechOnly:
    """Speech-only sampling's settings: END is allowed after `min_fraction` of each text's expected speech tokens."""

    vocab: SpeechVocab
    min_fraction: float = DEFAULT_MIN_SPEECH_FRACTION
    chars_per_second: float = DEFAULT_CHARS_PER_SECOND  # speaking rate assumed where no duration is known

    def __post_init__(self):
        check_min_speech_fraction(self.min_fraction)

    def min_tokens(self, text: str, duration: float | None = None) -> int:
        """Speech tokens to generate before END may be drawn (END itself excluded)."""
        if not is_number(duration):
            duration = None  # a missing or unreadable duration: the text's length decides
        expected = expected_speech_tokens(text, duration, self.chars_per_second) - 1
        return math.floor(self.min_fraction * expected)

    def processor(self, min_tokens: Sequence[int] | int = 0) -> "SpeechOnlyLogitsProcessor":
        return SpeechOnlyLogitsProcessor(self.vocab, min_tokens)


def describe_sampling(speech_only: SpeechOnly | None) -> str:
    """What a run may sample, for its startup log."""
    if speech_only is None:
        return "any token (--no_speech_only)"
    return f"speech-only (speech tokens and END; END after {speech_only.min_fraction:.0%} of the expected length)"


class SpeechOnlyLogitsProcessor(LogitsProcessor):
    """Masks every token but the speech tokens and END, and END too in rows that have generated fewer than their
    minimum. One processor per `generate` call: it takes the prompt width from its first call. Rows come as
    `generate` lays them out (with num_return_sequences, each prompt's samples in a row)."""

    def __init__(self, vocab: SpeechVocab, min_tokens: Sequence[int] | int = 0):
        self.allowed = torch.tensor(vocab.allowed_ids())
        self.end_id = vocab.speech_end_id
        self.min_tokens = torch.as_tensor(min_tokens, dtype=torch.long)
        self.prompt_width = None
        self._blocked = None  # (vocab size,) True where the token may not be drawn

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_width is None:
            self.prompt_width = input_ids.shape[1]
        if self._blocked is None or self._blocked.shape[0] != scores.shape[-1]:
            self._blocked = torch.ones(scores.shape[-1], dtype=torch.bool, device=scores.device)
            self._blocked[self.allowed.to(scores.device)] = False
            self.min_tokens = self.min_tokens.to(scores.device)  # moved once, not at every token
        scores = scores.masked_fill(self._blocked, float("-inf"))
        # Applied to every row without asking whether any is too early: a question would wait for the GPU each token.
        too_early = (input_ids.shape[1] - self.prompt_width) < self.min_tokens
        scores[:, self.end_id] = scores[:, self.end_id].masked_fill(too_early.expand(scores.shape[0]), float("-inf"))
        return scores


def sampling_shares(parsed: Sequence[ParsedSpeech]) -> dict[str, float]:
    """What speech-only sampling removes, under the reward's metric names: dropped_tokens (non-speech tokens per
    completion) and no_speech (share of completions without a speech code)."""
    n = len(parsed)
    return {
        "dropped_tokens": sum(speech.n_dropped for speech in parsed) / n,
        "no_speech": sum(not speech.codes for speech in parsed) / n,
    }
