"""The learning check: GRPO with this project's trainer, prompts, masks and speech-only bias moves a policy toward
higher reward, and a control that cannot learn does not.

The policy is the tiny Llasa-shaped model of testing/tiny_models.py (Llasa's tokenizer layout, 65,536 speech tokens,
two layers) with END made likely enough for completions to end at varied lengths, as a pretrained Llasa's do. train.py
trains it on the CPU, speech-only sampling on and cut completions masked, on the reward config's "duration" component
heard through the tiny codec: a clip within half to twice its row's duration scores 1, a longer one less. The policy
can only raise that score by ending sooner. Runs, all started together (one thread each):

- full: full fine-tuning;
- lora: LoRA adapters on every linear layer (r 8), at a tenth of the learning rate (at the full run's rate its Adam
  steps, each moving every adapter weight by the rate, throw END's chance away within 15 steps, and then every
  completion is cut and masked for good);
- per_component: one TRL reward per component, duration (0.8) and DNSMOS quality (0.2, on clips from 0.1 s),
  normalised per group (GDPO);
- control: the duration reward at weight -1, the advantage's sign flipped: its duration score must not rise.

The figures are the duration component's mean over each step's 8 completions (TRL's rewards/duration/mean),
averaged over the first and the last 5 steps; --plot draws the curves.

    python -m benchmarks.learning_check --plot docs/learning_check.png     # 4 runs x 20 steps
    python -m benchmarks.learning_check --runs full --steps 10              # the suite's short version
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
END_PROBABILITY = 0.05  # per step once END may come: ~20 tokens past the minimum on average, at temperature 1
# Short texts and their durations: 0.2 s = 10 speech tokens, END allowed after 5; the policy starts near 25 tokens.
ROWS = [
    {"text": "Good morning.", "duration": 0.2},
    {"text": "Thank you.", "duration": 0.2},
    {"text": "See you soon.", "duration": 0.2},
    {"text": "Well done.", "duration": 0.2},
]
COMPLETION_TOKENS = 40  # four times the expected length: the few that reach it are cut and masked
WINDOW = 5  # steps averaged at each end of the curve
RISE = 0.1  # the smallest rise of the duration score counted as learning
DEFAULT_LEARNING_RATE = 1e-2


@dataclass(frozen=True)
class Run:
    name: str
    components: dict  # the reward config's components
    flags: tuple[str, ...] = ()
    learns: bool = True  # expected to raise the duration score
    learning_rate_factor: float = 1.0


# Within half to twice the row's duration scores 1, longer less: every length the policy can reach from the minimum up
# is fine except a long one, so ending sooner always helps and the best is reachable (no optimum to overshoot).
DURATION = {"duration": {"weight": 1.0, "tolerance": 1.0, "falloff": 0.25}}
RUNS = {
    run.name: run
    for run in (
        Run("full", DURATION),
        Run(
            "lora",
            DURATION,
            ("--use_peft", "--lora_r", "8", "--lora_alpha", "16", "--lora_target_modules", "all-linear"),
            learning_rate_factor=0.1,
        ),
        Run(
            "per_component",
            {
                "duration": {**DURATION["duration"], "weight": 0.8},
                "quality": {"weight": 0.2, "device": "cpu", "min_seconds": 0.1},
            },
            ("--multi_objective_aggregation", "normalize_then_sum"),
        ),
        Run("control", DURATION, ("--reward_weights", "-1.0"), learns=False),
    )
}


def build_inputs(work_dir: Path) -> tuple[Path, Path, Path]:
    """The END-likely tiny policy, the tiny codec and the dataset (JSONL)."""
    from testing.tiny_models import build_tiny_llasa, build_tiny_xcodec2

    policy = build_tiny_llasa(work_dir / "llasa", end_probability=END_PROBABILITY)
    codec = build_tiny_xcodec2(work_dir / "codec")
    dataset = work_dir / "dataset.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return policy, codec, dataset


def write_reward_config(path: Path, run: Run, codec: Path, gpu: bool) -> Path:
    config = {
        "name": "duration",
        "codec_id": str(codec),
        "per_component": len(run.components) > 1,
        "components": run.components,
        "vad": False,  # the random policy's audio is noise: silero-vad would score every clip 0 before the duration
        "device": "auto" if gpu else "cpu",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def train_flags(
    policy: Path, dataset: Path, reward: Path, output_dir: Path, steps: int, learning_rate: float, gpu: bool
) -> list:
    """train.py's defaults (speech-only sampling, cut completions masked) in float32, without the KL term, sampling
    at temperature 1 without top-k: the tiny policy's speech logits are flat, and a top-k cut would keep END alone."""
    return [
        *("--model_name_or_path", str(policy), "--dataset", str(dataset), "--reward_config", str(reward)),
        *("--output_dir", str(output_dir), *(() if gpu else ("--use_cpu",)), "--bf16", "false"),
        *("--gradient_checkpointing", "false"),
        *("--num_generations", "8", "--per_device_train_batch_size", "8", "--max_steps", str(steps)),
        *("--max_completion_length", str(COMPLETION_TOKENS), "--temperature", "1.0", "--top_k", "0"),
        *("--beta", "0", "--learning_rate", str(learning_rate), "--lr_scheduler_type", "constant"),
        *("--logging_steps", "1", "--save_strategy", "no", "--sample_every_steps", "0", "--report_to", "none"),
        *("--log_completions", "false", "--disable_tqdm", "true", "--seed", "0"),
    ]


