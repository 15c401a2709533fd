"""The three Whisper back ends on one tiny random Whisper: interface, batching, the shared encoder pass, agreement
between back ends and precisions, loading errors."""

import math

import numpy as np
import pytest
import torch

from llasa.asr import load_backend, text_nlls

BACKEND_FORMATS = {"openai-whisper": "openai_whisper", "transformers": "transformers", "faster-whisper": "ctranslate2"}
SHORT = 8  # tokens a random model may write: it never stops by itself


@pytest.fixture(scope="module", params=list(BACKEND_FORMATS))
def backend(request, tiny_whisper):
    path = getattr(tiny_whisper, BACKEND_FORMATS[request.param])
    return load_backend(request.param, str(path), device="cpu", max_new_tokens=SHORT)


class TestBackends:
    def test_interface_types(self, backend, clips):
        # every back end returns (list of str, list of float), one per clip
        transcripts, nll = backend.transcribe_and_score([clips[0][0], clips[2][0]], [clips[0][1], clips[2][1]])
        assert [type(t) for t in transcripts] == [str, str]
        assert [type(n) for n in nll] == [float, float] and all(math.isfinite(n) and n > 0 for n in nll)

    def test_batched_equals_one_at_a_time(self, backend, clips):
        # clips of different lengths in one batch give what each gives alone
        waveforms, texts = [wav for wav, _ in clips[:4]], [text for _, text in clips[:4]]
        transcripts, nll = backend.transcribe_and_score(waveforms, texts)
        alone = [backend.transcribe_and_score([wav], [text]) for wav, text in zip(waveforms, texts, strict=True)]
        assert transcripts == [t[0] for t, _ in alone]
        assert nll == pytest.approx([n[0] for _, n in alone], rel=1e-4)

    def test_shared_encoder_nll_equals_a_separate_full_pass(self, backend, clips):
        # the NLL computed from the encoder output shared with the transcription equals the back end's own
        # encoder + decoder pass run separately for that text
        waveforms, texts = [clips[0][0], clips[3][0]], [clips[0][1], clips[3][1]]
        _, shared = backend.transcribe_and_score(waveforms, texts)
        separate = [full_pass_nll(backend, wav, text) for wav, text in zip(waveforms, texts, strict=True)]
        assert shared == pytest.approx(separate, rel=1e-4)

    def test_long_reference_is_cut_to_the_decoder_context(self, backend, clips):
        # 600 words are more tokens than Whisper's 448 positions: scored on what fits, no error
        _, nll = backend.transcribe_and_score([clips[0][0]], ["word " * 600])
        assert math.isfinite(nll[0])

    def test_over_30_s_is_cut_to_the_first_30_s(self, backend, clips):
        # Whisper hears the first 30 s: a 40 s clip scores like its first 30 s
        long = np.concatenate([clips[0][0]] * 16)[: 40 * 16000]
        _, nll_long = backend.transcribe_and_score([long], [clips[0][1]])
        _, nll_cut = backend.transcribe_and_score([long[: 30 * 16000]], [clips[0][1]])
        assert nll_long == pytest.approx(nll_cut, rel=1e-5)


