"""A prosody naturalness reward learned from a user's own recordings, no raters needed: each real recording is
preferred to prosody failures made from it (llasa.alterations: monotone, jittered, exaggerated, faster, slower,
with noise, a silent tail or a long pause), and to each failure prefers also the recording through the vocoder
unchanged, so that the vocoder's colour teaches nothing. A Bradley-Terry utility over frozen prosody features
(CREPE contour, silero-vad timing, loudness, spectral measures) is fitted on those comparisons, whole speakers (or,
in a dataset that names none, whole texts) held out, and saved as listen.py train-reward saves its model: the
`preference` component scores with it, and human or machine judgments train the same features further.

The recordings are a folder of audio files (`find_recordings`) or a dataset's rows (`dataset_recordings`):
create_dataset.py's output or any dataset `load_source` reads.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llasa.alterations import FAILURES, vocoded
from llasa.audio import PLAYABLE_AUDIO_TYPES, SAMPLE_RATE, load_audio
from llasa.format import CODES_COLUMN
from llasa.listening.preference import (
    Comparison,
    FeatureConfig,
    PreferenceModel,
    TrainingOptions,
    train_preference_model,
)

VARIANT_SEPARATOR = "::"  # a clip key is <recording>::<variant>: "real", "vocoded" or a failure's name
NATURALNESS_FEATURES = FeatureConfig(embedding="none", acoustic=True, prosody=True)
NATURALNESS_TRAINING = TrainingOptions(held_out=0.25)  # a quarter of the speakers held out


@dataclass(frozen=True)
class Recording:
    """One real recording: `name` says where it is (a file's path, or <dataset>#<row>); `group` is what is held out
    with it, whole: its speaker, or its text where no speaker is known (`held_out_by`)."""

    name: str
    group: str
    held_out_by: str = "speaker"  # speaker | text


def find_recordings(folder: str | Path) -> list[Recording]:
    """The audio files under `folder`; a file's speaker is its first sub-folder's name (DIR/speaker/....wav), or
    for a file directly in `folder` the part of its name before the first "_" (speaker_0001.wav)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of recordings.")
    recordings = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in PLAYABLE_AUDIO_TYPES and path.is_file():
            parts = path.relative_to(root).parts
            speaker = parts[0] if len(parts) > 1 else path.stem.split("_")[0]
            recordings.append(Recording(str(path.resolve()), speaker))
    if not recordings:
        raise ValueError(f"{root} holds no audio file ({', '.join(PLAYABLE_AUDIO_TYPES)}).")
    return recordings


def dataset_recordings(
    dataset: str,
    split: str = "train",
    speaker: str | None = None,
    decode: Callable[[list[list[int]]], list[np.ndarray]] | None = None,
) -> tuple[list[Recording], dict[str, np.ndarray]]:
    """The rows of a dataset (create_dataset.py's output, or any dataset `load_source` reads) as recordings, and their
    16 kHz waveforms by name. The audio is, in order: a column of audio data (create_dataset.py --keep_audio keeps the
    source's), the reference codes (`audio_code_ids`) through `decode` (the codec: codes -> waveforms), or the files
    a path column names. Rows are grouped by the `speaker` column (default: the first of the usual speaker column
    names present), else by their text."""
    from llasa.sources import (
        AUDIO_COLUMN_CANDIDATES,
        TEXT_COLUMN_CANDIDATES,
        audio_data_columns,
        load_clip,
        load_source,
        present_columns,
        speaker_column,
        undecoded,
    )

    source = load_source(dataset, split)
    rows, columns = source.dataset, source.dataset.column_names
    group_column = speaker_column(rows, speaker)
    text_column = next(iter(present_columns(columns, TEXT_COLUMN_CANDIDATES)), None)
    if (group_column or text_column) is None:
        raise ValueError(
            f"{dataset} has no speaker nor text column to hold rows out by: pass --speaker_column. Its columns are: "
            f"{', '.join(columns)}."
        )
    kept_audio = audio_data_columns(rows)
    paths = present_columns(columns, AUDIO_COLUMN_CANDIDATES)
    if kept_audio:
        waveforms = [load_clip(value, source.base_dir) for value in undecoded(rows, kept_audio[0])[kept_audio[0]]]
    elif CODES_COLUMN in columns:
        if decode is None:
            raise ValueError(f"{dataset} holds its audio as codes ({CODES_COLUMN}): they need the codec to decode.")
        waveforms = decode([list(codes) for codes in rows[CODES_COLUMN]])
    elif paths:
        waveforms = [load_clip(value, source.base_dir) for value in rows[paths[0]]]
    else:
        raise ValueError(
            f"{dataset} has no audio: no audio column, no {CODES_COLUMN} codes and no path column "
            f"({', '.join(AUDIO_COLUMN_CANDIDATES)}). Its columns are: {', '.join(columns)}."
        )
    groups = rows[group_column or text_column]
    held_out_by = "speaker" if group_column else "text"
    recordings = [Recording(f"{dataset}#{row}", str(group), held_out_by) for row, group in enumerate(groups)]
    return recordings, {recording.name: wav for recording, wav in zip(recordings, waveforms, strict=True)}


def naturalness_comparisons(recordings: Sequence[Recording], failures: Sequence[str]) -> list[Comparison]:
    """Real (and vocoded) over each failure, per recording; the item is the recording's group (held out whole)."""
    unknown = sorted(set(failures) - set(FAILURES))
    if unknown or not failures:
        raise ValueError(f"Unknown or no failures {unknown}: choose among {list(FAILURES)}.")
    return [
        Comparison(f"{rec.name}{VARIANT_SEPARATOR}{real}", f"{rec.name}{VARIANT_SEPARATOR}{failure}", 1.0, rec.group)
        for rec in recordings
        for real in ("real", "vocoded")
        for failure in failures
    ]


def load_file(path: str) -> np.ndarray:
    return load_audio(path, SAMPLE_RATE)


def load_variant(key: str, load: Callable[[str], np.ndarray] = load_file) -> np.ndarray:
    """The 16 kHz waveform a clip key names: the recording (`load(name)`), its vocoded copy or one of its failures."""
    name, _, variant = key.rpartition(VARIANT_SEPARATOR)
    wav = load(name)
    if variant == "real":
        return wav
    return vocoded(wav) if variant == "vocoded" else FAILURES[variant](wav)


def train_naturalness_model(
    recordings: Sequence[Recording],
    failures: Sequence[str] = tuple(FAILURES),
    options: TrainingOptions = NATURALNESS_TRAINING,
    features: FeatureConfig = NATURALNESS_FEATURES,
    load: Callable[[str], np.ndarray] = load_file,
) -> PreferenceModel:
    """The utility fitted on the recordings' comparisons (`load(name)`: a recording's 16 kHz waveform); `metrics`
    hold the held-out speakers' (or texts') pairwise accuracy."""
    held_out_by = recordings[0].held_out_by if recordings else "speaker"
    groups = {rec.group for rec in recordings}
    if options.held_out > 0 and len(groups) < 2:
        raise ValueError(
            f"Held-out accuracy needs recordings of at least two {held_out_by}s, got {sorted(groups)}: give recordings "
            "of other speakers (a sub-folder each, or a dataset's speaker column), or pass --held_out 0."
        )
    comparisons = naturalness_comparisons(recordings, failures)
    model = train_preference_model(comparisons, lambda key: load_variant(key, load), features, options)
    model.metrics["failures"] = list(failures)
    model.metrics["held_out_by"] = held_out_by
    model.metrics[f"n_{held_out_by}s"] = len(groups)
    return model
