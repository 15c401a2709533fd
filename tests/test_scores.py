"""The speech scorers (llasa.scores) on real models (resemblyzer, DNSMOS) and espeak-ng speech."""

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from llasa.audio import SAMPLE_RATE
from llasa.scores import (
    DnsmosScorer,
    DurationScorer,
    SpeakerSimilarityScorer,
    _map_distinct,
    band_score,
    dnsmos_segments,
    estimate_speaking_rate,
    usable_waveform,
)
from llasa.text import text_length

DATA = Path(__file__).parent / "data"


def wave(clips_by_name, name):
    return clips_by_name[name][0]


def white_noise(seconds, level, seed=0):
    return np.random.default_rng(seed).normal(0, level, int(seconds * SAMPLE_RATE)).astype(np.float32)


class TestHelpers:
    def test_usable_waveform(self):
        # Missing, empty, too short, silent and non-finite clips are unusable; a real one comes back as float32.
        assert usable_waveform(None, 0.5) is None
        assert usable_waveform(np.zeros(0, np.float32), 0.0) is None
        assert usable_waveform(white_noise(0.4, 0.1), 0.5) is None
        assert usable_waveform(np.zeros(SAMPLE_RATE, np.float32), 0.5) is None
        assert usable_waveform(white_noise(1.0, 0.0005), 0.5) is None  # -66 dBFS
        assert usable_waveform(np.full(SAMPLE_RATE, np.nan, np.float32), 0.5) is None
        assert usable_waveform(white_noise(1.0, 0.1).astype(np.float64), 0.5).dtype == np.float32

    def test_usable_waveform_rejects_stereo(self):
        # A (frames, channels) array is a caller's mistake, not an unusable clip.
        with pytest.raises(ValueError, match="mono"):
            usable_waveform(np.zeros((SAMPLE_RATE, 2), np.float32), 0.5)

    def test_band_score(self):
        # 1 inside the band (edges included); outside, exp(-log-distance / falloff), symmetric in ratio.
        assert band_score(1.0, 0.5, 2.0, 0.25) == 1.0
        assert band_score(2.0, 0.5, 2.0, 0.25) == 1.0
        assert band_score(4.0, 0.5, 2.0, 0.25) == pytest.approx(math.exp(-math.log(2) / 0.25))
        assert band_score(0.25, 0.5, 2.0, 0.25) == pytest.approx(band_score(4.0, 0.5, 2.0, 0.25))

    def test_text_length(self):
        # Letters and digits of any script count; spaces and punctuation do not.
        assert text_length("Hello, world! 42") == 12
        assert text_length("你好。") == 2

    def test_distinct_references_measured_once(self):
        # Equal references (copies, as GRPO repeats a row over its group) go to the measure once; None stays None.
        a, b = white_noise(1.0, 0.1, seed=1), white_noise(1.0, 0.1, seed=2)
        assert _map_distinct(lambda batch: [len(batch)] * len(batch), [a, a.copy(), b, None]) == [2, 2, 2, None]


class TestSpeakingRate:
    def test_median_and_skips(self):
        # Median of 10, 20 and 40 chars/s (10 letters over 1, 0.5 and 0.25 s); empty text and bad durations skipped.
        rate = estimate_speaking_rate(
            ["abcdefghij"] * 3 + ["", "abc", "abc", None], [1.0, 0.5, 0.25, 1.0, 0.0, float("nan"), 1.0]
        )
        assert rate.chars_per_second == pytest.approx(20.0)
        assert (rate.n_pairs, rate.n_skipped) == (3, 4)

    def test_errors(self):
        # Mismatched lengths and a dataset without one usable pair are errors.
        with pytest.raises(ValueError, match="one duration per text"):
            estimate_speaking_rate(["abc"], [1.0, 2.0])
        with pytest.raises(ValueError, match="duration columns"):
            estimate_speaking_rate(["", "abc"], [1.0, None])

    def test_on_espeak_clips(self, clips_by_name):
        # espeak-ng's rate is in speech's plausible range, and a held-out clip's duration predicted from the others
        # is within 30% of the real one (leave-one-out over tests/data; worst seen 26%, the fastest clip).
        names = sorted(clips_by_name)
        durations = {name: wave(clips_by_name, name).size / SAMPLE_RATE for name in names}
        rate = estimate_speaking_rate([clips_by_name[name][1] for name in names], [durations[name] for name in names])
        assert 10 < rate.chars_per_second < 20
        for held_out in names:
            others = [name for name in names if name != held_out]
            scorer = DurationScorer(
                chars_per_second=estimate_speaking_rate(
                    [clips_by_name[name][1] for name in others], [durations[name] for name in others]
                ).chars_per_second
            )
            [expected] = scorer.expected_durations(1, None, [clips_by_name[held_out][1]])
            assert expected == pytest.approx(durations[held_out], rel=0.3)


