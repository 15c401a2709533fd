"""Audio in and out of the project: every waveform in memory is a mono float32 array at a named rate.

Files are decoded with soundfile (WAV, FLAC, OGG, MP3, ...) or, for what libsndfile cannot read (M4A, AAC,
...), with audioread through ffmpeg. Rates are changed only with `resample` (soxr, high quality).
"""

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from llasa.format import CODEC_SAMPLE_RATE

RESAMPLE_QUALITY = "HQ"  # soxr's high quality: transparent for speech, faster than "VHQ"
WAV_SUBTYPE = "PCM_16"  # what write_wav stores: 16-bit PCM
INT16_SCALE = 32768.0  # int16 PCM -> float in [-1, 1)


def load_audio(path, sample_rate: int = CODEC_SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file (a path, or a binary file object) to mono float32 at `sample_rate` (16 kHz default)."""
    try:
        wav, file_rate = _decode(path)
        return resample(to_mono(wav), file_rate, sample_rate)
    except Exception as e:
        raise RuntimeError(f"Failed to load audio {path}: {e}") from e


def _decode(path) -> tuple[np.ndarray, int]:
    """The file's samples as (frames, channels) float32 and its sample rate."""
    if isinstance(path, (str, os.PathLike)) and not Path(path).is_file():
        raise FileNotFoundError("no such file")
    try:
        wav, file_rate = sf.read(path, dtype="float32", always_2d=True)
        return wav, file_rate
    except sf.LibsndfileError as soundfile_error:
        try:
            return _decode_with_audioread(path)
        except Exception:
            # audioread's own errors say little ("NoBackendError()"); libsndfile's name the problem.
            raise soundfile_error from None


def _decode_with_audioread(path) -> tuple[np.ndarray, int]:
    import audioread

    with audioread.audio_open(str(path)) as source:
        pcm = b"".join(source)
        channels, file_rate = source.channels, source.samplerate
    wav = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).astype(np.float32) / INT16_SCALE
    return wav, file_rate


def to_mono(wav: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) array; a 1-D array is already mono."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        return wav
    if wav.ndim != 2:
        raise ValueError(f"Expected audio shaped (frames,) or (frames, channels), got {wav.shape}.")
    return wav.mean(axis=1, dtype=np.float32)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """A mono waveform at `target_sr`: round(len * target_sr / orig_sr) samples, float32."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"Sample rates must be positive, got {orig_sr} -> {target_sr}.")
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr:
        return wav
    return soxr.resample(wav, orig_sr, target_sr, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


def write_wav(path, wav: np.ndarray, sample_rate: int = CODEC_SAMPLE_RATE) -> Path:
    """Write a mono waveform as 16-bit PCM WAV, creating the parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, to_mono(wav), sample_rate, subtype=WAV_SUBTYPE, format="WAV")
    return path
