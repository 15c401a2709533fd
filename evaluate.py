"""Compare text-to-speech systems on a test list; plot a GRPO run's training curves and profile its steps.

`compare` synthesises the test list (the formats inference.py reads: plain text, JSONL, Seed-TTS-eval's
id|prompt_text|prompt_wav|text) with each model, with the same seed, and scores every clip: WER or CER and the NLL
of the text exactly as the reward computes them (the reward's ASR and normalisation), the reward itself,
duration and speaking rate, and with llasa.scores the speaker similarity to the voice prompt (resemblyzer's
cosine, not comparable with Seed-TTS-eval's WavLM SIM), DNSMOS and intonation (the F0 contour's movement and
roughness, llasa.prosody):

    python evaluate.py compare --test_list seedtts_eval/en/meta.lst \
        --models base=HKUSTAudio/Llasa-1B grpo=llasa-grpo-exp1/checkpoint-500 \
        --codec_id HKUSTAudio/xcodec2 --reward_config reward_models/wer_nll.json \
        --output_dir eval/grpo_vs_base --seed 0 --batch_size 8

Existing audio (<dir>/<id>.wav, from any system) is scored the same way, alone or beside models:

    python evaluate.py compare --test_list seedtts_eval/en/meta.lst --audio_dir other=outputs/other_tts \
        --models grpo=llasa-grpo-exp1/checkpoint-500 --reward_config reward_models/wer_nll.json --output_dir eval/vs

Seed-TTS-eval's protocol (Whisper-large-v3 for en, Paraformer-zh through FunASR for zh, `pip install funasr
modelscope`; SIM from a WavLM speaker-verification model), with the codec's resynthesis of the ground-truth
recordings as a ceiling and the published table layout (mean WER or CER in percent, mean SIM) in summary.md:

    python evaluate.py compare --protocol seed-tts-eval --language en --test_list seedtts_eval/en/meta.lst \
        --models base=HKUSTAudio/Llasa-1B grpo=llasa-grpo-exp1/checkpoint-500 --resynthesis \
        --codec_id HKUSTAudio/xcodec2 --speech_scores speaker_similarity --output_dir eval/seed_tts_en

The output folder gets audio/<model>/<id>.wav, clips.jsonl (one record per system and clip), summary.json and
summary.md (mean and median of each metric per system, with the difference from the baseline: the first system
unless --baseline) and comparison.png (per-clip error rate and duration distributions). Means are over each system's
scored clips; clips a system did not produce are counted as missing. Every model path is checked before the first
loads; a model whose synthesis finished earlier with the same settings (audio/<model>/synthesis.json) is kept, not
synthesised again.

`curves` plots the reward, each reward function's mean and own metrics, the KL and the completion length per step
(raw and smoothed) from a run's trainer_state.json (the run folder's, else its latest checkpoint-N's):

    python evaluate.py curves --run_dir llasa-grpo-exp1

With --summary, one figure of the run instead: its reward beside where the step time went (<run_dir>/summary.png).

`profile` prints where a run's optimizer step time went (generation, reward, reference log-probs, policy update),
from the profiling timings train.py logs:

    python evaluate.py profile --run_dir outputs/demo/grpo

`measure` prints the raw speech measures of audio files (seconds, intonation movement and roughness, speaker cosine
with a reference voice, DNSMOS), to choose the speech scorers' ranges for a dataset:

    python evaluate.py measure --audio tests/data/fox_en_us.wav tests/data/fox_en_f3.wav \
        --reference tests/data/rainbow_en_us.wav

Every command takes `--config file.yaml` (its flags as YAML keys) and `--help`.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from llasa.cli import ScriptParser, parse_command, reported_errors
from llasa.evaluation.curves import EMA_WEIGHT, plot_curves, plot_summary
from llasa.evaluation.profiling import profile_report, step_profile
from llasa.evaluation.run_log import read_log_history

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurvesArguments:
    run_dir: str = field(metadata={"help": "The run's --output_dir."})
    output: str | None = field(
        default=None, metadata={"help": "PNG path (default: <run_dir>/training_curves.png, or summary.png)."}
    )
    summary: bool = field(
        default=False,
        metadata={
            "help": "One figure instead: the reward beside where the step time went (default output "
            "<run_dir>/summary.png)."
        },
    )
    smoothing: float = field(default=EMA_WEIGHT, metadata={"help": "EMA weight in [0, 1)."})

    def __post_init__(self):
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"--smoothing must be in [0, 1), got {self.smoothing}.")


@dataclass(frozen=True)
class ProfileArguments:
    run_dir: str = field(metadata={"help": "The run's --output_dir (or one of its checkpoints)."})
    keep_first: bool = field(default=False, metadata={"help": "Keep the first (warm-up) step in the mean."})


@dataclass(frozen=True)
class MeasureArguments:
    audio: list[str] = field(metadata={"help": "Audio files to measure."})
    reference: str | None = field(
        default=None, metadata={"help": "Reference voice for the speaker similarity (omit to skip it)."}
    )
    device: str = field(default="auto", metadata={"help": "Torch device of the speaker encoder."})


def compare_parser() -> ScriptParser:
    # Imported here: the models' modules (torch, transformers) load for compare only, not for the other commands.
    from llasa.evaluation.compare import CompareOptions
    from llasa.synthesis import ModelOptions, SamplingOptions

    parser = ScriptParser((CompareOptions, SamplingOptions, ModelOptions))
    parser.set_defaults(seed=0)  # every model samples from the same seed
    return parser


COMMANDS = {
    "compare": ("synthesise and score a test list with several systems", compare_parser),
    "curves": ("plot a training run's reward, KL and length curves", lambda: ScriptParser(CurvesArguments)),
    "profile": (
        "where a training run's step time went (generation, reward, ...)",
        lambda: ScriptParser(ProfileArguments),
    ),
    "measure": (
        "raw speech measures of audio files (seconds, intonation movement and roughness, speaker cosine, DNSMOS)",
        lambda: ScriptParser(MeasureArguments),
    ),
}


def parse_args(argv=None) -> tuple[str, tuple]:
    """(command, its option dataclasses)."""
    return parse_command(COMMANDS, argv, "evaluate.py", __doc__.split("\n\n")[0])


def run_command(command: str, options: tuple) -> None:
    if command == "compare":
        from llasa.evaluation.compare import compare

        compare(*options)
        print((Path(options[0].output_dir) / "summary.md").read_text(encoding="utf-8"))
    elif command == "profile":
        [arguments] = options
        print(profile_report(step_profile(read_log_history(arguments.run_dir), skip_first=not arguments.keep_first)))
    elif command == "measure":
        from llasa.scores import measure_files

        [arguments] = options
        print("\n".join(measure_files(arguments.audio, arguments.reference, arguments.device)))
    else:
        [arguments] = options
        if arguments.summary:
            path = plot_summary(arguments.run_dir, arguments.output, arguments.smoothing)
            logger.info("Wrote %s (reward and step time).", path)
        else:
            path, keys = plot_curves(arguments.run_dir, arguments.output, arguments.smoothing)
            logger.info("Wrote %s (%s).", path, ", ".join(keys))


def main(argv=None):
    command, options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with reported_errors():  # a wrong --test_list, reward config or model; not a run folder; a path taken
        run_command(command, options)


if __name__ == "__main__":
    main()
