"""create_dataset.py and its library (llasa.dataset) on the bundled espeak-ng clips, encoded by a tiny random XCodec2
loaded from disk."""

import csv
import io
import json
import logging
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import create_dataset
import llasa.data as llasa_data
import llasa.dataset as llasa_dataset
from create_dataset import parse_options
from llasa.audio import load_audio, resample
from llasa.dataset import Options
from llasa.dataset import create_dataset as run
from llasa.format import build_messages, chat_template_kwargs, render_prompt, tokens_to_codes

DATA_DIR = Path(__file__).parent / "data"
DURATIONS = {  # seconds, as the clips were made (mp3 may decode a few ms longer)
    "fox_en_us.wav": 2.586,
    "fox_en_f3.wav": 2.458,
    "rainbow_en_us.wav": 1.844,
    "shells_en_f3.wav": 1.911,
    "stella_en_us.flac": 2.111,
    "birch_en_f3.mp3": 2.178,
}


def bundled_transcripts() -> dict[str, str]:
    with open(DATA_DIR / "metadata.csv", newline="") as f:
        return {row["file_name"]: row["text"] for row in csv.DictReader(f)}


def audio_folder(folder: Path, rows: list[tuple[str, str]]) -> Path:
    """A folder with the named bundled clips and a metadata.csv listing `rows` (file_name, text)."""
    folder.mkdir(parents=True)
    for file_name, _ in rows:
        if (DATA_DIR / file_name).is_file():
            shutil.copy(DATA_DIR / file_name, folder / file_name)
    with open(folder / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file_name", "text"), *rows])
    return folder


class CountingCodec:
    """The real codec, counting its encode calls and interrupted (as by Ctrl-C) on call number `fail_on_call`."""

    def __init__(self, codec, fail_on_call: int | None = None):
        self.codec, self.fail_on_call, self.calls = codec, fail_on_call, 0

    def encode(self, waveforms):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated crash")
        return self.codec.encode(waveforms)


class WarningList(logging.Handler):
    """Collects the messages logged to it."""

    def __init__(self, level):
        super().__init__(level)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def codec(tiny_codec_dir):
    from llasa.codec import load_codec

    return load_codec(tiny_codec_dir, device="cpu")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, codec):
    """One run over a folder of the six clips, plus a corrupt file and an empty transcript, with max_duration 2.5 s.

    Three shards of three rows: the last one (corrupt file, empty transcript) keeps no row."""
    transcripts = bundled_transcripts()
    tmp = tmp_path_factory.mktemp("folder_run")
    rows = [*transcripts.items(), ("corrupt.wav", "This file is not audio."), ("rainbow_en_us.wav", "   ")]
    folder = audio_folder(tmp / "clips", rows)
    (folder / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    handler = WarningList(level=logging.WARNING)
    llasa_dataset.logger.addHandler(handler)
    try:
        summary = run(
            Options(dataset=str(folder), output_dir=str(tmp / "out"), max_duration=2.5, batch_size=2, shard_size=3),
            codec,
        )
    finally:
        llasa_dataset.logger.removeHandler(handler)
    from datasets import load_from_disk

    return {
        "folder": folder,
        "out": tmp / "out",
        "summary": summary,
        "warnings": handler.messages,
        "dataset": load_from_disk(tmp / "out"),
    }


class TestAudioFolder:
    def test_summary_counts_every_skip(self, folder_run):
        # 8 rows: fox_en_us (2.59 s) is over max_duration, corrupt.wav fails, one text is blank; 5 are kept.
        summary = folder_run["summary"]
        assert (summary.rows, summary.kept, summary.too_long, summary.too_short) == (8, 5, 1, 0)
        assert (summary.failed, summary.empty_text, summary.filtered) == (1, 1, 1)
        kept = sum(DURATIONS[name] for name in DURATIONS if name != "fox_en_us.wav")
        assert summary.seconds == pytest.approx(kept, abs=0.1)
        assert "1 failed" in summary.report() and "1 skipped (empty text)" in summary.report()

    def test_corrupt_file_is_named_in_a_warning(self, folder_run):
        # The unreadable file is reported by its path, and the run still finished.
        assert any("corrupt.wav" in message for message in folder_run["warnings"])
        assert not llasa_dataset.work_dir_for(folder_run["out"]).exists()

    def test_columns_and_order(self, folder_run):
        # Llasa's columns first, then the source's (file_name, a path column, is kept); rows in source order.
        dataset = folder_run["dataset"]
        assert dataset.column_names == [*llasa_dataset.OUTPUT_COLUMNS, "file_name"]
        expected = [name for name in bundled_transcripts() if name != "fox_en_us.wav"]
        assert dataset["file_name"] == expected

    def test_codes_are_the_codecs_own(self, folder_run, codec):
        # Each row's codes equal encoding its clip alone; tokens spell the same codes; 50 codes per second.
        dataset = folder_run["dataset"]
        wavs = [load_audio(folder_run["folder"] / name) for name in dataset["file_name"]]
        assert dataset["audio_code_ids"] == codec.encode(wavs)
        for row, wav in zip(dataset, wavs, strict=True):
            codes = row["audio_code_ids"]
            assert tokens_to_codes(row["audio_code_tokens"]) == codes
            assert all(0 <= code <= 65535 for code in codes)
            assert row["duration"] == pytest.approx(len(wav) / 16000)
            assert abs(len(codes) - row["duration"] * 50) <= 1

    def test_prompt_and_completion_strings(self, folder_run):
        # The user turn as the prompt; the whole assistant turn (START, speech tokens, END) as the completion.
        row = folder_run["dataset"][0]
        assert row["text"] == "The quick brown fox jumps over the lazy dog."
        assert row["prompt"] == [
            {
                "role": "user",
                "content": "Convert the text to speech:<|TEXT_UNDERSTANDING_START|>"
                "The quick brown fox jumps over the lazy dog.<|TEXT_UNDERSTANDING_END|>",
            }
        ]
        tokens = "".join(f"<|s_{code}|>" for code in row["audio_code_ids"])
        assert row["completion"] == [
            {"role": "assistant", "content": "<|SPEECH_GENERATION_START|>" + tokens + "<|SPEECH_GENERATION_END|>"}
        ]
        assert row["chat_template_kwargs"] == chat_template_kwargs()

    def test_trl_renders_llasas_training_sequence(self, folder_run, tiny_tokenizer):
        # TRL's SFT rendering of the row (with the row's own chat_template_kwargs, as SFTTrainer passes them) is
        # exactly Llasa's inference prompt, the speech tokens, END and the end of turn: one assistant turn.
        from trl.data_utils import apply_chat_template, is_conversational

        row = folder_run["dataset"][0]
        example = {"prompt": row["prompt"], "completion": row["completion"]}
        assert is_conversational(example)
        rendered = apply_chat_template(example, tiny_tokenizer, **row["chat_template_kwargs"])
        assert rendered["prompt"] + rendered["completion"] == (
            render_prompt(tiny_tokenizer, row["text"])
            + row["audio_code_tokens"]
            + "<|SPEECH_GENERATION_END|><|eot_id|>"
        )
        assert rendered["prompt"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")

    def test_train_reads_the_output(self, folder_run, tiny_tokenizer):
        # train.py loads the folder as is and keeps every row, with the same prompt.
        import llasa.training as training

        dataset = training.load_training_dataset(str(folder_run["out"]))
        built, summary = training.build_prompts(dataset, tiny_tokenizer)
        assert (summary.rows, summary.kept) == (5, 5)
        assert built["prompt"] == [build_messages(text) for text in dataset["text"]]


def test_jsonl_file_with_relative_paths(tmp_path, codec):
    # Paths are read from the JSONL file's folder, not the working directory; path/transcript are detected.
    (tmp_path / "set" / "wavs").mkdir(parents=True)
    transcripts = bundled_transcripts()
    names = ["rainbow_en_us.wav", "shells_en_f3.wav"]
    with open(tmp_path / "set" / "list.jsonl", "w") as f:
        for name in names:
            shutil.copy(DATA_DIR / name, tmp_path / "set" / "wavs" / name)
            f.write(
                json.dumps({"path": f"wavs/{name}", "transcript": transcripts[name], "speaker": name[-6:-4]}) + "\n"
            )
    summary = run(Options(dataset=str(tmp_path / "set" / "list.jsonl"), output_dir=str(tmp_path / "out")), codec)
    from datasets import load_from_disk

    dataset = load_from_disk(tmp_path / "out")
    assert summary.kept == 2
    assert dataset["text"] == [transcripts[name] for name in names]
    assert dataset["speaker"] == ["us", "f3"]
    assert dataset["audio_code_ids"] == codec.encode([load_audio(DATA_DIR / name) for name in names])


def test_default_output_dir_is_announced(tmp_path, codec, monkeypatch, caplog):
    # Without --output_dir the dataset goes to ./tokenized_dataset: the log says where, before and after.
    source = audio_folder(tmp_path / "clips", [("fox_en_us.wav", bundled_transcripts()["fox_en_us.wav"])])
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="llasa.dataset"):
        run(Options(dataset=str(source)), codec)
    output = tmp_path.resolve() / "tokenized_dataset"
    assert f"Output: {output} (the default; --output_dir chooses another)" in caplog.text
    assert f"Saved 1 rows to {output} (datasets.load_from_disk reads it)" in caplog.text


def test_saved_dataset_with_22khz_audio_column(tmp_path, codec):
    # A save_to_disk dataset with a 22.05 kHz Audio column is resampled to 16 kHz; --keep_audio keeps the column.
    from datasets import Audio, Dataset, load_from_disk

    wav_22k = resample(load_audio(DATA_DIR / "shells_en_f3.wav"), 16000, 22050)
    buffer = io.BytesIO()
    sf.write(buffer, wav_22k, 22050, format="WAV", subtype="PCM_16")
    source = Dataset.from_dict(
        {"audio": [{"bytes": buffer.getvalue(), "path": "shells.wav"}], "sentence": ["She sells."], "speaker": ["f3"]}
    ).cast_column("audio", Audio(sampling_rate=22050))
    source.save_to_disk(tmp_path / "source")
    out = tmp_path / "out"
    run(Options(dataset=str(tmp_path / "source"), output_dir=str(out)), codec)
    dataset = load_from_disk(out)
    expected = resample(sf.read(io.BytesIO(buffer.getvalue()), dtype="float32")[0], 22050, 16000)
    assert dataset.column_names == [*llasa_dataset.OUTPUT_COLUMNS, "sentence", "speaker"]
    assert dataset[0]["duration"] == pytest.approx(len(expected) / 16000) == pytest.approx(1.911, abs=1e-3)
    assert dataset["audio_code_ids"] == codec.encode([expected])
    # Rerun over the same output: --overwrite replaces it, and the kept audio is still the 22.05 kHz Audio column.
    run(Options(dataset=str(tmp_path / "source"), output_dir=str(out), keep_audio=True, overwrite=True), codec)
    kept = load_from_disk(out)
    assert kept.features["audio"] == Audio(sampling_rate=22050)
    assert kept.cast_column("audio", Audio(decode=False))[0]["audio"]["bytes"] == buffer.getvalue()


def test_resume_skips_finished_shards(tmp_path, codec):
    # A crash in the second shard leaves no output; the rerun encodes only that shard and keeps all three rows.
    transcripts = bundled_transcripts()
    names = ["rainbow_en_us.wav", "shells_en_f3.wav", "stella_en_us.flac"]
    folder = audio_folder(tmp_path / "clips", [(name, transcripts[name]) for name in names])
    options = Options(dataset=str(folder), output_dir=str(tmp_path / "out"), shard_size=2, batch_size=1)
    work_dir = llasa_dataset.work_dir_for(tmp_path / "out")
    with pytest.raises(KeyboardInterrupt, match="simulated crash"):
        run(options, CountingCodec(codec, fail_on_call=3))
    assert not (tmp_path / "out").exists()
    assert (work_dir / "shard_00000" / "summary.json").is_file()
    assert not (work_dir / "shard_00001" / "summary.json").exists()
    counting = CountingCodec(codec)
    summary = run(options, counting)
    assert counting.calls == 1  # only the third clip
    assert (summary.rows, summary.kept) == (3, 3)
    from datasets import load_from_disk

    assert load_from_disk(tmp_path / "out")["file_name"] == names
    assert not work_dir.exists()


def test_resume_refuses_other_settings(tmp_path):
    # A work dir made with other settings is not mixed into this run; the error names what changed.
    llasa_dataset._check_work_dir(tmp_path / "w", {"max_duration": 30.0, "shard_size": 1000})
    with pytest.raises(ValueError, match=r"other settings \(max_duration\)"):
        llasa_dataset._check_work_dir(tmp_path / "w", {"max_duration": 20.0, "shard_size": 1000})


def test_duration_filter_counts():
    # Between 2.0 and 2.5 s: rainbow and shells are too short, fox_en_us too long, three clips remain.
    source = llasa_data.load_source(str(DATA_DIR))
    counts = {"too_short": 0, "too_long": 0, "failed": 0, "empty_text": 0, "no_words": 0}
    clips = llasa_dataset.prepare_clips(source.dataset, "file_name", "text", source.base_dir, 2.0, 2.5, counts)
    kept = [source.dataset[clip.index]["file_name"] for clip in clips]
    assert kept == ["fox_en_f3.wav", "stella_en_us.flac", "birch_en_f3.mp3"]
    assert counts == {"too_short": 2, "too_long": 1, "failed": 0, "empty_text": 0, "no_words": 0}


def test_existing_output_dir_is_refused(tmp_path):
    # Without --overwrite an existing --output_dir is left untouched and nothing is loaded.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(Options(dataset=str(DATA_DIR), output_dir=str(tmp_path / "out")))
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_output_dir_holding_the_source_is_refused(tmp_path):
    # --overwrite replaces --output_dir: a folder that holds the source audio is refused before anything is touched.
    source = tmp_path / "corpus" / "clips"
    shutil.copytree(DATA_DIR, source)
    with pytest.raises(ValueError, match="holds the --dataset"):
        run(Options(dataset=str(source), output_dir=str(tmp_path / "corpus"), overwrite=True))
    assert (source / "metadata.csv").is_file()


class TestCommandLine:
    def test_seed_command_parses(self):
        # The command in the module docstring, copied as a user would.
        line = next(line for line in create_dataset.__doc__.splitlines() if "python create_dataset.py" in line)
        options = parse_options(shlex.split(line)[2:])
        assert options == Options(
            dataset="your_dataset_name_or_path", output_dir="tokenized_dataset", codec_id="HKUSTAudio/xcodec2"
        )
        assert options.max_duration == 30.0  # (2048 - 548 prompt tokens) / 50 tokens per second

    def test_dashed_flags_equal_underscored(self):
        # Every multi-word flag has a dashed alias with the same meaning; --dataset-id is --dataset.
        underscored = (
            "--dataset x --split dev --config c --output_dir o --codec_id k --sampling_rate 16000 --push_id p "
        )
        underscored += (
            "--audio_column a --text_column t --min_duration 1 --max_duration 9 --batch_size 2 --shard_size 3"
        )
        dashed = underscored.replace("--dataset ", "--dataset-id ").replace("_", "-")
        assert parse_options(shlex.split(dashed + " --keep-audio")) == parse_options(
            shlex.split(underscored + " --keep_audio")
        )
        assert parse_options(["--dataset_id", "x"]).dataset == "x"

    def test_other_sampling_rates_are_refused(self):
        # XCodec2 reads 16 kHz only.
        with pytest.raises(SystemExit):
            parse_options(["--dataset", "x", "--sampling_rate", "24000"])
