"""Dataset sources (llasa.sources): column detection and audio cells."""

from pathlib import Path

import numpy as np
import pytest

from llasa.dataset import Options
from llasa.dataset import create_dataset as run
from llasa.sources import load_clip, resolve_columns

DATA_DIR = Path(__file__).parent / "data"


class TestColumns:
    def test_missing_column_lists_the_columns(self, tmp_path):
        # A wrong --text_column is refused before any model loads, naming the columns that exist.
        options = Options(dataset=str(DATA_DIR), output_dir=str(tmp_path / "out"), text_column="sentence")
        with pytest.raises(ValueError, match=r"'sentence' \(--text_column\).*columns are: file_name, text"):
            run(options)

    def test_undetectable_columns_ask_for_the_flag(self):
        # No obvious audio column: the error asks for --audio_column and lists the columns.
        from datasets import Dataset

        dataset = Dataset.from_dict({"clip": ["a.wav"], "words": ["hi"]})
        with pytest.raises(ValueError, match=r"--audio_column.*clip, words"):
            resolve_columns(dataset)
        assert resolve_columns(dataset, "clip", "words") == ("clip", "words")

    def test_detection_prefers_audio_typed_and_normalized_text(self):
        # An Audio column wins over a path column; normalized text over raw text.
        from datasets import Audio, Dataset

        dataset = Dataset.from_dict(
            {"file": ["a.wav"], "rec": [{"bytes": b"", "path": "a.wav"}], "text": ["1"], "normalized_text": ["one"]}
        ).cast_column("rec", Audio())
        assert resolve_columns(dataset) == ("rec", "normalized_text")


def test_load_clip_reads_channels_first_arrays_and_bytes(tmp_path):
    # datasets' in-memory audio is channels-first: two channels of 22.05 kHz become one 16 kHz channel

    stereo = np.stack([np.full(22050, 0.5, np.float32), np.full(22050, -0.1, np.float32)])
    wav = load_clip({"array": stereo, "sampling_rate": 22050})
    assert wav.shape == (16000,)
    assert wav[8000] == pytest.approx(0.2, abs=1e-3)
    # embedded bytes that are not audio are reported with the cell's path
    with pytest.raises(RuntimeError, match="Failed to load audio broken.wav"):
        load_clip({"bytes": b"not audio", "path": "broken.wav"})
