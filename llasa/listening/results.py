"""What a listening test says: Bradley-Terry strengths and win rates with bootstrap intervals, rater agreement,
a markdown report and a plot."""

import itertools
import math
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import choix
import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score

from llasa.plotting import pyplot

BOOTSTRAP_SAMPLES = 1000  # resamples of the judgments for the 95 % intervals
CONFIDENCE = 0.95
BT_PRIOR = 0.5  # virtual tied comparisons between every two systems: keeps a system that never won finite


def outcomes(judgments: list[dict], systems: list[str]) -> np.ndarray:
    """(i, j, score of i) rows, i < j in `systems`' order: 1 if i won, 0 if j won, 0.5 for "same"."""
    index = {system: i for i, system in enumerate(systems)}
    rows = []
    for judgment in judgments:
        i, j = index[judgment["system_a"]], index[judgment["system_b"]]
        if i == j:
            continue  # two clips of one system say nothing about systems
        score = 0.5 if judgment["winner"] is None else float(judgment["winner"] == judgment["system_a"])
        rows.append((i, j, score) if i < j else (j, i, 1.0 - score))
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def _tallies(rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(games[i, j], score[i, j]): comparisons of i and j, and i's points against j (a tie is half a point)."""
    games, score = np.zeros((k, k)), np.zeros((k, k))
    i, j, s = rows[:, 0].astype(int), rows[:, 1].astype(int), rows[:, 2]
    np.add.at(games, (i, j), 1.0)
    np.add.at(games, (j, i), 1.0)
    np.add.at(score, (i, j), s)
    np.add.at(score, (j, i), 1.0 - s)
    return games, score


def bradley_terry(rows: np.ndarray, k: int, prior: float = BT_PRIOR) -> np.ndarray:
    """Log-strengths u (mean 0) of the Bradley-Terry model P(i beats j) = sigmoid(u_i - u_j): the maximum-likelihood
    fit (choix's iterative Luce spectral ranking), ties counted as half a win each, with `prior` virtual ties between
    every two systems."""
    _, score = _tallies(rows, k)
    wins = score + 0.5 * prior * (1.0 - np.eye(k))  # half a point each way per virtual tie
    return choix.ilsr_pairwise_dense(wins)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - CONFIDENCE) / 2 * 100
    return np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100 - tail, axis=0)


