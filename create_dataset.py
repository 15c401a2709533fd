"""Tokenize a speech dataset with XCodec2 into the dataset that train.py and inference.py read.

    python create_dataset.py --dataset your_dataset_name_or_path --output_dir tokenized_dataset --codec_id HKUSTAudio/xcodec2 --sampling_rate 16000

`--dataset` is a Hugging Face hub id (with `--split`, `--config`), a folder written by `save_to_disk`, a folder
of audio files with their transcripts (`metadata.csv` or `metadata.jsonl` naming `file_name` and `text`, or a
`.txt` beside each audio file), or a JSON / JSONL / CSV file of audio paths and texts (relative paths are read
from the file's folder). Every clip is read as 16 kHz mono, kept if its duration is within
[--min_duration, --max_duration] and its transcript is not empty, and encoded in batches.

Each row of the output holds:
  text               the transcript (stripped)
  audio_code_ids     the XCodec2 codes, 50 per second, each in [0, 65535]
  audio_code_tokens  the same codes as Llasa's speech tokens `<|s_N|>`
  duration           seconds of 16 kHz audio
  prompt             [user turn]: `Convert the text to speech:<|TEXT_UNDERSTANDING_START|>...`
  completion         [assistant turn]: <|SPEECH_GENERATION_START|> + speech tokens + <|SPEECH_GENERATION_END|>
  chat_template_kwargs  {"date_string": ...}: pins the date the Llama-3.2 chat template writes
plus the source's other columns (the audio itself only with --keep_audio; a column of file paths is kept).
`prompt` + `completion` is TRL's conversational prompt-completion form, and TRL's SFT renders it as exactly
Llasa's training sequence (ending <|SPEECH_GENERATION_END|><|eot_id|>). train.py builds its GRPO prompts from
`text` (and optional voice-prompt columns) with the shared format module.

Shards are written to `<output_dir>.partial/` as they finish; a run that is interrupted and started again with
the same arguments resumes from the first unfinished shard. The dataset appears at --output_dir only once
complete.
"""

import argparse
import functools
import io
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from llasa.cli import add_flag, non_negative_float, positive_int
from llasa.codec import DEFAULT_CODEC_ID, load_codec
from llasa.format import (
    CODEBOOK_SIZE,
    CODEC_SAMPLE_RATE,
    MAX_CONTEXT_TOKENS,
    TOKENS_PER_SECOND,
    chat_template_kwargs,
    codes_to_tokens,
    training_pair,
)

logger = logging.getLogger("create_dataset")

# Llasa was trained on prompt + speech of at most 2048 tokens. The rendered prompt (chat template with its
# system block, ~40 tokens, plus the transcript) stays well under 548 tokens for a 30 s utterance, which
# leaves 1500 tokens, i.e. 30 s of speech at 50 tokens per second, for the completion and its end token.
PROMPT_TOKEN_ALLOWANCE = 548
DEFAULT_MAX_DURATION = (MAX_CONTEXT_TOKENS - PROMPT_TOKEN_ALLOWANCE) / TOKENS_PER_SECOND  # 30.0 s
DEFAULT_MIN_DURATION = 0.5  # seconds; shorter clips are mostly silence or clipped words
DEFAULT_SHARD_SIZE = 1000  # source rows per resumable shard

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif"}
METADATA_FILES = ("metadata.csv", "metadata.jsonl")
# Tried in order when --audio_column / --text_column are not given (an Audio-typed column wins for audio).
AUDIO_COLUMN_CANDIDATES = ("audio", "file_name", "path", "audio_path", "audio_filepath", "file", "filename", "wav")
# Normalised transcripts (numbers and abbreviations spelled out) first: they say what is actually spoken.
TEXT_COLUMN_CANDIDATES = (
    "normalized_text",
    "text_normalized",
    "text",
    "transcript",
    "transcription",
    "sentence",
    "raw_text",
)
OUTPUT_COLUMNS = (
    "text",
    "audio_code_ids",
    "audio_code_tokens",
    "duration",
    "prompt",
    "completion",
    "chat_template_kwargs",
)


