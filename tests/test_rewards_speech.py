"""The speech components of the reward (duration, intonation, speaker_similarity, quality; llasa.rewards): registry and
JSON parameters, real-model orderings through `SpeechReward.score_audio` with dataset columns, reference codes
decoded once through a tiny XCodec2, missing columns, reward_models/prosody_reward.json in a TRL-style call, and the
command line."""

import csv
import json
import logging
import pickle
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import llasa.codec
import llasa.rewards.components as components
import llasa.rewards.reward as reward_module
import reward_whisper
from llasa.audio import load_audio
from llasa.codec import load_codec_once
from llasa.format import ParsedSpeech, SpeechVocab
from llasa.rewards import RewardConfig, load_reward
from llasa.rewards.speech import ScorerComponent
from llasa.scores import DurationScorer
from llasa.text import text_length

REPO = Path(__file__).parent.parent
DATA = Path(__file__).parent / "data"
PROSODY = REPO / "reward_models" / "prosody_reward.json"
METADATA = {row["file_name"]: row["text"] for row in csv.DictReader((DATA / "metadata.csv").open())}
FOX = METADATA["fox_en_us.wav"]
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank today."
NEW_COMPONENTS = ("duration", "intonation", "pauses", "speaker_similarity", "quality")
# Made-up ids for tests that do not need a real tokenizer: <|s_0|> is 1000.
VOCAB = SpeechVocab(first_speech_id=1000, speech_start_id=900, speech_end_id=901, eot_id=902)


@pytest.fixture(scope="module")
def named_clips():
    """tests/data's named_clips by file name, 16 kHz."""
    return {name: load_audio(DATA / name) for name in METADATA}


@pytest.fixture(scope="module")
def intonation(tmp_path_factory, espeak):
    """Paths of one sentence by espeak-ng's en-us voice, with its normal pitch range and with SSML range="x-low"."""
    folder = tmp_path_factory.mktemp("intonation")
    paths = {}
    for name, text in [("normal", SENTENCE), ("flat", f'<speak><prosody range="x-low">{SENTENCE}</prosody></speak>')]:
        paths[name] = folder / f"{name}.wav"
        espeak(text, paths[name], "en-us", "-m")
    return paths


def speech_reward(**components):
    """A reward of speech-score components only: no Whisper is loaded (its model path does not even exist)."""
    return load_reward({"asr_model": "/no/such/model.pt", "components": components}, device="cpu")


def prosody_params(**overrides) -> dict:
    """reward_models/prosody_reward.json as a dict, with `overrides`."""
    return {**json.loads(PROSODY.read_text()), **overrides}


class RecordingCodec:
    """Wraps the loaded codec: records each decode call's code lists; completions listed in `speech` decode to
    real speech (a tiny random codec makes noise, in which no pitch is found)."""

    def __init__(self, codec, calls: list, speech: dict | None = None):
        self.codec, self.calls, self.speech = codec, calls, speech or {}
        self.sample_rate = codec.sample_rate

    def decode(self, codes):
        self.calls.append([list(row) for row in codes])
        return [self.speech[tuple(row)] if tuple(row) in self.speech else self.codec.decode([row])[0] for row in codes]


def record_codec(monkeypatch, speech=None) -> list:
    calls = []
    load = load_codec_once
    monkeypatch.setattr(reward_module, "load_codec_once", lambda *args: RecordingCodec(load(*args), calls, speech))
    return calls


# ---------------------------------------------------------------------------------------------------------------------


