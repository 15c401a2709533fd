"""The loop guard of llasa.asr: a greedy transcript that repeats itself is decoded again with a repetition penalty,
counted per clip and logged by the reward as `asr_fallback`. Real Whisper base (faster-whisper) on espeak-ng Spanish
that it loops on; the three back ends' fallback paths on the tiny random Whisper."""

import numpy as np
import pytest
import torch
from multilingual import SpokenClip, speak, whisper_base

import llasa.asr as asr
from llasa.asr import LOOP_REPETITION_PENALTY, Transcripts, kept_transcript, load_backend
from llasa.format import ParsedSpeech
from llasa.rewards import load_reward
from llasa.text import is_repetition_loop

BACKEND_FORMATS = {"openai-whisper": "openai_whisper", "transformers": "transformers", "faster-whisper": "ctranslate2"}
SHORT = 8  # tokens a random model may write: it never stops by itself
MAX_NEW_TOKENS = 224  # the reward's default: a loop runs on to it

COUNTING = "uno, dos, tres, cuatro, cinco, seis, siete, ocho."
# Whisper base hears the first as "1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, ..." to its token limit; the second, 20 ms less
# between words and without "nueve, diez", as "1, 2, 3, 4, 5, 6, 7, 8".
LOOPING = SpokenClip(
    "es_loop", "es", "es", "uno, dos, tres, cuatro, cinco, seis, siete, ocho, nueve, diez.", ("-s", "120", "-g", "12")
)
NORMAL = SpokenClip("es_counting", "es", "es", COUNTING, ("-s", "120", "-g", "8"))


class TestKeptTranscript:
    def test_retry_kept_unless_it_loops(self):
        # a retry that ends is kept; one that loops too leaves the shorter of the two
        loop = "8, " * 60
        assert kept_transcript(loop, "1 2 3") == "1 2 3"
        assert kept_transcript(loop, "7, " * 40) == "7, " * 40
        assert kept_transcript("9, " * 20, loop) == "9, " * 20

    def test_transcripts_are_a_list_with_their_fallbacks(self):
        # Transcripts compares and unpacks as the list of its texts; n_fallbacks counts the clips decoded again
        transcripts = Transcripts(["a", "b", "c"], [False, True, True])
        assert transcripts == ["a", "b", "c"] and transcripts.n_fallbacks == 2

    def test_openai_whisper_penalty_is_transformers_arithmetic(self):
        # the logit filter of openai-whisper changes the logits as transformers' repetition_penalty does
        from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

        generator = torch.Generator().manual_seed(0)
        logits = torch.randn(3, 50, generator=generator)
        tokens = torch.randint(0, 50, (3, 7), generator=generator)
        expected = RepetitionPenaltyLogitsProcessor(LOOP_REPETITION_PENALTY)(tokens, logits.clone())
        asr._RepetitionPenalty(LOOP_REPETITION_PENALTY).apply(logits, tokens)
        assert torch.equal(logits, expected)


@pytest.fixture(scope="module")
def spanish(whisper_base_dir, espeak, tmp_path_factory):
    """Whisper base (faster-whisper, Spanish) and the waveforms of the looping and the normal clip."""
    folder = tmp_path_factory.mktemp("spanish")
    return whisper_base(whisper_base_dir, "es", MAX_NEW_TOKENS), [speak(LOOPING, folder), speak(NORMAL, folder)]


class TestRealLoop:
    def test_looping_clip_falls_back_to_an_ending_transcript(self, spanish):
        # the slow counting loops ("8, 8, 8, ..."); decoded again with the penalty it ends, and counting is right
        # up to eight; the normal clip does not fall back and keeps its greedy transcript
        backend, waveforms = spanish
        features = backend.encode(waveforms)
        greedy = backend.transcribe(features, loop_fallback=False)
        guarded = backend.transcribe(features)
        print(f"greedy {greedy!r}\nguarded {guarded!r}")
        assert is_repetition_loop(greedy[0]) and greedy[0].startswith("1, 2, 3, 4, 5, 6, 7, 8, 8, 8")
        assert guarded.fell_back == [True, False] and guarded.n_fallbacks == 1
        assert not is_repetition_loop(guarded[0]) and len(guarded[0]) < 40
        assert "".join(c for c in guarded[0] if c.isdigit()).startswith("12345678")
        assert guarded[1] == greedy[1] == "1, 2, 3, 4, 5, 6, 7, 8"

    def test_fallback_alone_equals_in_a_batch(self, spanish):
        # the retry of a clip does not depend on the other clips of its batch
        backend, waveforms = spanish
        alone = backend.transcribe(backend.encode(waveforms[:1]))
        together = backend.transcribe(backend.encode(waveforms))
        assert alone == together[:1] and alone.fell_back == [True]

    def test_reward_logs_the_fallback_share(self, whisper_base_dir, spanish):
        # the reward's clip metrics say which clip fell back, its batch metrics the share (1 of 2), and the looping
        # clip is scored on the ended transcript: no error on "uno ... ocho", two words missing of ten
        _, waveforms = spanish
        reward = load_reward(
            {
                "asr_backend": "faster-whisper",
                "asr_model": str(whisper_base_dir),
                "language": "es",
                "device": "cpu",
                "dtype": "float32",
                "components": {"wer": {"weight": 1.0}},
            }
        )
        clips = reward.score_audio(waveforms, [LOOPING.text, COUNTING])
        assert [clip.metrics["asr_fallback"] for clip in clips] == [1.0, 0.0]
        assert clips[0].metrics["wer"] <= 0.3 and clips[1].metrics["wer"] == 0.0
        parsed = [ParsedSpeech(codes=[1], ended=True, n_dropped=0)] * 2
        assert reward.batch_metrics(parsed, clips)["asr_fallback"] == 0.5


