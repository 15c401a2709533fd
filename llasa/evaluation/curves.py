"""A GRPO run's training curves: the reward, each reward function's mean and own metrics, the KL and the completion
length per step, raw and smoothed, from its trainer_state.json; and its summary, the reward beside the step profile."""

import math
import re
from collections.abc import Sequence
from pathlib import Path

from llasa.evaluation.profiling import step_profile
from llasa.evaluation.run_log import find_trainer_state, read_log_history
from llasa.outputs import claim
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


def panel_note(series: dict[str, tuple[list[int], list[float]]], keys: list[str]) -> str | None:
    """Why a panel of these keys shows no curve to read: a single logged step (one point draws no line), or one
    value at every step (a flat line). None when it shows a curve."""
    points = [series[key] for key in keys]
    if all(len(steps) == 1 for steps, _ in points):
        return f"one logged step (step {points[0][0][0]}):\nlogging_steps sets how often TRL logs"
    if len(keys) == 1 and len(set(points[0][1])) == 1:
        return f"{points[0][1][0]:.4g} at every logged step"
    return None


def _plot_series(axis, series: dict, keys: list[str], weight: float) -> None:
    """One panel: each key raw (faint) and smoothed, its points marked when there are few, and why it is empty."""
    for key in keys:
        steps, values = series[key]
        marker = "o" if len(steps) <= 3 else None
        (line,) = axis.plot(steps, ema(values, weight), label=key, marker=marker)
        axis.plot(steps, values, color=line.get_color(), alpha=0.25, linewidth=0.8)
    axis.set_title(keys[0] if len(keys) == 1 else "rewards")
    axis.set_xlabel("step")
    if len(keys) > 1:
        axis.legend(fontsize="small")
    note = panel_note(series, keys)
    if note is not None:
        axis.text(0.5, 0.75, note, transform=axis.transAxes, ha="center", va="center", color="dimgray")


def _read_series(run_dir) -> tuple[Path, list[dict], dict]:
    state_path = find_trainer_state(run_dir)
    log_history = read_log_history(run_dir)
    series = training_series(log_history)
    if not series:
        raise ValueError(
            f"{state_path} logs none of reward, rewards/<name>/mean, kl, completions/mean_length: no curve to plot."
        )
    return state_path, log_history, series


def _reward_keys(series: dict) -> list[str]:
    return [key for key in series if key == "reward" or key.startswith("rewards/")]


def plot_curves(run_dir, output=None, weight: float = EMA_WEIGHT) -> tuple[Path, list[str]]:
    """A PNG of the run's curves (raw, faint, and smoothed): the rewards together, then one panel per other key."""
    state_path, _, series = _read_series(run_dir)
    rewards = _reward_keys(series)
    panels = ([rewards] if rewards else []) + [[key] for key in series if key not in rewards]
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    plt = pyplot()
    # Constrained layout leaves room for the figure's title above the panels' own.
    figure, axes = plt.subplots(
        n_rows, n_cols, figsize=(5 * n_cols, 3.2 * n_rows), squeeze=False, layout="constrained"
    )
    for axis, keys in zip(axes.flat, panels, strict=False):
        _plot_series(axis, series, keys, weight)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(f"{Path(run_dir).name}: {state_path.relative_to(run_dir)} (EMA {weight})")
    output = Path(run_dir) / "training_curves.png" if output is None else Path(output)
    claim([output], "--output")
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output, list(series)


def plot_summary(run_dir, output=None, weight: float = EMA_WEIGHT) -> Path:
    """One PNG of a run: its reward per step beside where its step time went (the profile `profile` prints)."""
    state_path, log_history, series = _read_series(run_dir)
    rewards = _reward_keys(series)
    if not rewards:
        raise ValueError(f"{state_path} logs no reward: nothing to summarise.")
    profile = step_profile(log_history)
    plt = pyplot()
    figure, (curve, phases) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    _plot_series(curve, series, rewards, weight)
    names = [name for name, _ in profile.rows()]
    seconds = [value for _, value in profile.rows()]
    bars = phases.barh(names, seconds)
    phases.bar_label(bars, labels=[f"{value:.2f} s ({100 * value / profile.step:.0f} %)" for value in seconds])
    phases.invert_yaxis()  # in the order of a step
    phases.set_xlim(0, 1.35 * max(seconds))  # room for the labels
    phases.set_xlabel("seconds per optimizer step")
    phases.set_title(f"{profile.step:.2f} s per step (mean of {profile.steps})")
    figure.suptitle(f"{Path(run_dir).name}: reward and step time")
    output = Path(run_dir) / "summary.png" if output is None else Path(output)
    claim([output], "--output")
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output