class TestRegistry:
    def test_each_component_is_registered(self):
        # the names a reward config uses, each a ScorerComponent around its scorer
        for name in NEW_COMPONENTS:
            assert issubclass(components.COMPONENTS[name], ScorerComponent)

    def test_the_removed_pitch_component_points_to_intonation(self):
        # a config that still names "pitch" (the pYIN spread) is told what replaces it and how to keep pYIN
        message = r"'pitch' was removed: use \"intonation\" instead.*\"estimator\": \"pyin\""
        with pytest.raises(ValueError, match=message):
            RewardConfig.from_dict({"components": {"pitch": {"weight": 0.1}}})

    def test_built_from_json_params(self):
        # the scorer's parameters and the columns to read, from JSON: lists become tuples, weights are kept
        config = RewardConfig.from_dict(
            {
                "components": {
                    "duration": {"weight": 0.2, "tolerance": 0.1, "chars_per_second": 14, "duration_column": "secs"},
                    "intonation": {"weight": 0.3, "natural_movement": [1.0, 4.0], "reference_columns": ["ref"]},
                    "speaker_similarity": {"weight": 0.4, "floor": 0.3, "voice_columns": ["voice"]},
                    "quality": {"weight": 0.1, "metric": "sig"},
                }
            }
        )
        reward = load_reward(config)
        duration, intonation, speaker, quality = reward.components
        assert reward.weights == [0.2, 0.3, 0.4, 0.1] and not reward.needs_asr
        assert duration.scorer == DurationScorer(tolerance=0.1, chars_per_second=14)
        assert duration.duration_column == "secs" and duration.reference_columns == (
            "audio_code_ids",
            "reference_audio",
        )
        assert intonation.scorer.natural_movement == (1.0, 4.0) and intonation.reference_columns == ("ref",)
        assert speaker.scorer.floor == 0.3 and speaker.voice_columns == ("voice",)
        assert quality.scorer.metric == "sig"

    def test_unknown_param_names_the_valid_ones(self):
        # the component's own parameters first, then its scorer's
        valid = "['duration_column', 'reference_columns', 'tolerance', 'falloff', 'chars_per_second']"
        message = "['tolerence'] for the component 'duration': valid ones are " + valid
        with pytest.raises(ValueError, match=re.escape(message)):
            RewardConfig.from_dict({"components": {"duration": {"weight": 1.0, "tolerence": 0.2}}})

    @pytest.mark.parametrize(
        "name, params, message",
        [
            ("intonation", {"estimator": "yin"}, "component 'intonation': Unknown pitch estimator 'yin'"),
            ("quality", {"metric": "mos"}, "component 'quality': Unknown DNSMOS metric 'mos'"),
            ("speaker_similarity", {"voice_columns": []}, "voice_columns must be a list of column names"),
            ("intonation", {"reference_columns": "audio_code_ids"}, "reference_columns must be a list of column"),
        ],
    )
    def test_bad_values_are_refused_at_once(self, name, params, message):
        # the scorer's own checks run when the config is read, and the error names the component
        with pytest.raises(ValueError, match=message):
            RewardConfig.from_dict({"components": {name: {"weight": 1.0, **params}}})


