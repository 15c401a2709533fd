"""XCodec2 through load_codec, on tiny random checkpoints saved to disk (both backends) and the bundled clips."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llasa.codec import (
    BATCHING_MODES,
    ENCODER_MODULES,
    XCODEC2_INSTALL_HINT,
    OriginalXcodec2,
    TransformersXcodec2,
    decode_continuations,
    default_batching,
    load_codec,
    num_codes,
    xcodec2_decoder_class,
)
from llasa.format import CODEBOOK_SIZE, SAMPLES_PER_TOKEN, TOKENS_PER_SECOND

DATA_DIR = Path(__file__).parent / "data"
# Masked batches of different lengths decode each clip as alone up to float rounding: convolutions round differently
# on longer (padded) inputs. benchmarks/bench_codec.py measured at most 1.3e-05 on this codec (peaks ~3); 4x margin.
MASKED_ATOL = 5e-5
DECODE_ONLY_ERROR = r"loaded with decode_only=True: it has no semantic model or acoustic encoder"
CLIP_NAMES = ["fox_en_us.wav", "fox_en_f3.wav", "rainbow_en_us.wav", "stella_en_us.flac"]
# The config.json of the original release, HKUSTAudio/xcodec2 (the `xcodec2` package's BigCodecConfig).
ORIGINAL_RELEASE_CONFIG = {
    "architectures": ["XCodec2Model"],
    "codec_decoder_hidden_size": 1024,
    "codec_encoder_hidden_size": 1024,
    "model_type": "xcodec2",
    "semantic_hidden_size": 1024,
    "use_vocos": True,
}


@pytest.fixture(scope="module")
def waves(clips_by_name):
    """Three bundled clips of different lengths."""
    return [clips_by_name[name][0] for name in CLIP_NAMES]


@pytest.fixture(scope="module")
def codec(tiny_codec_dir):
    return load_codec(tiny_codec_dir, device="cpu", batch_size=2)


@pytest.fixture(scope="module")
def decode_only_codec(tiny_codec_dir):
    return load_codec(tiny_codec_dir, device="cpu", batch_size=4, batching="masked", decode_only=True)


@pytest.fixture(scope="module")
def clip_codes(codec, waves):
    return codec.encode(waves)


@pytest.fixture(scope="module")
def original_codec(tiny_original_codec_dir):
    from testing.tiny_original_xcodec2 import offline_original_xcodec2

    with offline_original_xcodec2():
        return load_codec(tiny_original_codec_dir, device="cpu")


def _write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_num_codes_matches_the_codec_padding():
    # XCodec2 pads N samples up past the next multiple of 320: N // 320 + 1 codes, even for 0 or 320 samples.
    assert [num_codes(n) for n in (0, 1, 319, 320, 16000, 16319)] == [1, 1, 1, 2, 51, 51]


class TestLoadCodec:
    def test_transformers_checkpoint_selects_transformers_backend(self, codec):
        # config.json with model_type "xcodec2" and a semantic_model_config -> transformers' Xcodec2Model.
        assert isinstance(codec, TransformersXcodec2)
        assert (codec.sample_rate, codec.device, codec.batch_size) == (16000, torch.device("cpu"), 2)

    def test_original_checkpoint_selects_original_backend(self, original_codec):
        # The original layout (codec_encoder_hidden_size, XCodec2Model) -> the `xcodec2` package, one clip at a time.
        assert isinstance(original_codec, OriginalXcodec2)
        assert original_codec.batch_size == 1

    def test_missing_xcodec2_package_names_the_fix(self, tmp_path, monkeypatch):
        # The original release's config without the package installed: ImportError with the install command.
        monkeypatch.setitem(sys.modules, "xcodec2", None)
        monkeypatch.setitem(sys.modules, "xcodec2.modeling_xcodec2", None)
        folder = _write_config(tmp_path / "xcodec2", ORIGINAL_RELEASE_CONFIG)
        with pytest.raises(ImportError, match="needs the `xcodec2` package") as error:
            load_codec(folder, device="cpu")
        assert XCODEC2_INSTALL_HINT in str(error.value)

    def test_other_model_is_refused(self, tmp_path):
        # A checkpoint of another model (a Llama config) is not taken for a codec.
        folder = _write_config(tmp_path / "llama", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
        with pytest.raises(ValueError, match=r"is not an XCodec2 checkpoint \(config.json has model_type='llama'"):
            load_codec(folder, device="cpu")

    def test_folder_without_config_is_refused(self, tmp_path):
        # A folder with no config.json says so.
        with pytest.raises(ValueError, match="is not an XCodec2 checkpoint: it has no config.json"):
            load_codec(tmp_path, device="cpu")

    def test_half_precision_needs_a_gpu(self, tiny_codec_dir):
        # float16 on the CPU is refused before anything loads; so is an unknown dtype name.
        with pytest.raises(ValueError, match="Half precision"):
            load_codec(tiny_codec_dir, device="cpu", dtype="float16")
        with pytest.raises(ValueError, match="Unknown dtype 'int8'"):
            load_codec(tiny_codec_dir, device="cpu", dtype="int8")


class TestTransformersBackend:
    def test_codes_are_ints_in_the_codebook_at_50_per_second(self, waves, clip_codes):
        # One int code in [0, 65535] per 320 samples: N // 320 + 1, within one of duration * 50.
        for wav, codes in zip(waves, clip_codes, strict=True):
            assert all(type(code) is int and 0 <= code < CODEBOOK_SIZE for code in codes)
            assert len(codes) == num_codes(len(wav))
            assert abs(len(codes) - len(wav) / SAMPLES_PER_TOKEN) <= 1
            assert abs(len(codes) - len(wav) / 16000 * TOKENS_PER_SECOND) <= 1
            assert len(set(codes)) > 10  # the tiny codec does not collapse to one code

    def test_batched_encode_equals_one_at_a_time(self, codec, waves, clip_codes):
        # Clips of different lengths, batched in pairs, encode as they do alone; so do two clips of equal
        # code length (16000 and 16100 samples: 51 codes), which share a batch, next to a 100-sample one.
        assert clip_codes == [codec.encode([wav])[0] for wav in waves]
        short = [waves[0][:16000], waves[1][:16100], waves[2][:100]]
        assert codec.encode(short) == [codec.encode([wav])[0] for wav in short]

    def test_decoded_length_is_exactly_n_codes_times_320(self, codec, clip_codes):
        # Each decoded clip has exactly len(codes) * 320 float32 samples.
        for codes, audio in zip(clip_codes, codec.decode(clip_codes), strict=True):
            assert audio.dtype == np.float32 and audio.ndim == 1
            assert len(audio) == len(codes) * SAMPLES_PER_TOKEN
            assert 0 < audio.std()

    def test_decode_of_mixed_lengths_trims_each_and_matches_one_at_a_time(self, codec):
        # A batch of 1, 0, 7, 7 and 40 codes: each trimmed to its own length, each as decoded alone.
        rng = np.random.default_rng(0)
        codes = [rng.integers(0, CODEBOOK_SIZE, size=n).tolist() for n in (1, 0, 7, 7, 40)]
        audio = codec.decode(codes)
        assert [len(a) for a in audio] == [320, 0, 7 * 320, 7 * 320, 40 * 320]
        for clip_codes, clip_audio in zip(codes, audio, strict=True):
            alone = codec.decode([clip_codes])[0]
            np.testing.assert_allclose(clip_audio, alone, atol=1e-5)

    def test_continuations_are_decoded_after_their_voice_prompt(self, codec, clip_codes):
        # prompt + new codes are decoded as one sequence and split at len(prompt) * 320 samples; without a prompt
        # the new codes are decoded alone
        prompt, new = clip_codes[0][:40], clip_codes[1][:30]
        [(prompt_part, new_part), (empty, alone)] = decode_continuations(codec, [new, new], [prompt, None])
        [together] = codec.decode([prompt + new])
        assert (len(prompt_part), len(new_part)) == (40 * 320, 30 * 320)
        np.testing.assert_array_equal(np.concatenate([prompt_part, new_part]), together)
        assert len(empty) == 0
        np.testing.assert_array_equal(alone, codec.decode([new])[0])

    def test_decode_rejects_codes_outside_the_codebook(self, codec):
        # 65536 is one past the codebook; the error names the offending list and the range.
        with pytest.raises(ValueError, match=r"codes\[1\] holds 0\.\.65536, outside XCodec2's codebook"):
            codec.decode([[1, 2], [0, 65536]])

    def test_encode_rejects_stereo_and_empty_audio(self, codec):
        # A (frames, 2) array or an empty one is not a 16 kHz mono waveform.
        with pytest.raises(ValueError, match=r"waveforms\[0\] must be a non-empty 1-D"):
            codec.encode([np.zeros((16000, 2), dtype=np.float32)])
        with pytest.raises(ValueError, match=r"waveforms\[1\] must be a non-empty 1-D"):
            codec.encode([np.zeros(320, dtype=np.float32), np.zeros(0, dtype=np.float32)])


def _random_codes(lengths, seed=0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, CODEBOOK_SIZE, size=n).tolist() for n in lengths]


def _decoder_calls(codec, codes) -> int:
    """How many times decoding `codes` runs the acoustic decoder (its first layer counts the calls)."""
    calls = []
    hook = codec.model.acoustic_decoder.fc.register_forward_hook(lambda *args: calls.append(1))
    try:
        codec.decode(codes)
    finally:
        hook.remove()
    return len(calls)


class TestBatching:
    LENGTHS = (5, 1, 33, 12, 60, 2, 47, 20)  # 8 clips, 8 different lengths

    def test_default_is_exact_on_the_cpu_and_masked_on_a_gpu(self, codec):
        # Unless told, a CPU codec batches only equal lengths (compute-bound: padding is extra work); a GPU one masks.
        assert codec.batching == "exact"
        assert [default_batching(torch.device(name)) for name in ("cpu", "cuda:1", "mps")] == [
            "exact",
            "masked",
            "masked",
        ]

    def test_masked_batches_of_different_lengths_decode_as_one_at_a_time(self, decode_only_codec):
        # 8 lengths in batches of 4 (and an empty list): each clip exactly len(codes) * 320 samples, as decoded
        # alone up to rounding.
        codes = _random_codes(self.LENGTHS)
        audio = decode_only_codec.decode(codes + [[]])
        assert [len(clip) for clip in audio] == [n * SAMPLES_PER_TOKEN for n in self.LENGTHS] + [0]
        for clip_codes, clip_audio in zip(codes, audio[:-1], strict=True):
            np.testing.assert_allclose(clip_audio, decode_only_codec.decode([clip_codes])[0], rtol=0, atol=MASKED_ATOL)

    def test_masked_batches_take_fewer_decoder_calls(self, decode_only_codec):
        # The point of masking: 8 clips of 8 lengths (40..47 codes) in batches of 4 take 2 decoder calls;
        # same-length-only batching ("exact") takes one call per clip.
        codes = _random_codes((44, 40, 47, 41, 45, 43, 46, 42))
        assert _decoder_calls(decode_only_codec, codes) == 2
        decode_only_codec.batching = "exact"
        try:
            assert _decoder_calls(decode_only_codec, codes) == 8
        finally:
            decode_only_codec.batching = "masked"

    def test_masked_batches_bound_their_padding(self, decode_only_codec):
        # Longest first, a clip joins a batch only while at most MAX_PADDING (25%) of the batch's frames are
        # padding: 60, 47, 33 (22% padding) | 20, 12 (20%) | 5 (with it, 38%) | 2, 1 (25%).
        assert _decoder_calls(decode_only_codec, _random_codes(self.LENGTHS)) == 4

    def test_exact_mode_is_one_at_a_time_bit_for_bit(self, codec):
        # batching="exact": clips of different lengths never share a batch, so each is exactly its lone decode.
        codes = _random_codes(self.LENGTHS)
        for clip_codes, clip_audio in zip(codes, codec.decode(codes), strict=True):
            np.testing.assert_array_equal(clip_audio, codec.decode([clip_codes])[0])

    def test_masked_batch_of_one_length_runs_the_unmodified_decoder(self, decode_only_codec):
        # Clips that need no padding go through the plain decoder: identical in both modes.
        codes = _random_codes((9, 9, 9), seed=1)
        masked = decode_only_codec.decode(codes)
        decode_only_codec.batching = "exact"
        try:
            exact = decode_only_codec.decode(codes)
        finally:
            decode_only_codec.batching = "masked"
        for a, b in zip(masked, exact, strict=True):
            np.testing.assert_array_equal(a, b)

    def test_unknown_batching_is_refused(self, tiny_codec_dir, decode_only_codec):
        # A misspelt mode is refused at load time and on the attribute, listing the valid ones.
        message = re.escape(f"batching must be one of {BATCHING_MODES}, got 'bucketed'")
        with pytest.raises(ValueError, match=message):
            load_codec(tiny_codec_dir, device="cpu", batching="bucketed")
        with pytest.raises(ValueError, match=message):
            decode_only_codec.batching = "bucketed"


def _parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


class TestDecodeOnly:
    def test_holds_only_the_quantizer_and_acoustic_decoder(self, codec, decode_only_codec):
        # No w2v-BERT semantic model, adapter, acoustic encoder or fusion layer: the parameters it holds are
        # exactly those of the full model's quantizer and decoder (0.24M of the tiny codec's 0.33M).
        names = {name.split(".")[0] for name, _ in decode_only_codec.model.named_parameters()}
        assert names == {"quantizer", "acoustic_decoder"}
        full, decode_only = _parameter_count(codec.model), _parameter_count(decode_only_codec.model)
        encoders = sum(_parameter_count(getattr(codec.model, name)) for name in ENCODER_MODULES)
        assert (full, decode_only) == (332518, 243290)
        assert full - decode_only == encoders
        assert decode_only_codec.feature_extractor is None

    def test_real_size_decode_only_holds_under_a_third(self):
        # At the real checkpoint's sizes (Xcodec2Config defaults, counted on the meta device): 629.3M parameters
        # (2.5 GB in float32) for the full model, 187.0M (0.75 GB) decode-only.
        from transformers import Xcodec2Config, Xcodec2Model

        with torch.device("meta"):
            full = _parameter_count(Xcodec2Model(Xcodec2Config()))
            decode_only = _parameter_count(xcodec2_decoder_class()(Xcodec2Config()))
        assert (round(full / 1e6, 1), round(decode_only / 1e6, 1)) == (629.3, 187.0)

    def test_decodes_what_the_full_codec_decodes(self, codec, decode_only_codec, clip_codes):
        # The same weights: the same audio, bit for bit, clip by clip.
        for codes in clip_codes:
            np.testing.assert_array_equal(decode_only_codec.decode([codes])[0], codec.decode([codes])[0])

    def test_encode_is_refused_with_the_fix(self, decode_only_codec, waves):
        # Encoding needs the encoders it never loaded: the error says so and how to load a codec that encodes.
        with pytest.raises(RuntimeError, match=DECODE_ONLY_ERROR + r".*decode_only=False"):
            decode_only_codec.encode(waves[:1])


class TestOriginalBackend:
    def test_round_trip(self, original_codec, waves):
        # encode_code / decode_code one clip at a time: N // 320 + 1 codes in range, n * 320 samples back.
        two_clips = [waves[0][:16000], waves[1][:9000]]
        codes = original_codec.encode(two_clips)
        assert [len(c) for c in codes] == [num_codes(len(wav)) for wav in two_clips]
        assert all(0 <= code < CODEBOOK_SIZE for clip_codes in codes for code in clip_codes)
        assert len(set(codes[0])) > 10
        audio = original_codec.decode(codes + [[]])
        assert [len(a) for a in audio] == [len(c) * SAMPLES_PER_TOKEN for c in codes] + [0]
        assert all(a.dtype == np.float32 for a in audio)

    def test_decode_only_skips_the_encoders_and_decodes_the_same(self, original_codec, tiny_original_codec_dir):
        # decode_only=True builds just `generator` and `fc_post_a` (no w2v-BERT, no CodecEnc), decodes as the full
        # model does, and refuses to encode.
        from testing.tiny_original_xcodec2 import offline_original_xcodec2

        with offline_original_xcodec2():
            codec = load_codec(tiny_original_codec_dir, device="cpu", decode_only=True)
        assert {name for name, _ in codec.model.named_children()} == {"generator", "fc_post_a"}
        assert _parameter_count(codec.model) < _parameter_count(original_codec.model)
        codes = _random_codes((30, 7))
        for a, b in zip(codec.decode(codes), original_codec.decode(codes), strict=True):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(RuntimeError, match=DECODE_ONLY_ERROR):
            codec.encode([np.zeros(16000, dtype=np.float32)])

    def test_half_precision_is_refused(self, tmp_path):
        # The package runs in float32 only; asking for bfloat16 on a GPU points to the transformers checkpoint.
        folder = _write_config(tmp_path / "xcodec2", ORIGINAL_RELEASE_CONFIG)
        with pytest.raises(ValueError, match="float32 only.*HKUSTAudio/xcodec2-hf"):
            load_codec(folder, device="cuda", dtype=torch.bfloat16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_round_trip(tiny_codec_dir, waves, dtype):
    # On a GPU, in each precision: lengths exact, codes in range, batched encode as one at a time up to
    # rounding ties (GPU kernels, chosen per batch shape, may flip a code that sits on an FSQ boundary).
    codec = load_codec(tiny_codec_dir, dtype=dtype, batch_size=2)
    assert codec.device.type == "cuda"
    codes = codec.encode(waves)
    assert [len(c) for c in codes] == [num_codes(len(wav)) for wav in waves]
    assert all(0 <= code < CODEBOOK_SIZE for clip_codes in codes for code in clip_codes)
    alone = [codec.encode([wav])[0] for wav in waves]
    assert np.mean(np.concatenate(codes) == np.concatenate(alone)) >= 0.95
    audio = codec.decode(codes)
    assert [len(a) for a in audio] == [len(c) * SAMPLES_PER_TOKEN for c in codes]
    assert all(a.dtype == np.float32 and np.isfinite(a).all() for a in audio)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_masked_decode_matches_one_at_a_time(tiny_codec_dir):
    # On a GPU in float32, masked batches of 8 lengths take 4 decoder calls, give len(codes) * 320 finite samples and
    # stay within 1e-3 of one-at-a-time decoding (ten times the ~1e-4 that GPU kernels chosen per batch shape give).
    codec = load_codec(tiny_codec_dir, batch_size=4, decode_only=True)
    assert codec.batching == "masked"  # the default on a GPU
    codes = _random_codes(TestBatching.LENGTHS)
    assert _decoder_calls(codec, codes) == 4
    audio = codec.decode(codes)
    assert [len(a) for a in audio] == [len(c) * SAMPLES_PER_TOKEN for c in codes]
    for batched, clip_codes in zip(audio, codes, strict=True):
        assert np.isfinite(batched).all()
        np.testing.assert_allclose(batched, codec.decode([clip_codes])[0], rtol=0, atol=1e-3)
