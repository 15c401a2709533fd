"""The preference store as files others read: JSONL (one judgment a line) and a Hugging Face `datasets` dataset."""

import json
import shutil
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


def write_jsonl(records: list[dict], path) -> Path:
    """The records, one JSON object a line; `path` is checked to be new or an earlier export's."""
    from llasa.outputs import claim, write_text

    [path] = claim([path], "--output")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def write_dataset(records: list[dict], folder, judgments: bool = True) -> Path:
    """A `datasets.Dataset` saved with save_to_disk (load_from_disk reads it; push_to_hub shares it): of
    `export_records`' judgments, or (judgments=False) of records whose types datasets infers. `folder` is checked to
    be new or an earlier export's, and replaced only once the new one is complete."""
    import datasets

    from llasa.outputs import check_replaceable, replace_folder, staging_folder

    check_replaceable([folder], "--dataset_dir")
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
    staging = staging_folder(folder)
    try:
        datasets.Dataset.from_list(records, features=features).save_to_disk(str(staging))
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the move succeeded
    return Path(folder)
