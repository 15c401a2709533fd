"""Scores of generated speech beyond recognition errors: speaking rate, speaker similarity and quality, each a
candidate reward component for GRPO (intonation and timing: llasa.prosody, llasa.vad).

Each scorer is a frozen dataclass of its options, checked when it is built, and is called on a batch of 16 kHz
mono float32 waveforms plus what it needs per row (reference durations or texts, reference audio). It returns one
score per clip in [0, 1], or None where the clip or its row's input cannot be scored (missing, too short, silent,
not finite): a None is never replaced by a made-up value. Models load on first use, once per process and device,
so scorers are cheap to build and to pickle.

- `DurationScorer`: 1 while the clip lasts within a tolerance of the expected duration, then
  exp(-d / falloff) where d is the log-ratio distance to the band. The expected duration is the reference
  audio's when known, else the text's length over a speaking rate (`estimate_speaking_rate`).
- `SpeakerSimilarityScorer`: cosine similarity of speaker embeddings of the clip and a reference (the voice
  prompt), mapped linearly from `floor` (0) to 1 (1). Embeddings from resemblyzer (`backend="resemblyzer"`, the
  default) or from a WavLM speaker-verification model through transformers' `WavLMForXVector` (`backend="wavlm"`,
  `model` a hub id or folder, default microsoft/wavlm-base-plus-sv), the kind of model Seed-TTS-eval's SIM uses.
- `DnsmosScorer`: DNSMOS P.835 (SIG, BAK, OVRL on the 1-5 MOS scale; the ONNX models shipped by `speechmos`),
  mapped to (MOS - 1) / 4.

Print the raw measures of audio files, to choose the scorers' ranges for a dataset (`measure_files`):

    python evaluate.py measure --audio tests/data/fox_en_us.wav tests/data/fox_en_f3.wav --reference tests/data/rainbow_en_us.wav
"""

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llasa.audio import SAMPLE_RATE, load_audio, usable_waveform
from llasa.device import check_device_name, outside_zero3, resolve_device
from llasa.model_cache import load_once
from llasa.numbers import is_count, is_number
from llasa.text import text_length

# resemblyzer embeds an utterance as the mean of 1.6 s windows; these are its own defaults for embed_utterance.
PARTIALS_PER_SECOND = 1.3
PARTIAL_MIN_COVERAGE = 0.75

SPEAKER_BACKENDS = ("resemblyzer", "wavlm")
DEFAULT_WAVLM_MODEL = "microsoft/wavlm-base-plus-sv"

DNSMOS_SEGMENT_SECONDS = 9.01  # DNSMOS scores 9.01 s windows, one per second of audio
DNSMOS_METRICS = ("sig", "bak", "ovrl")  # speech signal, background noise, overall quality (ITU-T P.835)
MOS_MIN, MOS_MAX = 1.0, 5.0


Waveform = np.ndarray | None


def band_score(value: float, low: float, high: float, falloff: float) -> float:
    """1 for `value` in [low, high]; outside, exp(-d / falloff) with d the log-ratio distance to the nearer edge.

    Log ratios make the falloff relative: twice too long costs as much as twice too short.
    """
    distance = max(math.log(low / value), math.log(value / high), 0.0)
    return math.exp(-distance / falloff)


@dataclass(frozen=True)
class SpeakingRate:
    """A dataset's speaking rate in characters (`text_length`) per second of audio."""

    chars_per_second: float  # median over the usable pairs
    n_pairs: int  # (text, duration) pairs it was estimated from
    n_skipped: int  # pairs left out: no text, no letters, or no positive finite duration


def estimate_speaking_rate(texts: Sequence[str | None], durations: Sequence[float | None]) -> SpeakingRate:
    """The median characters-per-second of (text, duration in seconds) pairs, robust to a few misaligned rows."""
    if len(texts) != len(durations):
        raise ValueError(f"Got {len(texts)} texts but {len(durations)} durations: pass one duration per text.")
    rates = []
    for text, duration in zip(texts, durations, strict=True):
        n_chars = text_length(text) if text else 0
        if n_chars > 0 and duration is not None and math.isfinite(duration) and duration > 0:
            rates.append(n_chars / duration)
    if not rates:
        raise ValueError(
            "No (text, duration) pair can give a speaking rate: every text is empty or every duration is missing "
            "or not positive. Check the dataset's text and duration columns."
        )
    return SpeakingRate(float(np.median(rates)), n_pairs=len(rates), n_skipped=len(texts) - len(rates))


