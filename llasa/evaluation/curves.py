"""A GRPO run's training curves: the reward, each reward function's mean and own metrics, the KL and the completion
length per step, raw and smoothed, from its trainer_state.json."""

import math
import re
from collections.abc import Sequence
from pathlib import Path

from llasa.evaluation.run_log import find_trainer_state, read_log_history
from llasa.plotting import pyplot

EMA_WEIGHT = 0.9  # curve smoothing, as TensorBoard's slider: 0 = raw, closer to 1 = smoother
# TRL's own log keys that curves plots, after the reward and the reward functions' means and metrics.
TRAINING_KEYS = ("kl", "completions/mean_length")


def ema(values: Sequence[float], weight: float = EMA_WEIGHT) -> list[float]:
    """Exponential moving average, debiased at the start (as TensorBoard smooths)."""
    if not 0 <= weight < 1:
        raise ValueError(f"The smoothing weight must be in [0, 1), got {weight}.")
    smoothed, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight**count))
    return smoothed


def training_series(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """(steps, values) per plotted key: reward, rewards/<f>/mean, each reward function's own metrics (<f>/...),
    then KL and completion length. Steps where a key is missing or not finite are left out."""
    keys = dict.fromkeys(key for entry in log_history for key in entry)
    functions = [key[len("rewards/") : -len("/mean")] for key in keys if re.fullmatch(r"rewards/.+/mean", key)]
    wanted = ["reward", *(f"rewards/{name}/mean" for name in functions)]
    wanted += [key for name in functions for key in keys if key.startswith(f"{name}/")]
    wanted += TRAINING_KEYS
    series = {}
    for key in dict.fromkeys(wanted):
        points = [
            (entry["step"], float(entry[key]))
            for entry in log_history
            if "step" in entry and isinstance(entry.get(key), int | float) and math.isfinite(entry[key])
        ]
        if points:
            series[key] = ([step for step, _ in points], [value for _, value in points])
    return series


def plot_curves(run_dir, output=None, weight: float = EMA_WEIGHT) -> tuple[Path, list[str]]:
    """A PNG of the run's curves (raw, faint, and smoothed): the rewards together, then one panel per other key."""
    state_path = find_trainer_state(run_dir)
    log_history = read_log_history(run_dir)
    series = training_series(log_history)
    if not series:
        raise ValueError(
            f"{state_path} logs none of reward, rewards/<name>/mean, kl, completions/mean_length: no curve to plot."
        )
    rewards = [key for key in series if key == "reward" or key.startswith("rewards/")]
    panels = ([rewards] if rewards else []) + [[key] for key in series if key not in rewards]
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    plt = pyplot()
    figure, axes = plt.subplots(n_rows, n_cols, figsize=(5 * n_cols, 3.2 * n_rows), squeeze=False)
    for axis, keys in zip(axes.flat, panels, strict=False):
        for key in keys:
            steps, values = series[key]
            (line,) = axis.plot(steps, ema(values, weight), label=key)
            axis.plot(steps, values, color=line.get_color(), alpha=0.25, linewidth=0.8)
        axis.set_title(keys[0] if len(keys) == 1 else "rewards")
        axis.set_xlabel("step")
        if len(keys) > 1:
            axis.legend(fontsize="small")
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(f"{Path(run_dir).name}: {state_path.relative_to(run_dir)} (EMA {weight})")
    figure.tight_layout()
    output = Path(run_dir) / "training_curves.png" if output is None else Path(output)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output, list(series)