def system_table(judgments: list[dict], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """Per system: comparisons, wins, ties, losses, win rate and Bradley-Terry probability of beating an average
    system (sigmoid of its centred log-strength), each with a bootstrap interval (judgments resampled); and the
    head-to-head counts of every two systems."""
    systems = sorted({j[key] for j in judgments for key in ("system_a", "system_b")})
    k = len(systems)
    rows = outcomes(judgments, systems)
    games, score = _tallies(rows, k)
    utilities = bradley_terry(rows, k)
    rng = np.random.default_rng(seed)
    boot_bt, boot_rate = np.empty((samples, k)), np.empty((samples, k))
    for b in range(samples):
        resampled = rows[rng.integers(0, len(rows), len(rows))]
        boot_bt[b] = _sigmoid(bradley_terry(resampled, k))
        g, s = _tallies(resampled, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_rate[b] = s.sum(axis=1) / g.sum(axis=1)
    bt_low, bt_high = _interval(boot_bt)
    rate_low, rate_high = _interval(boot_rate)
    ties = _tie_counts(rows, k)
    table = {}
    for i, system in enumerate(systems):
        n = int(games[i].sum())
        wins = int(round(score[i].sum() - 0.5 * ties[i]))
        table[system] = {
            "comparisons": n,
            "wins": wins,
            "ties": int(ties[i]),
            "losses": n - wins - int(ties[i]),
            "win_rate": float(score[i].sum() / n) if n else None,
            "win_rate_ci": [float(rate_low[i]), float(rate_high[i])] if n else None,
            "bt_utility": float(utilities[i]),
            "bt_win_prob": float(_sigmoid(utilities[i])),
            "bt_win_prob_ci": [float(bt_low[i]), float(bt_high[i])],
        }
    head_to_head = {
        f"{systems[i]} vs {systems[j]}": {
            "comparisons": int(games[i, j]),
            "score": float(score[i, j]),
            "win_rate": float(score[i, j] / games[i, j]) if games[i, j] else None,
        }
        for i, j in itertools.combinations(range(k), 2)
    }
    return {"systems": table, "head_to_head": head_to_head, "bootstrap_samples": samples}


def _tie_counts(rows: np.ndarray, k: int) -> np.ndarray:
    ties = np.zeros(k)
    for i, j, s in rows:
        if s == 0.5:
            ties[int(i)] += 1
            ties[int(j)] += 1
    return ties


# ---------------------------------------------------------------------------------------------------------------------
# Agreement between raters


LABELS = ("first", "second", "same")  # a judgment in the pair's own terms: which clip won, or neither


def _label(judgment: dict) -> str:
    """A judgment in the pair's own terms (not the shown order): first clip, second clip or same."""
    if judgment["winner_clip"] is None:
        return "same"
    return "first" if judgment["winner_clip"] == judgment["clip_a"] else "second"


def agreement(judgments: list[dict]) -> dict:
    """How far raters agree on the pairs several of them judged: the share of agreeing rater pairs, Fleiss' kappa
    (items may have different numbers of raters) and, per two raters, their agreement and Cohen's kappa."""
    by_pair: dict[int, dict[str, str]] = defaultdict(dict)
    for judgment in judgments:
        by_pair[judgment["pair_id"]][judgment["rater"]] = _label(judgment)
    shared = {pair: labels for pair, labels in by_pair.items() if len(labels) >= 2}
    result = {"shared_pairs": len(shared), "pairwise_agreement": None, "fleiss_kappa": None, "rater_pairs": {}}
    if not shared:
        return result
    agreeing = total = 0
    for labels in shared.values():
        for x, y in itertools.combinations(labels.values(), 2):
            agreeing += x == y
            total += 1
    result["pairwise_agreement"] = agreeing / total
    result["fleiss_kappa"] = fleiss_kappa([list(labels.values()) for labels in shared.values()])
    raters = sorted({rater for labels in shared.values() for rater in labels})
    for first, second in itertools.combinations(raters, 2):
        both = [(labels[first], labels[second]) for labels in shared.values() if first in labels and second in labels]
        if both:
            result["rater_pairs"][f"{first} / {second}"] = {
                "shared_pairs": len(both),
                "agreement": sum(x == y for x, y in both) / len(both),
                "cohen_kappa": cohen_kappa(both),
            }
    return result


def fleiss_kappa(items: list[list[str]]) -> float | None:
    """Fleiss' kappa over items each labelled by two or more raters (not necessarily the same number)."""
    categories = sorted({label for labels in items for label in labels})
    per_item, proportions = [], Counter()
    for labels in items:
        counts = Counter(labels)
        n = len(labels)
        per_item.append((sum(c * c for c in counts.values()) - n) / (n * (n - 1)))
        proportions.update(counts)
    n_labels = sum(proportions.values())
    expected = sum((proportions[c] / n_labels) ** 2 for c in categories)
    observed = float(np.mean(per_item))
    return None if expected == 1 else (observed - expected) / (1 - expected)


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items; None when chance agreement is total."""
    first, second = zip(*pairs, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # the None below says it
        kappa = cohen_kappa_score(first, second, labels=LABELS)
    return None if math.isnan(kappa) else float(kappa)


def loser_tags(judgments: list[dict]) -> dict[str, dict[str, int]]:
    """Per system, how often each reason was given when it lost."""
    tags: dict[str, Counter] = defaultdict(Counter)
    for judgment in judgments:
        if judgment["loser"] is not None:
            tags[judgment["loser"]].update(judgment["tags"])
    return {system: dict(counts) for system, counts in sorted(tags.items())}


# ---------------------------------------------------------------------------------------------------------------------
# Report


def summarize(judgments: list[dict], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    if not judgments:
        raise ValueError("The store holds no judgment of the kinds asked for: rate some pairs first.")
    summary = system_table(judgments, samples, seed)
    summary.update(
        n_judgments=len(judgments),
        raters=sorted({j["rater"] for j in judgments}),
        agreement=agreement(judgments),
        loser_tags=loser_tags(judgments),
    )
    return summary


def _cell(value, fmt: str = ".3f") -> str:
    return "" if value is None else format(value, fmt)


def _ci(interval) -> str:
    return "" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def markdown_report(summary: dict, title: str) -> str:
    """The summary as markdown, in evaluate.py's report style."""
    percent = round(CONFIDENCE * 100)
    lines = [
        f"# {title}",
        "",
        f"{summary['n_judgments']} judgments by {len(summary['raters'])} rater(s); intervals: {percent} % "
        f"bootstrap over judgments ({summary['bootstrap_samples']} resamples).",
        "",
        f"| system | comparisons | wins | ties | losses | win rate | {percent} % CI | P(beats average) (BT) | "
        f"{percent} % CI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ranked = sorted(summary["systems"].items(), key=lambda item: -item[1]["bt_utility"])
    for system, row in ranked:
        cells = [system, str(row["comparisons"]), str(row["wins"]), str(row["ties"]), str(row["losses"])]
        cells += [_cell(row["win_rate"]), _ci(row["win_rate_ci"]), _cell(row["bt_win_prob"])]
        cells.append(_ci(row["bt_win_prob_ci"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| pair | comparisons | first's win rate |", "|---|---|---|"]
    for name, row in summary["head_to_head"].items():
        lines.append(f"| {name} | {row['comparisons']} | {_cell(row['win_rate'])} |")
    agree = summary["agreement"]
    lines += ["", f"Pairs judged by two raters or more: {agree['shared_pairs']}."]
    if agree["shared_pairs"]:
        lines.append(
            f"Pairwise agreement {_cell(agree['pairwise_agreement'])}, Fleiss' kappa {_cell(agree['fleiss_kappa'])}."
        )
        lines += ["", "| raters | shared pairs | agreement | Cohen's kappa |", "|---|---|---|---|"]
        for name, row in agree["rater_pairs"].items():
            lines.append(
                f"| {name} | {row['shared_pairs']} | {_cell(row['agreement'])} | {_cell(row['cohen_kappa'])} |"
            )
    if summary["loser_tags"]:
        from llasa.listening.store import TAGS

        lines += ["", "Reasons given when a system lost:", "", "| system | " + " | ".join(TAGS) + " |"]
        lines.append("|---" * (len(TAGS) + 1) + "|")
        for system, counts in summary["loser_tags"].items():
            lines.append(f"| {system} | " + " | ".join(str(counts.get(tag, 0)) for tag in TAGS) + " |")
    return "\n".join(lines) + "\n"


def plot_results(summary: dict, path) -> Path:
    """Two panels: each system's Bradley-Terry probability of beating an average system with its interval, and the
    head-to-head win rates."""
    plt = pyplot()
    ranked = sorted(summary["systems"], key=lambda s: -summary["systems"][s]["bt_utility"])
    k = len(ranked)
    figure, (bars, matrix) = plt.subplots(1, 2, figsize=(5 + 0.6 * k, 4))
    values = np.array([summary["systems"][s]["bt_win_prob"] for s in ranked])
    intervals = np.array([summary["systems"][s]["bt_win_prob_ci"] for s in ranked])
    errors = np.clip(np.stack([values - intervals[:, 0], intervals[:, 1] - values]), 0, None)
    bars.bar(range(k), values, yerr=errors, capsize=4, color="#3b7dd8")
    bars.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    bars.set_xticks(range(k), ranked)
    bars.set_ylim(0, 1)
    bars.set_ylabel("P(beats an average system)")
    bars.set_title(f"Bradley-Terry, {round(CONFIDENCE * 100)} % bootstrap CI")
    rates = np.full((k, k), np.nan)
    for name, row in summary["head_to_head"].items():
        first, second = name.split(" vs ")
        if row["win_rate"] is not None:
            i, j = ranked.index(first), ranked.index(second)
            rates[i, j], rates[j, i] = row["win_rate"], 1 - row["win_rate"]
    image = matrix.imshow(rates, vmin=0, vmax=1, cmap="RdBu")
    for i, j in itertools.product(range(k), range(k)):
        if not math.isnan(rates[i, j]):
            matrix.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=9)
    matrix.set_xticks(range(k), ranked)
    matrix.set_yticks(range(k), ranked)
    matrix.set_title("row's win rate against column")
    figure.colorbar(image, ax=matrix, fraction=0.046)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
