"""evaluate.py compare with Seed-TTS-eval's protocol (its ASR per language, SIM from a WavLM speaker-verification
model, its table layout) and the codec's resynthesis of the reference recordings, on Seed-TTS-eval's list layouts
(meta.lst with a ground-truth 5th field, hardcase.lst with 4 fields)."""

import json
import shutil
import sys
import types
from pathlib import Path

import pytest

import evaluate
from llasa.audio import load_audio
from llasa.evaluation.seedtts import protocol_reward_config
from llasa.evaluation.systems import RESYNTHESIS
from llasa.text import error_rate

DATA = Path(__file__).parent / "data"
SAMPLES_PER_CODE = 320  # XCodec2: 16 kHz at 50 codes per second


class TestProtocolConfig:
    def test_asr_per_language(self):
        # Whisper-large-v3 (openai-whisper) for English, Paraformer-zh (FunASR) for Chinese; the error rate alone
        assert protocol_reward_config("en", "codec") == {
            "asr_backend": "openai-whisper",
            "asr_model": "large-v3",
            "language": "en",
            "codec_id": "codec",
            "components": {"wer": {"weight": 1.0, "normalizer": "seed-tts-eval"}},
        }
        zh = protocol_reward_config("zh", "codec")
        assert (zh["asr_backend"], zh["asr_model"]) == ("paraformer", "paraformer-zh")

    def test_normaliser_is_seed_tts_evals(self):
        # both sides simplified Chinese, punctuation stripped, English lower-cased: no error left; a number written
        # as digits is a wrong word, as in the published tables
        rule = protocol_reward_config("en", "codec")["components"]["wer"]["normalizer"]
        assert error_rate("歡迎來到北京！", "欢迎来到北京", "zh", normalizer=rule) == 0.0
        assert error_rate("Get the trust fund, early.", "get the trust fund early", "en", normalizer=rule) == 0.0
        assert error_rate("I have three cats.", "I have 3 cats", "en", normalizer=rule) == 0.25

    @pytest.mark.parametrize(
        "argv, message",
        [
            (["--audio_dir", "a=.", "--protocol", "seed-tts-eval"], "needs --language"),
            (["--audio_dir", "a=.", "--language", "zh"], "go with --protocol"),
            (["--audio_dir", f"{RESYNTHESIS}=.", "--resynthesis"], "repeated: resynthesis"),
        ],
    )
    def test_bad_flags(self, capsys, argv, message):
        # the protocol needs the list's language; --language alone means nothing; resynthesis is a taken name
        with pytest.raises(SystemExit):
            evaluate.parse_args(["compare", "--test_list", "x", "--output_dir", "o", *argv])
        assert message in capsys.readouterr().err


class StandInAutoModel:
    """FunASR's AutoModel as Paraformer answers: the characters of 一二三, spaced out, for every clip."""

    def __init__(self, model, device, disable_update):
        pass

    def generate(self, input, batch_size):
        return [{"key": str(i), "text": "一 二 三"} for i in range(len(input))]


def test_protocol_on_a_hardcase_list(tmp_path, monkeypatch, tiny_wavlm, no_loaded_models):
    # zh/hardcase.lst's 4 fields; Paraformer (a stand-in: FunASR is not installed here) hears 一二三, the
    # traditional 壹... lines and punctuation do not count; each clip is its own voice prompt, so SIM is 1
    monkeypatch.setitem(sys.modules, "funasr", types.SimpleNamespace(AutoModel=StandInAutoModel))
    audio = tmp_path / "tts"
    audio.mkdir()
    lines = []
    for clip_id, name, text in [("h1", "fox_en_us.wav", "一二三。"), ("h2", "rainbow_en_us.wav", "一，二，四！")]:
        shutil.copy(DATA / name, audio / f"{clip_id}.wav")
        lines.append(f"{clip_id}|prompt text|{DATA / name}|{text}")
    test_list = tmp_path / "hardcase.lst"
    test_list.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "report"
    evaluate.main(
        ["compare", "--test_list", str(test_list), "--audio_dir", f"tts={audio}", "--output_dir", str(output)]
        + ["--protocol", "seed-tts-eval", "--language", "zh", "--sim_model", tiny_wavlm]
        + ["--speech_scores", "speaker_similarity", "--device", "cpu"]
    )
    records = [json.loads(line) for line in (output / "clips.jsonl").read_text().splitlines()]
    assert [(r["id"], r["cer"], r["transcript"]) for r in records] == [
        ("h1", 0.0, "一 二 三"),
        ("h2", 1 / 3, "一 二 三"),
    ]
    assert [r["speaker_cosine"] for r in records] == pytest.approx([1.0, 1.0], abs=1e-5)
    table = (output / "summary.md").read_text()
    assert "| system | CER (%) | SIM |\n|---|---|---|\n| tts | 16.67 | 1.000 |\n" in table


@pytest.fixture(scope="module")
def reward_config(reward_config, tmp_path_factory):
    """The shared tiny.en reward config without the voice-activity check: the random codec's resynthesis is noise,
    which silero-vad would score 0 before the ASR hears it."""
    config = json.loads(reward_config.read_text())
    config["vad"] = False
    path = tmp_path_factory.mktemp("reward") / "tiny_en_no_vad.json"
    path.write_text(json.dumps(config))
    return path


def test_resynthesis_row(tmp_path, tiny_codec_dir, reward_config, espeak):
    # meta.lst lines: g1 has a ground-truth recording of its text (5th field), p1 only a voice prompt (resynthesised
    # and scored against the prompt's transcript), n1 neither (missing). The tiny codec's clips last its codes' time
    meta = tmp_path / "meta.lst"
    espeak("Get the trust fund to the bank early.", tmp_path / "g1.wav")
    rainbow = DATA / "rainbow_en_us.wav"
    lines = [
        f"g1|The rainbow.|{rainbow}|Get the trust fund to the bank early.|g1.wav",
        f"p1|When the sunlight strikes raindrops in the air.|{rainbow}|Something else.",
        "n1|||No recording at all.",
    ]
    meta.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "report"
    evaluate.main(
        ["compare", "--test_list", str(meta), "--resynthesis", "--codec_id", str(tiny_codec_dir)]
        + ["--reward_config", str(reward_config), "--output_dir", str(output), "--speech_scores", "--device", "cpu"]
    )
    records = {r["id"]: r for r in map(json.loads, (output / "clips.jsonl").read_text().splitlines())}
    assert {r["system"] for r in records.values()} == {RESYNTHESIS}
    assert records["g1"]["text"] == "Get the trust fund to the bank early." and records["g1"]["status"] == "scored"
    assert records["p1"]["text"] == "When the sunlight strikes raindrops in the air."
    assert records["n1"]["status"] == "missing"
    for clip_id, source in [("g1", tmp_path / "g1.wav"), ("p1", rainbow)]:
        resynthesised = load_audio(output / "audio" / RESYNTHESIS / f"{clip_id}.wav")
        assert abs(len(resynthesised) - len(load_audio(source))) < 2 * SAMPLES_PER_CODE
        assert records[clip_id]["wer"] is not None
    summary = json.loads((output / "summary.json").read_text())
    assert summary["systems"][RESYNTHESIS]["n_scored"] == 2 and summary["systems"][RESYNTHESIS]["n_missing"] == 1
