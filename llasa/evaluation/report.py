"""An evaluation's report: per-system means and medians with their differences from a baseline, as JSON, a markdown
table and a plot of the per-clip error rates and durations."""

import json
import logging
import math
import statistics
from pathlib import Path

import numpy as np

from llasa.audio import count_identical, identical_clips_note
from llasa.evaluation.seedtts import protocol_table
from llasa.numbers import is_number
from llasa.outputs import claim, write_text
from llasa.plotting import pyplot
from llasa.scores import DNSMOS_METRICS

logger = logging.getLogger(__name__)

# Summary metrics in display order; others the reward logs (its components' raw measures) follow.
METRIC_ORDER = (
    "wer",
    "cer",
    "nll",
    "reward",
    "duration_s",
    "chars_per_second",
    "speaker_cosine",
    *(f"dnsmos_{name}" for name in DNSMOS_METRICS),
    "pitch_movement",
    "pitch_roughness",
)
REPORT_FILES = ("clips.jsonl", "summary.json", "summary.md", "comparison.png")


def metric_names(records: list[dict]) -> list[str]:
    """The numeric metrics present in the records: METRIC_ORDER first, then the reward's other raw measures."""
    numeric = {key for record in records for key, value in record.items() if is_number(value)}
    return [name for name in METRIC_ORDER if name in numeric] + sorted(numeric - set(METRIC_ORDER))


def _values(records: list[dict], system: str, metric: str) -> list[float]:
    values = (record.get(metric) for record in records if record["system"] == system)
    return [float(value) for value in values if value is not None and math.isfinite(value)]


def summarize(records: list[dict], systems: list[str], baseline: str) -> dict:
    """Per system: clip counts and, per metric, mean, median and their differences from the baseline's."""
    metrics = metric_names(records)
    summary = {"baseline": baseline, "metrics": metrics, "systems": {}}
    for system in systems:
        own = [record for record in records if record["system"] == system]
        entry = {
            "n_clips": len(own),
            "n_scored": sum(record["status"] == "scored" for record in own),
            "n_missing": sum(record["status"] == "missing" for record in own),
            "metrics": {},
        }
        for metric in metrics:
            values = _values(records, system, metric)
            entry["metrics"][metric] = {
                "n": len(values),
                "mean": statistics.fmean(values) if values else None,
                "median": statistics.median(values) if values else None,
            }
        summary["systems"][system] = entry
    for system in systems:
        for metric, stats in summary["systems"][system]["metrics"].items():
            base = summary["systems"][baseline]["metrics"][metric]
            for key in ("mean", "median"):
                both = stats[key] is not None and base[key] is not None
                stats[f"delta_{key}"] = stats[key] - base[key] if both else None
    return summary


def identical_to_baseline(records: list[dict], systems: list[str], baseline: str) -> dict[str, dict]:
    """Per system whose clips include files identical to the baseline's (same id): how many, of how many shared."""
    audio = {(r["system"], r["id"]): r["audio"] for r in records if r["status"] != "missing" and r.get("audio")}
    found = {}
    for system in systems:
        if system == baseline:
            continue
        shared = [
            (path, audio[baseline, i])
            for (name, i), path in audio.items()
            if name == system and (baseline, i) in audio
        ]
        identical = count_identical(shared)
        if identical:
            found[system] = {"identical": identical, "compared": len(shared)}
    return found


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _signed(value) -> str:
    return "" if value is None else f"{value:+.4f}"


def markdown_table(summary: dict, title: str) -> str:
    """The summary as markdown: clip counts per system, then one row per metric and system."""
    baseline = summary["baseline"]
    lines = [
        f"# {title}",
        "",
        "| system | clips | scored | missing |",
        "|---|---|---|---|",
    ]
    for system, entry in summary["systems"].items():
        lines.append(f"| {system} | {entry['n_clips']} | {entry['n_scored']} | {entry['n_missing']} |")
    for system, counts in summary.get("identical_to_baseline", {}).items():
        lines += ["", "> " + identical_clips_note(baseline, system, counts["identical"], counts["compared"])]
    lines += [
        "",
        f"| metric | system | n | mean | median | Δ mean vs {baseline} | Δ median vs {baseline} |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in summary["metrics"]:
        for system, entry in summary["systems"].items():
            stats = entry["metrics"][metric]
            is_base = system == baseline
            cells = [
                metric,
                system,
                str(stats["n"]),
                _cell(stats["mean"]),
                _cell(stats["median"]),
                "" if is_base else _signed(stats["delta_mean"]),
                "" if is_base else _signed(stats["delta_median"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(records: list[dict], systems: list[str], path) -> Path:
    """Box plots with the clips as points: the error rate (WER or CER) and the duration per system."""
    plt = pyplot()
    error = next((name for name in ("wer", "cer") if any(r.get(name) is not None for r in records)), None)
    panels = [(error, error.upper() if error else None), ("duration_s", "duration (s)")]
    panels = [(metric, label) for metric, label in panels if metric is not None]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    rng = np.random.default_rng(0)  # the points' horizontal jitter
    for axis, (metric, label) in zip(axes[0], panels, strict=True):
        data = [_values(records, system, metric) for system in systems]
        axis.boxplot([values or [np.nan] for values in data], showfliers=False)
        for position, values in enumerate(data, start=1):
            axis.scatter(position + rng.uniform(-0.15, 0.15, len(values)), values, s=8, alpha=0.5)
        axis.set_xticks(range(1, len(systems) + 1), systems)
        axis.set_ylabel(label)
        axis.set_title(f"{label} per clip")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(
    output_dir: Path, records: list[dict], summary: dict, test_list, protocol_language: str | None = None
) -> None:
    """clips.jsonl, summary.json, summary.md and comparison.png; with `protocol_language`, Seed-TTS-eval's table for
    that language under the summary."""
    claim([output_dir / name for name in REPORT_FILES], "--output_dir")
    write_text(
        output_dir / "clips.jsonl", "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    )
    write_text(output_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    title = f"Evaluation on {Path(test_list).name} ({summary['n_texts']} texts)"
    table = markdown_table(summary, title)
    if protocol_language is not None:
        table += "\n" + protocol_table(summary, protocol_language)
    write_text(output_dir / "summary.md", table)
    plot_comparison(records, list(summary["systems"]), output_dir / "comparison.png")
    logger.info(
        "Wrote %s", ", ".join(str(output_dir / name) for name in ("clips.jsonl", "summary.json", "summary.md"))
    )
