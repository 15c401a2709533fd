"""Audio I/O on the bundled espeak-ng clips (tests/data, made by tests/data/make_clips.sh)."""

import csv
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from llasa.audio import SAMPLE_RATE, load_audio, resample, to_mono, write_wav

DATA_DIR = Path(__file__).parent / "data"
CLIPS = sorted(path for path in DATA_DIR.iterdir() if path.suffix in {".wav", ".flac", ".mp3"})


def _duration(path: Path) -> float:
    return sf.info(path).duration


def _peak_frequency(wav: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav))
    return float(np.fft.rfftfreq(len(wav), 1 / sample_rate)[spectrum.argmax()])


class TestBundledClips:
    def test_metadata_lists_every_clip_with_its_text(self):
        # Every clip on disk has one transcript, and two voices speak the same sentence.
        with open(DATA_DIR / "metadata.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert sorted(row["file_name"] for row in rows) == sorted(path.name for path in CLIPS)
        assert all(row["text"].endswith(".") for row in rows)
        texts = {row["file_name"]: row["text"] for row in rows}
        assert texts["fox_en_us.wav"] == texts["fox_en_f3.wav"]

    def test_formats_cover_resampling_and_downmixing(self):
        # The set holds 16 kHz mono WAV, 22.05 kHz stereo FLAC and MP3, each 1.5 to 4 s long.
        infos = {path.suffix: sf.info(path) for path in CLIPS}
        assert (infos[".wav"].samplerate, infos[".wav"].channels, infos[".wav"].subtype) == (16000, 1, "PCM_16")
        assert (infos[".flac"].samplerate, infos[".flac"].channels) == (22050, 2)
        assert infos[".mp3"].samplerate == 22050
        assert all(1.5 <= _duration(path) <= 4.0 for path in CLIPS)
        assert sum(path.stat().st_size for path in DATA_DIR.iterdir()) < 1_000_000


class TestLoadAudio:
    @pytest.mark.parametrize("path", CLIPS, ids=[path.name for path in CLIPS])
    def test_every_format_loads_as_mono_float32_at_16k(self, path):
        # Any bundled format comes back 1-D float32 at 16 kHz, speech-like level, and the file's duration.
        wav = load_audio(path)
        assert wav.dtype == np.float32 and wav.ndim == 1
        assert 0 < wav.std() < 1
        assert len(wav) / SAMPLE_RATE == pytest.approx(_duration(path), abs=0.02)

    def test_other_target_rate(self):
        # Asking for 24 kHz resamples a 16 kHz file to 1.5x as many samples.
        path = DATA_DIR / "fox_en_us.wav"
        assert len(load_audio(path, sample_rate=24000)) == round(sf.info(path).frames * 1.5)

    def test_stereo_is_averaged(self):
        # The stereo FLAC (two equal channels) loads as the mean of its channels, resampled.
        path = DATA_DIR / "stella_en_us.flac"
        stereo, rate = sf.read(path, dtype="float32")
        expected = resample(stereo.mean(axis=1), rate, SAMPLE_RATE)
        np.testing.assert_allclose(load_audio(path), expected, atol=1e-6)

    def test_file_object(self):
        # The bytes of a FLAC file (as datasets stores audio) load like the file itself.
        path = DATA_DIR / "stella_en_us.flac"
        np.testing.assert_array_equal(load_audio(io.BytesIO(path.read_bytes())), load_audio(path))

    def test_unreadable_file_names_the_file(self, tmp_path):
        # A file that is not audio fails with a RuntimeError naming it and libsndfile's reason.
        path = tmp_path / "notes.wav"
        path.write_text("not audio")
        with pytest.raises(RuntimeError, match=r"Failed to load audio .*notes\.wav: .*Format not recognised"):
            load_audio(path)

    def test_missing_file_names_the_file(self, tmp_path):
        # A path that does not exist fails the same way, saying so.
        with pytest.raises(RuntimeError, match=r"Failed to load audio .*absent\.wav: no such file"):
            load_audio(tmp_path / "absent.wav")

    @pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
    def test_formats_libsndfile_cannot_read_go_through_audioread(self, tmp_path):
        # AAC in M4A (not readable by libsndfile) decodes through audioread + ffmpeg.
        source = DATA_DIR / "fox_en_us.wav"
        m4a = tmp_path / "fox.m4a"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-i", source, m4a], check=True)
        with pytest.raises(sf.LibsndfileError):
            sf.info(m4a)
        wav = load_audio(m4a)
        assert wav.dtype == np.float32 and 0 < wav.std() < 1
        # The AAC encoder adds up to a few tens of milliseconds of priming and padding.
        assert len(wav) / SAMPLE_RATE == pytest.approx(_duration(source), abs=0.1)


class TestResample:
    def test_lengths(self):
        # One second stays one second at the new rate, both ways; the same rate returns the input.
        one_second = np.zeros(22050, dtype=np.float32)
        assert len(resample(one_second, 22050, 16000)) == 16000
        assert len(resample(np.zeros(16000, dtype=np.float32), 16000, 22050)) == 22050
        np.testing.assert_array_equal(resample(one_second, 22050, 22050), one_second)

    def test_pitch_is_kept(self):
        # A 440 Hz tone is still 440 Hz after 44.1 kHz -> 16 kHz, and float32.
        time = np.arange(44100) / 44100
        tone = (0.5 * np.sin(2 * np.pi * 440 * time)).astype(np.float32)
        out = resample(tone, 44100, 16000)
        assert out.dtype == np.float32
        assert _peak_frequency(out, 16000) == pytest.approx(440, abs=1)

    def test_rejects_non_positive_rates(self):
        # A zero rate is a caller's mistake, reported as such.
        with pytest.raises(ValueError, match="Sample rates must be positive"):
            resample(np.zeros(10, dtype=np.float32), 0, 16000)


class TestToMono:
    def test_averages_channels(self):
        # (frames, channels) -> mean over channels; 1-D input is returned as float32.
        stereo = np.array([[1.0, 0.0], [0.5, -0.5]])
        np.testing.assert_array_equal(to_mono(stereo), np.array([0.5, 0.0], dtype=np.float32))
        assert to_mono(np.array([1, 2])).dtype == np.float32

    def test_rejects_3d(self):
        # Anything beyond (frames, channels) is refused with its shape.
        with pytest.raises(ValueError, match=r"\(2, 2, 2\)"):
            to_mono(np.zeros((2, 2, 2)))


class TestWriteWav:
    def test_round_trip_as_16_bit_pcm(self, tmp_path):
        # write_wav creates missing folders and stores 16-bit PCM that loads back within one step.
        wav = load_audio(DATA_DIR / "fox_en_us.wav")
        path = write_wav(tmp_path / "new" / "dir" / "fox.wav", wav)
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", len(wav))
        np.testing.assert_allclose(load_audio(path), wav, atol=1 / 32768)

    def test_other_rate(self, tmp_path):
        # A waveform at 24 kHz is written at 24 kHz.
        path = write_wav(tmp_path / "tone.wav", np.zeros(2400, dtype=np.float32), sample_rate=24000)
        assert sf.info(path).samplerate == 24000
