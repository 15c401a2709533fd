"""A prosody naturalness reward learned from a user's own recordings, no raters needed: each real recording is
preferred to prosody failures made from it (llasa.alterations: monotone, jittered, exaggerated, faster, slower,
with noise, a silent tail or a long pause), and to each failure prefers also the recording through the vocoder
unchanged, so that the vocoder's colour teaches nothing. A Bradley-Terry utility over frozen prosody features
(CREPE contour, silero-vad timing, loudness, spectral measures) is fitted on those comparisons, whole speakers held
out, and saved as listen.py train-reward saves its model: the `preference` component scores with it, and human or
machine judgments train the same features further.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llasa.alterations import FAILURES, vocoded
from llasa.audio import PLAYABLE_AUDIO_TYPES, SAMPLE_RATE, load_audio
from llasa.listening.preference import (
    Comparison,
    FeatureConfig,
    PreferenceModel,
    TrainingOptions,
    train_preference_model,
)

VARIANT_SEPARATOR = "::"  # a clip key is <path>::<variant>: "real", "vocoded" or a failure's name
NATURALNESS_FEATURES = FeatureConfig(embedding="none", acoustic=True, prosody=True)
NATURALNESS_TRAINING = TrainingOptions(held_out=0.25)  # a quarter of the speakers held out


@dataclass(frozen=True)
class Recording:
    path: Path
    speaker: str


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
            recordings.append(Recording(path.resolve(), speaker))
    if not recordings:
        raise ValueError(f"{root} holds no audio file ({', '.join(PLAYABLE_AUDIO_TYPES)}).")
    return recordings


def naturalness_comparisons(recordings: Sequence[Recording], failures: Sequence[str]) -> list[Comparison]:
    """Real (and vocoded) over each failure, per recording; the item is the speaker (held out whole)."""
    unknown = sorted(set(failures) - set(FAILURES))
    if unknown or not failures:
        raise ValueError(f"Unknown or no failures {unknown}: choose among {list(FAILURES)}.")
    return [
        Comparison(f"{rec.path}{VARIANT_SEPARATOR}{real}", f"{rec.path}{VARIANT_SEPARATOR}{failure}", 1.0, rec.speaker)
        for rec in recordings
        for real in ("real", "vocoded")
        for failure in failures
    ]


def load_variant(key: str) -> np.ndarray:
    """The 16 kHz waveform a clip key names: the recording, its vocoded copy or one of its failures."""
    path, _, variant = key.rpartition(VARIANT_SEPARATOR)
    wav = load_audio(path, SAMPLE_RATE)
    if variant == "real":
        return wav
    return vocoded(wav) if variant == "vocoded" else FAILURES[variant](wav)


def train_naturalness_model(
    recordings: Sequence[Recording],
    failures: Sequence[str] = tuple(FAILURES),
    options: TrainingOptions = NATURALNESS_TRAINING,
    features: FeatureConfig = NATURALNESS_FEATURES,
) -> PreferenceModel:
    """The utility fitted on the recordings' comparisons; `metrics` hold the held-out speakers' pairwise accuracy."""
    speakers = {rec.speaker for rec in recordings}
    if options.held_out > 0 and len(speakers) < 2:
        raise ValueError(
            f"Held-out accuracy needs recordings of at least two speakers, got {sorted(speakers)}: put each speaker's "
            "files in a sub-folder of its own, or pass --held_out 0."
        )
    model = train_preference_model(naturalness_comparisons(recordings, failures), load_variant, features, options)
    model.metrics["failures"] = list(failures)
    model.metrics["n_speakers"] = len(speakers)
    return model