@dataclass(frozen=True)
class Options:
    dataset: str  # hub id, save_to_disk folder, audio folder, or JSON/JSONL/CSV/Parquet file
    output_dir: str = "tokenized_dataset"
    codec_id: str = DEFAULT_CODEC_ID
    split: str = "train"
    config: str | None = None  # hub dataset configuration (subset)
    audio_column: str | None = None  # None: detect
    text_column: str | None = None  # None: detect
    min_duration: float = DEFAULT_MIN_DURATION  # seconds
    max_duration: float = DEFAULT_MAX_DURATION  # seconds
    batch_size: int = 16  # clips per codec call
    shard_size: int = DEFAULT_SHARD_SIZE  # source rows per shard written to the work dir
    device: str = "auto"  # auto, cpu or cuda
    keep_audio: bool = False  # keep the source's audio data column
    overwrite: bool = False  # replace an existing --output_dir
    push_id: str | None = None  # hub repo to push the result to


@dataclass(frozen=True)
class Source:
    dataset: object  # datasets.Dataset
    base_dir: Path | None  # where relative audio paths live


@dataclass(frozen=True)
class Summary:
    rows: int = 0  # source rows read
    kept: int = 0
    too_short: int = 0
    too_long: int = 0
    failed: int = 0  # unreadable or corrupt audio
    empty_text: int = 0
    seconds: float = 0.0  # speech kept

    @property
    def filtered(self) -> int:
        return self.too_short + self.too_long

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def __add__(self, other: "Summary") -> "Summary":
        return Summary(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def report(self) -> str:
        return (
            f"{self.rows} rows read: {self.kept} kept ({self.hours:.3f} h of speech), "
            f"{self.filtered} filtered by duration ({self.too_short} too short, {self.too_long} too long), "
            f"{self.failed} failed (unreadable audio), {self.empty_text} skipped (empty text)"
        )


@dataclass(frozen=True)
class Clip:
    index: int  # row in the shard
    text: str
    wav: np.ndarray  # 16 kHz mono float32

    @property
    def duration(self) -> float:
        return len(self.wav) / CODEC_SAMPLE_RATE


@dataclass(frozen=True)
class Encoded:
    index: int  # row in the shard
    text: str
    duration: float  # seconds
    codes: list[int]


# ---------------------------------------------------------------------------------------------------- sources


def load_source(dataset: str, split: str = "train", config: str | None = None) -> Source:
    """The rows to tokenize, from a hub id, a save_to_disk folder, an audio folder or a JSON/JSONL/CSV/Parquet file."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        if any((path / name).is_file() for name in ("state.json", "dataset_dict.json")):
            from datasets import load_from_disk

            return Source(_pick_split(load_from_disk(str(path)), split, dataset), base_dir=None)
        return Source(_rows_to_dataset(_audio_folder_rows(path), dataset), base_dir=path.resolve())
    if path.is_file():
        return Source(_rows_to_dataset(_read_table(path), dataset), base_dir=path.resolve().parent)
    if path.suffix.lower() in {".json", ".jsonl", ".csv", ".parquet"} or dataset.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--dataset {dataset}: no such file or folder.")
    from datasets import load_dataset

    return Source(load_dataset(dataset, config, split=split), base_dir=None)


def _pick_split(data, split: str, name: str):
    from datasets import DatasetDict

    if not isinstance(data, DatasetDict):
        return data
    if split not in data:
        raise ValueError(f"{name} has no split {split!r}; its splits are: {', '.join(data)}. Pass one of them.")
    return data[split]


def _rows_to_dataset(rows: list[dict], name: str):
    from datasets import Dataset

    if not rows:
        raise ValueError(f"{name} holds no rows.")
    return Dataset.from_list(rows)


def _read_table(path: Path) -> list[dict]:
    """Rows of a CSV, JSON (a list of objects), JSON Lines or Parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        import pandas

        # Numbers stay numbers (a duration column, say); empty cells become None.
        table = pandas.read_csv(path, encoding="utf-8")
        return table.astype(object).where(table.notna(), None).to_dict("records")
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path} must hold a list of objects (one per clip), or use JSON Lines (.jsonl).")
        return rows
    if suffix == ".parquet":
        import pyarrow.parquet

        return pyarrow.parquet.read_table(path).to_pylist()
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .json, .jsonl or .parquet.")


