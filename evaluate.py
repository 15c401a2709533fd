"""Compare text-to-speech systems on a test list; plot a GRPO run's training curves and profile its steps.

`compare` synthesises the test list (the formats inference.py reads: plain text, JSONL, Seed-TTS-eval's
id|prompt_text|prompt_wav|text) with each model, with the same seed, and scores every clip: WER or CER and the NLL
of the text exactly as the reward computes them (the reward's ASR and normalisation), the reward itself,
duration and speaking rate, and with llasa.scores the speaker similarity to the voice prompt (resemblyzer's
cosine, not comparable with Seed-TTS-eval's WavLM SIM), DNSMOS and pitch spread:

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
"""

import argparse
import logging
import re
from pathlib import Path

from llasa.cli import add_flag, add_model_arguments, reported_errors, sampling_options
from llasa.evaluation import (
    EMA_WEIGHT,
    PROTOCOLS,
    RESYNTHESIS,
    SPEECH_SCORES,
    compare,
    plot_curves,
    plot_summary,
    profile_report,
    read_log_history,
    step_profile,
)
from llasa.synthesis import INPUT_FORMATS

logger = logging.getLogger(__name__)


def _name_and_path(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. base=HKUSTAudio/Llasa-1B), got {value!r}")
    if not re.fullmatch(r"[\w.+-]+", name):
        raise argparse.ArgumentTypeError(f"system name {name!r} must be letters, digits, '.', '+', '-' or '_'")
    return name, path


def add_compare_command(commands) -> argparse.ArgumentParser:
    comparison = commands.add_parser("compare", help="synthesise and score a test list with several systems")
    add_flag(comparison, "test_list", required=True, help="texts (inference.py's list formats)")
    add_flag(comparison, "input_format", default="auto", choices=INPUT_FORMATS, help="(default: auto)")
    add_flag(
        comparison, "models", nargs="+", type=_name_and_path, metavar="NAME=PATH", help="models to synthesise with"
    )
    add_flag(
        comparison,
        "audio_dir",
        nargs="+",
        type=_name_and_path,
        metavar="NAME=DIR",
        help="folders of <id>.wav to score",
    )
    add_flag(comparison, "baseline", help="the system the deltas are taken from (default: the first)")
    add_flag(
        comparison,
        "reward_config",
        default="reward_models/wer_nll.json",
        help="reward config whose ASR scores",
    )
    add_flag(
        comparison,
        "speech_scores",
        nargs="*",
        choices=SPEECH_SCORES,
        default=list(SPEECH_SCORES),
        help="speech measures to add, by reward component (default: all; none with an empty list)",
    )
    add_flag(comparison, "output_dir", required=True, help="where results and audio go")
    add_flag(
        comparison,
        "protocol",
        choices=PROTOCOLS,
        help="score as Seed-TTS-eval does (replaces --reward_config): Whisper-large-v3, or Paraformer-zh for zh; "
        "SIM from a WavLM speaker-verification model; its table layout in summary.md",
    )
    add_flag(comparison, "language", help="language of the test list, with --protocol (en, zh, ...)")
    add_flag(
        comparison, "sim_model", help="WavLMForXVector checkpoint of --protocol's SIM (default: wavlm-base-plus-sv)"
    )
    add_flag(
        comparison,
        "resynthesis",
        action="store_true",
        help=f"add a system {RESYNTHESIS!r}: each line's recording (a Seed-TTS-eval 5th field, else the voice "
        "prompt) encoded and decoded by --codec_id, the codec's ceiling",
    )
    add_model_arguments(comparison)
    comparison.set_defaults(seed=0)  # every model samples from the same seed
    return comparison


def check_compare_args(args: argparse.Namespace, comparison: argparse.ArgumentParser) -> None:
    """Contradictory or missing compare flags, refused before anything loads."""
    args.sampling = sampling_options(args, comparison)
    systems = [name for name, _ in (args.models or []) + (args.audio_dir or [])]
    systems += [RESYNTHESIS] if args.resynthesis else []
    if not systems:
        comparison.error("Name at least one system: --models NAME=PATH, --audio_dir NAME=DIR or --resynthesis.")
    if args.protocol is not None and args.language is None:
        comparison.error(f"--protocol {args.protocol} needs --language (en or zh for Seed-TTS-eval's test sets).")
    if args.protocol is None and (args.language is not None or args.sim_model is not None):
        comparison.error("--language and --sim_model go with --protocol; the reward config sets the language.")
    duplicates = sorted({name for name in systems if systems.count(name) > 1})
    if duplicates:
        comparison.error(f"System names must differ; repeated: {', '.join(duplicates)}.")
    missing = [path for _, path in args.audio_dir or [] if not Path(path).is_dir()]
    if missing:
        comparison.error(f"--audio_dir folder(s) not found: {', '.join(missing)}.")
    if args.baseline is not None and args.baseline not in systems:
        comparison.error(f"--baseline {args.baseline} is not one of the systems: {', '.join(systems)}.")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    comparison = add_compare_command(commands)

    curves = commands.add_parser("curves", help="plot a training run's reward, KL and length curves")
    add_flag(curves, "run_dir", required=True, help="the run's --output_dir")
    add_flag(curves, "output", help="PNG path (default: <run_dir>/training_curves.png, or summary.png)")
    add_flag(
        curves,
        "summary",
        action="store_true",
        help="one figure instead: the reward beside where the step time went (default output <run_dir>/summary.png)",
    )
    add_flag(curves, "smoothing", type=float, default=EMA_WEIGHT, help=f"EMA weight in [0, 1) (default: {EMA_WEIGHT})")

    profiling = commands.add_parser("profile", help="where a training run's step time went (generation, reward, ...)")
    add_flag(profiling, "run_dir", required=True, help="the run's --output_dir (or one of its checkpoints)")
    add_flag(profiling, "keep_first", action="store_true", help="keep the first (warm-up) step in the mean")

    args = parser.parse_args(argv)
    if args.command == "compare":
        check_compare_args(args, comparison)
    elif args.command == "curves" and not 0 <= args.smoothing < 1:
        curves.error(f"--smoothing must be in [0, 1), got {args.smoothing}.")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with reported_errors():  # a wrong --test_list, reward config or model; not a run folder; a path taken
        if args.command == "compare":
            compare(args)
            print((Path(args.output_dir) / "summary.md").read_text(encoding="utf-8"))
        elif args.command == "profile":
            print(profile_report(step_profile(read_log_history(args.run_dir), skip_first=not args.keep_first)))
        elif args.summary:
            logger.info("Wrote %s (reward and step time).", plot_summary(args.run_dir, args.output, args.smoothing))
        else:
            path, keys = plot_curves(args.run_dir, args.output, args.smoothing)
            logger.info("Wrote %s (%s).", path, ", ".join(keys))


if __name__ == "__main__":
    main()
