"""Where a GRPO run's step time goes: generation, reward, reference log-probs, policy update.

Reads the profiling timings train.py logs (TRL's `profiling/Time taken: ...`, seconds per optimizer step) from a
run's trainer_state.json and prints each phase's seconds per step and share of the step:

    python -m benchmarks.profile_demo outputs/demo/grpo

The step time runs from the start of an optimizer step to its end (logging, saving and sample clips come after it).
The first logged step (warm-up) is left out when there are others.
"""

import argparse
import json
from dataclasses import dataclass

PREFIX = "profiling/Time taken: "
STEP = "step"  # train.py's wall time of an optimizer step: the four phases add up to it
# Suffixes of TRL's profiled names (each is prefixed with the trainer class name).
GENERATION = (".transformers.generate", ".transformers.generate_batch", ".vLLM.generate", ".sync_weights")
REWARD = "._calculate_rewards"
PREPARE = "._prepare_inputs"  # generation + reward + log-probs of the old / reference policy


@dataclass(frozen=True)
class Profile:
    """Mean seconds per optimizer step of each phase."""

    steps: int  # optimizer steps averaged
    step: float
    generation: float
    reward: float
    reference: float  # log-probs of the reference (and old) policy, advantages
    update: float  # loss forward, backward, optimizer step

    def rows(self) -> list[tuple[str, float]]:
        return [
            ("generation", self.generation),
            ("reward (decode + Whisper)", self.reward),
            ("reference log-probs", self.reference),
            ("policy update", self.update),
        ]


def read_log_history(run_dir) -> list[dict]:
    """The log history of a run folder (its trainer_state.json, else its latest checkpoint's)."""
    from evaluate import find_trainer_state

    return json.loads(find_trainer_state(run_dir).read_text())["log_history"]


def _timing(entry: dict, suffixes) -> float:
    suffixes = (suffixes,) if isinstance(suffixes, str) else suffixes
    return sum(value for key, value in entry.items() if key.startswith(PREFIX) and key.endswith(suffixes))


def profile(log_history: list[dict], skip_first: bool = True) -> Profile:
    """Average the per-step timings over the logged windows, weighted by the steps each window covers."""
    windows, previous = [], 0
    for entry in log_history:
        if PREFIX + STEP in entry:
            windows.append((entry, entry["step"] - previous))
            previous = entry["step"]
    if not windows:
        raise ValueError("The log history has no profiling timings: was the run made with train.py?")
    if skip_first and len(windows) > 1:
        windows = windows[1:]
    steps = sum(n for _, n in windows)

    def mean(get) -> float:
        return sum(get(entry) * n for entry, n in windows) / steps

    step = mean(lambda e: e[PREFIX + STEP])
    generation = mean(lambda e: _timing(e, GENERATION))
    reward = mean(lambda e: _timing(e, REWARD))
    prepare = mean(lambda e: _timing(e, PREPARE))
    return Profile(
        steps=steps,
        step=step,
        generation=generation,
        reward=reward,
        reference=max(prepare - generation - reward, 0.0),
        update=max(step - prepare, 0.0),
    )


def report(result: Profile) -> str:
    lines = [f"{result.step:.2f} s per optimizer step (mean of {result.steps} steps)"]
    for name, seconds in result.rows():
        lines.append(f"  {name:<34} {seconds:7.2f} s  {100 * seconds / result.step:5.1f}%")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="train.py's output_dir (or one of its checkpoints)")
    parser.add_argument("--keep_first", action="store_true", help="Keep the first (warm-up) step in the mean.")
    args = parser.parse_args()
    try:
        print(report(profile(read_log_history(args.run_dir), skip_first=not args.keep_first)))
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from e


if __name__ == "__main__":
    main()