def _audio_folder_rows(folder: Path) -> list[dict]:
    """Rows of a folder of audio files: from metadata.csv / metadata.jsonl, else from a .txt beside each file."""
    for name in METADATA_FILES:
        if (folder / name).is_file():
            return _read_table(folder / name)
    audio_files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not audio_files:
        raise ValueError(f"{folder} holds no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) and no dataset.")
    if not any(p.with_suffix(".txt").is_file() for p in audio_files):
        raise ValueError(
            f"{folder} has audio files but no transcripts: add {' or '.join(METADATA_FILES)} with columns "
            "file_name,text, or a .txt file beside each audio file."
        )
    # An audio file without its .txt gets an empty text, which is then skipped and counted.
    untranscribed = sum(not p.with_suffix(".txt").is_file() for p in audio_files)
    if untranscribed:
        logger.warning("%d of %d audio files in %s have no .txt transcript", untranscribed, len(audio_files), folder)
    return [
        {
            "file_name": str(p.relative_to(folder)),
            "text": p.with_suffix(".txt").read_text(encoding="utf-8") if p.with_suffix(".txt").is_file() else "",
        }
        for p in audio_files
    ]


def resolve_columns(dataset, audio_column: str | None = None, text_column: str | None = None) -> tuple[str, str]:
    """The audio and text column names: the ones given (checked), or detected from common names."""
    from datasets import Audio

    columns = list(dataset.column_names)
    listed = ", ".join(columns)
    for flag, given in (("--audio_column", audio_column), ("--text_column", text_column)):
        if given is not None and given not in columns:
            raise ValueError(f"Column {given!r} ({flag}) is not in the dataset; its columns are: {listed}.")
    if audio_column is None:
        typed = [name for name in columns if isinstance(dataset.features[name], Audio)]
        audio_column = next(iter(typed + [name for name in AUDIO_COLUMN_CANDIDATES if name in columns]), None)
    if text_column is None:
        text_column = next((name for name in TEXT_COLUMN_CANDIDATES if name in columns), None)
    for flag, found in (("--audio_column", audio_column), ("--text_column", text_column)):
        if found is None:
            kind = flag.removeprefix("--").removesuffix("_column")
            raise ValueError(f"Cannot tell which column holds the {kind}: pass {flag}. The columns are: {listed}.")
    return audio_column, text_column


# ---------------------------------------------------------------------------------------------------- audio


def load_clip(value, base_dir: Path | None = None) -> np.ndarray:
    """One audio cell as 16 kHz mono float32: a file path, {"bytes", "path"} (HF Audio) or {"array", "sampling_rate"}."""
    from llasa.audio import load_audio, resample, to_mono

    if isinstance(value, str):
        return load_audio(_resolve(value, base_dir), CODEC_SAMPLE_RATE)
    if isinstance(value, dict) and value.get("array") is not None:
        array = np.asarray(value["array"], dtype=np.float32)
        # datasets keeps multi-channel audio channels-first; to_mono wants (frames, channels)
        return resample(to_mono(array.T if array.ndim == 2 else array), int(value["sampling_rate"]), CODEC_SAMPLE_RATE)
    if isinstance(value, dict) and value.get("bytes") is not None:
        try:
            return load_audio(io.BytesIO(value["bytes"]), CODEC_SAMPLE_RATE)
        except RuntimeError as e:
            raise RuntimeError(f"Failed to load audio {_name(value)}: {e.__cause__}") from e
    if isinstance(value, dict) and value.get("path") is not None:
        return load_audio(_resolve(value["path"], base_dir), CODEC_SAMPLE_RATE)
    raise RuntimeError(f"Failed to load audio: not a path nor audio data: {str(value)[:80]!r}")


def _name(value) -> str:
    """How a warning names an audio cell: its path when it has one."""
    if isinstance(value, dict):
        return value.get("path") or "(embedded audio)"
    return str(value)


def _resolve(path: str, base_dir: Path | None) -> Path:
    path = Path(path).expanduser()
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