class TestScores:
    def test_speaker_similarity_orders_same_voice_above_another(self, named_clips):
        # the reference is the en-us voice on another sentence: the en-us clip scores above the en+f3 one
        reward = speech_reward(speaker_similarity={"weight": 1.0, "device": "cpu"})
        ref = str(DATA / "rainbow_en_us.wav")
        scored = reward.score_audio(
            [named_clips["fox_en_us.wav"], named_clips["fox_en_f3.wav"]], [FOX, FOX], {"reference_audio": [ref, ref]}
        )
        same, other = scored
        assert same.components["speaker_similarity"] > other.components["speaker_similarity"]
        assert same.metrics["speaker_cosine"] > other.metrics["speaker_cosine"] + 0.1

    def test_speaker_similarity_prefers_the_voice_prompt(self, named_clips):
        # with a prompt in the first voice column the en+f3 clip is compared with the f3 prompt, not the en-us
        # reference; a row without a prompt falls back to the reference
        reward = speech_reward(
            speaker_similarity={"weight": 1.0, "device": "cpu", "voice_columns": ["prompt_audio", "reference_audio"]}
        )
        columns = {
            "prompt_audio": [str(DATA / "shells_en_f3.wav"), None],
            "reference_audio": [str(DATA / "rainbow_en_us.wav")] * 2,
        }
        prompted, unprompted = reward.score_audio([named_clips["fox_en_f3.wav"]] * 2, [FOX, FOX], columns)
        assert prompted.metrics["speaker_cosine"] > unprompted.metrics["speaker_cosine"] + 0.1

    def test_quality_orders_clean_above_noisy(self, named_clips):
        # loud white noise lowers DNSMOS OVRL, logged on its 1-5 scale and scored (OVRL - 1) / 4
        clean = named_clips["fox_en_us.wav"]
        noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.1, clean.size), -1, 1).astype(np.float32)
        clean_score, noisy_score = speech_reward(quality={"weight": 1.0}).score_audio([clean, noisy], [FOX, FOX])
        assert clean_score.components["quality"] > noisy_score.components["quality"]
        assert clean_score.components["quality"] == pytest.approx((clean_score.metrics["dnsmos_ovrl"] - 1) / 4)

    def test_intonation_orders_normal_above_flat(self, intonation):
        # without a reference both are scored against the natural ranges; against the normal clip as reference,
        # the normal one is in band (1) and the x-low one moves less than the band allows
        normal, flat = load_audio(intonation["normal"]), load_audio(intonation["flat"])
        reward, texts = speech_reward(intonation={"weight": 1.0, "device": "cpu"}), [SENTENCE, SENTENCE]
        bare = reward.score_audio([normal, flat], texts)
        assert bare[0].components["intonation"] > bare[1].components["intonation"]
        assert bare[0].metrics["intonation/no_reference"] == 1.0
        ref = str(intonation["normal"])
        against = reward.score_audio([normal, flat], texts, {"reference_audio": [ref, ref]})
        movement, flat_movement = against[0].metrics["pitch_movement"], against[1].metrics["pitch_movement"]
        assert against[0].metrics["pitch_reference_movement"] == movement and flat_movement < movement / 1.5
        assert against[0].components["intonation"] == 1.0 and against[1].components["intonation"] < 1.0
        assert against[1].metrics["intonation/no_reference"] == 0.0

    def test_duration_in_band_scores_one_and_far_out_near_zero(self, named_clips):
        # expected 1.1x the clip's length is within the 15% tolerance; 4x is far out: exp(-log(4 / 1.15) / 0.25)
        wav = named_clips["fox_en_us.wav"]
        seconds = wav.size / 16000
        near, far = speech_reward(duration={"weight": 1.0}).score_audio(
            [wav, wav], [FOX, FOX], {"duration": [1.1 * seconds, 4 * seconds]}
        )
        assert near.components["duration"] == 1.0 and near.metrics["duration_ratio"] == pytest.approx(1 / 1.1)
        assert far.components["duration"] == pytest.approx(0.0068, abs=1e-4)
        assert far.metrics["duration_ratio"] == pytest.approx(0.25)

    def test_duration_from_reference_codes_without_decoding(self, named_clips):
        # 150 reference codes are 3 s at 50 per second: counted, never decoded (the codec path does not exist)
        reward = load_reward({"codec_id": "/no/such/codec", "components": {"duration": {"weight": 1.0}}}, device="cpu")
        wav = named_clips["fox_en_us.wav"]
        [clip] = reward.score_audio([wav], [FOX], {"audio_code_ids": [[7] * 150]})
        assert clip.metrics["duration_ratio"] == pytest.approx(wav.size / 16000 / 3.0)

    def test_duration_rate_estimated_from_the_batch(self, named_clips):
        # no chars_per_second: the row without a duration is expected to last its text's length over the rate of the
        # row that has one (text_length(FOX) / 2.0 characters per second)
        reward = speech_reward(duration={"weight": 1.0})
        wav, rainbow = named_clips["fox_en_us.wav"], METADATA["rainbow_en_us.wav"]
        _, estimated = reward.score_audio([wav, wav], [FOX, rainbow], {"duration": [2.0, None]})
        expected = text_length(rainbow) / (text_length(FOX) / 2.0)
        assert estimated.metrics["duration_ratio"] == pytest.approx(wav.size / 16000 / expected)
        assert reward.components[0]._estimated == {"chars_per_second": pytest.approx(text_length(FOX) / 2.0)}

    def test_duration_without_any_reference_or_rate_is_missing_and_says_what_to_set(self, named_clips, caplog):
        # no duration, no reference audio and no rate to estimate: the row is unscored and the warning says what to
        # set; with no other component, the row's reward is None (TRL leaves it out)
        reward = speech_reward(duration={"weight": 1.0})
        with caplog.at_level(logging.WARNING, logger="llasa"):
            [clip] = reward.score_audio([named_clips["fox_en_us.wav"]], [FOX])
        assert 'Set "chars_per_second" in the duration component' in caplog.text
        assert clip.components["duration"] is None and clip.reward is None