def _check_rows(name: str, values: Sequence | None, n_rows: int) -> None:
    if values is not None and len(values) != n_rows:
        raise ValueError(f"Got {len(values)} {name} for {n_rows} waveforms: pass one per waveform (None if unknown).")


def _check_positive(name: str, value) -> None:
    if not (is_number(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}.")


def _check_tolerance(value) -> None:
    if not (is_number(value) and value >= 0):
        raise ValueError(f"tolerance must be a number >= 0 (relative: 0.15 = 15%), got {value!r}.")


def _distinct(waveforms: Sequence[Waveform]) -> tuple[list[np.ndarray], list[int | None]]:
    """The distinct waveforms (by content) and, per row, the index of its own (None for a missing one).

    GRPO repeats each prompt's reference over its group, so a reference is measured once per batch.
    """
    unique, index_of, rows = [], {}, []
    for waveform in waveforms:
        if waveform is None:
            rows.append(None)
            continue
        wav = np.ascontiguousarray(waveform, dtype=np.float32)
        key = (wav.shape, hashlib.blake2b(wav.tobytes(), digest_size=16).digest())
        if key not in index_of:
            index_of[key] = len(unique)
            unique.append(wav)
        rows.append(index_of[key])
    return unique, rows


def _map_distinct(measure: Callable[[list[np.ndarray]], list], waveforms: Sequence[Waveform]) -> list:
    """`measure` (batch -> one value per clip) applied once per distinct waveform, spread back over the rows."""
    unique, rows = _distinct(waveforms)
    values = measure(unique) if unique else []
    return [None if row is None else values[row] for row in rows]


@dataclass(frozen=True)
class DurationScorer:
    """How close each clip's duration is to the expected one: the speaking-rate reward.

    The expected duration of a row is its reference duration (the dataset's `duration` column: the reference
    audio's length, in seconds) when known, else `text_length(text) / chars_per_second`. Both durations include
    the clip's own leading and trailing silence, as the dataset's do.
    """

    tolerance: float = 0.15  # relative: durations in [expected / 1.15, expected * 1.15] score 1
    falloff: float = 0.25  # log-ratio distance beyond the band at which the score falls to 1/e
    chars_per_second: float | None = None  # speaking rate for rows without a reference duration

    def __post_init__(self):
        _check_tolerance(self.tolerance)
        _check_positive("falloff", self.falloff)
        if self.chars_per_second is not None:
            _check_positive("chars_per_second", self.chars_per_second)

    def expected_durations(
        self, n_rows: int, reference_durations: Sequence[float | None] | None, texts: Sequence[str | None] | None
    ) -> list[float | None]:
        """Each row's expected duration in seconds, or None if it has neither a reference duration nor a usable
        text and speaking rate."""
        _check_rows("reference durations", reference_durations, n_rows)
        _check_rows("texts", texts, n_rows)
        expected = []
        for row in range(n_rows):
            duration = None if reference_durations is None else reference_durations[row]
            text = None if texts is None else texts[row]
            if duration is not None and math.isfinite(duration) and duration > 0:
                expected.append(float(duration))
            elif text and self.chars_per_second is not None and text_length(text) > 0:
                expected.append(text_length(text) / self.chars_per_second)
            else:
                expected.append(None)
        return expected

    def __call__(
        self,
        waveforms: Sequence[Waveform],
        *,
        reference_durations: Sequence[float | None] | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> list[float | None]:
        expected = self.expected_durations(len(waveforms), reference_durations, texts)
        scores = []
        for waveform, target in zip(waveforms, expected, strict=True):
            wav = usable_waveform(waveform, min_seconds=0.0)
            if wav is None or target is None:
                scores.append(None)
                continue
            band = 1.0 + self.tolerance
            scores.append(band_score(wav.size / SAMPLE_RATE, target / band, target * band, self.falloff))
        return scores


@load_once
@outside_zero3()
def _voice_encoder(device: str):
    from resemblyzer import VoiceEncoder

    return VoiceEncoder(device=device, verbose=False)


@load_once
@outside_zero3()
def _wavlm_xvector(model: str, device: str):
    """(feature extractor, WavLMForXVector) of a hub id or folder, loaded once per process and device."""
    from transformers import AutoFeatureExtractor, WavLMForXVector

    try:
        extractor = AutoFeatureExtractor.from_pretrained(model)
        network = WavLMForXVector.from_pretrained(model).to(device).eval()
    except (OSError, ValueError) as e:
        raise RuntimeError(f"Could not load the WavLM speaker-verification model {model!r}: {e}") from e
    return extractor, network


@dataclass(frozen=True)
class SpeakerSimilarityScorer:
    """How much each clip sounds like its reference voice (the voice prompt), from a speaker encoder.

    resemblyzer's embeddings are non-negative and unit-length, so their cosine similarity lies in [0, 1]; unrelated
    voices still reach 0.5-0.75 (two espeak-ng voices: 0.58, one voice on two sentences: 0.88). A WavLM x-vector's
    cosine lies in [-1, 1] (Seed-TTS-eval's SIM: 0.73-0.76 between two recordings of one speaker, with its WavLM-large
    model), so its `floor` is chosen on its own scale. The score maps the cosine linearly from `floor` (score 0;
    below it, 0) to 1 (score 1); floor=0 gives the raw cosine where it is positive.
    """

    floor: float = 0.5  # cosine similarity that scores 0
    min_seconds: float = 0.5  # of speech (resemblyzer: left after its silence trimming; wavlm: of the clip)
    device: str = "auto"  # torch device of the encoder: "auto", "cpu", "cuda", "cuda:1", ...
    backend: str = "resemblyzer"  # speaker encoder: "resemblyzer" or "wavlm" (transformers' WavLMForXVector)
    model: str | None = None  # wavlm: hub id or folder (default microsoft/wavlm-base-plus-sv); resemblyzer: None

    def __post_init__(self):
        if not (is_number(self.floor) and 0 <= self.floor < 1):
            raise ValueError(f"floor must be in [0, 1) (the cosine similarity that scores 0), got {self.floor}.")
        _check_positive("min_seconds", self.min_seconds)
        check_device_name(self.device)
        if self.backend not in SPEAKER_BACKENDS:
            raise ValueError(f"Unknown speaker backend {self.backend!r}: use one of {list(SPEAKER_BACKENDS)}.")
        if self.model is not None and (self.backend != "wavlm" or not isinstance(self.model, str) or not self.model):
            raise ValueError(
                f"model names a WavLM speaker-verification checkpoint (backend 'wavlm'), got {self.model!r} with "
                f"backend {self.backend!r}: resemblyzer ships its own weights."
            )

    def load(self) -> None:
        """Load the speaker encoder now (it loads once per process and device)."""
        device = str(resolve_device(self.device))
        if self.backend == "wavlm":
            _wavlm_xvector(self.model or DEFAULT_WAVLM_MODEL, device)
        else:
            _voice_encoder(device)

    def embed(self, waveforms: Sequence[Waveform]) -> list[np.ndarray | None]:
        """Unit-length speaker embeddings (None where unusable); resemblyzer: all windows of the batch in one
        forward pass."""
        if self.backend == "wavlm":
            return self._wavlm_embeddings(waveforms)
        import torch
        from resemblyzer import preprocess_wav
        from resemblyzer.audio import wav_to_mel_spectrogram

        encoder = _voice_encoder(str(resolve_device(self.device)))
        windows, owners = [], []
        for row, waveform in enumerate(waveforms):
            wav = usable_waveform(waveform, min_seconds=self.min_seconds)
            if wav is None:
                continue
            # Loudness normalisation and trimming of long silences, as the encoder was trained.
            wav = preprocess_wav(np.clip(wav, -1.0, 1.0))
            if wav.size < self.min_seconds * SAMPLE_RATE:
                continue
            wav_slices, mel_slices = encoder.compute_partial_slices(
                wav.size, rate=PARTIALS_PER_SECOND, min_coverage=PARTIAL_MIN_COVERAGE
            )
            mel = wav_to_mel_spectrogram(np.pad(wav, (0, max(0, wav_slices[-1].stop - wav.size))))
            windows.extend(mel[mel_slice] for mel_slice in mel_slices)
            owners.extend([row] * len(mel_slices))
        embeddings: list[np.ndarray | None] = [None] * len(waveforms)
        if not windows:
            return embeddings
        with torch.no_grad():
            partials = encoder(torch.from_numpy(np.stack(windows)).to(encoder.device)).cpu().numpy()
        owners = np.asarray(owners)
        for row in np.unique(owners):
            mean = partials[owners == row].mean(axis=0)
            embeddings[row] = mean / np.linalg.norm(mean)
        return embeddings

    def _wavlm_embeddings(self, waveforms: Sequence[Waveform]) -> list[np.ndarray | None]:
        """The x-vector of each clip, one clip per forward pass: the convolutional feature encoder of WavLM base
        normalises over time (group norm), so zero padding in a batch would change the shorter clips' vectors."""
        import torch

        extractor, network = _wavlm_xvector(self.model or DEFAULT_WAVLM_MODEL, str(resolve_device(self.device)))
        embeddings: list[np.ndarray | None] = [None] * len(waveforms)
        for row, waveform in enumerate(waveforms):
            wav = usable_waveform(waveform, min_seconds=self.min_seconds)
            if wav is None:
                continue
            inputs = extractor(wav, sampling_rate=SAMPLE_RATE, return_tensors="pt").to(network.device)
            with torch.no_grad():
                vector = network(**inputs).embeddings[0].float().cpu().numpy()
            embeddings[row] = vector / np.linalg.norm(vector)
        return embeddings

    def similarities(self, waveforms: Sequence[Waveform], references: Sequence[Waveform]) -> list[float | None]:
        """Raw cosine similarity of each clip with its row's reference: in [0, 1] for resemblyzer, [-1, 1] for
        wavlm."""
        _check_rows("references", references, len(waveforms))
        clip_embeddings = self.embed(waveforms)
        reference_embeddings = _map_distinct(self.embed, references)
        return [
            None if clip is None or reference is None else float(np.dot(clip, reference))
            for clip, reference in zip(clip_embeddings, reference_embeddings, strict=True)
        ]

    def score_cosines(self, cosines: Sequence[float | None]) -> list[float | None]:
        """Scores of measured cosine similarities: linear from `floor` (0) to 1 (1)."""
        return [
            None if cosine is None else min(1.0, max(0.0, (cosine - self.floor) / (1.0 - self.floor)))
            for cosine in cosines
        ]

    def __call__(self, waveforms: Sequence[Waveform], *, references: Sequence[Waveform]) -> list[float | None]:
        return self.score_cosines(self.similarities(waveforms, references))


def _onnx_providers(device: str) -> list:
    """onnxruntime providers for a device name: CUDA needs the onnxruntime-gpu package."""
    import onnxruntime

    if device in ("cpu", "mps"):  # onnxruntime has no Apple GPU provider in its standard package
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise RuntimeError(
            f"DNSMOS on {device} needs onnxruntime's CUDA provider: `pip install onnxruntime-gpu` in place of "
            "onnxruntime, or run DNSMOS with device='cpu'."
        )
    device_id = resolve_device(device).index or 0  # a bare "cuda" is this process's GPU, as for torch
    return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]


@load_once
def _dnsmos_session(personalized: bool, device: str, num_threads: int):
    import onnxruntime
    import speechmos.dnsmos

    folder = "pdnsmos_models" if personalized else "dnsmos_models"
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    model = Path(speechmos.dnsmos.__file__).parent / folder / "sig_bak_ovr.onnx"
    return onnxruntime.InferenceSession(str(model), sess_options=options, providers=_onnx_providers(device))


def dnsmos_segments(wav: np.ndarray) -> np.ndarray:
    """The 9.01 s windows DNSMOS scores, one per second (shape (n, 144160)), cut as speechmos cuts them: a shorter
    clip is repeated until it lasts 9.01 s."""
    segment = int(DNSMOS_SEGMENT_SECONDS * SAMPLE_RATE)
    while wav.size < segment:
        wav = np.concatenate([wav, wav])
    n_segments = int(np.floor(wav.size / SAMPLE_RATE) - DNSMOS_SEGMENT_SECONDS) + 1
    return np.stack([wav[start * SAMPLE_RATE : start * SAMPLE_RATE + segment] for start in range(n_segments)])


@dataclass(frozen=True)
class DnsmosScorer:
    """Perceived quality without a reference: DNSMOS P.835 (Microsoft's DNS challenge MOS predictor).

    SIG rates the speech itself, BAK the background, OVRL the whole; each on the 1-5 MOS scale (clean espeak-ng
    speech: OVRL 3.1; with loud white noise: 1.3). The score of `metric` is (MOS - 1) / 4. All windows of a batch
    go through the model together.
    """

    metric: str = "ovrl"  # which P.835 rating is the score: "sig", "bak" or "ovrl"
    personalized: bool = False  # the personalized DNSMOS model, which also penalises interfering talkers
    min_seconds: float = 1.0  # shorter clips give no score (DNSMOS would loop them to 9 s)
    device: str = "cpu"  # "cpu", "auto", "cuda" or "cuda:N" (CUDA needs onnxruntime-gpu)
    num_threads: int = 0  # onnxruntime intra-op threads; 0 = onnxruntime's default (all physical cores)
    batch_size: int = 16  # 9 s windows per model call (bounds memory: 0.6 MB of input per window)

    def __post_init__(self):
        if not isinstance(self.personalized, bool):
            raise ValueError(f"personalized must be true or false, got {self.personalized!r}.")
        if self.metric not in DNSMOS_METRICS:
            raise ValueError(f"Unknown DNSMOS metric {self.metric!r}: choose one of {', '.join(DNSMOS_METRICS)}.")
        _check_positive("min_seconds", self.min_seconds)
        if not (is_count(self.num_threads) and self.num_threads >= 0):
            raise ValueError(f"num_threads must be >= 0 (0 = onnxruntime's default), got {self.num_threads}.")
        if not (is_count(self.batch_size) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        check_device_name(self.device)

    def _device(self) -> str:
        """The device to run on: "auto" is this process's GPU if onnxruntime can use it (onnxruntime-gpu)."""
        if self.device != "auto":
            return self.device
        import onnxruntime

        return (
            str(resolve_device("auto")) if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
        )

    def load(self) -> None:
        """Open the DNSMOS session now (once per process and device)."""
        _dnsmos_session(self.personalized, self._device(), self.num_threads)

    def mos(self, waveforms: Sequence[Waveform]) -> list[dict[str, float] | None]:
        """Each clip's {"sig", "bak", "ovrl"} on the 1-5 MOS scale, averaged over its windows (None if unusable)."""
        from speechmos.dnsmos import DNSMOS

        session = _dnsmos_session(self.personalized, self._device(), self.num_threads)
        segments, owners = [], []
        for row, waveform in enumerate(waveforms):
            wav = usable_waveform(waveform, min_seconds=self.min_seconds)
            if wav is not None:
                # The model expects samples in [-1, 1]; a decoder can overshoot slightly.
                rows_segments = dnsmos_segments(np.clip(wav, -1.0, 1.0))
                segments.append(rows_segments)
                owners.extend([row] * len(rows_segments))
        results: list[dict[str, float] | None] = [None] * len(waveforms)
        if not segments:
            return results
        segments = np.concatenate(segments)
        input_name = session.get_inputs()[0].name
        raw = np.concatenate(
            [
                session.run(None, {input_name: segments[start : start + self.batch_size]})[0]
                for start in range(0, len(segments), self.batch_size)
            ]
        )
        # speechmos's calibration polynomials from raw outputs to MOS (the method does not use its instance).
        calibrated = np.stack(DNSMOS.get_polyfit_val(None, raw[:, 0], raw[:, 1], raw[:, 2], self.personalized), 1)
        owners = np.asarray(owners)
        for row in np.unique(owners):
            means = calibrated[owners == row].mean(axis=0)
            results[row] = dict(zip(DNSMOS_METRICS, map(float, means), strict=True))
        return results

    def score_mos(self, moses: Sequence[dict[str, float] | None]) -> list[float | None]:
        """Scores of measured ratings: (MOS - 1) / 4 of `metric`."""
        return [
            None if mos is None else min(1.0, max(0.0, (mos[self.metric] - MOS_MIN) / (MOS_MAX - MOS_MIN)))
            for mos in moses
        ]

    def __call__(self, waveforms: Sequence[Waveform]) -> list[float | None]:
        return self.score_mos(self.mos(waveforms))


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def measure_files(paths: list[str], reference: str | None, device: str) -> list[str]:
    """A markdown table of each file's raw measures: seconds, intonation movement and roughness (semitones), speaker
    cosine, DNSMOS."""
    from llasa.prosody import IntonationScorer

    waveforms = [load_audio(path) for path in paths]
    intonation = IntonationScorer(device=device).measures(waveforms)
    if reference is None:
        cosines = [None] * len(paths)
    else:
        references = [load_audio(reference)] * len(paths)
        cosines = SpeakerSimilarityScorer(device=device).similarities(waveforms, references)
    moses = DnsmosScorer().mos(waveforms)
    lines = [
        "| file | seconds | movement | roughness | speaker cosine | DNSMOS SIG | BAK | OVRL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path, wav, shape, cosine, mos in zip(paths, waveforms, intonation, cosines, moses, strict=True):
        sig, bak, ovrl = (None, None, None) if mos is None else (mos[metric] for metric in DNSMOS_METRICS)
        movement, roughness = (None, None) if shape is None else (shape.movement, shape.roughness)
        cells = [wav.size / SAMPLE_RATE, movement, roughness, cosine, sig, bak, ovrl]
        lines.append(f"| {path} | " + " | ".join(_format(cell) for cell in cells) + " |")
    return lines
