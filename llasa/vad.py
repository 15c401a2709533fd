"""Where the speech is: silero-vad (its ONNX model, shipped in the `silero-vad` wheel) finds the speech segments of
16 kHz clips, a batch at a time, on the CPU (one thread: it is light, and leaves the cores to the rest).

From the segments come what a listener hears as timing: the silence before the first word and after the last, the
longest pause between words, and the share of the clip that is speech. A clip in which no speech is found is
silence, hum or noise whatever Whisper writes for it (Whisper transcribes silence as "you" or "Thank you.").
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llasa.audio import SAMPLE_RATE
from llasa.model_cache import load_once
from llasa.numbers import is_number

SPEECH_THRESHOLD = 0.5  # silero-vad's own default probability of speech
MIN_PAUSE_SECONDS = 0.1  # shorter gaps do not split a segment (silero-vad's default)
MIN_SPEECH_SECONDS = 0.25  # shorter bursts are not speech (silero-vad's default)


@dataclass(frozen=True)
class SpeechActivity:
    """The speech segments of one clip, in seconds, and the clip's length."""

    segments: tuple[tuple[float, float], ...]
    seconds: float

    @property
    def has_speech(self) -> bool:
        return bool(self.segments)

    @property
    def leading_silence(self) -> float:
        return self.segments[0][0] if self.segments else self.seconds

    @property
    def trailing_silence(self) -> float:
        return self.seconds - self.segments[-1][1] if self.segments else self.seconds

    @property
    def longest_pause(self) -> float:
        """The longest silence between two segments (0 with fewer than two)."""
        gaps = [start - end for (_, end), (start, _) in zip(self.segments, self.segments[1:], strict=False)]
        return max(gaps, default=0.0)

    @property
    def speech_seconds(self) -> float:
        return sum(end - start for start, end in self.segments)

    @property
    def speech_share(self) -> float:
        return self.speech_seconds / self.seconds if self.seconds > 0 else 0.0


@load_once
def _silero():
    """The ONNX model, loaded once per process. Importing silero_vad sets torch's CPU threads to 1 for the whole
    process: the count is put back, so the policy and the other scorers keep theirs."""
    import torch

    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad

    torch.set_num_threads(threads)
    # The TorchScript model takes seconds to warm up on each new input shape; the ONNX one answers at once.
    return load_silero_vad(onnx=True)


def detect_speech(waveforms: Sequence[np.ndarray | None], threshold: float = SPEECH_THRESHOLD) -> list:
    """The `SpeechActivity` of each 16 kHz mono clip (None where a clip is None or not finite), the clips of the
    batch going through silero-vad together (shorter ones padded at their end, which the model, run forward in
    time, never hears before their own samples)."""
    import torch
    from silero_vad import get_speech_timestamps_from_probs

    present = [i for i, wav in enumerate(waveforms) if wav is not None and np.isfinite(wav).all()]
    activities: list[SpeechActivity | None] = [None] * len(waveforms)
    if not present:
        return activities
    clips = [np.asarray(waveforms[i], dtype=np.float32).reshape(-1) for i in present]
    longest = max(max(wav.size for wav in clips), 2 * 512)  # the model refuses a single window
    batch = torch.from_numpy(np.stack([np.pad(wav, (0, longest - wav.size)) for wav in clips]))
    model = _silero()
    probabilities = model.audio_forward(batch, SAMPLE_RATE)
    model.reset_states()
    for row, wav, probs in zip(present, clips, probabilities, strict=True):
        segments = get_speech_timestamps_from_probs(
            probs.tolist(),
            sampling_rate=SAMPLE_RATE,
            threshold=threshold,
            min_speech_duration_ms=int(MIN_SPEECH_SECONDS * 1000),
            min_silence_duration_ms=int(MIN_PAUSE_SECONDS * 1000),
            audio_length_samples=wav.size,
        )
        activities[row] = SpeechActivity(
            tuple((s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in segments), wav.size / SAMPLE_RATE
        )
    return activities


@dataclass(frozen=True)
class PauseScorer:
    """Timing as heard: silence before the first word and after the last, and the longest pause, against the row's
    reference recording (what it has, plus `slack` seconds; its longest pause may also grow by `tolerance`) or
    against natural maxima. score = exp(-excess / falloff), the excess seconds summed over the three; a clip in
    which no speech is found scores 0."""

    max_leading: float = 0.5  # seconds of leading silence scored 1 without a reference
    max_trailing: float = 0.5  # seconds of trailing silence scored 1 without a reference
    max_pause: float = 1.0  # seconds of the longest pause scored 1 without a reference
    slack: float = 0.3  # seconds beyond the reference's own silences still scored 1
    tolerance: float = 0.5  # relative growth of the reference's longest pause still scored 1
    falloff: float = 0.5  # excess seconds at which the score falls to 1/e

    def __post_init__(self):
        for name in ("max_leading", "max_trailing", "max_pause", "slack", "tolerance", "falloff"):
            value = getattr(self, name)
            if not is_number(value) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}.")
        if self.falloff == 0:
            raise ValueError("falloff must be above 0 seconds.")

    def allowed(self, reference: SpeechActivity | None) -> tuple[float, float, float]:
        """The leading silence, trailing silence and longest pause scored 1."""
        if reference is None or not reference.has_speech:
            return self.max_leading, self.max_trailing, self.max_pause
        pause = max(reference.longest_pause * (1 + self.tolerance), reference.longest_pause + self.slack)
        return reference.leading_silence + self.slack, reference.trailing_silence + self.slack, pause

    def score(self, activity: SpeechActivity | None, reference: SpeechActivity | None = None) -> float | None:
        if activity is None:
            return None
        if not activity.has_speech:
            return 0.0
        measured = (activity.leading_silence, activity.trailing_silence, activity.longest_pause)
        excess = sum(max(0.0, value - limit) for value, limit in zip(measured, self.allowed(reference), strict=True))
        return float(np.exp(-excess / self.falloff))