class TestReferences:
    def test_reference_codes_are_decoded_once_per_distinct_reference(self, named_clips, tiny_codec_dir, monkeypatch):
        # rows A A B B A in batches of 2: A is decoded in the first batch and reused by the last, B once; intonation and
        # speaker_similarity share the decoded audio, so two code lists are decoded in all
        calls = record_codec(monkeypatch)
        reward = load_reward(
            {
                "codec_id": str(tiny_codec_dir),
                "batch_size": 2,
                "components": {
                    "intonation": {"weight": 1.0, "device": "cpu"},
                    "speaker_similarity": {"weight": 1.0, "device": "cpu"},
                },
            },
            device="cpu",
        )
        rng = np.random.default_rng(0)
        a, b = rng.integers(0, 65536, 100).tolist(), rng.integers(0, 65536, 80).tolist()
        wav = named_clips["fox_en_us.wav"]
        scored = reward.score_audio([wav] * 5, [FOX] * 5, {"audio_code_ids": [a, a, b, b, a]})
        assert calls == [[a], [b]]
        cosines = [clip.metrics["speaker_cosine"] for clip in scored]
        # (rows embedded in batches of other sizes agree to float32 rounding)
        assert cosines[1] == cosines[0] and cosines[4] == pytest.approx(cosines[0], abs=1e-6)
        assert abs(cosines[2] - cosines[0]) > 1e-3

    def test_reference_key_reads_codes_tokens_and_paths(self):
        # a code list and its speech-token string name the same reference; a path is a path; empty is none
        codes = components.reference_key([3, 1, 2])
        assert codes[0] == "codes" and components.reference_key("<|s_3|><|s_1|><|s_2|>") == codes
        assert components.reference_key("ref.wav") == ("path", "ref.wav", "ref.wav")
        assert components.reference_key([]) is None and components.reference_key(None) is None
        with pytest.raises(ValueError, match="a list of integer codes, got \\[0.5, 1.5\\]"):
            components.reference_key([0.5, 1.5])


class TestMissingInput:
    def test_missing_voice_scores_none_and_the_row_combines_the_rest(self, named_clips, caplog):
        # two of three rows have no voice column value: speaker_similarity is None there (counted, one warning for
        # the call) and their reward is the quality score alone; the first row combines both by the harmonic rule
        reward = speech_reward(quality={"weight": 0.7}, speaker_similarity={"weight": 0.3, "device": "cpu"})
        wav = named_clips["fox_en_us.wav"]
        columns = {"reference_audio": [str(DATA / "rainbow_en_us.wav"), None, ""]}
        with caplog.at_level(logging.WARNING, logger="llasa"):
            scored = reward.score_audio([wav] * 3, [FOX] * 3, columns)
        both, alone, _ = scored
        quality, speaker = both.components["quality"], both.components["speaker_similarity"]
        # 1 / (0.7 / q + 0.3 / s), weights summing to 1
        assert both.reward == pytest.approx(1 / (0.7 / quality + 0.3 / speaker))
        assert alone.components["speaker_similarity"] is None and alone.reward == pytest.approx(quality)
        assert [clip.metrics["speaker_similarity/missing"] for clip in scored] == [0.0, 1.0, 1.0]
        warnings = [record.message for record in caplog.records if "speaker_similarity" in record.message]
        assert len(warnings) == 1 and warnings[0].startswith("2 of 3 completions have no value")
        parsed = [ParsedSpeech(codes=[1], ended=True, n_dropped=0)] * 3
        assert reward.batch_metrics(parsed, scored)["speaker_similarity/missing"] == pytest.approx(2 / 3)


