"""Where a run's optimizer step time went: the profiling timings train.py logs (TRL's `profiling/Time taken: ...`,
seconds per optimizer step), as generation, reward, reference log-probs and policy update. The step time runs from
the start of an optimizer step to its end (logging, saving and sample clips come after it)."""

from dataclasses import dataclass

PROFILE_PREFIX = "profiling/Time taken: "
STEP_TIMING = "step"  # train.py's wall time of an optimizer step: the four phases add up to it
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


def _timing(entry: dict, suffixes) -> float:
    suffixes = (suffixes,) if isinstance(suffixes, str) else suffixes
    return sum(value for key, value in entry.items() if key.startswith(PROFILE_PREFIX) and key.endswith(suffixes))


def step_profile(log_history: list[dict], skip_first: bool = True) -> Profile:
    """Average the per-step timings over the logged windows, weighted by the steps each window covers."""
    windows, previous = [], 0
    for entry in log_history:
        if PROFILE_PREFIX + STEP_TIMING in entry:
            windows.append((entry, entry["step"] - previous))
            previous = entry["step"]
    if not windows:
        raise ValueError("The log history has no profiling timings: was the run made with train.py?")
    if skip_first and len(windows) > 1:
        windows = windows[1:]
    steps = sum(n for _, n in windows)

    def mean(get) -> float:
        return sum(get(entry) * n for entry, n in windows) / steps

    step = mean(lambda e: e[PROFILE_PREFIX + STEP_TIMING])
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


def profile_report(result: Profile) -> str:
    lines = [f"{result.step:.2f} s per optimizer step (mean of {result.steps} steps)"]
    for name, seconds in result.rows():
        lines.append(f"  {name:<34} {seconds:7.2f} s  {100 * seconds / result.step:5.1f}%")
    return "\n".join(lines)
