"""evaluate.py: scoring the espeak-ng clips with Whisper tiny.en (CTranslate2) through the reward module, synthesis
with tiny random models, the report files, and training curves from a synthetic trainer_state.json."""

import csv
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import evaluate
import llasa.evaluation.curves as curves
import llasa.evaluation.profiling as profiling
import llasa.synthesis as synthesis
from llasa.audio import load_audio
from llasa.evaluation.run_log import find_trainer_state
from llasa.rewards import load_reward

DATA = Path(__file__).parent / "data"
METADATA = list(csv.DictReader((DATA / "metadata.csv").open()))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def write_list(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def espeak_report(tmp_path_factory, reward_config):
    """compare on the six espeak-ng clips (half of them with a voice prompt) and the same clips shuffled so that
    each says another line's text; one clip of the shuffled system is missing."""
    root = tmp_path_factory.mktemp("espeak_eval")
    ids = [row["file_name"].rsplit(".", 1)[0] for row in METADATA]
    rows = []
    for index, row in enumerate(METADATA):
        record = {"id": ids[index], "text": row["text"]}
        if index % 2 == 0:  # the next clip (another sentence) is the voice prompt
            prompt = METADATA[(index + 1) % len(METADATA)]
            record.update(prompt_wav=str(DATA / prompt["file_name"]), prompt_text=prompt["text"])
        rows.append(record)
    test_list = write_list(root / "list.jsonl", rows)
    shuffled = root / "shuffled"
    shuffled.mkdir()
    # Each id gets the audio of the clip two lines down (a different sentence); the last id gets none.
    for index in range(len(METADATA) - 1):
        source = DATA / METADATA[(index + 2) % len(METADATA)]["file_name"]
        shutil.copy(source, shuffled / f"{ids[index]}{source.suffix}")
    output_dir = root / "report"
    evaluate.main(
        ["compare", "--test_list", str(test_list), "--audio_dir", f"espeak={DATA}", f"shuffled={shuffled}"]
        + [
            "--reward_config",
            str(reward_config),
            "--output_dir",
            str(output_dir),
            "--speech_scores",
            "speaker_similarity",
            "intonation",
        ]
        + ["--device", "cpu"]
    )
    records = [json.loads(line) for line in (output_dir / "clips.jsonl").read_text().splitlines()]
    summary = json.loads((output_dir / "summary.json").read_text())
    return {"rows": rows, "records": records, "summary": summary, "output_dir": output_dir}


class TestCompare:
    def test_numbers_are_the_reward_modules(self, espeak_report, reward_config):
        # Per clip, WER, NLL, reward and transcript equal what reward_whisper.py gives the same files; the summary
        # mean is the mean of those values.
        reward = load_reward(reward_config)
        clips = reward.score_audio(
            [load_audio(DATA / row["file_name"]) for row in METADATA], [row["text"] for row in METADATA]
        )
        records = [r for r in espeak_report["records"] if r["system"] == "espeak"]
        assert [r["id"] for r in records] == [row["id"] for row in espeak_report["rows"]]
        for record, clip in zip(records, clips, strict=True):
            assert record["wer"] == pytest.approx(clip.metrics["wer"])
            assert record["nll"] == pytest.approx(clip.metrics["nll"])
            assert record["reward"] == pytest.approx(clip.reward)
            assert record["transcript"] == clip.transcript
        wer = espeak_report["summary"]["systems"]["espeak"]["metrics"]["wer"]
        assert wer["mean"] == pytest.approx(np.mean([clip.metrics["wer"] for clip in clips]))
        assert wer["median"] == pytest.approx(np.median([clip.metrics["wer"] for clip in clips]))

    def test_duration_rate_and_similarity(self, espeak_report):
        # Duration is the file's length at 16 kHz, the speaking rate its letters per second, and the speaker
        # similarity (resemblyzer's cosine with the voice prompt) is given only where the line has a prompt.
        from llasa.scores import SpeakerSimilarityScorer

        records = [r for r in espeak_report["records"] if r["system"] == "espeak"]
        first, row = records[0], espeak_report["rows"][0]
        audio = load_audio(DATA / METADATA[0]["file_name"])
        assert first["duration_s"] == pytest.approx(len(audio) / 16000)
        letters = sum(char.isalnum() for char in row["text"])
        assert first["chars_per_second"] == pytest.approx(letters / first["duration_s"])
        [expected] = SpeakerSimilarityScorer(device="cpu").similarities([audio], [load_audio(row["prompt_wav"])])
        assert first["speaker_cosine"] == pytest.approx(expected, abs=1e-5)
        assert [r["speaker_cosine"] is None for r in records] == [index % 2 == 1 for index in range(len(records))]

    def test_intonation_measures(self, espeak_report):
        # "intonation" adds each clip's contour movement and roughness (llasa.prosody's measures, in semitones; a
        # clip measured in another batch agrees to float32 rounding)
        from llasa.prosody import IntonationScorer

        first = next(r for r in espeak_report["records"] if r["system"] == "espeak")
        [shape] = IntonationScorer(device="cpu").measures([load_audio(DATA / METADATA[0]["file_name"])])
        assert first["pitch_movement"] == pytest.approx(shape.movement, abs=1e-4) and shape.movement > 0.5
        assert first["pitch_roughness"] == pytest.approx(shape.roughness, abs=1e-4)
        assert "pitch_movement" in espeak_report["summary"]["systems"]["shuffled"]["metrics"]

    def test_shuffled_texts_score_worse_and_missing_counted(self, espeak_report):
        # Clips saying another sentence have a higher WER and NLL than the right ones (positive deltas vs the
        # baseline, the first system); the clip without a file is counted as missing, not scored.
        summary = espeak_report["summary"]
        assert summary["baseline"] == "espeak"
        shuffled = summary["systems"]["shuffled"]
        assert (shuffled["n_clips"], shuffled["n_scored"], shuffled["n_missing"]) == (6, 5, 1)
        assert shuffled["metrics"]["wer"]["n"] == 5
        assert shuffled["metrics"]["wer"]["delta_mean"] > 0.3
        assert shuffled["metrics"]["nll"]["delta_mean"] > 1.0
        missing = [r for r in espeak_report["records"] if r["status"] == "missing"]
        assert [(r["system"], r["id"]) for r in missing] == [("shuffled", espeak_report["rows"][-1]["id"])]

    def test_markdown_and_plot(self, espeak_report):
        # summary.md has the count rows and one row per metric and system, with the deltas' signs; the plot is a
        # 1200 x 480 PNG (two panels at 120 dpi).
        summary = espeak_report["summary"]
        table = (espeak_report["output_dir"] / "summary.md").read_text().splitlines()
        assert "| shuffled | 6 | 5 | 1 |" in table
        wer = summary["systems"]["shuffled"]["metrics"]["wer"]
        base = summary["systems"]["espeak"]["metrics"]["wer"]
        assert f"| wer | espeak | 6 | {base['mean']:.4f} | {base['median']:.4f} |  |  |" in table
        assert f"| wer | shuffled | 5 | {wer['mean']:.4f} | {wer['median']:.4f} | +{wer['delta_mean']:.4f} |" in (
            "\n".join(table)
        )
        metric_rows = [line.split(" | ")[0].lstrip("| ") for line in table if line.startswith("| ") and " | " in line]
        for metric in ("wer", "nll", "reward", "duration_s", "chars_per_second", "speaker_cosine"):
            assert metric_rows.count(metric) == 2
        assert png_size(espeak_report["output_dir"] / "comparison.png") == (1200, 480)

    def test_models_share_the_seed(self, tmp_path, tiny_llasa_dir, tiny_codec_dir, reward_config, caplog):
        # Two systems with the same checkpoint synthesise the same audio (the same seed for every model), so every
        # delta is 0, and the summary says their clips are identical files; the clips are written under
        # audio/<name>/. Without --codec_id, synthesis decodes with the reward config's codec (the tiny one).
        test_list = write_list(
            tmp_path / "list.jsonl", [{"id": "a", "text": "Hello world."}, {"id": "b", "text": "Hi."}]
        )
        llasa = synthesis.load_model(str(tiny_llasa_dir), device="cpu")
        longest = max(
            len(synthesis.prompt_ids(llasa, r, None, 10_000)) for r in synthesis.read_input_file(test_list)[0]
        )
        output_dir = tmp_path / "report"
        with caplog.at_level("INFO"):
            evaluate.main(
                [
                    "compare",
                    "--test_list",
                    str(test_list),
                    "--models",
                    f"one={tiny_llasa_dir}",
                    f"two={tiny_llasa_dir}",
                ]
                + ["--max_length", str(longest + 6), "--batch_size", "2", "--reward_config", str(reward_config)]
                + ["--output_dir", str(output_dir), "--speech_scores", "--device", "cpu"]
            )
        assert f"Codec: {tiny_codec_dir} (the reward config's codec_id" in caplog.text
        for clip_id in ("a", "b"):
            one, two = (load_audio(output_dir / "audio" / name / f"{clip_id}.wav") for name in ("one", "two"))
            assert len(one) > 0 and np.array_equal(one, two)
        summary = json.loads((output_dir / "summary.json").read_text())
        deltas = [stats["delta_mean"] for stats in summary["systems"]["two"]["metrics"].values()]
        assert deltas and all(delta == 0 for delta in deltas)
        assert summary["identical_to_baseline"] == {"two": {"identical": 2, "compared": 2}}
        note = "> one and two made identical audio: all 2 clips they share are identical files"
        assert note in (output_dir / "summary.md").read_text()
        assert json.loads((output_dir / "audio" / "two" / "synthesis.json").read_text())["codec_id"] == str(
            tiny_codec_dir
        )

    def test_bad_systems(self, capsys):
        # No system, a repeated name and a missing folder are refused with the fix.
        for argv, message in [
            ([], "Name at least one system"),
            (["--audio_dir", "a=tests", "a=tests"], "System names must differ; repeated: a"),
            (["--audio_dir", "a=no/such/dir"], "--audio_dir folder(s) not found: no/such/dir"),
            (["--audio_dir", "a/b=tests"], "system name 'a/b'"),
        ]:
            with pytest.raises(SystemExit):
                evaluate.parse_args(["compare", "--test_list", "x", "--output_dir", "o", *argv])
            assert message in capsys.readouterr().err


def trainer_state(steps: range, reward_name: str = "whisper_reward") -> dict:
    """A log_history as TRL 1.16's GRPOTrainer writes it, with the reward function's own log_metric keys."""
    history = []
    for step in steps:
        history.append(
            {
                "loss": 0.01,
                "grad_norm": 0.5,
                "learning_rate": 1e-5,
                "num_tokens": 1000.0 * step,
                "completions/mean_length": 200.0 - step,
                "completions/min_length": 150.0,
                "completions/max_length": 260.0,
                "completions/clipped_ratio": 0.0,
                f"rewards/{reward_name}/mean": 0.5 + 0.01 * step,
                f"rewards/{reward_name}/std": 0.1,
                "reward": 0.5 + 0.01 * step,
                "reward_std": 0.1,
                "frac_reward_zero_std": 0.0,
                f"{reward_name}/wer": 0.2 - 0.005 * step,
                f"{reward_name}/nll": 1.0 - 0.01 * step,
                # None where no clip of the logging step could be scored (TRL writes NaN means as null).
                f"{reward_name}/reward_wer": None if step == 3 else 0.6,
                "kl": 0.001 * step,
                "entropy": 2.0,
                "clip_ratio/low_mean": 0.0,
                "epoch": step / 100,
                "step": step,
            }
        )
    history.append({"train_runtime": 100.0, "train_loss": 0.01, "epoch": 0.2, "step": steps[-1]})
    return {"global_step": steps[-1], "log_history": history}


class TestCurves:
    def test_latest_checkpoint_and_plot(self, tmp_path):
        # Without a trainer_state.json in the run folder the latest checkpoint's is read (checkpoint-20, not -10 or
        # -9); the reward, the function's mean and own metrics, KL and completion length are plotted.
        for step, steps in ((9, range(1, 10)), (10, range(1, 11)), (20, range(1, 21))):
            (tmp_path / f"checkpoint-{step}").mkdir()
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(trainer_state(steps)))
        assert find_trainer_state(tmp_path) == tmp_path / "checkpoint-20" / "trainer_state.json"
        path, keys = curves.plot_curves(tmp_path)
        assert keys == [
            "reward",
            "rewards/whisper_reward/mean",
            "whisper_reward/wer",
            "whisper_reward/nll",
            "whisper_reward/reward_wer",
            "kl",
            "completions/mean_length",
        ]
        # The rewards share one panel; five more panels make a 3 x 2 grid at 110 dpi.
        assert path == tmp_path / "training_curves.png" and png_size(path) == (1650, 704)

    def test_panels_say_why_they_show_no_curve(self):
        # One logged step draws no line: the panel says so and what sets the logging; a metric with one value at
        # every step says its value; a moving metric gets no note.
        series = curves.training_series(trainer_state(range(2, 3))["log_history"])
        assert curves.panel_note(series, ["kl"]) == (
            "one logged step (step 2):\nlogging_steps sets how often TRL logs"
        )
        series = curves.training_series(trainer_state(range(1, 5))["log_history"])
        assert curves.panel_note(series, ["whisper_reward/reward_wer"]) == "0.6 at every logged step"
        assert curves.panel_note(series, ["kl"]) is None
        assert curves.panel_note(series, ["reward", "rewards/whisper_reward/mean"]) is None

    def test_summary_of_reward_and_step_time(self, tmp_path):
        # --summary draws the reward beside the step profile; a run without profiling timings is refused by name.
        state = trainer_state(range(1, 4))
        (tmp_path / "trainer_state.json").write_text(json.dumps(state))
        with pytest.raises(SystemExit, match="no profiling timings"):
            evaluate.main(["curves", "--run_dir", str(tmp_path), "--summary"])
        for entry in state["log_history"][:-1]:
            entry.update({f"{profiling.PROFILE_PREFIX}{profiling.STEP_TIMING}": 2.0})
        (tmp_path / "trainer_state.json").write_text(json.dumps(state))
        evaluate.main(["curves", "--run_dir", str(tmp_path), "--summary"])
        assert png_size(tmp_path / "summary.png") == (1210, 418)

    def test_series_skip_missing_values(self):
        # A step whose value is null is left out; the summary line of the run (no metrics) adds nothing.
        series = curves.training_series(trainer_state(range(1, 6))["log_history"])
        assert series["whisper_reward/reward_wer"][0] == [1, 2, 4, 5]
        assert series["kl"] == ([1, 2, 3, 4, 5], pytest.approx([0.001, 0.002, 0.003, 0.004, 0.005]))

    def test_ema(self):
        # Debiased EMA: a constant stays constant; [0, 1] at weight 0.5 gives [0, 0.5 / 0.75].
        assert curves.ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
        assert curves.ema([0.0, 1.0], 0.5) == pytest.approx([0.0, 2 / 3])
        assert curves.ema([1.0, 5.0], 0.0) == [1.0, 5.0]

    def test_cli_and_missing_state(self, tmp_path):
        # `curves --run_dir` writes the PNG named by --output; a folder without any trainer_state.json is refused.
        (tmp_path / "trainer_state.json").write_text(json.dumps(trainer_state(range(1, 4))))
        evaluate.main(["curves", "--run_dir", str(tmp_path), "--output", str(tmp_path / "c.png")])
        assert (tmp_path / "c.png").read_bytes()[:8] == PNG_SIGNATURE
        with pytest.raises(FileNotFoundError, match="is it a training run's --output_dir"):
            find_trainer_state(tmp_path / "checkpoint-1")
