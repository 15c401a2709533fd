"""The preference store as files others read: JSONL (one judgment a line) and a Hugging Face `datasets` dataset."""

import json
from pathlib import Path

EXPORT_FORMATS = ("judgments", "dpo")  # one record per judgment; one preference pair per decided pair (dpo_data)
EXPORT_FIELDS = (
    "judgment_id",
    "rater",
    "kind",
    "pair_id",
    "text",
    "system_a",
    "system_b",
    "audio_a",
    "audio_b",
    "shown_first",
    "choice",
    "winner",
    "tags",
    "detail",
    "created_at",
)


def export_records(judgments: list[dict]) -> list[dict]:
    """One flat record per judgment: the pair's systems and audio paths, the system shown first (as A), the choice
    as shown, the winning system (None for "same"), tags, machine scores (detail, JSON text) and time."""
    records = []
    for judgment in judgments:
        record = {**judgment, "audio_a": judgment["path_a"], "audio_b": judgment["path_b"]}
        record["detail"] = None if judgment["detail"] is None else json.dumps(judgment["detail"])
        records.append({name: record[name] for name in EXPORT_FIELDS})
    return records


def refuse_existing(path) -> Path:
    """The output path, refused when something is already there: an export never replaces a file or folder."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists: pick another path, or move it away yourself.")
    return path


def write_jsonl(records: list[dict], path) -> Path:
    path = refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return path


def write_dataset(records: list[dict], folder, judgments: bool = True) -> Path:
    """A `datasets.Dataset` saved with save_to_disk (load_from_disk reads it; push_to_hub shares it): of
    `export_records`' judgments, or (judgments=False) of records whose types datasets infers."""
    import datasets

    folder = refuse_existing(folder)
    features = None
    if judgments:
        features = datasets.Features(
            {
                **{name: datasets.Value("string") for name in EXPORT_FIELDS},
                "judgment_id": datasets.Value("int64"),
                "pair_id": datasets.Value("int64"),
                "tags": datasets.Sequence(datasets.Value("string")),
            }
        )
    dataset = datasets.Dataset.from_list(records, features=features)
    dataset.save_to_disk(str(folder))
    return Path(folder)