class TestProsodyConfig:
    def test_collapse_is_scored_once_by_the_gate(self):
        # the wer component counts ERR up to the gate's threshold: past it the gate's scale scores the clip down, and
        # more misheard words (Whisper's noise between near-identical clips) no longer rank it
        shipped = json.loads(PROSODY.read_text())
        assert shipped["components"]["wer"]["max_error"] == shipped["gate"]["threshold"] == 0.3

    def test_shipped_config_loads(self, tiny_en, tiny_codec_dir):
        # the file's models are large-v3 and xcodec2-hf; overridden, it builds the six components with their weights
        reward = load_reward(PROSODY, asr_backend="faster-whisper", asr_model=tiny_en, codec_id=str(tiny_codec_dir))
        assert reward.component_names == ["wer", "nll", *NEW_COMPONENTS]
        assert reward.weights == [0.4, 0.3, 0.1, 0.1, 0.1, 0.05, 0.05] and reward.config.combine == "gated"
        assert reward.components[3].scorer.estimator == "crepe-tiny" and reward.config.vad
        assert reward.components[0].relative_to_reference  # Whisper's floor is the reference recording's ERR
        assert pickle.loads(pickle.dumps(reward)).components == reward.components  # TRL may pickle reward functions
        shipped = json.loads(PROSODY.read_text())
        assert (shipped["asr_backend"], shipped["asr_model"], shipped["codec_id"]) == (
            "openai-whisper",
            "large-v3",
            "HKUSTAudio/xcodec2-hf",
        )

    def test_trl_call_logs_every_component(self, tiny_en, tiny_codec_dir, named_clips, monkeypatch):
        # TRL's call: completion_ids plus the dataset's columns as keyword lists; one float per completion, and
        # each component's score and raw measure through log_metric. The first two completions decode to real
        # speech, the references (random codes) through the tiny codec; the first row also has a voice prompt, after
        # whose codes it is decoded (the prompt's samples, silence here, are cut off).
        fox, f3 = [1, 2, 3], [4, 5, 6]
        rng = np.random.default_rng(1)
        reference, voice = rng.integers(0, 65536, 120).tolist(), rng.integers(0, 65536, 60).tolist()
        voice_then_fox = np.concatenate([np.zeros(60 * 320, np.float32), named_clips["fox_en_us.wav"]])
        calls = record_codec(
            monkeypatch, speech={tuple(voice + fox): voice_then_fox, tuple(f3): named_clips["fox_en_f3.wav"]}
        )
        reward = load_reward(
            prosody_params(
                asr_backend="faster-whisper", asr_model=tiny_en, codec_id=str(tiny_codec_dir), device="cpu"
            ),
            speech_vocab=VOCAB,
        )
        metrics = defaultdict(list)
        rewards = reward(
            prompts=["p"] * 3,
            completions=[""] * 3,
            completion_ids=[VOCAB.codes_to_ids(fox) + [VOCAB.speech_end_id], VOCAB.codes_to_ids(f3), []],
            text=[FOX, FOX, FOX],
            duration=[2.4, 2.4, 2.4],
            audio_code_ids=[reference] * 3,
            prompt_code_ids=[voice, None, None],
            trainer_state=object(),
            log_extra=lambda column, values: None,
            log_metric=lambda name, value: metrics[name].append(value),
        )
        assert len(rewards) == 3 and all(isinstance(r, float) and 0 <= r <= 1 for r in rewards)
        assert rewards[2] == 0.0  # no speech tokens
        raw = ["wer", "nll", "duration_ratio", "pitch_movement", "silent_tail", "speaker_cosine", "dnsmos_ovrl"]
        names = [f"reward_{name}" for name in ("wer", "nll", *NEW_COMPONENTS)] + raw
        assert {f"whisper_reward/{name}" for name in names} <= set(metrics)
        assert metrics["whisper_reward/speaker_similarity/missing"] == [0.0]
        # the completions with speech (the first after its voice prompt), then each distinct reference once: the
        # reference codes (for intonation and pauses, reused by speaker_similarity for the second row) and the first
        # row's voice
        assert calls == [[voice + fox, f3], [reference], [voice]]


