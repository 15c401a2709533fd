"""Bad input, as a careless or hostile user gives it, through the scripts' main(argv) on the tiny models: each case
checks the exit or the skip, that the message names the culprit, that nothing outside the output was touched and
that no partial output is left behind; a few good inputs check that they still work."""

import csv
import errno
import json
import logging
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import create_dataset
import evaluate
import inference
import reward_whisper
import train
from llasa.data import load_source
from llasa.dataset import MARKER_FILE, Options, work_dir_for
from llasa.dataset import create_dataset as run_create_dataset
from llasa.synthesis import read_input_file

REPO = Path(__file__).parent.parent
DATA_DIR = Path(__file__).parent / "data"
CLIP = "rainbow_en_us.wav"  # 1.8 s, the shortest bundled clip
CLIP_TEXT = "The rainbow is a division of white light into many beautiful colors."


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder`: relative path -> (size, modification time)."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def audio_folder(folder: Path, rows: list[tuple[str, str]], clips: dict[str, np.ndarray] | None = None) -> Path:
    """A folder with metadata.csv listing `rows` (file_name, text): bundled clips copied, `clips` written as float
    WAV (any samples, NaN included)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, wav in (clips or {}).items():
        sf.write(folder / name, wav, 16000, subtype="FLOAT")
    for file_name, _ in rows:
        if (DATA_DIR / file_name).is_file() and not (folder / file_name).exists():
            shutil.copy(DATA_DIR / file_name, folder / file_name)
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("file_name", "text"), *rows])
    return folder


@pytest.fixture
def one_codec(codec, monkeypatch):
    """create_dataset.py's --codec_id (the tiny codec) loaded once for the module, not once per command."""
    import llasa.dataset

    monkeypatch.setattr(llasa.dataset, "load_codec", lambda *args, **kwargs: codec)


def make_dataset(tiny_codec_dir, dataset, output_dir, *extra: str):
    """create_dataset.py on the CPU with the tiny codec."""
    argv = ["--dataset", str(dataset), "--output_dir", str(output_dir), "--codec_id", str(tiny_codec_dir)]
    create_dataset.main([*argv, "--device", "cpu", "--min_duration", "0.1", *extra])


def saved_texts(output_dir) -> list[str]:
    from datasets import load_from_disk

    return load_from_disk(str(output_dir))["text"]


def nan_wav(seconds: float = 2.0) -> np.ndarray:
    wav = (0.1 * np.sin(np.arange(int(seconds * 16000)) / 5)).astype(np.float32)
    wav[100:200] = np.nan
    return wav


def truncated_wav(path: Path) -> Path:
    """A 16-bit WAV whose header says 3.49 s but whose data stops at 1.56 s."""
    sf.write(path, (0.1 * np.sin(np.arange(int(3.49 * 16000)) / 5)).astype(np.float32), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: 44 + int(1.56 * 16000) * 2])
    return path


@pytest.fixture(scope="module")
def codec(tiny_codec_dir):
    from llasa.codec import load_codec

    return load_codec(tiny_codec_dir, device="cpu")


# ------------------------------------------------------------------------------------------ create_dataset: output


def test_overwrite_refuses_the_current_folder(tmp_path, monkeypatch, tiny_codec_dir):
    # --output_dir . --overwrite inside a folder of one's own files: refused, every file kept, no .partial staged.
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    shutil.copytree(DATA_DIR, home / "clips")
    monkeypatch.chdir(home)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match=r"--output_dir \. is the current folder"):
        make_dataset(tiny_codec_dir, "clips", ".", "--overwrite")
    assert snapshot(tmp_path) == before


def test_overwrite_refuses_a_folder_of_foreign_files(tmp_path, tiny_codec_dir):
    # A folder this tool did not write is never deleted, even with --overwrite; the message says why.
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8")
    before = snapshot(tmp_path)
    with pytest.raises(
        SystemExit, match="files this tool did not write: cat.jpg.*--overwrite only replaces this tool's"
    ):
        make_dataset(tiny_codec_dir, DATA_DIR, out, "--overwrite")
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_its_own_output(tmp_path, tiny_codec_dir, one_codec):
    # Works: a dataset this tool wrote is replaced by --overwrite, and nothing is left beside it.
    folder = audio_folder(tmp_path / "clips", [(CLIP, CLIP_TEXT)])
    make_dataset(tiny_codec_dir, folder, tmp_path / "out")
    assert (tmp_path / "out" / MARKER_FILE).is_file()
    audio_folder(folder, [(CLIP, "Rewritten.")])
    make_dataset(tiny_codec_dir, folder, tmp_path / "out", "--overwrite")
    assert saved_texts(tmp_path / "out") == ["Rewritten."]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips", "out"]


def test_overwrite_onto_a_file_is_refused_up_front(tmp_path):
    # --output_dir naming a file: refused before the codec loads (the codec id is not even valid), file kept.
    target = tmp_path / "result.txt"
    target.write_text("mine")
    with pytest.raises(SystemExit, match=f"--output_dir {target} is a file, not a folder"):
        create_dataset.main(["--dataset", str(DATA_DIR), "--output_dir", str(target), "--overwrite"])
    assert target.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["result.txt"]


def test_partial_run_with_other_settings_is_discarded_with_overwrite(tmp_path, tiny_codec_dir, one_codec):
    # A .partial left by a wrong --codec_id: the refusal points to --overwrite, which then discards it and runs.
    folder = audio_folder(tmp_path / "clips", [(CLIP, CLIP_TEXT)])
    partial = work_dir_for(tmp_path / "out")
    partial.mkdir()
    (partial / "settings.json").write_text(json.dumps({"codec_id": "wrong/codec"}))
    with pytest.raises(SystemExit, match="pass --overwrite to discard it"):
        make_dataset(tiny_codec_dir, folder, tmp_path / "out")
    make_dataset(tiny_codec_dir, folder, tmp_path / "out", "--overwrite")
    assert saved_texts(tmp_path / "out") == [CLIP_TEXT] and not partial.exists()


def test_wrong_codec_leaves_no_partial_run(tmp_path, tiny_llasa_dir, tiny_codec_dir):
    # A --codec_id that is not a codec (the Llasa folder) fails without leaving <out>.partial, so the corrected
    # command runs without --overwrite.
    folder = audio_folder(tmp_path / "clips", [(CLIP, CLIP_TEXT)])
    with pytest.raises(SystemExit, match=f"{tiny_llasa_dir} is not an XCodec2 checkpoint"):
        make_dataset(tiny_llasa_dir, folder, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips"]
    make_dataset(tiny_codec_dir, folder, tmp_path / "out")
    assert saved_texts(tmp_path / "out") == [CLIP_TEXT]


# ------------------------------------------------------------------------------------------ create_dataset: samples


def test_bad_clips_are_skipped_named_and_counted(tmp_path, tiny_codec_dir, caplog, one_codec):
    # NaN samples, a WAV cut off mid-data, an all-zero clip and a transcript of punctuation are skipped with their
    # names; the good clip is kept.
    folder = tmp_path / "clips"
    folder.mkdir()
    truncated_wav(folder / "cut.wav")
    rows = [("nan.wav", "Not a number."), ("cut.wav", "Cut short."), ("zero.wav", "Silence."), (CLIP, "?!...")]
    audio_folder(folder, [*rows, ("fox_en_us.wav", "The fox.")], {"nan.wav": nan_wav(), "zero.wav": np.zeros(48000)})
    with caplog.at_level(logging.WARNING):
        make_dataset(tiny_codec_dir, folder, tmp_path / "out")
    assert saved_texts(tmp_path / "out") == ["The fox."]
    assert f"Bad audio {folder / 'nan.wav'}: it holds NaN or infinite samples" in caplog.text
    assert f"Truncated audio {folder / 'cut.wav'}: its WAV header says 3.49 s, the file holds 1.56 s" in caplog.text
    assert "Silent audio zero.wav: RMS 0 is below 0.001 (-60 dBFS)" in caplog.text
    assert "Skipping rainbow_en_us.wav: its transcript '?!...' has no letter or digit" in caplog.text
    marker = json.loads((tmp_path / "out" / MARKER_FILE).read_text())["summary"]
    assert (marker["non_finite"], marker["truncated"], marker["silent"], marker["no_words"]) == (1, 1, 1, 1)


def test_codec_failure_on_one_clip_is_skipped_and_named(tmp_path, codec, caplog):
    # The codec fails on one clip of a batch: the batch is retried clip by clip, the culprit named and counted.
    class FailsOnShortClips:
        def encode(self, waveforms):
            if any(len(wav) < 2 * 16000 for wav in waveforms):
                raise RuntimeError("kernel error")
            return codec.encode(waveforms)

    folder = audio_folder(tmp_path / "clips", [(CLIP, CLIP_TEXT), ("fox_en_us.wav", "The fox.")])
    with caplog.at_level(logging.WARNING):
        summary = run_create_dataset(
            Options(dataset=str(folder), output_dir=str(tmp_path / "out"), batch_size=2), FailsOnShortClips()
        )
    assert (summary.kept, summary.failed) == (1, 1)
    assert f"the codec failed on {CLIP}: kernel error" in caplog.text


# ------------------------------------------------------------------------------------------ reading transcripts


def test_transcripts_are_read_as_written(tmp_path, tiny_codec_dir, one_codec):
    # 007, 1984 and NA stay exactly that (not 7.0, 1984.0 or an empty cell) all the way into the dataset.
    folder = tmp_path / "clips"
    folder.mkdir()
    names = ["a.wav", "b.wav", "c.wav"]
    for name in names:
        shutil.copy(DATA_DIR / CLIP, folder / name)
    audio_folder(folder, list(zip(names, ["007", "1984", "NA"], strict=True)))
    make_dataset(tiny_codec_dir, folder, tmp_path / "out")
    assert saved_texts(tmp_path / "out") == ["007", "1984", "NA"]


def test_json_number_transcript_names_file_row_and_column(tmp_path):
    # A JSON number in the text column is refused (its digits as written are lost), naming file, row and column.
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"file_name": CLIP, "text": "Fine."}, {"file_name": CLIP, "text": 12345}]))
    with pytest.raises(ValueError, match=f"{path} row 2, column 'text': the transcript is 12345, not a string"):
        load_source(str(path))


def test_column_mixing_numbers_and_strings_is_read_as_strings(tmp_path):
    # A speaker column holding 7 and "anna" no longer stops the run with an Arrow error: it is read as strings.
    path = tmp_path / "rows.jsonl"
    rows = [{"file_name": CLIP, "text": "One.", "speaker": 7}, {"file_name": CLIP, "text": "Two.", "speaker": "anna"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_source(str(path)).dataset["speaker"] == ["7", "anna"]


def test_csv_numbers_stay_numbers_outside_the_transcript(tmp_path):
    # Works: a duration column of numbers is still read as numbers, with empty cells as None.
    (tmp_path / "rows.csv").write_text(f"file_name,text,duration\n{CLIP},0.5,1.5\n{CLIP},Two,\n")
    dataset = load_source(str(tmp_path / "rows.csv")).dataset
    assert dataset["text"] == ["0.5", "Two"] and dataset["duration"] == [1.5, None]


def test_resume_reencodes_a_changed_transcript(tmp_path, tiny_codec_dir, codec, one_codec):
    # Interrupted after the first shard; that row's transcript is then fixed: the rerun encodes it again.
    class Interrupted:
        calls = 0

        def encode(self, waveforms):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return codec.encode(waveforms)

    folder = audio_folder(tmp_path / "clips", [(CLIP, "Typo hre."), ("fox_en_us.wav", "The fox.")])
    options = Options(
        dataset=str(folder), output_dir=str(tmp_path / "out"), codec_id=str(tiny_codec_dir), min_duration=0.1
    )
    options = replace(options, shard_size=1, batch_size=1, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        run_create_dataset(options, Interrupted())
    audio_folder(folder, [(CLIP, "Typo here."), ("fox_en_us.wav", "The fox.")])
    make_dataset(tiny_codec_dir, folder, tmp_path / "out", "--shard_size", "1", "--batch_size", "1")
    assert saved_texts(tmp_path / "out") == ["Typo here.", "The fox."]


def test_bad_metadata_files_are_named(tmp_path, tiny_codec_dir):
    # A metadata.csv that is not UTF-8 or is empty, and a JSONL with a bad second line: the file and line are named.
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "metadata.csv").write_bytes(f"file_name,text\n{CLIP},caf\xe9\n".encode("latin-1"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metadata.csv").write_text("")
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(json.dumps({"file_name": CLIP, "text": "One."}) + "\n{oops\n")
    for dataset, message in [
        (latin, f"{latin / 'metadata.csv'} line 2: not UTF-8 text"),
        (empty, f"{empty / 'metadata.csv'} is empty"),
        (jsonl, f"{jsonl} line 2: not valid JSON"),
    ]:
        with pytest.raises(SystemExit, match=message):
            make_dataset(tiny_codec_dir, dataset, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not work_dir_for(tmp_path / "out").exists()


def test_mistyped_relative_dataset_path(tmp_path, monkeypatch, tiny_codec_dir):
    # tests/dta (a typo of tests/data) is no such folder, not a hub id to look up.
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit, match="--dataset tests/dta: no such file or folder"):
        make_dataset(tiny_codec_dir, "tests/dta", tmp_path / "out")


# ------------------------------------------------------------------------------------------ inference


def speak(tiny_llasa_dir, tiny_codec_dir, *argv: str):
    inference.main(
        ["--llasa-id", str(tiny_llasa_dir), "--codec-id", str(tiny_codec_dir), "--device", "cpu", "--seed", "0"]
        + ["--max_length", "120", *argv]
    )


def test_nan_voice_prompt_is_refused_before_loading(tmp_path, tiny_llasa_dir, tiny_codec_dir):
    # A voice prompt with NaN samples is named, with the reason, before any model loads.
    prompt = tmp_path / "nan.wav"
    sf.write(prompt, nan_wav(), 16000, subtype="FLOAT")
    with pytest.raises(SystemExit, match=f"--prompt_wav: Bad audio {prompt}: it holds NaN or infinite samples"):
        speak(
            tiny_llasa_dir,
            tiny_codec_dir,
            "--text",
            "Hello.",
            "--output",
            str(tmp_path / "gen.wav"),
            "--prompt_wav",
            str(prompt),
            "--prompt_text",
            "Hi.",
        )
    assert not (tmp_path / "gen.wav").exists()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{tmp}/no/such/model", "--llasa_id {tmp}/no/such/model: no such file or folder"),
        ("{codec}", "--llasa_id {codec} is an XCodec2 codec, not a Llasa model: pass it as --codec_id"),
    ],
)
def test_wrong_llasa_id_is_named(tmp_path, tiny_codec_dir, model, message):
    # A missing local model is not a hub id; the codec folder passed as the model says so (not "install tiktoken").
    values = {"tmp": tmp_path, "codec": tiny_codec_dir}
    with pytest.raises(SystemExit, match=message.format(**values)):
        speak(model.format(**values), tiny_codec_dir, "--text", "Hello.", "--output", str(tmp_path / "gen.wav"))


@pytest.mark.parametrize(
    ("output", "message"),
    [("folder", "is a folder: give a file name"), ("gen.mp3", r"only \.wav is written; use .*gen\.wav")],
)
def test_output_path_is_checked_before_generating(tmp_path, tiny_llasa_dir, tiny_codec_dir, output, message):
    # --output naming a folder, or promising MP3, is refused before generating, not after (or silently as WAV).
    (tmp_path / "folder").mkdir()
    with pytest.raises(SystemExit, match=message):
        speak(tiny_llasa_dir, tiny_codec_dir, "--text", "Hello.", "--output", str(tmp_path / output))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_input_file_problems_are_named(tmp_path, tiny_llasa_dir, tiny_codec_dir):
    # A binary --input_file, an --output_dir that is a file, and an empty list: named before any model loads.
    binary = tmp_path / "texts.txt"
    binary.write_bytes(b"\x00\x01\x02PK")
    good = tmp_path / "good.txt"
    good.write_text("Hello.\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "taken").write_text("mine")
    for argv, message in [
        (["--input_file", str(binary), "--output_dir", str(tmp_path / "o")], f"{binary} is a binary file"),
        (["--input_file", str(good), "--output_dir", str(tmp_path / "taken")], "is a file, not a folder"),
        (["--input_file", str(tmp_path / "empty.txt"), "--output_dir", str(tmp_path / "o")], "empty.txt is empty"),
    ]:
        with pytest.raises(SystemExit, match=message):
            speak(tiny_llasa_dir, tiny_codec_dir, *argv)
    assert not (tmp_path / "o").exists() and (tmp_path / "taken").read_text() == "mine"


def test_texts_without_words_are_skipped_and_counted(tmp_path):
    # Lines of punctuation or emoji are skipped with their line number; the rest is read.
    path = tmp_path / "texts.txt"
    path.write_text("Hello.\n?!...\n\U0001f600\U0001f600\nBye.\n", encoding="utf-8")
    requests, skipped = read_input_file(path)
    assert [r.text for r in requests] == ["Hello.", "Bye."]
    assert [s.reason for s in skipped] == [
        "texts.txt line 2: the text '?!...' has no letter or digit: nothing to speak",
        "texts.txt line 3: the text '\U0001f600\U0001f600' has no letter or digit: nothing to speak",
    ]


def test_bad_jsonl_line_is_named_by_its_line(tmp_path):
    # A broken second line of a JSONL list is reported as line 2 (json alone would say line 1), the rest is read.
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "Hello."}\n{"text": oops}\n')
    requests, skipped = read_input_file(path)
    assert [r.text for r in requests] == ["Hello."]
    assert [s.reason for s in skipped] == ["texts.jsonl line 2: not valid JSON (Expecting value at column 10)"]


def test_good_text_is_spoken(tmp_path, tiny_llasa_dir, tiny_codec_dir):
    # Works: a plain --text with a .wav --output writes 16 kHz audio.
    speak(tiny_llasa_dir, tiny_codec_dir, "--text", "Hello.", "--output", str(tmp_path / "gen.wav"))
    assert sf.info(tmp_path / "gen.wav").samplerate == 16000


# ------------------------------------------------------------------------------------------ evaluate


@pytest.fixture(scope="module")
def reward_config(tmp_path_factory, tiny_codec_dir, tiny_en):
    """The paper's reward config with Whisper tiny.en through faster-whisper, on the CPU."""
    config = json.loads((REPO / "reward_models" / "wer_nll.json").read_text())
    config.update(asr_backend="faster-whisper", asr_model=tiny_en, codec_id=str(tiny_codec_dir), device="cpu")
    path = tmp_path_factory.mktemp("reward") / "tiny_en.json"
    path.write_text(json.dumps(config))
    return path


def compare_argv(test_list, output_dir, tiny_codec_dir, reward_config, *models: str) -> list[str]:
    return (
        ["compare", "--test_list", str(test_list), "--models", *models, "--codec_id", str(tiny_codec_dir)]
        + ["--max_length", "60", "--reward_config", str(reward_config), "--output_dir", str(output_dir)]
        + ["--speech_scores", "--device", "cpu"]
    )


def test_compare_checks_every_model_before_synthesising(tmp_path, tiny_llasa_dir, tiny_codec_dir, reward_config):
    # base=<model> grpo=<missing path>: refused at once, naming the system and the path; nothing synthesised.
    (tmp_path / "list.txt").write_text("Hello.\n")
    missing = tmp_path / "path/that/does/not/exist"
    models = [f"base={tiny_llasa_dir}", f"grpo={missing}"]
    argv = compare_argv(tmp_path / "list.txt", tmp_path / "eval", tiny_codec_dir, reward_config, *models)
    with pytest.raises(SystemExit, match=f"--models grpo={missing}: no such file or folder"):
        evaluate.main(argv)
    assert not (tmp_path / "eval").exists()


def test_compare_keeps_a_finished_system(tmp_path, tiny_llasa_dir, tiny_codec_dir, reward_config, monkeypatch):
    # A rerun with the same settings keeps base's clips instead of deleting and redoing them.
    import llasa.synthesis

    (tmp_path / "list.txt").write_text("Hello.\n")
    argv = compare_argv(
        tmp_path / "list.txt", tmp_path / "eval", tiny_codec_dir, reward_config, f"base={tiny_llasa_dir}"
    )
    evaluate.main(argv)
    clip = tmp_path / "eval" / "audio" / "base" / "0001.wav"
    before = snapshot(tmp_path / "eval" / "audio")

    def no_model(*args, **kwargs):
        raise AssertionError("synthesised again")

    monkeypatch.setattr(llasa.synthesis, "load_model", no_model)
    evaluate.main(argv)
    assert clip.is_file() and snapshot(tmp_path / "eval" / "audio") == before


def test_compare_output_dir_that_is_a_file(tmp_path, tiny_llasa_dir, tiny_codec_dir, reward_config):
    # --output_dir naming a file is refused before any model loads.
    (tmp_path / "list.txt").write_text("Hello.\n")
    (tmp_path / "eval").write_text("mine")
    argv = compare_argv(tmp_path / "list.txt", tmp_path / "eval", tiny_codec_dir, reward_config, f"b={tiny_llasa_dir}")
    with pytest.raises(SystemExit, match=f"--output_dir {tmp_path / 'eval'} is a file, not a folder"):
        evaluate.main(argv)
    assert (tmp_path / "eval").read_text() == "mine"


# ------------------------------------------------------------------------------------------ train


def test_train_output_dir_that_is_a_file(tmp_path, tiny_llasa_dir):
    # --output_dir naming a file is refused before the policy loads, with the path.
    (tmp_path / "run").write_text("mine")
    with pytest.raises(SystemExit, match=f"--output_dir {tmp_path / 'run'} is a file, not a folder"):
        train.main(
            ["--model_name_or_path", str(tiny_llasa_dir), "--dataset", str(DATA_DIR), "--use_cpu"]
            + ["--reward_config", str(REPO / "reward_models" / "wer_nll.json"), "--output_dir", str(tmp_path / "run")]
        )
    assert (tmp_path / "run").read_text() == "mine"


def test_build_prompts_skips_texts_without_words(tiny_tokenizer):
    # Texts of punctuation or emoji are dropped and counted, not trained on the NLL alone.
    from datasets import Dataset

    from llasa.training import build_prompts

    dataset = Dataset.from_dict({"text": ["Hello there.", "...", "\U0001f600", "Bye."]})
    built, summary = build_prompts(dataset, tiny_tokenizer)
    assert built["text"] == ["Hello there.", "Bye."] and summary.no_words == 2
    assert "2 text without a letter or digit" in summary.report()


# ------------------------------------------------------------------------------------------ reward_whisper


def test_out_of_range_token_in_codes_file_is_refused_like_a_list(tmp_path, capsys):
    # <|s_99999|> in a speech-token string is counted and refused exactly like 99999 in a code list.
    path = tmp_path / "codes.jsonl"
    path.write_text(json.dumps({"codes": "<|s_1|><|s_99999|><|s_2|>", "text": "hi"}) + "\n")
    with pytest.raises(SystemExit):
        reward_whisper.main(["--codes_file", str(path)])
    assert (
        f"{path}:1: 1 of 3 codes lie outside XCodec2's codebook [0, 65535] (first: 99999)" in capsys.readouterr().err
    )


def test_empty_codes_file_is_an_error(tmp_path, capsys):
    # An empty --codes_file is an error naming the file, not a silent success.
    path = tmp_path / "codes.jsonl"
    path.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        reward_whisper.main(["--codes_file", str(path)])
    assert exit_info.value.code != 0 and f"{path} holds no line to score" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ nothing replaced


def test_the_output_rule_replaces_only_recorded_files(tmp_path):
    # A file the tools recorded may be written again; a file beside it, or a folder holding one, may not.
    from llasa.outputs import RECORD_FILE, check_replaceable, claim

    (tmp_path / "mine.txt").write_text("mine")
    claim([tmp_path / "ours.wav"], "--output_dir")
    (tmp_path / "ours.wav").write_bytes(b"RIFF")
    check_replaceable([tmp_path / "ours.wav", tmp_path / "new.wav"], "--output_dir")
    with pytest.raises(FileExistsError, match=r"--output_dir: .*mine\.txt already exists and was not written"):
        check_replaceable([tmp_path / "ours.wav", tmp_path / "mine.txt"], "--output_dir")
    with pytest.raises(FileExistsError, match="already exists"):
        check_replaceable([tmp_path], "--dataset_dir")
    assert json.loads((tmp_path / RECORD_FILE).read_text()) == ["ours.wav"]


def test_inference_never_replaces_a_file_it_did_not_write(tmp_path, tiny_llasa_dir, tiny_codec_dir, capsys):
    # out/a.wav is the user's and a list line has the id "a": refused before any model loads, a.wav kept.
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.wav").write_bytes(b"mine")
    (tmp_path / "list.jsonl").write_text(json.dumps({"id": "a", "text": "Hello."}) + "\n")
    with pytest.raises(SystemExit) as stop:
        speak(tiny_llasa_dir, tiny_codec_dir, "--input_file", str(tmp_path / "list.jsonl"), "--output_dir", str(out))
    assert stop.value.code == 2
    assert f"error: --output_dir: {out / 'a.wav'} already exists and was not written by this tool" in (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.wav"] and (out / "a.wav").read_bytes() == b"mine"


def test_evaluate_never_replaces_a_report_it_did_not_write(tmp_path, tiny_llasa_dir, tiny_codec_dir, reward_config):
    # An --output_dir holding the user's summary.md: refused before any model loads, the folder untouched.
    (tmp_path / "list.txt").write_text("Hello.\n")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "summary.md").write_text("# my notes\n")
    before = snapshot(tmp_path / "eval")
    argv = compare_argv(tmp_path / "list.txt", tmp_path / "eval", tiny_codec_dir, reward_config, f"b={tiny_llasa_dir}")
    with pytest.raises(SystemExit, match=r"summary\.md already exists and was not written by this tool"):
        evaluate.main(argv)
    assert snapshot(tmp_path / "eval") == before


def test_listen_reading_commands_leave_another_database_as_it_was(tmp_path):
    # results on another program's SQLite file: refused, the file byte for byte the same and no WAL files beside it.
    import sqlite3

    import listen

    app = tmp_path / "app.sqlite"
    with sqlite3.connect(app) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.execute("INSERT INTO users VALUES ('ann')")
    db.close()
    content = app.read_bytes()
    for argv in (["results", "--db", str(app), "--output_dir", str(tmp_path / "r")], ["export", "--db", str(app)]):
        with pytest.raises(SystemExit, match=r"app\.sqlite is not a listening-test store but another database"):
            listen.main([*argv, "--output", str(tmp_path / "x.jsonl")] if argv[0] == "export" else argv)
    assert app.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == ["app.sqlite"]


def test_listen_pairs_with_an_empty_folder_creates_no_store(tmp_path):
    # A folder without clips is named, and no empty .sqlite is left to be mistaken for a store later.
    import listen

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    db = tmp_path / "ratings.sqlite"
    with pytest.raises(SystemExit, match="The folder of 'a' holds no audio file"):
        listen.main(["pairs", "--pairs", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--db", str(db)])
    assert not db.exists()


def test_listen_export_of_no_judgment_writes_nothing(tmp_path):
    # A store without judgments: an error naming the store, no 0-byte file or dataset left to block the rerun.
    import listen
    from llasa.listening.store import PreferenceStore

    PreferenceStore(tmp_path / "db.sqlite")
    argv = ["export", "--db", str(tmp_path / "db.sqlite"), "--output", str(tmp_path / "out.jsonl")]
    with pytest.raises(SystemExit, match=r"db\.sqlite holds no human or machine judgment yet: nothing to export"):
        listen.main([*argv, "--dataset_dir", str(tmp_path / "ds")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.sqlite"]


def test_listen_results_never_replace_a_file_they_did_not_write(tmp_path):
    # results.md in --output_dir is the user's: refused; a rerun over the command's own results is not.
    import listen
    from llasa.listening.store import PreferenceStore

    for system in ("a", "b"):
        (tmp_path / system).mkdir()
        shutil.copy(DATA_DIR / CLIP, tmp_path / system / "0.wav")
    listen.main(
        ["pairs", "--pairs", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--db", str(tmp_path / "db.sqlite")]
    )
    store = PreferenceStore(tmp_path / "db.sqlite")
    shown = store.next_pair("ann")
    store.record("ann", shown.pair_id, shown.a, shown.b, "a")
    argv = ["results", "--db", str(tmp_path / "db.sqlite"), "--output_dir", str(tmp_path / "out"), "--bootstrap", "5"]
    listen.main(argv)
    listen.main(argv)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "results.md").write_text("mine")
    with pytest.raises(SystemExit, match=r"results\.md already exists and was not written by this tool"):
        listen.main([*argv[:-4], "--output_dir", str(tmp_path / "mine"), *argv[-2:]])
    assert (tmp_path / "mine" / "results.md").read_text() == "mine"


# ------------------------------------------------------------------------------------------ caught early, reported


def test_malformed_judgments_get_400_naming_the_field(tmp_path):
    # Wrong types in a judgment's body are refused with 400 and the field; nothing is stored.
    from starlette.testclient import TestClient

    from llasa.listening.server import create_app
    from llasa.listening.store import PreferenceStore

    store = PreferenceStore(tmp_path / "db.sqlite")
    client = TestClient(create_app(store))
    base = {"rater": "ann", "pair_id": 1, "a": "x" * 16, "b": "y" * 16, "choice": "a"}
    for change, field in [({"tags": [{}]}, "tags"), ({"pair_id": 2**70}, "pair_id"), ({"a": ["x"]}, "a must")]:
        response = client.post("/api/judgments", json={**base, **change})
        assert response.status_code == 400 and field in response.json()["error"]
    assert store.judgments() == []


def test_one_unreadable_clip_is_skipped_and_the_rest_scored(tmp_path, reward_config, capsys, caplog):
    # reward_whisper.py --audio good.wav corrupt.wav: the good clip is scored, the corrupt one named and counted.
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    good = DATA_DIR / CLIP
    with caplog.at_level(logging.WARNING):
        reward_whisper.main(
            ["--reward_config", str(reward_config), "--audio", str(good), str(corrupt), "--text", CLIP_TEXT, "Two."]
        )
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["audio"] == str(good) and 0 < json.loads(line)["reward"] <= 1
    assert f"Skipping {corrupt}: Failed to load audio" in caplog.text
    assert "Skipped 1 of 2 clips that could not be read" in caplog.text


def test_unreadable_reference_audio_is_left_out_not_fatal(tmp_path, capsys, caplog):
    # A corrupt --reference_audio: named in the log, and the clip scored without a reference (None), not a crash.
    (tmp_path / "duration.json").write_text(json.dumps({"components": {"duration": {"weight": 1.0}}}))
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    argv = ["--reward_config", str(tmp_path / "duration.json"), "--audio", str(DATA_DIR / CLIP), "--text", CLIP_TEXT]
    with caplog.at_level(logging.WARNING):
        reward_whisper.main([*argv, "--reference_audio", str(corrupt)])
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["reward"] is None
    assert f"Leaving out the reference audio {corrupt}: Failed to load audio" in caplog.text


@pytest.mark.parametrize("key", ["asr_model", "codec_id"])
def test_missing_model_path_in_a_reward_config_is_named_before_loading(tmp_path, tiny_llasa_dir, key, capsys):
    # A local path in the reward config that does not exist: train.py and reward_whisper.py say so before any
    # model loads, with exit status 2.
    config = json.loads((REPO / "reward_models" / "wer_nll.json").read_text())
    config[key] = str(tmp_path / "models" / "missing")
    (tmp_path / "reward.json").write_text(json.dumps(config))
    message = f"{tmp_path / 'reward.json'}: {key} {tmp_path / 'models' / 'missing'}: no such file or folder"
    for run in (
        lambda: reward_whisper.main(
            ["--reward_config", str(tmp_path / "reward.json"), "--audio", "a.wav"] + ["--text", "A."]
        ),
        lambda: train.main(
            ["--model_name_or_path", str(tiny_llasa_dir), "--dataset", str(DATA_DIR), "--use_cpu"]
            + ["--reward_config", str(tmp_path / "reward.json"), "--output_dir", str(tmp_path / "run")]
        ),
    ):
        with pytest.raises(SystemExit) as stop:
            run()
        assert stop.value.code == 2 and message in capsys.readouterr().err


def train_argv(tiny_llasa_dir, dataset, output_dir, *extra: str) -> list[str]:
    return [
        "--model_name_or_path",
        str(tiny_llasa_dir),
        "--dataset",
        str(dataset),
        "--use_cpu",
        "--report_to",
        "none",
    ] + ["--reward_config", str(REPO / "reward_models" / "wer_nll.json"), "--output_dir", str(output_dir), *extra]


def test_missing_checkpoint_to_resume_is_named_before_loading(tmp_path, tiny_llasa_dir, monkeypatch):
    # --resume_from_checkpoint naming no folder, or "last" where the run has no checkpoint: refused before the
    # policy loads.
    monkeypatch.setattr(train, "load_policy", None)  # never called: a call would fail with a TypeError
    for value, message in [
        (str(tmp_path / "nonexistent"), f"--resume_from_checkpoint {tmp_path / 'nonexistent'}: no such folder"),
        ("last", f"--resume_from_checkpoint last: {tmp_path / 'run'} holds no checkpoint-N folder"),
    ]:
        with pytest.raises(SystemExit, match=message):
            train.main(train_argv(tiny_llasa_dir, DATA_DIR, tmp_path / "run", "--resume_from_checkpoint", value))


def test_empty_saved_dataset_is_named_before_loading(tmp_path, tiny_llasa_dir, monkeypatch):
    # A save_to_disk folder without rows: a one-line error naming it before the policy loads, not datasets'
    # IndexError after.
    from datasets import Dataset

    monkeypatch.setattr(train, "load_policy", None)  # never called: a call would fail with a TypeError

    Dataset.from_dict({"text": [], "audio_code_ids": []}).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(SystemExit, match=f"{tmp_path / 'empty'} is a dataset without any row"):
        train.main(train_argv(tiny_llasa_dir, tmp_path / "empty", tmp_path / "run"))


def test_model_errors_end_with_a_message_not_a_traceback(
    tmp_path, tiny_llasa_dir, tiny_codec_dir, capsys, monkeypatch
):
    # A model whose tokenizer lacks Llasa's speech tokens, a codec hub id that cannot be found: `error: ...` and
    # exit status 2, as every other bad input.
    import huggingface_hub.constants
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the hub is out of reach: no retries

    plain = tmp_path / "plain"
    shutil.copytree(tiny_llasa_dir, plain)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (plain / name).unlink(missing_ok=True)
    words = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>").save_pretrained(plain)
    output = ["--text", "Hello.", "--output", str(tmp_path / "gen.wav")]
    for model, codec, message in [
        (plain, tiny_codec_dir, "error: The tokenizer lacks Llasa's tokens"),
        (tiny_llasa_dir, "HKUSTAudio/xcodec2-typo", "error: .*HKUSTAudio/xcodec2-typo"),
    ]:
        with pytest.raises(SystemExit) as stop:
            speak(model, codec, *output)
        assert stop.value.code == 2 and re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "gen.wav").exists()


# ------------------------------------------------------------------------------------------ disks, tables, lists


def test_read_only_folder_is_named_with_the_fix(tmp_path, tiny_codec_dir, one_codec, monkeypatch, capsys):
    # The folder beside --output_dir cannot be created (a read-only disk): the folder and the fix, exit status 2.
    folder = audio_folder(tmp_path / "clips", [(CLIP, CLIP_TEXT)])
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if Path(self).parent == read_only:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(SystemExit) as stop:
        make_dataset(tiny_codec_dir, folder, read_only / "out")
    assert stop.value.code == 2
    assert (
        f"error: Read-only file system ({read_only / 'out.partial'}): that disk is read-only: pick a folder on a "
        "writable disk." in capsys.readouterr().err
    )


def test_full_disk_is_named_and_the_rerun_resumes(tmp_path, tiny_codec_dir, one_codec, monkeypatch, capsys):
    # save_to_disk runs out of space (pyarrow's OSError names no file): the folder being written and the fix; the
    # rerun with space again finishes the dataset.
    from datasets import Dataset

    folder = audio_folder(tmp_path / "clips", [(CLIP, CLIP_TEXT)])
    real_save = Dataset.save_to_disk

    def full_disk(self, path, *args, **kwargs):
        if Path(path).name == "dataset":  # the final save, after the shards
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_to_disk", full_disk)
    with pytest.raises(SystemExit) as stop:
        make_dataset(tiny_codec_dir, folder, tmp_path / "out")
    assert stop.value.code == 2
    assert (
        f"error: No space left on device ({work_dir_for(tmp_path / 'out')}): free some space there or write "
        "elsewhere, then run the command again." in capsys.readouterr().err
    )
    monkeypatch.setattr(Dataset, "save_to_disk", real_save)
    make_dataset(tiny_codec_dir, folder, tmp_path / "out")
    assert saved_texts(tmp_path / "out") == [CLIP_TEXT]


def test_csv_identifiers_keep_their_zeros_and_mixed_columns_warn(tmp_path, caplog):
    # spk_id 007 stays "007" (not 7); a column mixing numbers and strings is read as strings with a warning.
    path = tmp_path / "rows.csv"
    path.write_text(f"file_name,text,spk_id,speaker,duration\n{CLIP},One.,007,7,1.5\n{CLIP},Two.,012,anna,2\n")
    with caplog.at_level(logging.WARNING):
        dataset = load_source(str(path)).dataset
    assert dataset["spk_id"] == ["007", "012"] and dataset["speaker"] == ["7", "anna"]
    assert dataset["duration"] == [1.5, 2.0]
    assert f"{path}: column 'speaker' mixes strings and other values; 1 read as strings" in caplog.text


def test_plain_text_list_is_not_judged_by_its_first_line(tmp_path):
    # A first line starting with { does not make a text list JSONL: every line is read as the text it is.
    path = tmp_path / "texts.txt"
    path.write_text("{laughs} Hello there.\nBye.\n")
    requests, skipped = read_input_file(path)
    assert [r.text for r in requests] == ["{laughs} Hello there.", "Bye."] and skipped == []


@pytest.mark.parametrize(
    ("first", "kind"), [('{"text": "Hello."}', "jsonl"), ("Hello | there | you | all", "seedtts")]
)
def test_list_mixing_formats_asks_for_input_format(tmp_path, tiny_llasa_dir, tiny_codec_dir, first, kind):
    # A JSONL or Seed-TTS-eval-like line beside plain lines: how every line is read is asked for, naming a line of
    # each kind, before any model loads; with --input_format text the list is read as written.
    path = tmp_path / "texts.txt"
    path.write_text(f"{first}\nBye.\n")
    message = rf"text \(line 2\), {kind} \(line 1\)\. Pass --input_format text, jsonl or seedtts"
    with pytest.raises(SystemExit, match=message):
        speak(tiny_llasa_dir, tiny_codec_dir, "--input_file", str(path), "--output_dir", str(tmp_path / "out"))
    requests, _ = read_input_file(path, "text")
    assert [r.text for r in requests] == [first, "Bye."]
