"""Tokenizing a speech dataset into Llasa's rows: clips -> XCodec2 codes -> text, codes, duration and TRL's
prompt/completion pair, encoded in resumable shards and moved into place only when complete."""

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from llasa.audio import SAMPLE_RATE, SILENCE_RMS, BadAudioError, check_speech
from llasa.checks import check_codec, has_speakable_text
from llasa.codec import DEFAULT_CODEC_ID, load_codec
from llasa.format import (
    CODE_TOKENS_COLUMN,
    CODEBOOK_SIZE,
    CODES_COLUMN,
    DURATION_COLUMN,
    MAX_CONTEXT_TOKENS,
    TEXT_COLUMN,
    TOKENS_PER_SECOND,
    chat_template_kwargs,
    codes_to_tokens,
    training_pair,
)
from llasa.outputs import foreign_entries, naming_folder, replace_folder
from llasa.sources import Source, audio_name, load_clip, load_source, resolve_columns, undecoded

logger = logging.getLogger(__name__)

# Llasa was trained on prompt + speech of at most 2048 tokens. The rendered prompt (chat template with its
# system block, ~40 tokens, plus the transcript) stays well under 548 tokens for a 30 s utterance, which
# leaves 1500 tokens, i.e. 30 s of speech at 50 tokens per second, for the completion and its end token.
PROMPT_TOKEN_ALLOWANCE = 548
DEFAULT_MAX_DURATION = (MAX_CONTEXT_TOKENS - PROMPT_TOKEN_ALLOWANCE) / TOKENS_PER_SECOND  # 30.0 s
DEFAULT_MIN_DURATION = 0.5  # seconds; shorter clips are mostly silence or clipped words
DEFAULT_SHARD_SIZE = 1000  # source rows per resumable shard

OUTPUT_COLUMNS = (
    TEXT_COLUMN,
    CODES_COLUMN,
    CODE_TOKENS_COLUMN,
    DURATION_COLUMN,
    "prompt",
    "completion",
    "chat_template_kwargs",
)


