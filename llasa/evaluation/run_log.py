"""A training run's log: the log history TRL writes to trainer_state.json (the run folder's, else its latest
checkpoint's), which the curves and the step profile read."""

import json
import re
from pathlib import Path

TRAINING_STATE = "trainer_state.json"


def find_trainer_state(run_dir) -> Path:
    """The run's trainer_state.json: the run folder's own (written at the end), else the latest checkpoint's."""
    run_dir = Path(run_dir)
    if (run_dir / TRAINING_STATE).is_file():
        return run_dir / TRAINING_STATE
    checkpoints = [
        path
        for path in run_dir.glob(f"checkpoint-*/{TRAINING_STATE}")
        if re.fullmatch(r"checkpoint-\d+", path.parent.name)
    ]
    if not checkpoints:
        raise FileNotFoundError(
            f"No {TRAINING_STATE} in {run_dir} or its checkpoint-N folders: is it a training run's --output_dir?"
        )
    return max(checkpoints, key=lambda path: int(path.parent.name.split("-")[1]))


def read_log_history(run_dir) -> list[dict]:
    """The log history of a run folder (its trainer_state.json, else its latest checkpoint's)."""
    return json.loads(find_trainer_state(run_dir).read_text(encoding="utf-8")).get("log_history", [])