def run_cli(monkeypatch, capsys, config, *args) -> list[dict]:
    monkeypatch.setattr(sys, "argv", ["reward_whisper.py", "--reward_config", str(config), *args])
    reward_whisper.main()
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


class TestCommandLine:
    @pytest.fixture
    def config(self, tmp_path, tiny_en):
        path = tmp_path / "prosody.json"
        path.write_text(json.dumps(prosody_params(asr_backend="faster-whisper", asr_model=tiny_en)))
        return path

    def test_reference_audio_prints_each_component(self, monkeypatch, capsys, config, named_clips):
        # one --reference_audio for both files: every component scores both, the expected duration is the
        # reference's, and the en-us voice scores above the en+f3 one
        files = [str(DATA / "fox_en_us.wav"), str(DATA / "fox_en_f3.wav")]
        ref = str(DATA / "rainbow_en_us.wav")
        rows = run_cli(monkeypatch, capsys, config, "--audio", *files, "--text", FOX, FOX, "--reference_audio", ref)
        assert [row["audio"] for row in rows] == files
        for row in rows:
            assert set(row["components"]) == {"wer", "nll", *NEW_COMPONENTS}
            assert all(score is not None for score in row["components"].values())
            assert {"duration_ratio", "pitch_movement", "longest_pause", "speaker_cosine", "dnsmos_ovrl"} <= set(row)
        assert rows[0]["duration_ratio"] == pytest.approx(
            named_clips["fox_en_us.wav"].size / named_clips["rainbow_en_us.wav"].size
        )
        assert rows[0]["components"]["speaker_similarity"] > rows[1]["components"]["speaker_similarity"]

    def test_reference_per_line_in_a_jsonl_file(self, monkeypatch, capsys, config, tmp_path):
        # a line without reference_audio leaves speaker_similarity None for it (duration falls back to its line's
        # duration key)
        lines = [
            {"audio": str(DATA / "fox_en_us.wav"), "text": FOX, "reference_audio": str(DATA / "rainbow_en_us.wav")},
            {"audio": str(DATA / "fox_en_us.wav"), "text": FOX, "duration": 2.5},
        ]
        path = tmp_path / "named_clips.jsonl"
        path.write_text("\n".join(json.dumps(line) for line in lines))
        rows = run_cli(monkeypatch, capsys, config, "--input_file", str(path))
        assert rows[0]["components"]["speaker_similarity"] is not None
        assert rows[1]["components"]["speaker_similarity"] is None and rows[1]["speaker_similarity/missing"] == 1.0

    def test_reference_count_must_match(self, monkeypatch, capsys, config):
        # one reference for all files or one per file: two for three files is refused
        args = ["--audio", "a.wav", "b.wav", "c.wav", "--text", "x", "y", "z", "--reference_audio", "1.wav", "2.wav"]
        with pytest.raises(SystemExit):
            run_cli(monkeypatch, capsys, config, *args)


def test_voice_cloning_continuations_are_decoded_after_their_prompt(tiny_codec_dir, monkeypatch):
    # a completion with a voice prompt (prompt_code_ids) is decoded after the prompt's codes, as inference does, and
    # only its own 50 codes (1 s) are scored; a row without a prompt is decoded alone
    reward = load_reward(
        {"codec_id": str(tiny_codec_dir), "components": {"duration": {"weight": 1.0, "chars_per_second": 14}}},
        device="cpu",
    )
    prompts_seen = []
    decode_continuations = llasa.codec.decode_continuations

    def recording(codec, codes, prompts):
        prompts_seen.append(prompts)
        return decode_continuations(codec, codes, prompts)

    monkeypatch.setattr(llasa.codec, "decode_continuations", recording)
    named_clips = reward.score_codes(
        [[5] * 50, [6] * 50], ["Hello there.", "Hi."], {"prompt_code_ids": [[7] * 20, None]}
    )
    assert prompts_seen == [[[7] * 20, []]]
    assert [clip.audio_seconds for clip in named_clips] == [pytest.approx(1.0), pytest.approx(1.0)]
