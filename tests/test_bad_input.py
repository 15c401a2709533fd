"""Bad input, as a careless or hostile user gives it, through the scripts' main(argv) on the tiny models: each case
checks the exit or the skip, that the message names the culprit, that nothing outside the output was touched and
that no partial output is left behind; a few good inputs check that they still work."""

import csv
import json
import logging
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
from llasa.dataset import MARKER_FILE, Options, work_dir_for
from llasa.dataset import create_dataset as run_create_dataset
from llasa.sources import load_source
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
    with pytest.raises(SystemExit, match=f"{MARKER_FILE}.*--overwrite only replaces this tool's own output"):
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
        ("{tmp}/no/such/model", "--model_name_or_path {tmp}/no/such/model: no such file or folder"),
        ("{codec}", "--model_name_or_path {codec} is an XCodec2 codec, not a Llasa model: pass it as --codec_id"),
    ],
)
def test_wrong_llasa_id_is_named(tmp_path, tiny_codec_dir, model, message):
    # A missing local model is not a hub id; the codec folder passed as the model (--llasa-id here) says so (not
    # "install tiktoken"). The error names the flag by its one name in --help, as train.py does.
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

    from llasa.run_setup import build_prompts

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