def _undecoded(dataset, audio_column: str):
    """The dataset with its Audio column left as bytes/paths: we decode it ourselves (no torchcodec needed)."""
    from datasets import Audio

    if isinstance(dataset.features[audio_column], Audio):
        return dataset.cast_column(audio_column, Audio(decode=False))
    return dataset


# ---------------------------------------------------------------------------------------------------- encoding


def prepare_clips(
    rows,
    audio_column: str,
    text_column: str,
    base_dir: Path | None,
    min_duration: float,
    max_duration: float,
    counts: dict,
    progress=None,
) -> Iterator[Clip]:
    """The rows' clips that are kept; those that are not are counted in `counts` (failures logged by name)."""
    for index, row in enumerate(rows.select_columns([audio_column, text_column])):
        if progress is not None:
            progress.update(1)
        text = "" if row[text_column] is None else str(row[text_column]).strip()
        if not text:
            counts["empty_text"] += 1
            continue
        try:
            wav = load_clip(row[audio_column], base_dir)
            if wav.size == 0:
                raise RuntimeError(f"Failed to load audio {_name(row[audio_column])}: it holds no samples")
        except Exception as e:
            logger.warning("Skipping a clip: %s", e)
            counts["failed"] += 1
            continue
        clip = Clip(index=index, text=text, wav=wav)
        if clip.duration < min_duration:
            counts["too_short"] += 1
        elif clip.duration > max_duration:
            counts["too_long"] += 1
        else:
            yield clip


def encode_clips(codec, clips: Iterable[Clip], batch_size: int) -> Iterator[Encoded]:
    """The codec's codes for each clip, `batch_size` clips per call; only one batch of audio is held at a time."""
    batch = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == batch_size:
            yield from _encode_batch(codec, batch)
            batch = []
    if batch:
        yield from _encode_batch(codec, batch)


def _encode_batch(codec, batch: list[Clip]) -> Iterator[Encoded]:
    for clip, codes in zip(batch, codec.encode([clip.wav for clip in batch]), strict=True):
        codes = [int(code) for code in codes]
        if not codes or not all(0 <= code < CODEBOOK_SIZE for code in codes):
            raise RuntimeError(
                f"The codec returned {len(codes)} codes, or codes outside [0, {CODEBOOK_SIZE}), for a clip."
            )
        yield Encoded(index=clip.index, text=clip.text, duration=clip.duration, codes=codes)


def build_shard(rows, encoded: list[Encoded], audio_column: str, keep_audio: bool):
    """The output rows of one shard: Llasa's columns first, then the source's other columns."""
    from datasets import List, Value

    shard = rows.select([item.index for item in encoded])
    # A column of file paths is small and says where each row came from; audio data is dropped unless asked.
    if not isinstance(rows.features[audio_column], Value) and not keep_audio:
        shard = shard.remove_columns(audio_column)
    shard = shard.remove_columns([name for name in OUTPUT_COLUMNS if name in shard.column_names])
    message = {"role": Value("string"), "content": Value("string")}
    pairs = [training_pair(item.text, item.codes) for item in encoded]
    new_columns = {
        "text": ([item.text for item in encoded], Value("string")),
        "audio_code_ids": ([item.codes for item in encoded], List(Value("int32"))),
        "audio_code_tokens": ([codes_to_tokens(item.codes) for item in encoded], Value("string")),
        "duration": ([item.duration for item in encoded], Value("float64")),
        "prompt": ([pair[0] for pair in pairs], List(message)),
        "completion": ([pair[1] for pair in pairs], List(message)),
        "chat_template_kwargs": ([chat_template_kwargs()] * len(encoded), {"date_string": Value("string")}),
    }
    originals = shard.column_names
    for name, (values, feature) in new_columns.items():
        shard = shard.add_column(name, values, feature=feature)
    return shard.select_columns(list(OUTPUT_COLUMNS) + originals)