def start_training(
    run: Run, inputs: tuple[Path, Path, Path], work_dir: Path, steps: int, learning_rate: float, gpu: bool
) -> subprocess.Popen:
    """One train.py run in its own process, as a user runs it."""
    policy, codec, dataset = inputs
    reward = write_reward_config(work_dir / f"{run.name}.json", run, codec, gpu)
    learning_rate *= run.learning_rate_factor
    flags = [*train_flags(policy, dataset, reward, work_dir / run.name, steps, learning_rate, gpu), *run.flags]
    # On the CPU, one thread per run: the fastest for a tiny model, and the same completions on any machine.
    env = os.environ if gpu else {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "train.py"), *flags]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish_training(run: Run, process: subprocess.Popen, work_dir: Path) -> list[dict]:
    """Wait for the run; its log history."""
    from llasa.evaluation.run_log import read_log_history

    _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"train.py failed on the {run.name} run ({process.returncode}):\n{stderr[-4000:]}")
    return read_log_history(work_dir / run.name)


@dataclass(frozen=True)
class Curve:
    run: Run
    scores: list[float]  # the duration component's mean, per step
    lengths: list[float]  # mean completion length (tokens), per step
    grad_norms: list[float]

    @property
    def first(self) -> float:
        return sum(self.scores[:WINDOW]) / len(self.scores[:WINDOW])

    @property
    def last(self) -> float:
        return sum(self.scores[-WINDOW:]) / len(self.scores[-WINDOW:])

    @property
    def rose(self) -> bool:
        return self.last - self.first >= RISE

    def report(self) -> str:
        verdict = "rises" if self.rose else "does not rise"
        expected = "as expected" if self.rose == self.run.learns else "NOT AS EXPECTED"
        n = min(WINDOW, len(self.scores))
        moved = sum(norm > 0 for norm in self.grad_norms)
        return (
            f"{self.run.name:14s} duration score {self.first:.3f} (first {n} steps) -> {self.last:.3f} (last {n}); "
            f"length {self.lengths[0]:.0f} -> {self.lengths[-1]:.0f} tokens; {verdict} ({expected}); "
            f"steps with a gradient (norm > 0): {moved}/{len(self.grad_norms)}"
        )


def curve(run: Run, log_history: list[dict]) -> Curve:
    steps = [entry for entry in log_history if "rewards/duration/mean" in entry]
    return Curve(
        run,
        [entry["rewards/duration/mean"] for entry in steps],
        [entry["completions/mean_length"] for entry in steps],
        [entry["grad_norm"] for entry in steps],
    )


def plot(curves: list[Curve], path: Path) -> None:
    from llasa.plotting import pyplot

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for c in curves:
        axis.plot(range(1, len(c.scores) + 1), c.scores, label=c.run.name, linestyle="-" if c.run.learns else "--")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("duration score (mean of 8 completions)")
    axis.set_title("GRPO on a tiny Llasa-shaped policy, CPU (benchmarks/learning_check.py)", fontsize=10)
    axis.set_ylim(0, 1.05)
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def check(names: list[str], steps: int, learning_rate: float, work_dir: Path, gpu: bool = False, report=print):
    """Build the inputs under `work_dir` and train the runs (together on the CPU, one after another on a GPU); the
    curves, each reported as its run ends."""
    work_dir.mkdir(parents=True, exist_ok=True)
    inputs = build_inputs(work_dir)
    runs = [RUNS[name] for name in names]
    curves = []
    if gpu:
        for run in runs:
            process = start_training(run, inputs, work_dir, steps, learning_rate, gpu)
            curves.append(curve(run, finish_training(run, process, work_dir)))
            report(curves[-1].report())
        return curves
    processes = [start_training(run, inputs, work_dir, steps, learning_rate, gpu) for run in runs]
    for run, process in zip(runs, processes, strict=True):
        curves.append(curve(run, finish_training(run, process, work_dir)))
        report(curves[-1].report())
    return curves


def first_steps(work_dir: Path, steps: int, gpu: bool) -> list[str]:
    """The full run's report and per-step scores, for the GPU check (nothing when `steps` is 0)."""
    if steps == 0:
        return []
    [c] = check(["full"], steps, DEFAULT_LEARNING_RATE, work_dir, gpu, report=lambda line: None)
    return [f"learning check: {c.report()}", "  duration score per step: " + ", ".join(f"{v:.2f}" for v in c.scores)]


@dataclass(frozen=True)
class Arguments:
    runs: list[str] = field(
        default_factory=lambda: list(RUNS), metadata={"help": "The runs to train.", "choices": list(RUNS)}
    )
    steps: int = field(default=20, metadata={"help": "Optimizer steps per run."})
    learning_rate: float = field(default=DEFAULT_LEARNING_RATE, metadata={"help": "Peak learning rate."})
    gpu: bool = field(default=False, metadata={"help": "Train on the GPU (default: the CPU)."})
    plot: str | None = field(default=None, metadata={"help": "Write the curves to this PNG."})
    work_dir: str | None = field(default=None, metadata={"help": "Where to write the models (default: temp)."})

    def __post_init__(self):
        if self.steps < 2 * WINDOW:
            raise ValueError(f"--steps must be at least {2 * WINDOW}: the first and last {WINDOW} steps are compared.")


def main(argv=None) -> None:
    from llasa.cli import ScriptParser

    [args] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)
    with tempfile.TemporaryDirectory(prefix="learning_check_") as temporary:
        work_dir = Path(args.work_dir or temporary)
        curves = check(
            args.runs, args.steps, args.learning_rate, work_dir, args.gpu, report=lambda x: print(x, flush=True)
        )
    if args.plot is not None:
        plot(curves, Path(args.plot))
        print(f"curves: {args.plot}")
    if any(c.rose != c.run.learns for c in curves):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