@pytest.fixture(scope="module", params=list(BACKEND_FORMATS))
def tiny_backend(request, tiny_whisper):
    path = getattr(tiny_whisper, BACKEND_FORMATS[request.param])
    return load_backend(request.param, str(path), device="cpu", dtype="float32", max_new_tokens=SHORT)


def encoder_array(backend, features):
    """A back end's encoder output as a NumPy array (clips first)."""
    if backend.name == "openai-whisper":
        return features.detach().numpy()
    if backend.name == "transformers":
        return features.last_hidden_state.detach().numpy()
    return np.asarray(features.output)


def loop_at_first_call(monkeypatch):
    """Patch the loop check to flag the first transcript it sees (the batch's first greedy one) and nothing else."""
    calls = []
    monkeypatch.setattr(asr, "is_repetition_loop", lambda text: calls.append(text) or len(calls) == 1)


class TestTinyBackends:
    # A random Whisper writes no text token (its transcripts are empty): the fallback path is forced by patching
    # the loop check, and what reaches the model is watched.

    def test_flagged_clip_alone_is_decoded_again_with_the_penalty(self, tiny_backend, clips, monkeypatch):
        # the first clip is flagged: one retry, of that clip only, with the penalty; the count says one of two
        features = tiny_backend.encode([clips[0][0], clips[2][0]])
        decodes = []
        decode = tiny_backend.decode
        monkeypatch.setattr(
            tiny_backend,
            "decode",
            lambda f, repetition_penalty=1.0: (
                decodes.append((len(encoder_array(tiny_backend, f)), repetition_penalty))
                or decode(f, repetition_penalty)
            ),
        )
        loop_at_first_call(monkeypatch)
        transcripts = tiny_backend.transcribe(features)
        assert decodes == [(2, 1.0), (1, LOOP_REPETITION_PENALTY)]
        assert transcripts.fell_back == [True, False] and transcripts.n_fallbacks == 1

    def test_penalty_reaches_the_decoder(self, tiny_backend, clips, monkeypatch):
        # openai-whisper runs the penalty's logit filter at every step, transformers gets a generation config with
        # it and CTranslate2's generate the option; greedy decoding has none of them
        features = tiny_backend.encode([clips[0][0]])
        seen = []
        if tiny_backend.name == "openai-whisper":
            apply = asr._RepetitionPenalty.apply
            monkeypatch.setattr(
                asr._RepetitionPenalty, "apply", lambda self, *a: seen.append(self.penalty) or apply(self, *a)
            )
        else:
            model = tiny_backend.model
            if tiny_backend.name == "transformers":
                generate = model.generate
                # None is transformers' "no penalty"
                monkeypatch.setattr(
                    model,
                    "generate",
                    lambda **kw: seen.append(kw["generation_config"].repetition_penalty or 1.0) or generate(**kw),
                )
            else:  # CTranslate2's model is a compiled object: watched through a stand-in that forwards the call
                monkeypatch.setattr(tiny_backend, "model", ForwardingModel(model, seen))
        tiny_backend.decode(features)
        greedy_penalties = list(seen)
        seen.clear()
        tiny_backend.decode(features, repetition_penalty=LOOP_REPETITION_PENALTY)
        if tiny_backend.name == "openai-whisper":
            assert greedy_penalties == [] and seen == [LOOP_REPETITION_PENALTY] * len(seen) and len(seen) >= 1
        else:
            assert greedy_penalties == [1.0] and seen == [LOOP_REPETITION_PENALTY]

    def test_select_keeps_the_chosen_clips(self, tiny_backend, clips):
        # the encoder output of clips 1 and 3 of a batch is theirs encoded alone
        features = tiny_backend.encode([wav for wav, _ in clips[:4]])
        chosen = encoder_array(tiny_backend, tiny_backend.select(features, [1, 3]))
        alone = encoder_array(tiny_backend, tiny_backend.encode([clips[1][0], clips[3][0]]))
        np.testing.assert_allclose(chosen, alone, rtol=1e-4, atol=1e-5)

    def test_transcribe_and_score_reports_fallbacks(self, tiny_backend, clips, monkeypatch):
        # every clip flagged: all fall back, the count says so, and the NLL (teacher-forced) does not change
        waveforms, texts = [clips[0][0], clips[2][0]], [clips[0][1], clips[2][1]]
        transcripts, nll = tiny_backend.transcribe_and_score(waveforms, texts)
        assert transcripts.fell_back == [False, False]
        monkeypatch.setattr(asr, "is_repetition_loop", lambda text: True)
        transcripts, nll_guarded = tiny_backend.transcribe_and_score(waveforms, texts)
        assert transcripts.fell_back == [True, True] and transcripts.n_fallbacks == 2
        assert nll_guarded == nll


class ForwardingModel:
    """Stands in for a CTranslate2 Whisper: records generate's repetition_penalty, forwards everything."""

    def __init__(self, model, seen: list):
        self._model, self._seen = model, seen

    def generate(self, *args, **kwargs):
        self._seen.append(kwargs.get("repetition_penalty"))
        return self._model.generate(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)
