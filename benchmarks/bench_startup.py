"""How long each script takes to answer --help (what a user waits for before any work starts), and which heavy
libraries it imports to get there, in one or more checkouts side by side:

    python -m benchmarks.bench_startup --runs 5 --checkouts . /tmp/older_checkout

Runs are interleaved (run 1 of every command in every checkout, then run 2, ...), so that a shared machine's load
falls on all of them alike; the table gives the median and the fastest run, in seconds. The parsers' own imports
(TRL's TrlParser, transformers' HfArgumentParser, argparse) are timed the same way, in the first checkout.
"""

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from llasa.cli import ScriptParser

COMMANDS = (
    "inference.py --help",
    "create_dataset.py --help",
    "reward_whisper.py --help",
    "train.py --help",
    "train_dpo.py --help",
    "evaluate.py compare --help",
    "evaluate.py curves --help",
    "listen.py results --help",
)
PARSER_IMPORTS = {
    "import argparse": "import argparse",
    "from trl import TrlParser": "from trl import TrlParser",
    "from transformers import HfArgumentParser": "from transformers import HfArgumentParser",
}
HEAVY = ("torch", "transformers", "trl", "datasets")  # libraries whose import alone takes a noticeable time


def timed(argv: list[str], cwd: Path) -> float | None:
    """Seconds `argv` took, or None when it failed (a command the checkout does not have)."""
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True)
    return time.perf_counter() - started if result.returncode == 0 else None


def heavy_imports(command: str, cwd: Path) -> str:
    """The heavy libraries the command imports (read from python -X importtime)."""
    result = subprocess.run([sys.executable, "-X", "importtime", *command.split()], cwd=cwd, capture_output=True)
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.decode().splitlines()}
    return ", ".join(name for name in HEAVY if name in imported) or "none"


@dataclass(frozen=True)
class Arguments:
    checkouts: list[str] = field(default_factory=lambda: ["."], metadata={"help": "Repository folders to compare."})
    runs: int = field(default=5, metadata={"help": "Runs of each command in each checkout."})


def main() -> None:
    [args] = ScriptParser(Arguments).parse()
    checkouts = [Path(c) for c in args.checkouts]
    cases = [(str(c), command, [sys.executable, *command.split()], c) for c in checkouts for command in COMMANDS]
    cases += [("parser", name, [sys.executable, "-c", code], checkouts[0]) for name, code in PARSER_IMPORTS.items()]
    seconds: dict[tuple[str, str], list[float]] = {(where, what): [] for where, what, _, _ in cases}
    for _ in range(args.runs):
        for where, what, argv, cwd in cases:
            took = timed(argv, cwd)
            if took is not None:
                seconds[where, what].append(took)
    print(f"{args.runs} runs each, interleaved; {sys.executable}")
    print("| checkout | command | median s | fastest s | imports |")
    print("|---|---|---|---|---|")
    for where, what, _, cwd in cases:
        runs = seconds[where, what]
        if not runs:
            print(f"| {where} | {what} | failed | | |")
            continue
        imports = heavy_imports(what, cwd) if where != "parser" else ""
        print(f"| {where} | {what} | {statistics.median(runs):.2f} | {min(runs):.2f} | {imports} |")


if __name__ == "__main__":
    main()
