"""Prosody failures made from real recordings, in known ways: what a reward must score below the recording itself.

Pitch and timing are changed through the WORLD vocoder (`pyworld`): the recording is analysed into F0, spectral
envelope and aperiodicity every 5 ms, one of them is changed, and speech is synthesised again. Compare an altered
clip with `vocoded(wav)`, the recording through the same analysis and synthesis unchanged, so that the vocoder's own
colour is not what tells them apart.
"""

from collections.abc import Callable

import numpy as np

from llasa.audio import SAMPLE_RATE

WORLD_FRAME_MS = 5.0
JITTER_SEMITONES = 1.5  # standard deviation of the random F0 change, drawn anew every 20 ms
EXAGGERATION = 2.5  # factor on each frame's F0 distance (in semitones) from the median
FAST, SLOW = 1.5, 0.65  # speaking-rate factors
NOISE_SNR_DB = 5.0
SILENT_TAIL_SECONDS = 2.5
LONG_PAUSE_SECONDS = 2.0


def _analyse(wav: np.ndarray):
    import pyworld

    x = np.asarray(wav, dtype=np.float64)
    f0, times = pyworld.dio(x, SAMPLE_RATE, frame_period=WORLD_FRAME_MS)
    f0 = pyworld.stonemask(x, f0, times, SAMPLE_RATE)
    envelope = pyworld.cheaptrick(x, f0, times, SAMPLE_RATE)
    aperiodicity = pyworld.d4c(x, f0, times, SAMPLE_RATE)
    return f0, envelope, aperiodicity


def _synthesise(f0, envelope, aperiodicity, peak: float) -> np.ndarray:
    import pyworld

    wav = pyworld.synthesize(f0, envelope, aperiodicity, SAMPLE_RATE, WORLD_FRAME_MS)
    return (wav / max(np.abs(wav).max(), 1e-9) * peak).astype(np.float32)  # the recording's own peak level


def _with_f0(wav: np.ndarray, change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    f0, envelope, aperiodicity = _analyse(wav)
    voiced = f0 > 0
    new = f0.copy()
    if voiced.any():
        new[voiced] = change(f0[voiced])
    return _synthesise(new, envelope, aperiodicity, float(np.abs(wav).max()))


def vocoded(wav: np.ndarray) -> np.ndarray:
    """The recording analysed and synthesised again, unchanged: the fair partner of the altered clips."""
    return _with_f0(wav, lambda f0: f0)


def monotone(wav: np.ndarray) -> np.ndarray:
    """Every voiced frame at the median F0."""
    return _with_f0(wav, lambda f0: np.full_like(f0, np.median(f0)))


def exaggerated(wav: np.ndarray, factor: float = EXAGGERATION) -> np.ndarray:
    """Each voiced frame's distance from the median F0, in semitones, times `factor`."""
    return _with_f0(wav, lambda f0: np.median(f0) * (f0 / np.median(f0)) ** factor)


def jittered(wav: np.ndarray, semitones: float = JITTER_SEMITONES, seed: int = 0) -> np.ndarray:
    """Random F0 changes (normal, `semitones` standard deviation), drawn anew every 20 ms."""
    rng = np.random.default_rng(seed)

    def jitter(f0):
        steps = rng.normal(0.0, semitones, f0.size // 4 + 1).repeat(4)[: f0.size]
        return f0 * 2 ** (steps / 12)

    return _with_f0(wav, jitter)


def tempo(wav: np.ndarray, factor: float) -> np.ndarray:
    """Spoken `factor` times as fast (pitch and voice kept): WORLD's frames read at that rate."""
    f0, envelope, aperiodicity = _analyse(wav)
    frames = np.minimum(np.round(np.arange(0, len(f0), factor)).astype(int), len(f0) - 1)
    return _synthesise(f0[frames], envelope[frames], aperiodicity[frames], float(np.abs(wav).max()))


def noisy(wav: np.ndarray, snr_db: float = NOISE_SNR_DB, seed: int = 0) -> np.ndarray:
    """White noise `snr_db` below the clip's power."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(np.square(wav, dtype=np.float64)))
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), wav.shape)
    return np.clip(wav + noise, -1, 1).astype(np.float32)


def silent_tail(wav: np.ndarray, seconds: float = SILENT_TAIL_SECONDS) -> np.ndarray:
    return np.concatenate([wav, np.zeros(int(seconds * SAMPLE_RATE), np.float32)])


def long_pause(wav: np.ndarray, seconds: float = LONG_PAUSE_SECONDS) -> np.ndarray:
    """`seconds` of silence inserted at the quietest 20 ms of the clip's middle half (a pause between words)."""
    hop = SAMPLE_RATE // 50
    n = wav.size // hop
    energy = np.square(wav[: n * hop].reshape(n, hop), dtype=np.float64).mean(axis=1)
    cut = (n // 4 + int(np.argmin(energy[n // 4 : 3 * n // 4 + 1]))) * hop
    return np.concatenate([wav[:cut], np.zeros(int(seconds * SAMPLE_RATE), np.float32), wav[cut:]])


# The failures, by name: each makes one altered clip from a recording (at 16 kHz).
FAILURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "monotone": monotone,
    "jitter": jittered,
    "exaggerated": exaggerated,
    "fast": lambda wav: tempo(wav, FAST),
    "slow": lambda wav: tempo(wav, SLOW),
    "noise": lambda wav: noisy(vocoded(wav)),
    "silent_tail": lambda wav: silent_tail(vocoded(wav)),
    "long_pause": lambda wav: long_pause(vocoded(wav)),
    "noisy_monotone": lambda wav: noisy(monotone(wav)),
}