def encode_shards(source: Source, codec, work_dir: Path, options: Options, audio_column: str, text_column: str):
    """Encode the source shard by shard into `work_dir`, skipping finished shards; returns (Summary, Dataset or None)."""
    from datasets import concatenate_datasets, load_from_disk
    from tqdm.auto import tqdm

    dataset = _undecoded(source.dataset, audio_column)
    shard_dirs = [work_dir / f"shard_{i:05d}" for i in range(-(-len(dataset) // options.shard_size))]
    total, kept_shards = Summary(), []
    with tqdm(total=len(dataset), desc="Encoding", unit="clip") as progress:
        for shard_index, shard_dir in enumerate(shard_dirs):
            start = shard_index * options.shard_size
            rows = dataset.select(range(start, min(start + options.shard_size, len(dataset))))
            if (shard_dir / "summary.json").is_file():
                progress.update(len(rows))
            else:
                _encode_shard(rows, codec, shard_dir, options, audio_column, text_column, source, progress)
            summary = Summary(**json.loads((shard_dir / "summary.json").read_text()))
            total = total + summary
            if summary.kept:
                kept_shards.append(shard_dir)
            progress.set_postfix(kept=total.kept, skipped=total.rows - total.kept)
    if not kept_shards:
        return total, None
    return total, concatenate_datasets([load_from_disk(str(shard_dir)) for shard_dir in kept_shards])


def _encode_shard(rows, codec, shard_dir: Path, options: Options, audio_column, text_column, source, progress):
    """Encode one shard and write it (rows only if some are kept); its summary.json is written last, so a
    half-written shard is redone."""
    counts = {"too_short": 0, "too_long": 0, "failed": 0, "empty_text": 0}
    clips = prepare_clips(
        rows, audio_column, text_column, source.base_dir, options.min_duration, options.max_duration, counts, progress
    )
    encoded = list(encode_clips(codec, clips, options.batch_size))
    if shard_dir.exists():
        shutil.rmtree(shard_dir)
    if encoded:
        shard = build_shard(rows, encoded, audio_column, options.keep_audio)
        if audio_column in shard.column_names:  # give the kept audio back its original (decoding) feature
            shard = shard.cast_column(audio_column, source.dataset.features[audio_column])
        shard.save_to_disk(str(shard_dir))
    shard_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(rows=len(rows), kept=len(encoded), seconds=sum(item.duration for item in encoded), **counts)
    (shard_dir / "summary.json").write_text(json.dumps(asdict(summary)))


# ---------------------------------------------------------------------------------------------------- the run

# What the shards depend on: a work dir made with other values is not resumed.
RESUME_SETTINGS = ("codec_id", "split", "config", "min_duration", "max_duration", "shard_size", "keep_audio")


def work_dir_for(output_dir) -> Path:
    """Where shards are written while the run lasts: beside --output_dir, so the final move is a rename."""
    output_dir = Path(output_dir)
    return output_dir.parent / f"{output_dir.name}.partial"


def _check_work_dir(work_dir: Path, settings: dict) -> None:
    """Resume only a run made with the same settings: other settings would mix two datasets."""
    settings_file = work_dir / "settings.json"
    if settings_file.is_file():
        previous = json.loads(settings_file.read_text())
        changed = sorted(key for key in settings.keys() | previous.keys() if settings.get(key) != previous.get(key))
        if changed:
            raise ValueError(
                f"{work_dir} holds an unfinished run made with other settings ({', '.join(changed)}). "
                "Rerun with the same arguments to resume it, or delete that folder to start over."
            )
        logger.info("Resuming the unfinished run in %s", work_dir)
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings, indent=2))


def create_dataset(options: Options, codec=None) -> Summary:
    """The whole run: load, encode (resumably), save to --output_dir and/or push; returns the counts."""
    output_dir = Path(options.output_dir)
    if output_dir.exists() and not options.overwrite:
        raise FileExistsError(
            f"{output_dir} already exists: pass --overwrite to replace it, or pick another --output_dir."
        )
    source_path = Path(options.dataset).expanduser().resolve()
    if source_path.exists() and source_path.is_relative_to(output_dir.resolve()):
        # --overwrite replaces --output_dir: it must never hold the source audio.
        raise ValueError(f"--output_dir {output_dir} holds the --dataset {options.dataset}: pick another folder.")
    source = load_source(options.dataset, options.split, options.config)
    audio_column, text_column = resolve_columns(source.dataset, options.audio_column, options.text_column)
    logger.info("%d rows; audio from column %r, text from column %r", len(source.dataset), audio_column, text_column)
    work_dir = work_dir_for(output_dir)
    local = Path(options.dataset).expanduser()
    settings = {key: getattr(options, key) for key in RESUME_SETTINGS} | {
        "dataset": str(local.resolve()) if local.exists() else options.dataset,
        "audio_column": audio_column,
        "text_column": text_column,
        "rows": len(source.dataset),
    }
    _check_work_dir(work_dir, settings)
    if codec is None:
        codec = load_codec(options.codec_id, device=options.device, batch_size=options.batch_size)
    summary, dataset = encode_shards(source, codec, work_dir, options, audio_column, text_column)
    if dataset is None:
        raise ValueError(f"No clip was kept from {options.dataset}: {summary.report()}.")
    # Write the whole dataset beside --output_dir, then rename: a crash never leaves half a dataset there.
    staging = work_dir / "dataset"
    if staging.exists():
        shutil.rmtree(staging)
    dataset.save_to_disk(str(staging))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    staging.rename(output_dir)
    shutil.rmtree(work_dir)
    logger.info("Saved %d rows to %s", summary.kept, output_dir)
    if options.push_id is not None:
        from datasets import load_from_disk

        load_from_disk(str(output_dir)).push_to_hub(options.push_id)
        logger.info("Pushed to https://huggingface.co/datasets/%s", options.push_id)
    logger.info("Summary: %s", summary.report())
    return summary


# ---------------------------------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    add = functools.partial(add_flag, parser)  # every flag with underscores or dashes: --output_dir, --output-dir
    add(
        "dataset",
        "dataset_id",
        required=True,
        help="Hub id, save_to_disk folder, audio folder, or JSON/JSONL/CSV/Parquet file.",
    )
    add("output_dir", default=Options.output_dir, help="Where save_to_disk writes the result.")
    add("codec_id", default=Options.codec_id, help="XCodec2 checkpoint (hub id or local folder).")
    add("sampling_rate", type=int, default=CODEC_SAMPLE_RATE, help="Must be 16000: XCodec2 reads 16 kHz audio.")
    add("split", default=Options.split, help="Split of a hub or save_to_disk dataset.")
    add("config", default=None, help="Configuration (subset) of a hub dataset.")
    add("audio_column", default=None, help="Column with the audio or its path (default: detected).")
    add("text_column", default=None, help="Column with the transcript (default: detected).")
    add(
        "min_duration",
        type=non_negative_float,
        default=Options.min_duration,
        help="Seconds; shorter clips are skipped.",
    )
    add(
        "max_duration",
        type=non_negative_float,
        default=Options.max_duration,
        help=f"Seconds; longer clips are skipped (default {DEFAULT_MAX_DURATION:g}: prompt + speech within "
        f"Llasa's {MAX_CONTEXT_TOKENS}-token context).",
    )
    add(
        "batch_size",
        type=positive_int,
        default=Options.batch_size,
        help="Clips per codec call (it batches those of equal length).",
    )
    add("shard_size", type=positive_int, default=Options.shard_size, help="Rows per resumable shard.")
    add("device", default=Options.device, help="Where the codec runs: auto, cpu, cuda, cuda:1...")
    add("keep_audio", action="store_true", help="Keep the source's audio column in the output.")
    add("overwrite", action="store_true", help="Replace an existing --output_dir.")
    add("push_id", default=None, help="Also push the result to this hub dataset repo.")
    return parser


def parse_options(argv: list[str] | None = None) -> Options:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sampling_rate != CODEC_SAMPLE_RATE:
        parser.error(f"--sampling_rate {args.sampling_rate}: XCodec2 reads {CODEC_SAMPLE_RATE} Hz audio only.")
    if args.min_duration > args.max_duration:
        parser.error(f"--min_duration {args.min_duration} is above --max_duration {args.max_duration}.")
    return Options(**{f.name: getattr(args, f.name) for f in fields(Options)})


def main(argv: list[str] | None = None) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm

    options = parse_options(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with logging_redirect_tqdm():
            create_dataset(options)
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    main()