def full_pass_nll(backend, wav, text) -> float:
    """NLL from one encoder + decoder forward of the back end's own model (no reuse of features)."""
    tokens = backend._text_tokens([text])[0]
    with torch.inference_mode():
        if backend.name == "openai-whisper":
            import whisper

            mel = whisper.log_mel_spectrogram(torch.from_numpy(wav), 80, padding=480000)[:, : len(wav) // 160]
            ids = torch.tensor([backend.prefix + tokens])
            logits = backend.model(whisper.pad_or_trim(mel, 3000)[None], ids)[0]
            return text_nlls(logits[None], len(backend.prefix) - 1, [tokens], backend.tokenizer.eot)[0]
        if backend.name == "transformers":
            features = backend.processor.feature_extractor([wav], sampling_rate=16000, return_tensors="pt")
            ids = torch.tensor([backend.prefix + tokens])
            logits = backend.model(input_features=features.input_features, decoder_input_ids=ids).logits[0]
            return text_nlls(logits[None], len(backend.prefix) - 1, [tokens], backend.eot)[0]
    import ctranslate2
    from faster_whisper.audio import pad_or_trim

    # align() on the mel features runs the encoder itself
    mel = pad_or_trim(backend.feature_extractor(wav)[:, : len(wav) // 160])[None]
    result = backend.model.align(ctranslate2.StorageView.from_array(mel), backend.start_sequence, [tokens], [100])
    return -float(np.mean(np.log(result[0].text_token_probs)))


class TestBackendAgreement:
    def test_openai_whisper_and_ctranslate2_agree_on_the_same_weights(self, tiny_whisper, clips):
        # same weights, same features (log-mel of the clip, zero-padded): same NLL
        waveforms, texts = [wav for wav, _ in clips[:2]], [clips[0][1], clips[2][1]]
        openai = load_backend("openai-whisper", str(tiny_whisper.openai_whisper), device="cpu", max_new_tokens=SHORT)
        ct2 = load_backend("faster-whisper", str(tiny_whisper.ctranslate2), device="cpu", max_new_tokens=SHORT)
        assert openai.transcribe_and_score(waveforms, texts)[1] == pytest.approx(
            ct2.transcribe_and_score(waveforms, texts)[1], rel=1e-4
        )

    @pytest.mark.parametrize("name", ["openai-whisper", "transformers"])
    def test_float16_matches_float32(self, name, tiny_whisper, clips):
        # the GPU default (float16 weights; openai-whisper keeps LayerNorm in float32) runs and agrees to ~1e-3
        path = str(getattr(tiny_whisper, BACKEND_FORMATS[name]))
        waveforms, texts = [clips[0][0], clips[2][0]], [clips[0][1], clips[2][1]]
        full = load_backend(name, path, device="cpu", dtype="float32", max_new_tokens=SHORT)
        half = load_backend(name, path, device="cpu", dtype="float16", max_new_tokens=SHORT)
        assert half.transcribe_and_score(waveforms, texts)[1] == pytest.approx(
            full.transcribe_and_score(waveforms, texts)[1], rel=1e-2
        )

    @pytest.mark.parametrize("name", list(BACKEND_FORMATS))
    def test_load_failure_names_backend_and_model(self, name, tmp_path):
        # an empty folder (or a missing .pt) is no model: the error says which back end and which model
        path = str(tmp_path / "missing.pt") if name == "openai-whisper" else str(tmp_path)
        with pytest.raises(RuntimeError, match=f"Could not load the {name} model '{path}'"):
            load_backend(name, path, device="cpu")

    def test_english_only_model_refuses_other_languages(self, tiny_whisper):
        with pytest.raises(RuntimeError, match="English-only and cannot transcribe 'de'"):
            load_backend("openai-whisper", str(tiny_whisper.openai_whisper), device="cpu", language="de")

    def test_multilingual_prefix_and_text_without_leading_space(self, tmp_path, clips):
        # a multilingual model (51865 tokens) gets <|zh|><|transcribe|>; Chinese text tokens take no leading space
        from testing.tiny_whisper import build_openai_whisper

        path = build_openai_whisper(tmp_path / "multilingual.pt", n_vocab=51865)
        backend = load_backend("openai-whisper", str(path), device="cpu", language="zh", max_new_tokens=SHORT)
        tokenizer = backend.tokenizer
        assert backend.prefix == [tokenizer.sot, tokenizer.to_language_token("zh"), tokenizer.transcribe, 50363]
        assert backend._text_tokens(["你好"]) == [tokenizer.encode("你好")]
        assert math.isfinite(backend.transcribe_and_score([clips[0][0]], ["你好"])[1][0])


@pytest.mark.parametrize("name", ["openai-whisper", "transformers"])
def test_weights_are_converted_before_they_move(name, tiny_whisper, monkeypatch, no_loaded_models):
    # The model reaches its device already in float16 (the GPU never holds the float32 copy, 6 GB for large-v3):
    # "meta" stands in for the GPU, and every move there is recorded with the weights' dtype at that moment.
    moves = []
    original_to = torch.nn.Module.to

    def recording_to(module, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if str(target) == "meta":
            moves.append(next(module.parameters()).dtype)
        return original_to(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    path = str(getattr(tiny_whisper, BACKEND_FORMATS[name]))
    backend = load_backend(name, path, device="meta", dtype="float16", max_new_tokens=SHORT)
    assert moves == [torch.float16]
    assert {p.device.type for p in backend.model.parameters()} == {"meta"}