class TestDurationScorer:
    def test_in_band_and_far_out(self, clips_by_name):
        # A 2.59 s clip: 1 within 15% of the expected duration; at 10 s expected, exp(-(ln(10/2.59) - ln 1.15) / 0.25).
        wav = wave(clips_by_name, "fox_en_us.wav")
        seconds = wav.size / SAMPLE_RATE
        scores = DurationScorer()([wav, wav, wav], reference_durations=[seconds, seconds * 1.1, 10.0])
        assert scores[:2] == [1.0, 1.0]
        assert scores[2] == pytest.approx(math.exp(-(math.log(10.0 / seconds) - math.log(1.15)) / 0.25))
        assert scores[2] < 0.01

    def test_expected_from_text(self, clips_by_name):
        # Without a reference duration, the text (35 letters) at 14 chars/s expects 2.5 s: the 2.59 s clip is in band.
        wav = wave(clips_by_name, "fox_en_us.wav")
        scorer = DurationScorer(chars_per_second=14.0)
        assert scorer.expected_durations(2, [None, 3.0], [clips_by_name["fox_en_us.wav"][1]] * 2) == [2.5, 3.0]
        assert scorer([wav], reference_durations=[None], texts=[clips_by_name["fox_en_us.wav"][1]]) == [1.0]

    def test_none_rows(self, clips_by_name):
        # Missing, silent and non-finite clips, and rows with nothing to expect, score None.
        wav = wave(clips_by_name, "fox_en_us.wav")
        batch = [None, np.zeros(SAMPLE_RATE, np.float32), np.full(100, np.inf, np.float32), wav, wav]
        scores = DurationScorer()(batch, reference_durations=[2.0, 2.0, 2.0, None, float("nan")], texts=None)
        assert scores == [None] * 5
        # A text without a speaking rate gives no expectation either.
        assert DurationScorer()([wav], texts=["some text"]) == [None]

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"tolerance": -0.1},
            {"tolerance": "0.1"},
            {"falloff": 0.0},
            {"chars_per_second": 0.0},
            {"chars_per_second": math.nan},
        ],
    )
    def test_bad_parameters(self, kwargs):
        # A negative or non-numeric tolerance, zero falloff and a non-positive or NaN rate are refused at construction.
        with pytest.raises(ValueError):
            DurationScorer(**kwargs)

    def test_row_count_mismatch(self, clips_by_name):
        # One reference duration per waveform, or an error naming the counts.
        with pytest.raises(ValueError, match="Got 1 reference durations for 2 waveforms"):
            DurationScorer()([wave(clips_by_name, "fox_en_us.wav")] * 2, reference_durations=[1.0])


