"""Session fixtures: tiny random-weight checkpoints saved to disk and loaded back like real ones."""

import pytest

from demo.tiny_models import build_tiny_llasa


@pytest.fixture(scope="session")
def tiny_llasa_dir(tmp_path_factory):
    """A tiny LlamaForCausalLM with a tokenizer laid out exactly like Llasa's, saved to disk."""
    return build_tiny_llasa(tmp_path_factory.mktemp("tiny_llasa"))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_llasa_dir):
    return tiny_llasa_dir


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


# --- XCodec2 checkpoints (transformers' port, and the original `xcodec2` package's layout) ---


@pytest.fixture(scope="session")
def tiny_codec_dir(tmp_path_factory):
    """A tiny random transformers Xcodec2Model + Xcodec2FeatureExtractor saved to disk; load with load_codec."""
    from demo.tiny_models import build_tiny_xcodec2

    return build_tiny_xcodec2(tmp_path_factory.mktemp("tiny_codec"))


@pytest.fixture(scope="session")
def tiny_original_codec_dir(tmp_path_factory):
    """A tiny random checkpoint in the original `xcodec2` layout (~160 MB). Load it inside
    `tiny_original_xcodec2.offline_original_xcodec2()`, which stands in for its w2v-bert-2.0 download."""
    from tiny_original_xcodec2 import build_tiny_original_xcodec2, offline_original_xcodec2

    with offline_original_xcodec2():
        return build_tiny_original_xcodec2(tmp_path_factory.mktemp("tiny_original_codec"))


# --- Whisper (the reward's ASR) ---


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory):
    """One tiny random Whisper saved in the three formats the reward loads (same weights): `.openai_whisper` (.pt),
    `.transformers` (folder with processor) and `.ctranslate2` (folder for faster-whisper)."""
    from demo.tiny_whisper import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))
