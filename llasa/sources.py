"""Where datasets come from: a hub id, a `save_to_disk` folder, a folder of audio files with transcripts, or a
JSON / JSONL / CSV / Parquet file; their audio and text columns; and one audio cell read as 16 kHz mono."""

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llasa.audio import AUDIO_EXTENSIONS, SAMPLE_RATE

logger = logging.getLogger(__name__)

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
# Who speaks each row (Common Voice calls it client_id); tried in order when a speaker column is not given.
SPEAKER_COLUMN_CANDIDATES = ("speaker", "speaker_id", "speaker_name", "spk_id", "client_id")


@dataclass(frozen=True)
class Source:
    dataset: object  # datasets.Dataset
    base_dir: Path | None  # where relative audio paths live


def load_source(
    dataset: str, split: str = "train", config: str | None = None, text_column: str | None = None
) -> Source:
    """The rows to tokenize, from a hub id, a save_to_disk folder, an audio folder or a JSON/JSONL/CSV/Parquet file.

    Transcripts are read as written (`007`, `NA`); `text_column` names one beyond the usual transcript names."""
    from llasa.checks import check_exists

    path = Path(dataset).expanduser()
    text_columns = TEXT_COLUMN_CANDIDATES if text_column is None else (text_column, *TEXT_COLUMN_CANDIDATES)
    if path.is_dir():
        if any((path / name).is_file() for name in ("state.json", "dataset_dict.json")):
            from datasets import load_from_disk

            check_saved_rows(dataset, split)
            return Source(_pick_split(load_from_disk(str(path)), split, dataset), base_dir=None)
        return Source(_rows_to_dataset(_audio_folder_rows(path, text_columns), dataset), base_dir=path.resolve())
    if path.is_file():
        return Source(_rows_to_dataset(_read_table(path, text_columns), dataset), base_dir=path.resolve().parent)
    if path.suffix.lower() in {".json", ".jsonl", ".csv", ".parquet"}:
        raise FileNotFoundError(f"--dataset {dataset}: no such file or folder.")
    check_exists(dataset, "--dataset")
    from datasets import load_dataset

    return Source(load_dataset(dataset, config, split=split), base_dir=None)


def check_saved_rows(dataset: str, split: str = "train") -> None:
    """A save_to_disk folder (or the split of one) saved without rows, refused by name: datasets cannot load it.
    Anything else is left to the loader."""
    path = Path(dataset).expanduser()
    state = path / split / "state.json" if (path / "dataset_dict.json").is_file() else path / "state.json"
    try:
        data_files = json.loads(state.read_text(encoding="utf-8")).get("_data_files")
    except (OSError, ValueError, AttributeError):
        return  # not readable here: datasets' own error says why
    if data_files == []:
        raise ValueError(
            f"{dataset} is a dataset without any row: give a dataset with rows (create_dataset.py writes one)."
        )


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


def _read_table(path: Path, text_columns=TEXT_COLUMN_CANDIDATES) -> list[dict]:
    """Rows of a CSV, JSON (a list of objects), JSON Lines or Parquet file.

    Transcript columns (`text_columns`) are kept exactly as written; a JSON number there is an error naming the
    file, row and column (its digits as written are lost: 007 would read 7). A column of another name that mixes
    numbers and strings is read as strings, with a note."""
    from llasa.checks import read_jsonl, read_text_file

    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path, read_text_file(path), text_columns)
    elif suffix == ".jsonl":
        rows = read_jsonl(path)
    elif suffix == ".json":
        try:
            rows = json.loads(read_text_file(path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {e.lineno}: not valid JSON ({e.msg}).") from e
        if not isinstance(rows, list):
            raise ValueError(f"{path} must hold a list of objects (one per clip), or use JSON Lines (.jsonl).")
    elif suffix == ".parquet":
        import pyarrow.parquet

        rows = pyarrow.parquet.read_table(path).to_pylist()
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .json, .jsonl or .parquet.")
    return _checked_rows(path, rows, text_columns)


def _read_csv(path: Path, content: str, text_columns) -> list[dict]:
    """CSV rows with every cell as written; columns other than transcripts whose cells are all numbers (a duration,
    say) become numbers, and their empty cells None."""
    import pandas

    if not content.strip():
        raise ValueError(f"{path} is empty: it needs a header line (file_name,text) and one line per clip.")
    try:
        table = pandas.read_csv(io.StringIO(content), dtype=str, keep_default_na=False)
    except pandas.errors.ParserError as e:
        raise ValueError(f"{path}: not a valid CSV file ({e}).") from e
    for column in table.columns:
        if column in text_columns:
            continue
        cells = table[column]
        # 007 or 0042 is an identifier: as a number it would lose its zeros.
        numbers = pandas.to_numeric(cells.where(~cells.str.fullmatch(_LEADING_ZERO), None), errors="coerce")
        written = cells != ""
        if (numbers.notna() == written).all() and written.any():
            table[column] = numbers.astype(object).where(numbers.notna(), None)
            continue
        table[column] = cells.astype(object).where(written, None)
        if numbers.notna().any():
            _warn_mixed(path, column, int(numbers.notna().sum()))
    return table.to_dict("records")


_LEADING_ZERO = r"\s*[-+]?0\d.*"


def _warn_mixed(path: Path, column: str, converted: int) -> None:
    logger.warning("%s: column %r mixes strings and other values; %d read as strings", path, column, converted)


def _checked_rows(path: Path, rows: list, text_columns) -> list[dict]:
    """The rows, each an object; transcripts strings; a column mixing numbers and strings read as strings."""
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path} row {number}: expected an object with the clip's columns, got {str(row)[:60]}.")
        for column in text_columns:
            value = row.get(column)
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"{path} row {number}, column {column!r}: the transcript is {value!r}, not a string; "
                    f'write it in quotes ("{value}") so that it is read exactly as spoken.'
                )
    for column in sorted({name for row in rows for name in row}):
        kinds = {type(row[column]) for row in rows if row.get(column) is not None}
        if str in kinds and len(kinds) > 1:
            _warn_mixed(path, column, sum(not isinstance(row.get(column), str | None) for row in rows))
            for row in rows:
                if row.get(column) is not None:
                    row[column] = str(row[column])
    return rows