@dataclass(frozen=True)
class Options:
    """What to tokenize, where the result goes, and which clips are kept."""

    dataset: str = field(
        metadata={
            "help": "Hub id, save_to_disk folder, audio folder, or JSON/JSONL/CSV/Parquet file.",
            "aliases": ["--dataset_id", "--dataset-id"],
        }
    )
    output_dir: str = field(default="tokenized_dataset", metadata={"help": "Where save_to_disk writes the result."})
    codec_id: str = field(default=DEFAULT_CODEC_ID, metadata={"help": "XCodec2 checkpoint (hub id or local folder)."})
    split: str = field(default="train", metadata={"help": "Split of a hub or save_to_disk dataset."})
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration (subset) of a hub dataset."})
    audio_column: str | None = field(
        default=None, metadata={"help": "Column with the audio or its path (default: detected)."}
    )
    text_column: str | None = field(default=None, metadata={"help": "Column with the transcript (default: detected)."})
    min_duration: float = field(default=DEFAULT_MIN_DURATION, metadata={"help": "Seconds; shorter clips are skipped."})
    max_duration: float = field(
        default=DEFAULT_MAX_DURATION,
        metadata={
            "help": f"Seconds; longer clips are skipped (prompt + speech within Llasa's {MAX_CONTEXT_TOKENS}-token "
            "context)."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Clips per codec call."})
    shard_size: int = field(default=DEFAULT_SHARD_SIZE, metadata={"help": "Source rows per resumable shard."})
    device: str = field(default="auto", metadata={"help": "Where the codec runs: auto, cpu, cuda, cuda:1..."})
    keep_audio: bool = field(default=False, metadata={"help": "Keep the source's audio column in the output."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace an --output_dir this tool wrote earlier (never another folder), and discard an "
            "unfinished run made with other settings."
        },
    )
    push_id: str | None = field(default=None, metadata={"help": "Also push the result to this hub dataset repo."})

    def __post_init__(self):
        for name in ("min_duration", "max_duration"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")
        for name in ("batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.min_duration > self.max_duration:
            raise ValueError(f"--min_duration {self.min_duration} is above --max_duration {self.max_duration}.")


@dataclass(frozen=True)
class Summary:
    rows: int = 0  # source rows read
    kept: int = 0
    too_short: int = 0
    too_long: int = 0
    failed: int = 0  # unreadable or corrupt audio, or audio the codec failed on
    empty_text: int = 0
    seconds: float = 0.0  # speech kept
    truncated: int = 0  # WAV files cut short of what their header says
    non_finite: int = 0  # NaN or infinite samples
    silent: int = 0  # RMS below audio.SILENCE_RMS (-60 dBFS)
    no_words: int = 0  # transcripts without a letter or digit (punctuation, emoji)

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
            f"{self.failed} failed (unreadable audio or codec error), {self.truncated} truncated, "
            f"{self.non_finite} with NaN/inf samples, {self.silent} silent (RMS < {SILENCE_RMS:g}), "
            f"{self.empty_text} skipped (empty text), {self.no_words} skipped (text without a letter or digit)"
        )


@dataclass(frozen=True)
class Clip:
    index: int  # row in the shard
    text: str
    wav: np.ndarray  # 16 kHz mono float32
    name: str = ""  # the audio's path, for messages

    @property
    def duration(self) -> float:
        return len(self.wav) / SAMPLE_RATE


@dataclass(frozen=True)
class Encoded:
    index: int  # row in the shard
    text: str
    duration: float  # seconds
    codes: list[int]


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
        name = audio_name(row[audio_column])
        if not text:
            counts["empty_text"] += 1
            continue
        if not has_speakable_text(text):
            logger.warning("Skipping %s: its transcript %r has no letter or digit", name, text)
            counts["no_words"] += 1
            continue
        try:
            wav = check_speech(load_clip(row[audio_column], base_dir), name)
        except BadAudioError as e:
            logger.warning("Skipping a clip: %s", e)
            counts["failed" if e.kind == "empty" else e.kind] += 1
            continue
        except Exception as e:
            logger.warning("Skipping a clip: %s", e)
            counts["failed"] += 1
            continue
        clip = Clip(index=index, text=text, wav=wav, name=name)
        if clip.duration < min_duration:
            counts["too_short"] += 1
        elif clip.duration > max_duration:
            counts["too_long"] += 1
        else:
            yield clip


def encode_clips(codec, clips: Iterable[Clip], batch_size: int, counts: dict | None = None) -> Iterator[Encoded]:
    """The codec's codes for each clip, `batch_size` clips per call; only one batch of audio is held at a time.

    A clip the codec fails on (an error, or codes outside the codebook) is skipped, named and counted in
    counts["failed"]; when a batch fails, its clips are retried one by one to find the culprit."""
    counts = {"failed": 0} if counts is None else counts
    batch = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == batch_size:
            yield from _encode_batch(codec, batch, counts)
            batch = []
    if batch:
        yield from _encode_batch(codec, batch, counts)


def _encode_batch(codec, batch: list[Clip], counts: dict) -> Iterator[Encoded]:
    try:
        encoded = [
            _checked_codes(clip, codes)
            for clip, codes in zip(batch, codec.encode([c.wav for c in batch]), strict=True)
        ]
    except Exception as e:
        if len(batch) > 1:
            for clip in batch:
                yield from _encode_batch(codec, [clip], counts)
            return
        logger.warning("Skipping a clip: the codec failed on %s: %s", batch[0].name or batch[0].text, e)
        counts["failed"] += 1
        return
    yield from encoded


def _checked_codes(clip: Clip, codes) -> Encoded:
    codes = [int(code) for code in codes]
    if not codes or not all(0 <= code < CODEBOOK_SIZE for code in codes):
        raise RuntimeError(f"it returned {len(codes)} codes, or codes outside [0, {CODEBOOK_SIZE})")
    return Encoded(index=clip.index, text=clip.text, duration=clip.duration, codes=codes)


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
        TEXT_COLUMN: ([item.text for item in encoded], Value("string")),
        CODES_COLUMN: ([item.codes for item in encoded], List(Value("int32"))),
        CODE_TOKENS_COLUMN: ([codes_to_tokens(item.codes) for item in encoded], Value("string")),
        DURATION_COLUMN: ([item.duration for item in encoded], Value("float64")),
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

    dataset = undecoded(source.dataset, audio_column)
    shard_dirs = [work_dir / f"shard_{i:05d}" for i in range(-(-len(dataset) // options.shard_size))]
    total, kept_shards = Summary(), []
    with tqdm(total=len(dataset), desc="Encoding", unit="clip") as progress:
        for shard_index, shard_dir in enumerate(shard_dirs):
            start = shard_index * options.shard_size
            rows = dataset.select(range(start, min(start + options.shard_size, len(dataset))))
            fingerprint = shard_fingerprint(rows, audio_column, text_column, source.base_dir)
            if _finished_shard(shard_dir, fingerprint) is not None:
                progress.update(len(rows))
            else:
                _encode_shard(
                    rows, codec, shard_dir, options, audio_column, text_column, source, progress, fingerprint
                )
            summary = _finished_shard(shard_dir, fingerprint)
            total = total + summary
            if summary.kept:
                kept_shards.append(shard_dir)
            progress.set_postfix(kept=total.kept, skipped=total.rows - total.kept)
    if not kept_shards:
        return total, None
    return total, concatenate_datasets([load_from_disk(str(shard_dir)) for shard_dir in kept_shards])


def shard_fingerprint(rows, audio_column: str, text_column: str, base_dir: Path | None) -> str:
    """A hash of what a shard is made from: each row's transcript and audio (a file's path, size and modification
    time; embedded audio's bytes). A shard is reused only while this is unchanged."""
    digest = hashlib.sha256()
    for row in rows.select_columns([audio_column, text_column]):
        digest.update(json.dumps([row[text_column], _audio_identity(row[audio_column], base_dir)]).encode())
    return digest.hexdigest()


def _audio_identity(value, base_dir: Path | None):
    if isinstance(value, dict) and value.get("bytes") is not None:
        return hashlib.sha256(value["bytes"]).hexdigest()
    if isinstance(value, dict) and value.get("array") is not None:
        return hashlib.sha256(np.asarray(value["array"], dtype=np.float32).tobytes()).hexdigest()
    path = value.get("path") if isinstance(value, dict) else value
    if not isinstance(path, str):
        return str(value)[:200]
    full = Path(path).expanduser()
    full = base_dir / full if base_dir is not None and not full.is_absolute() else full
    try:
        stat = full.stat()
    except OSError:
        return [path, None, None]
    return [path, stat.st_size, stat.st_mtime_ns]


def _finished_shard(shard_dir: Path, fingerprint: str) -> Summary | None:
    """The summary of a shard finished from the same inputs; None when it must be (re)encoded."""
    summary_file = shard_dir / "summary.json"
    if not summary_file.is_file():
        return None
    record = json.loads(summary_file.read_text())
    if record.pop("fingerprint", None) != fingerprint:
        logger.info("%s: its rows' audio or transcripts changed since it was encoded; encoding it again", shard_dir)
        return None
    return Summary(**record)


def _encode_shard(
    rows, codec, shard_dir: Path, options: Options, audio_column, text_column, source, progress, fingerprint: str
):
    """Encode one shard and write it (rows only if some are kept); its summary.json is written last, so a
    half-written shard is redone."""
    counts = {"too_short": 0, "too_long": 0, "failed": 0, "empty_text": 0}
    counts |= {"truncated": 0, "non_finite": 0, "silent": 0, "no_words": 0}
    clips = prepare_clips(
        rows, audio_column, text_column, source.base_dir, options.min_duration, options.max_duration, counts, progress
    )
    encoded = list(encode_clips(codec, clips, options.batch_size, counts))
    if shard_dir.exists():
        shutil.rmtree(shard_dir)
    if encoded:
        shard = build_shard(rows, encoded, audio_column, options.keep_audio)
        if audio_column in shard.column_names:  # give the kept audio back its original (decoding) feature
            shard = shard.cast_column(audio_column, source.dataset.features[audio_column])
        shard.save_to_disk(str(shard_dir))
    shard_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(rows=len(rows), kept=len(encoded), seconds=sum(item.duration for item in encoded), **counts)
    (shard_dir / "summary.json").write_text(json.dumps(asdict(summary) | {"fingerprint": fingerprint}))


# ---------------------------------------------------------------------------------------------------- the run

# What the shards depend on: a work dir made with other values is not resumed.
# Settings a resumed run must share with the unfinished one, by their names in settings.json.
RESUME_SETTINGS = {
    "codec_id": "codec_id",
    "split": "split",
    "config": "dataset_config",
    "min_duration": "min_duration",
    "max_duration": "max_duration",
    "shard_size": "shard_size",
    "keep_audio": "keep_audio",
}
# Written into every dataset this tool creates: its settings and counts.
MARKER_FILE = "llasa_dataset.json"


def work_dir_for(output_dir) -> Path:
    """Where shards are written while the run lasts: beside --output_dir, so the final move is a rename."""
    output_dir = Path(output_dir).resolve()
    return output_dir.parent / f"{output_dir.name}.partial"


def check_output_dir(output_dir: Path, dataset: str, overwrite: bool) -> None:
    """Refuse, before anything is loaded, an --output_dir this run must not replace: a file, an existing folder
    without --overwrite, and with --overwrite anything but a dataset this tool wrote (the current folder, a folder
    above it or above the source, a folder holding other files)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output_dir {output_dir} is a file, not a folder: pick another --output_dir.")
    if not output_dir.exists():
        return
    if not overwrite:
        raise FileExistsError(
            f"{output_dir} already exists: pass --overwrite to replace it, or pick another --output_dir."
        )
    resolved = output_dir.resolve()
    if Path.cwd().resolve().is_relative_to(resolved):
        raise ValueError(f"--output_dir {output_dir} is the current folder or above it: pick a new folder.")
    source_path = Path(dataset).expanduser().resolve()
    if source_path.exists() and source_path.is_relative_to(resolved):
        # --overwrite replaces --output_dir: it must never hold the source audio.
        raise ValueError(f"--output_dir {output_dir} holds the --dataset {dataset}: pick another folder.")
    foreign = foreign_entries(output_dir)
    if foreign:
        listed = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ValueError(
            f"--output_dir {output_dir} is not a dataset written by create_dataset.py (it holds files this tool did "
            f"not write: {listed}): --overwrite only replaces this tool's own output. Pick another --output_dir, or "
            "move that folder away yourself."
        )


def _check_work_dir(work_dir: Path, settings: dict, overwrite: bool = False) -> None:
    """Resume only a run made with the same settings: other settings would mix two datasets. With --overwrite, an
    unfinished run of this tool made with other settings is discarded."""
    settings_file = work_dir / "settings.json"
    if settings_file.is_file():
        previous = json.loads(settings_file.read_text())
        changed = sorted(key for key in settings.keys() | previous.keys() if settings.get(key) != previous.get(key))
        if changed and overwrite:
            logger.warning("Discarding the unfinished run in %s (other settings: %s)", work_dir, ", ".join(changed))
            shutil.rmtree(work_dir)
        elif changed:
            raise ValueError(
                f"{work_dir} holds an unfinished run made with other settings ({', '.join(changed)}). "
                "Rerun with the same arguments to resume it, or pass --overwrite to discard it and start over."
            )
        else:
            logger.info("Resuming the unfinished run in %s", work_dir)
            return
    elif work_dir.exists():
        raise ValueError(f"{work_dir} exists but was not made by create_dataset.py: move it away, then rerun.")
    work_dir.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings, indent=2))


def create_dataset(options: Options, codec=None) -> Summary:
    """The whole run: load, encode (resumably), save to --output_dir and/or push; returns the counts."""
    output_dir = Path(options.output_dir)
    check_output_dir(output_dir, options.dataset, options.overwrite)
    default = options.output_dir == Options.output_dir
    logger.info(
        "Output: %s%s", output_dir.resolve(), " (the default; --output_dir chooses another)" if default else ""
    )
    if codec is None:
        check_codec(options.codec_id)
    source = load_source(options.dataset, options.split, options.dataset_config, options.text_column)
    audio_column, text_column = resolve_columns(source.dataset, options.audio_column, options.text_column)
    logger.info("%d rows; audio from column %r, text from column %r", len(source.dataset), audio_column, text_column)
    work_dir = work_dir_for(output_dir)
    local = Path(options.dataset).expanduser()
    settings = {key: getattr(options, name) for key, name in RESUME_SETTINGS.items()} | {
        "dataset": str(local.resolve()) if local.exists() else options.dataset,
        "audio_column": audio_column,
        "text_column": text_column,
    }
    fresh = not work_dir.exists()
    _check_work_dir(work_dir, settings, options.overwrite)
    if codec is None:
        try:
            codec = load_codec(options.codec_id, device=options.device, batch_size=options.batch_size)
        except BaseException:
            if fresh:  # a wrong --codec_id leaves no unfinished run behind to block the corrected command
                shutil.rmtree(work_dir)
            raise
    with naming_folder(work_dir):  # a full disk is named by the folder being written; finished shards are kept
        summary, dataset = encode_shards(source, codec, work_dir, options, audio_column, text_column)
        if dataset is None:
            raise ValueError(f"No clip was kept from {options.dataset}: {summary.report()}.")
        # Write the whole dataset beside --output_dir, then rename: a crash never leaves half a dataset there.
        staging = work_dir / "dataset"
        if staging.exists():
            shutil.rmtree(staging)
        dataset.save_to_disk(str(staging))
        (staging / MARKER_FILE).write_text(json.dumps({"settings": settings, "summary": asdict(summary)}, indent=2))
    replace_folder(staging, output_dir.resolve())
    shutil.rmtree(work_dir)
    logger.info("Saved %d rows to %s (datasets.load_from_disk reads it)", summary.kept, output_dir.resolve())
    if options.push_id is not None:
        from datasets import load_from_disk

        load_from_disk(str(output_dir)).push_to_hub(options.push_id)
        logger.info("Pushed to https://huggingface.co/datasets/%s", options.push_id)
    logger.info("Summary: %s", summary.report())
    return summary
