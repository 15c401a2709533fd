"""Devices and placement: DeepSpeed ZeRO-3 kept out of the loading of every model that is not trained (codec,
Whisper), and put back for the policy."""

import pytest
import torch
from accelerate.utils.deepspeed import HfDeepSpeedConfig
from transformers.integrations.deepspeed import (
    is_deepspeed_zero3_enabled,
    set_hf_deepspeed_config,
    unset_hf_deepspeed_config,
)
from transformers.modeling_utils import PreTrainedModel
from trl import GRPOConfig

import llasa.codec
from llasa.device import outside_zero3
from llasa.rewards import load_reward
from llasa.run_setup import load_reward_models


@pytest.fixture
def zero3():
    """transformers' global DeepSpeed config at stage 3, as TrainingArguments sets it from zero3.yaml (accelerate's
    HfDeepSpeedConfig: transformers' subclass of it needs the deepspeed package, which CPUs do without)."""
    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    set_hf_deepspeed_config(config)
    yield config
    unset_hf_deepspeed_config()


@pytest.fixture
def init_contexts(monkeypatch):
    """(model class, ZeRO-3 on?) for every model from_pretrained builds, recorded as it picks its init context."""
    seen = []
    original = PreTrainedModel.get_init_context.__func__

    def recording(cls, *args, **kwargs):
        seen.append((cls.__name__, is_deepspeed_zero3_enabled()))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "get_init_context", classmethod(recording))
    return seen


def test_outside_zero3_unsets_and_restores_the_config(zero3):
    # Off inside the block (as a context manager, nested, and as a decorator), on again after it, even after an error.
    assert is_deepspeed_zero3_enabled()
    with outside_zero3():
        assert not is_deepspeed_zero3_enabled()
        with outside_zero3():
            assert not is_deepspeed_zero3_enabled()
        assert not is_deepspeed_zero3_enabled()
    assert is_deepspeed_zero3_enabled()

    @outside_zero3()
    def load():
        return is_deepspeed_zero3_enabled()

    assert load() is False and is_deepspeed_zero3_enabled()
    with pytest.raises(RuntimeError), outside_zero3():
        raise RuntimeError("load failed")
    assert is_deepspeed_zero3_enabled()


def test_outside_zero3_without_deepspeed_changes_nothing():
    # No DeepSpeed config (one GPU, DDP, ZeRO-2): the block runs and none is set after it.
    with outside_zero3():
        assert not is_deepspeed_zero3_enabled()
    assert not is_deepspeed_zero3_enabled()


def test_reward_models_load_whole_under_zero3(
    zero3, init_contexts, tiny_codec_dir, tiny_whisper, tmp_path, no_loaded_models
):
    # train.py's loading of the reward under a stage-3 config: the codec and transformers' Whisper are built outside
    # ZeRO-3 (whole, no collective call: no process waits for another), and ZeRO-3 is on again for the policy.
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    reward = load_reward(
        {"asr_backend": "transformers", "asr_model": str(tiny_whisper.transformers), "codec_id": str(tiny_codec_dir)},
        device="cpu",
    )
    load_reward_models([reward], args)
    assert sorted(init_contexts) == [("WhisperForConditionalGeneration", False), ("Xcodec2DecoderModel", False)]
    assert is_deepspeed_zero3_enabled()


def test_models_loaded_later_stay_outside_zero3(zero3, init_contexts, tiny_codec_dir, no_loaded_models):
    # The codec loaded on first use (samples) during a ZeRO-3 run, decode-only, is built outside it too.
    codec = llasa.codec.load_codec_once(tiny_codec_dir, device="cpu")
    assert init_contexts == [("Xcodec2DecoderModel", False)] and is_deepspeed_zero3_enabled()
    assert all(parameter.numel() > 0 for parameter in codec.model.parameters())  # whole, not partitioned
    assert all(parameter.device == torch.device("cpu") for parameter in codec.model.parameters())


@pytest.mark.slow
def test_original_xcodec2_asks_for_w2v_bert_outside_zero3(zero3, tiny_original_codec_dir, monkeypatch):
    # The original `xcodec2` package loads facebook/w2v-bert-2.0 from its own constructor: that load, too, runs with
    # ZeRO-3 off (the stand-in records the state when the package asks for it), and ZeRO-3 is on again after.
    from testing.tiny_original_xcodec2 import _TinyWav2Vec2Bert, offline_original_xcodec2

    seen = []
    original = _TinyWav2Vec2Bert.from_pretrained

    def recording(name, **kwargs):
        seen.append(is_deepspeed_zero3_enabled())
        return original(name, **kwargs)

    monkeypatch.setattr(_TinyWav2Vec2Bert, "from_pretrained", staticmethod(recording))
    with offline_original_xcodec2():
        llasa.codec.load_codec(tiny_original_codec_dir, device="cpu")  # the full codec: the encoders load too
    assert seen == [False] and is_deepspeed_zero3_enabled()


def test_wavlm_speaker_scorer_loads_whole_with_the_reward_under_zero3(
    zero3, init_contexts, tiny_codec_dir, tiny_wavlm, no_loaded_models
):
    # The WavLM speaker-verification model loads with the reward's other models, before the first step, outside
    # ZeRO-3: not at the first reward call, where it would be partitioned and a process with nothing to score would
    # leave the others waiting in its broadcast.
    reward = load_reward(
        {
            "codec_id": str(tiny_codec_dir),
            "components": {"speaker_similarity": {"weight": 1.0, "backend": "wavlm", "model": tiny_wavlm}},
        },
        device="cpu",
    )
    reward.load_models()
    assert sorted(init_contexts) == [("WavLMForXVector", False), ("Xcodec2DecoderModel", False)]
    assert is_deepspeed_zero3_enabled()