class TestSpeakerSimilarityScorer:
    def test_same_voice_beats_other_voice(self, clips_by_name):
        # One voice on two sentences is closer than two voices on one sentence (both espeak-ng voices).
        scorer = SpeakerSimilarityScorer(device="cpu")
        us, f3 = wave(clips_by_name, "fox_en_us.wav"), wave(clips_by_name, "fox_en_f3.wav")
        same_us, same_f3, other = scorer.similarities(
            [us, f3, us], [wave(clips_by_name, "rainbow_en_us.wav"), wave(clips_by_name, "shells_en_f3.wav"), f3]
        )
        assert min(same_us, same_f3) > other + 0.1
        assert 0 <= other and max(same_us, same_f3) <= 1

    def test_batch_matches_resemblyzer(self, clips_by_name):
        # The batched embeddings equal resemblyzer's own embed_utterance, one clip at a time.
        from resemblyzer import VoiceEncoder, preprocess_wav

        names = ["fox_en_us.wav", "shells_en_f3.wav", "stella_en_us.flac"]
        batch = SpeakerSimilarityScorer(device="cpu").embed([wave(clips_by_name, name) for name in names])
        encoder = VoiceEncoder(device="cpu", verbose=False)
        for name, embedding in zip(names, batch, strict=True):
            np.testing.assert_allclose(
                embedding, encoder.embed_utterance(preprocess_wav(wave(clips_by_name, name))), atol=1e-5
            )

    def test_mapping(self, clips_by_name):
        # floor=0 gives the raw cosine; the default maps (cosine - 0.5) / 0.5; a clip against itself scores 1.
        us, f3 = wave(clips_by_name, "fox_en_us.wav"), wave(clips_by_name, "fox_en_f3.wav")
        [cosine] = SpeakerSimilarityScorer(floor=0.0, device="cpu")([us], references=[f3])
        [score, itself] = SpeakerSimilarityScorer(device="cpu")([us, us], references=[f3, us])
        assert score == pytest.approx(max(0.0, (cosine - 0.5) / 0.5))
        assert itself == pytest.approx(1.0, abs=1e-5)

    def test_none_rows(self, clips_by_name):
        # A missing reference, a missing, too short, silent or non-finite clip, or a silent reference gives None.
        us = wave(clips_by_name, "fox_en_us.wav")
        silence = np.zeros(SAMPLE_RATE, np.float32)
        batch = [us, None, us[:4000], silence, np.full(SAMPLE_RATE, np.nan, np.float32), us]
        references = [None, us, us, us, us, silence]
        assert SpeakerSimilarityScorer(device="cpu")(batch, references=references) == [None] * 6

    @pytest.mark.parametrize("kwargs", [{"floor": 1.0}, {"floor": -0.1}, {"min_seconds": 0.0}, {"device": "gpu"}])
    def test_bad_parameters(self, kwargs):
        # A floor outside [0, 1), a non-positive minimum and an unknown device are refused at construction.
        with pytest.raises(ValueError):
            SpeakerSimilarityScorer(**kwargs)

    def test_picklable(self):
        # Scorers hold options only (models are cached per process), so they pickle as reward functions must.
        scorer = SpeakerSimilarityScorer(floor=0.3)
        assert pickle.loads(pickle.dumps(scorer)) == scorer


class TestDnsmosScorer:
    def test_noise_lowers_quality(self, clips_by_name):
        # Loud white noise lowers the background and overall ratings (seen: BAK 3.9 -> 1.2, OVRL 2.9 -> 1.4).
        clean = wave(clips_by_name, "fox_en_us.wav")
        noisy = np.clip(clean + white_noise(clean.size / SAMPLE_RATE, 0.1), -1, 1)
        scorer = DnsmosScorer()
        clean_mos, noisy_mos = scorer.mos([clean, noisy])
        assert clean_mos["bak"] > noisy_mos["bak"] + 1
        assert clean_mos["ovrl"] > noisy_mos["ovrl"] + 1
        assert scorer([clean]) == [pytest.approx((clean_mos["ovrl"] - 1) / 4)]

    def test_matches_speechmos(self, clips_by_name):
        # Batched windows give speechmos's own per-clip ratings, for a short (looped) clip and a 12 s one (4 windows).
        import speechmos.dnsmos

        short = wave(clips_by_name, "rainbow_en_us.wav")
        long = np.concatenate([wave(clips_by_name, name) for name in sorted(clips_by_name)])[: 12 * SAMPLE_RATE]
        assert dnsmos_segments(long).shape == (3, 144160)  # windows at 0, 1 and 2 s
        ours = DnsmosScorer(batch_size=2).mos([short, long])
        for wav, mos in zip([short, long], ours, strict=True):
            reference = speechmos.dnsmos.run(wav, sr=SAMPLE_RATE)
            assert mos == pytest.approx(
                {"sig": reference["sig_mos"], "bak": reference["bak_mos"], "ovrl": reference["ovrl_mos"]}, abs=1e-3
            )

    def test_none_rows(self, clips_by_name):
        # Missing, too short (< 1 s), silent and non-finite clips give None.
        batch = [None, wave(clips_by_name, "fox_en_us.wav")[:8000], np.zeros(SAMPLE_RATE * 2, np.float32)]
        batch.append(np.full(SAMPLE_RATE * 2, np.nan, np.float32))
        assert DnsmosScorer()(batch) == [None] * 4

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"metric": "mos"},
            {"personalized": "yes"},
            {"num_threads": -1},
            {"batch_size": 0},
            {"batch_size": True},
            {"min_seconds": 0},
            {"device": "tpu"},
        ],
    )
    def test_bad_parameters(self, kwargs):
        # An unknown metric or device, a non-boolean flag and non-positive or non-integer sizes are refused.
        with pytest.raises(ValueError):
            DnsmosScorer(**kwargs)

    def test_cuda_without_gpu_runtime(self, clips_by_name):
        # Without onnxruntime's CUDA provider, asking for CUDA says what to install.
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("onnxruntime-gpu is installed")
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            DnsmosScorer(device="cuda")([wave(clips_by_name, "fox_en_us.wav")])
