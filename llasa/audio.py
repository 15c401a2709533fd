"""Audio in and out of the project: every waveform in memory is a mono float32 array at a named rate.

Files are decoded with soundfile (WAV, FLAC, OGG, MP3, ...) or, for what libsndfile cannot read (M4A, AAC,
...), with audioread through ffmpeg. Rates are changed only with `resample` (soxr, high quality).
"""

import io
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

# The project's one rate: every waveform it passes around is 16 kHz mono, what XCodec2 reads and writes and what
# Whisper, silero-vad and the other scorers hear (so no waveform is resampled between them).
SAMPLE_RATE = 16000
RESAMPLE_QUALITY = "HQ"  # soxr's high quality: transparent for speech, faster than "VHQ"
WAV_SUBTYPE = "PCM_16"  # what write_wav stores: 16-bit PCM
INT16_SCALE = 32768.0  # int16 PCM -> float in [-1, 1)
# A clip whose RMS is below -60 dBFS is silence or near-silence: nothing to encode, imitate or score.
SILENCE_RMS = 10 ** (-60 / 20)
# Streaming writers (espeak-ng to a pipe, sox) put 0 or a size near 4 GiB in the header: the real size is unknown.
UNSIZED_WAV_DATA = 0x7FFF0000
# Audio files by suffix: those load_audio reads (soundfile, else ffmpeg), as a dataset folder may hold them.
AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif"}
# Audio a browser plays, by suffix: the clips a listening test or an evaluation folder holds (.wav first).
PLAYABLE_AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}


class BadAudioError(RuntimeError):
    """Audio that decodes but must not be used: `kind` is "truncated", "non_finite", "silent" or "empty"."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def load_audio(path, sample_rate: int = SAMPLE_RATE, name=None) -> np.ndarray:
    """Decode an audio file (a path, or a binary file object) to mono float32 at `sample_rate` (16 kHz default).

    A WAV file cut short or samples that are not finite raise BadAudioError; messages name `name` (default: path)."""
    name = path if name is None else name
    try:
        wav, file_rate = _decode(path)
    except Exception as e:
        raise RuntimeError(f"Failed to load audio {name}: {e}") from e
    truncation = wav_truncation(path)
    if truncation is not None:
        declared, present = truncation
        raise BadAudioError(
            f"Truncated audio {name}: its WAV header says {declared:.2f} s, the file holds {present:.2f} s",
            "truncated",
        )
    if not np.isfinite(wav).all():
        raise BadAudioError(f"Bad audio {name}: it holds NaN or infinite samples", "non_finite")
    return resample(to_mono(wav), file_rate, sample_rate)


def check_speech(wav: np.ndarray, name) -> np.ndarray:
    """The waveform, if it can be used as speech: finite samples, not empty, not silent (RMS >= SILENCE_RMS)."""
    if wav.size == 0:
        raise BadAudioError(f"Bad audio {name}: it holds no samples", "empty")
    if not np.isfinite(wav).all():
        raise BadAudioError(f"Bad audio {name}: it holds NaN or infinite samples", "non_finite")
    if is_silent(wav):
        raise BadAudioError(f"Silent audio {name}: RMS {rms(wav):.2g} is below {SILENCE_RMS:.2g} (-60 dBFS)", "silent")
    return wav


def rms(wav: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))


def is_silent(wav: np.ndarray) -> bool:
    """Whether a (non-empty) clip is silence or near-silence: RMS below -60 dBFS."""
    return rms(wav) < SILENCE_RMS


def usable_waveform(waveform, min_seconds: float) -> np.ndarray | None:
    """The clip (16 kHz) as float32, or None if it is missing, shorter than `min_seconds`, empty, silent or not
    finite: what a scorer can measure."""
    if waveform is None:
        return None
    wav = np.asarray(waveform, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"Expected a mono waveform (1-D array of samples), got shape {wav.shape}.")
    if wav.size == 0 or wav.size < min_seconds * SAMPLE_RATE or not np.isfinite(wav).all():
        return None
    if is_silent(wav):
        return None
    return wav


def wav_truncation(source) -> tuple[float, float] | None:
    """(seconds the WAV header declares, seconds the file holds) when a WAV file is cut short, else None.

    libsndfile silently reads what is there, so a file cut off mid-data would pass for a shorter clip."""
    header = _wav_data_chunk(source)
    if header is None:
        return None
    block_align, byte_rate, declared, present = header
    if declared <= present or declared == 0 or declared >= UNSIZED_WAV_DATA or byte_rate == 0:
        return None
    present -= present % max(block_align, 1)
    return declared / byte_rate, present / byte_rate


def _wav_data_chunk(source) -> tuple[int, int, int, int] | None:
    """(block align, byte rate, declared data bytes, data bytes present) of a RIFF/WAVE file, else None. Only the
    chunk headers are read (a seekable file object is left where it was)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _wav_data_chunk(f)
    if not (hasattr(source, "seek") and hasattr(source, "read")):
        return None
    position = source.tell()
    try:
        end = source.seek(0, io.SEEK_END)
        source.seek(0)
        head = source.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset, block_align, byte_rate = 12, 0, 0
        while offset + 8 <= end:
            source.seek(offset)
            chunk = source.read(22)  # id, size, and for "fmt " the byte rate and block align
            chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
            if chunk_id == b"fmt " and len(chunk) >= 22:
                byte_rate, block_align = struct.unpack("<IH", chunk[16:22])
            if chunk_id == b"data":
                return block_align, byte_rate, size, end - offset - 8
            offset += 8 + size + size % 2
        return None
    finally:
        source.seek(position)


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


def write_wav(path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write a mono waveform as 16-bit PCM WAV, creating the parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, to_mono(wav), sample_rate, subtype=WAV_SUBTYPE, format="WAV")
    return path


def count_identical(pairs) -> int:
    """How many (path, path) pairs are byte-identical files: two systems that wrote exactly the same clip."""
    import filecmp

    return sum(filecmp.cmp(a, b, shallow=False) for a, b in pairs)


def identical_clips_note(a: str, b: str, identical: int, compared: int) -> str | None:
    """What `identical` byte-identical clips out of `compared` mean for systems a and b; None when there are none."""
    if not identical:
        return None
    if identical < compared:
        return f"{identical} of the {compared} clips {a} and {b} share are identical files."
    return (
        f"{a} and {b} made identical audio: all {compared} clips they share are identical files, so their scores "
        "cannot differ. The same weights make the same clips with the same seed: check that the two models differ "
        "(a training run whose updates were all zero leaves its checkpoint equal to the base model)."
    )
