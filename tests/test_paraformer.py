"""The optional Paraformer back end of llasa.asr (FunASR, Seed-TTS-eval's Chinese ASR): the install hint where FunASR
is missing, and the transcription path and reward plumbing with a stand-in for FunASR's AutoModel (FunASR and its
weights are not installed here)."""

import math
import sys
import types

import numpy as np
import pytest

from llasa.asr import load_backend
from llasa.rewards import load_reward


class StandInAutoModel:
    """Answers as FunASR's AutoModel does: one {"key", "text"} per input, Chinese characters spaced out."""

    calls: list = []

    def __init__(self, model, device, disable_update):
        self.options = {"model": model, "device": device, "disable_update": disable_update}

    def generate(self, input, batch_size):
        StandInAutoModel.calls.append((len(input), batch_size))
        return [{"key": f"clip{i}", "text": "欢 迎 大 家"} for i in range(len(input))]


@pytest.fixture
def funasr(monkeypatch, no_loaded_models):
    """FunASR replaced by the stand-in, and the back-end cache emptied."""
    monkeypatch.setitem(sys.modules, "funasr", types.SimpleNamespace(AutoModel=StandInAutoModel))
    StandInAutoModel.calls = []


def test_missing_funasr_says_how_to_install_it(monkeypatch, no_loaded_models):
    # without FunASR, loading names the back end, the model and the command that installs it
    monkeypatch.setitem(sys.modules, "funasr", None)
    with pytest.raises(RuntimeError, match="paraformer model 'paraformer-zh'.*pip install funasr modelscope"):
        load_backend("paraformer", "paraformer-zh", device="cpu", language="zh")


def test_transcripts_without_nll_or_fallback(funasr):
    # one FunASR call per batch; transcripts as FunASR writes them, NaN NLLs, no clip falls back
    backend = load_backend("paraformer", "paraformer-zh", device="cpu", language="zh")
    assert backend.model.options == {"model": "paraformer-zh", "device": "cpu", "disable_update": True}
    transcripts, nll = backend.transcribe_and_score([np.zeros(16000, np.float32)] * 3, ["欢迎大家"] * 3)
    assert transcripts == ["欢 迎 大 家"] * 3 and transcripts.fell_back == [False] * 3
    assert all(math.isnan(value) for value in nll) and StandInAutoModel.calls == [(3, 3)]


def test_reward_scores_cer_on_simplified_characters(funasr):
    # a traditional-character reference with punctuation against Paraformer's spaced simplified characters: CER 0
    reward = load_reward(
        {
            "asr_backend": "paraformer",
            "asr_model": "paraformer-zh",
            "language": "zh",
            "components": {"wer": {"weight": 1.0}},
            "vad": False,  # the stand-in recogniser hears a constant signal, which silero-vad rightly calls no speech
        },
        device="cpu",
    )
    [clip] = reward.score_audio([np.full(16000, 0.1, np.float32)], ["歡迎大家！"])
    assert clip.metrics["cer"] == 0.0 and clip.metrics["ref_chars"] == clip.metrics["hyp_chars"] == 4


def test_nll_component_is_refused():
    # Paraformer has no decoder to teacher-force: a config asking for the NLL fails at once
    with pytest.raises(ValueError, match="paraformer back end gives transcripts only"):
        load_reward({"asr_backend": "paraformer", "asr_model": "paraformer-zh", "language": "zh"})
