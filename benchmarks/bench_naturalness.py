"""Held-out-speaker accuracy of the prosody naturalness model (listen.py train-prosody): espeak-ng recordings of a few
sentences in several voices, a folder per voice; each recording (and its vocoded copy) preferred to every prosody
failure made from it; whole voices held out.

    python -m benchmarks.bench_naturalness
    python -m benchmarks.bench_naturalness --voices en-us en+f3 en+m3 en-gb de es --held_out 0.34

Prints the model's metrics and, per failure, how many held-out (real, failure) pairs it orders right.
"""

import json
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llasa.cli import ScriptParser
from llasa.listening.naturalness import (
    VARIANT_SEPARATOR,
    find_recordings,
    load_variant,
    naturalness_comparisons,
    train_naturalness_model,
)
from llasa.listening.preference import TrainingOptions, split_items

SENTENCES = (
    "A rainbow appeared after the summer rain.",
    "Please call Stella and ask her to come.",
    "The birch canoe slid on the smooth planks.",
)


@dataclass(frozen=True)
class Arguments:
    voices: list[str] = field(
        default_factory=lambda: ["en-us", "en+f3", "en+m3", "en-gb", "en+f4", "en+m7"],
        metadata={"help": "espeak-ng voices, a folder each."},
    )
    held_out: float = field(default=0.34, metadata={"help": "Share of voices held out."})
    seed: int = field(default=0, metadata={"help": "Seed of the split and the training."})


def main(argv=None):
    [args] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for voice in args.voices:
            (root / voice).mkdir()
            for i, text in enumerate(SENTENCES):
                subprocess.run(["espeak-ng", "-v", voice, "-w", str(root / voice / f"{i}.wav"), text], check=True)
        recordings = find_recordings(root)
        options = TrainingOptions(held_out=args.held_out, seed=args.seed)
        start = time.perf_counter()
        model = train_naturalness_model(recordings, options=options)
        seconds = time.perf_counter() - start
        comparisons = naturalness_comparisons(recordings, model.metrics["failures"])
        _, test = split_items(comparisons, args.held_out, args.seed)
        held_out = [comparisons[i] for i in test]
        keys = sorted({key for c in held_out for key in (c.a, c.b)})
        utility = dict(zip(keys, model.utilities([load_variant(key) for key in keys]), strict=True))
        right, total = Counter(), Counter()
        for c in held_out:
            failure = c.b.rpartition(VARIANT_SEPARATOR)[2]
            total[failure] += 1
            right[failure] += utility[c.a] > utility[c.b]
    print(f"{len(args.voices)} voices x {len(SENTENCES)} sentences, trained in {seconds:.0f} s")
    print(json.dumps({k: v for k, v in model.metrics.items() if k != "options"}, indent=1))
    held = sorted({c.item for c in held_out})
    print(f"\nHeld-out voices {held}: pairs ordered right, per failure")
    print("| failure | right |\n|---|---|")
    for failure in total:
        print(f"| {failure} | {right[failure]}/{total[failure]} |")


if __name__ == "__main__":
    main()