def _audio_folder_rows(folder: Path, text_columns=TEXT_COLUMN_CANDIDATES) -> list[dict]:
    """Rows of a folder of audio files: from metadata.csv / metadata.jsonl, else from a .txt beside each file."""
    from llasa.checks import read_text_file

    for name in METADATA_FILES:
        if (folder / name).is_file():
            return _read_table(folder / name, text_columns)
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
            "text": read_text_file(p.with_suffix(".txt")) if p.with_suffix(".txt").is_file() else "",
        }
        for p in audio_files
    ]


def resolve_columns(dataset, audio_column: str | None = None, text_column: str | None = None) -> tuple[str, str]:
    """The audio and text column names: the ones given (checked), or detected from common names."""
    columns = list(dataset.column_names)
    listed = ", ".join(columns)
    for flag, given in (("--audio_column", audio_column), ("--text_column", text_column)):
        if given is not None and given not in columns:
            raise ValueError(f"Column {given!r} ({flag}) is not in the dataset; its columns are: {listed}.")
    if audio_column is None:
        audio_column = next(
            iter(audio_data_columns(dataset) + present_columns(columns, AUDIO_COLUMN_CANDIDATES)), None
        )
    if text_column is None:
        text_column = next(iter(present_columns(columns, TEXT_COLUMN_CANDIDATES)), None)
    for flag, found in (("--audio_column", audio_column), ("--text_column", text_column)):
        if found is None:
            kind = flag.removeprefix("--").removesuffix("_column")
            raise ValueError(f"Cannot tell which column holds the {kind}: pass {flag}. The columns are: {listed}.")
    return audio_column, text_column


def audio_data_columns(dataset) -> list[str]:
    """The columns that hold audio itself (datasets' Audio type), not paths to it."""
    from datasets import Audio

    return [name for name in dataset.column_names if isinstance(dataset.features[name], Audio)]


def speaker_column(dataset, given: str | None = None) -> str | None:
    """The column naming each row's speaker: the one given (checked), else the first of SPEAKER_COLUMN_CANDIDATES
    present, else None."""
    columns = list(dataset.column_names)
    if given is not None and given not in columns:
        listed = ", ".join(columns)
        raise ValueError(f"Column {given!r} (--speaker_column) is not in the dataset; its columns are: {listed}.")
    return given if given is not None else next(iter(present_columns(columns, SPEAKER_COLUMN_CANDIDATES)), None)


def present_columns(columns: list[str], candidates: tuple[str, ...]) -> list[str]:
    """The `candidates` that are among `columns`, in the candidates' order of preference."""
    return [name for name in candidates if name in columns]


# Audio cells


def load_clip(value, base_dir: Path | None = None) -> np.ndarray:
    """One audio cell as 16 kHz mono float32: a file path, {"bytes", "path"} (HF Audio) or {"array", "sampling_rate"}."""
    from llasa.audio import BadAudioError, load_audio, resample, to_mono

    if isinstance(value, str):
        return load_audio(_resolve(value, base_dir), SAMPLE_RATE)
    if isinstance(value, dict) and value.get("array") is not None:
        array = np.asarray(value["array"], dtype=np.float32)
        # datasets keeps multi-channel audio channels-first; to_mono wants (frames, channels)
        return resample(to_mono(array.T if array.ndim == 2 else array), int(value["sampling_rate"]), SAMPLE_RATE)
    if isinstance(value, dict) and value.get("bytes") is not None:
        try:
            return load_audio(io.BytesIO(value["bytes"]), SAMPLE_RATE, name=audio_name(value))
        except BadAudioError:
            raise
        except RuntimeError as e:
            raise RuntimeError(f"Failed to load audio {audio_name(value)}: {e.__cause__}") from e
    if isinstance(value, dict) and value.get("path") is not None:
        return load_audio(_resolve(value["path"], base_dir), SAMPLE_RATE)
    raise RuntimeError(f"Failed to load audio: not a path nor audio data: {str(value)[:80]!r}")


def audio_name(value) -> str:
    """How a warning names an audio cell: its path when it has one."""
    if isinstance(value, dict):
        return value.get("path") or "(embedded audio)"
    return str(value)


def _resolve(path: str, base_dir: Path | None) -> Path:
    path = Path(path).expanduser()
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


def undecoded(dataset, audio_column: str):
    """The dataset with its Audio column left as bytes/paths: we decode it ourselves (no torchcodec needed)."""
    from datasets import Audio

    if isinstance(dataset.features[audio_column], Audio):
        return dataset.cast_column(audio_column, Audio(decode=False))
    return dataset
