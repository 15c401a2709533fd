"""Listening tests and human feedback: A/B preference pages over the project's outputs, their results, and a learned
preference reward.

Rate two systems' clips in the browser (folders of <id>.wav: evaluate.py's audio/<system>/, a training run's
samples/step-N/, inference.py's outputs and best-of-N folders; clips are paired by text, else by file name):

    python listen.py serve --pairs base=eval/grpo_vs_base/audio/base grpo=eval/grpo_vs_base/audio/grpo \
        --db ratings.sqlite            # then open http://127.0.0.1:8000 ; add --host 0.0.0.0 --token SECRET for others

Win rates (Bradley-Terry, bootstrap intervals), rater agreement, results.md and results.png:

    python listen.py results --db ratings.sqlite --output_dir listening_results

Judgments as JSONL and a `datasets` dataset; machine judgments by an audio-language model (both orders, with its
reasons) or by a reward config, to start without raters; a preference model trained on the judgments, usable as the
"preference" reward component; the judgments as DPO pairs for train_dpo.py:

    python listen.py export --db ratings.sqlite --output ratings.jsonl --dataset_dir ratings_dataset
    python listen.py ai-label --pairs base=... grpo=... --db ratings.sqlite --judge Qwen/Qwen2-Audio-7B-Instruct
    python listen.py ai-label --pairs base=... grpo=... --db ratings.sqlite --reward_config reward_models/wer_nll.json
    python listen.py train-reward --db ratings.sqlite --output_dir prefs_model
    python listen.py export --db ratings.sqlite --format dpo --dataset_dir prefs_round1

A prosody naturalness reward from your own recordings, no raters needed (each recording preferred to prosody
failures made from it; a folder per speaker, some speakers held out), saved in the same format, scored by the
"preference" component:

    python listen.py train-prosody --recordings my_recordings --output_dir prosody_model
    python listen.py train-prosody --dataset tokenized_dataset --output_dir prosody_model   # create_dataset.py's output

Every command takes `--config file.yaml` (its flags as YAML keys) and `--help`.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llasa.alterations import FAILURES
from llasa.audio import PLAYABLE_AUDIO_TYPES
from llasa.checks import check_distinct_systems
from llasa.cli import ScriptParser, parse_command, reported_errors
from llasa.listening.clips import PAIR_BY, find_clips, identical_notes, pair_clips, parse_system
from llasa.listening.export import EXPORT_FORMATS
from llasa.listening.judge import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS
from llasa.listening.store import KINDS, PreferenceStore
from llasa.outputs import check_replaceable, claim, write_text

logger = logging.getLogger(__name__)

RESULT_FILES = ("results.json", "results.md", "results.png")


@dataclass(frozen=True)
class Store:
    db: str = field(metadata={"help": "The SQLite store of pairs and judgments."})


@dataclass(frozen=True)
class Systems(Store):
    systems: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Each system's folder of clips; clips of the same text (else file name) across systems are paired.",
            "aliases": ["--pairs"],
            "metavar": "NAME=DIR",
        },
    )
    pair_by: Literal[PAIR_BY] = field(default="auto", metadata={"help": "auto: by text when known, else by id."})

    def __post_init__(self):
        for value in self.systems:  # names and folders checked when parsed
            parse_system(value)

    @property
    def folders(self) -> list[tuple[str, Path]]:
        return [parse_system(value) for value in self.systems]


@dataclass(frozen=True)
class ServeArguments(Systems):
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on (127.0.0.1: this machine)."})
    port: int = field(default=8000, metadata={"help": "Port of the page."})
    token: str | None = field(
        default=None, metadata={"help": "Access token every request must carry (share the printed link with raters)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.port < 1:
            raise ValueError(f"--port must be >= 1, got {self.port}.")


@dataclass(frozen=True)
class ResultsArguments(Store):
    output_dir: str = field(metadata={"help": "Where results.md, results.json and results.png go."})
    include_machine: bool = field(default=False, metadata={"help": "Count ai-label's judgments too."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples."})
    seed: int = field(default=0, metadata={"help": "Seed of the resampling."})

    def __post_init__(self):
        if self.bootstrap < 1:
            raise ValueError(f"--bootstrap must be >= 1, got {self.bootstrap}.")


@dataclass(frozen=True)
class ExportArguments(Store):
    output: str | None = field(default=None, metadata={"help": "JSONL file to write."})
    dataset_dir: str | None = field(default=None, metadata={"help": "Folder for the datasets dataset (save_to_disk)."})
    kinds: list[str] = field(
        default_factory=lambda: list(KINDS), metadata={"help": "Judgments to export.", "choices": KINDS}
    )
    format: Literal[EXPORT_FORMATS] = field(
        default="judgments",
        metadata={
            "help": "judgments: one record per judgment; dpo: one preference pair per decided pair (prompt, chosen, "
            "rejected speech tokens) for train_dpo.py."
        },
    )
    codec_id: str | None = field(
        default=None, metadata={"help": "dpo: XCodec2 checkpoint that encodes clips written without their codes."}
    )
    device: str = field(default="auto", metadata={"help": "dpo: the codec's device."})

    def __post_init__(self):
        if not (self.output or self.dataset_dir):
            raise ValueError("Name at least one output: --output FILE.jsonl and/or --dataset_dir DIR.")


@dataclass(frozen=True)
class LabelArguments(Systems):
    judge: str | None = field(
        default=None,
        metadata={
            "help": "Audio-language model (hub id or folder, e.g. Qwen/Qwen2-Audio-7B-Instruct) that compares each "
            "pair in both orders on a rubric (or --reward_config)."
        },
    )
    reward_config: str | None = field(
        default=None, metadata={"help": "The reward config whose score decides (or --judge)."}
    )
    rater: str | None = field(
        default=None, metadata={"help": "Machine rater name (default: ai:<model name> or ai:<config file stem>)."}
    )
    margin: float = field(default=0.0, metadata={"help": "Reward: score difference judged 'same'."})
    device: str | None = field(
        default=None, metadata={"help": "The judge's or reward's device (default: auto / the config's)."}
    )
    rubric: str | None = field(
        default=None,
        metadata={
            "help": "Judge: a file of criteria, one per line (default: prosody, pronunciation, voice consistency, "
            "artefacts)."
        },
    )
    dtype: str = field(default="auto", metadata={"help": "Judge: auto, float32, bfloat16 or float16."})
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata={"help": "Judge: answers generated at once."})
    max_new_tokens: int = field(default=DEFAULT_MAX_NEW_TOKENS, metadata={"help": "Judge: longest answer in tokens."})

    def __post_init__(self):
        super().__post_init__()
        if (self.judge is None) == (self.reward_config is None):
            raise ValueError(
                "ai-label needs one judge: --judge (an audio-language model) or --reward_config (a reward config "
                "whose score decides)."
            )
        if self.rubric is not None and self.judge is None:
            raise ValueError(
                "--rubric is the audio-language judge's (--judge): a reward config scores by its components."
            )
        if self.margin < 0:
            raise ValueError(f"--margin must be >= 0, got {self.margin}.")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError(
                f"--batch_size and --max_new_tokens must be >= 1, got {self.batch_size} and {self.max_new_tokens}."
            )


@dataclass(frozen=True)
class TrainRewardArguments(Store):
    output_dir: str = field(metadata={"help": "Folder for config.json + model.safetensors."})
    kinds: list[str] = field(
        default_factory=lambda: list(KINDS), metadata={"help": "Judgments to train on.", "choices": KINDS}
    )


@dataclass(frozen=True)
class TrainProsodyArguments:
    output_dir: str = field(metadata={"help": "Folder for config.json + model.safetensors."})
    recordings: str | None = field(
        default=None, metadata={"help": "Folder of recordings: DIR/<speaker>/*.wav, or DIR/<speaker>_*.wav."}
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Or a dataset: create_dataset.py's output (its kept audio, else its codes through --codec_id), "
            "a save_to_disk folder, hub id, audio folder or JSON/CSV/Parquet file."
        },
    )
    split: str = field(default="train", metadata={"help": "--dataset: its split."})
    speaker_column: str | None = field(
        default=None,
        metadata={"help": "--dataset: who speaks each row (default: detected; without one, texts are held out)."},
    )
    codec_id: str | None = field(
        default=None,  # the project's XCodec2 (llasa.codec.DEFAULT_CODEC_ID), set by the parser: torch loads lazily
        metadata={"help": "--dataset without audio: the XCodec2 that decodes its codes."},
    )
    device: str = field(default="auto", metadata={"help": "--dataset without audio: the codec's device."})
    failures: list[str] = field(
        default_factory=lambda: list(FAILURES),
        metadata={"help": "Prosody failures made from each recording.", "choices": list(FAILURES)},
    )

    def __post_init__(self):
        if (self.recordings is None) == (self.dataset is None):
            raise ValueError("train-prosody needs one source: --recordings (a folder) or --dataset (rows).")


def open_store(db, systems: list[tuple[str, Path]] | None, pair_by: str = "auto") -> PreferenceStore:
    """The store of --db, with the --pairs folders' clips registered when given; they are found and paired before
    the file is created, so that a wrong folder leaves no empty store behind. Without folders the store must exist.
    """
    if not systems:
        return PreferenceStore(db, create=False)
    names = [name for name, _ in systems]
    check_distinct_systems(names)
    clips = {name: find_clips(name, folder) for name, folder in systems}
    for name, found in clips.items():
        if not found:
            raise ValueError(f"The folder of {name!r} holds no audio file ({', '.join(PLAYABLE_AUDIO_TYPES)}).")
    pairing = pair_clips(clips, pair_by)
    if not pairing.pairs:
        raise ValueError(
            f"No clip of one system matches another's by {pairing.by}: give folders of the same test list "
            "(same <id>.wav names, or texts in clips.jsonl / samples.jsonl / <id>.json / metadata.csv)."
        )
    store = PreferenceStore(db)
    registered = store.register(pairing)
    logger.info(
        "Paired %d clips of %s by %s into %d pairs (%d new; %d pairs in %s). Unpaired clips: %d.",
        sum(len(found) for found in clips.values()),
        ", ".join(names),
        pairing.by,
        len(pairing.pairs),
        registered.new_pairs,
        registered.total_pairs,
        store.path,
        len(pairing.unpaired),
    )
    for note in identical_notes(pairing.pairs):  # a listener can only answer "same" to identical clips
        logger.warning("%s", note)
    return store


def command_pairs(args: "Systems") -> None:
    if not args.systems:
        raise ValueError("Name the systems' folders: --pairs NAME=DIR NAME=DIR ...")
    open_store(args.db, args.folders, args.pair_by)


def command_serve(args: "ServeArguments") -> None:
    from llasa.listening.server import serve

    store = open_store(args.db, args.folders, args.pair_by)
    if store.pair_count() == 0:
        raise ValueError(f"{args.db} holds no pair to rate: name the systems' folders with --pairs NAME=DIR ...")
    query = f"?token={args.token}" if args.token else ""
    print(f"Listening test on http://{args.host}:{args.port}/{query} ({store.pair_count()} pairs, Ctrl+C stops)")
    serve(store, host=args.host, port=args.port, token=args.token)


def command_results(args: "ResultsArguments") -> None:
    from llasa.listening.results import markdown_report, plot_results, summarize

    store = PreferenceStore(args.db, create=False)
    kinds = KINDS if args.include_machine else ("human",)
    summary = summarize(store.judgments(kinds), samples=args.bootstrap, seed=args.seed)
    output_dir = Path(args.output_dir)
    claim([output_dir / name for name in RESULT_FILES], "--output_dir")
    write_text(output_dir / "results.json", json.dumps(summary, indent=2) + "\n")
    report = markdown_report(summary, f"Listening test ({Path(args.db).name})")
    write_text(output_dir / "results.md", report)
    plot_results(summary, output_dir / "results.png")
    print(report)
    logger.info("Wrote results.json, results.md and results.png to %s", output_dir)


def command_export(args: "ExportArguments") -> None:
    from llasa.listening.export import export_records, write_dataset, write_jsonl

    for flag, path in (("--output", args.output), ("--dataset_dir", args.dataset_dir)):  # checked before writing
        if path:
            check_replaceable([path], flag)
    judgments = PreferenceStore(args.db, create=False).judgments(tuple(args.kinds))
    if not judgments:
        raise ValueError(
            f"{args.db} holds no {' or '.join(args.kinds)} judgment yet: nothing to export. Rate pairs with "
            "`listen.py serve` or `listen.py ai-label` first."
        )
    if args.format == "dpo":
        export_preferences(args, judgments)
        return
    records = export_records(judgments)
    if args.output:
        logger.info("Wrote %d judgments to %s", len(records), write_jsonl(records, args.output))
    if args.dataset_dir:
        logger.info("Saved %d judgments as a dataset in %s", len(records), write_dataset(records, args.dataset_dir))


def export_preferences(args: "ExportArguments", judgments: list[dict]) -> None:
    """The judgments as DPO rows (Llasa's prompt, the clips' speech tokens as chosen / rejected) for train_dpo.py."""
    from llasa.checks import check_codec
    from llasa.codec import load_codec
    from llasa.listening.dpo_data import codec_encoder, preference_rows
    from llasa.listening.export import write_dataset, write_jsonl

    encode = None
    if args.codec_id is not None:
        check_codec(args.codec_id)
        encode = codec_encoder(lambda: load_codec(args.codec_id, device=args.device))
    data = preference_rows(judgments, encode)
    if not data.rows:
        raise ValueError(f"No preference pair to export: {data.report()}. Judge more pairs first.")
    if args.output:
        write_jsonl(data.rows, args.output)
    if args.dataset_dir:
        write_dataset(data.rows, args.dataset_dir, judgments=False)
    print(f"{data.report()}; written to {' and '.join(p for p in (args.output, args.dataset_dir) if p)}")


def command_ai_label(args: "LabelArguments") -> None:
    if args.judge is not None:
        judge_with_audio_llm(args)
        return
    from llasa.audio import SAMPLE_RATE, load_audio
    from llasa.listening.labeling import label_pairs, machine_rater
    from llasa.rewards import check_reward_config, load_reward

    config = check_reward_config(args.reward_config, device=args.device)  # before the store is created
    store = open_store(args.db, args.folders, args.pair_by)
    reward = load_reward(config)
    reward.load_models(codec=False)  # clips are audio already: no codec

    def score(waveforms, texts):
        if any(not text for text in texts):
            raise ValueError("The reward needs each clip's text: pair clips whose folders say their texts.")
        return [clip.reward for clip in reward.score_audio(waveforms, texts)]

    rater = machine_rater(args.rater or Path(args.reward_config).stem)
    done = label_pairs(store, score, rater, lambda path: load_audio(path, SAMPLE_RATE), margin=args.margin)
    print(
        f"{rater}: {done.new} new judgments, {done.already} pairs judged before, {done.unscored} left unlabelled "
        f"(a clip could not be scored); store: {store.path}"
    )


def judge_with_audio_llm(args: "LabelArguments") -> None:
    """Both orders of every pair judged by an audio-language model, as machine judgments with its reasons."""
    from llasa.audio import load_audio
    from llasa.listening.judge import DEFAULT_RUBRIC, check_judge_model, judge_pairs, load_judge, read_rubric

    check_judge_model(args.judge)
    rubric = DEFAULT_RUBRIC if args.rubric is None else read_rubric(args.rubric)
    store = open_store(args.db, args.folders, args.pair_by)
    if store.pair_count() == 0:
        raise ValueError(f"{args.db} holds no pair to judge: name the systems' folders with --pairs NAME=DIR ...")
    judge = load_judge(args.judge, args.device or "auto", args.dtype, args.batch_size, args.max_new_tokens)
    done = judge_pairs(store, judge, lambda path: load_audio(path, judge.sample_rate), args.rater, rubric)
    print(
        f"{done.rater}: {done.new} new judgments ({done.position_flips} judged differently in the two orders, "
        f"stored as 'same'), {done.already} pairs judged before, {done.malformed} left unlabelled for a malformed "
        f"answer, {done.unreadable} for an unreadable clip; store: {store.path}"
    )


def command_train_reward(args: "TrainRewardArguments", options, features) -> None:
    """`options`: the preference model's TrainingOptions; `features`: its FeatureConfig."""
    from llasa.audio import SAMPLE_RATE, load_audio
    from llasa.listening.preference import (
        CONFIG_NAME,
        WEIGHTS_NAME,
        comparisons_from_judgments,
        train_preference_model,
    )

    model_files = [Path(args.output_dir) / name for name in (CONFIG_NAME, WEIGHTS_NAME)]
    check_replaceable(model_files, "--output_dir")
    judgments = PreferenceStore(args.db, create=False).judgments(tuple(args.kinds))
    model = train_preference_model(
        comparisons_from_judgments(judgments), lambda path: load_audio(path, SAMPLE_RATE), features, options
    )
    claim(model_files, "--output_dir")
    model.save(args.output_dir)
    print(json.dumps(model.metrics, indent=2))
    logger.info("Saved the preference model to %s", args.output_dir)


def command_train_prosody(args: "TrainProsodyArguments", options) -> None:
    """`options`: the naturalness model's TrainingOptions."""
    from llasa.listening.naturalness import dataset_recordings, find_recordings, load_file, train_naturalness_model
    from llasa.listening.preference import CONFIG_NAME, WEIGHTS_NAME

    model_files = [Path(args.output_dir) / name for name in (CONFIG_NAME, WEIGHTS_NAME)]
    check_replaceable(model_files, "--output_dir")
    if args.recordings is not None:
        recordings, load = find_recordings(args.recordings), load_file
    else:
        from llasa.codec import load_codec_once

        def decode(codes):  # loaded only for a dataset that holds no audio of its own
            return load_codec_once(args.codec_id, args.device).decode(codes)

        recordings, waveforms = dataset_recordings(args.dataset, args.split, args.speaker_column, decode)
        load = waveforms.__getitem__
    model = train_naturalness_model(recordings, args.failures, options, load=load)
    claim(model_files, "--output_dir")
    model.save(args.output_dir)
    print(json.dumps(model.metrics, indent=2))
    logger.info("Saved the prosody naturalness model to %s", args.output_dir)


def train_reward_parser() -> ScriptParser:
    from llasa.listening.preference import FeatureConfig, TrainingOptions  # torch: only for this command

    return ScriptParser((TrainRewardArguments, TrainingOptions, FeatureConfig))


def train_prosody_parser() -> ScriptParser:
    from llasa.codec import DEFAULT_CODEC_ID  # torch: only for this command
    from llasa.listening.preference import TrainingOptions

    parser = ScriptParser((TrainProsodyArguments, TrainingOptions))
    parser.set_defaults(held_out=0.25, codec_id=DEFAULT_CODEC_ID)  # held out: a share of the speakers
    return parser


PARSERS = {
    "pairs": ("register the systems' clips and their pairs in the store", lambda: ScriptParser(Systems)),
    "serve": ("the A/B listening page", lambda: ScriptParser(ServeArguments)),
    "results": (
        "win rates, Bradley-Terry strengths, agreement, table and plot",
        lambda: ScriptParser(ResultsArguments),
    ),
    "export": (
        "judgments to JSONL and/or a datasets dataset, or DPO pairs (--format dpo)",
        lambda: ScriptParser(ExportArguments),
    ),
    "ai-label": (
        "judge pairs with an audio-language model or a reward config, as machine judgments",
        lambda: ScriptParser(LabelArguments),
    ),
    "train-reward": ("train the preference model on the stored judgments", train_reward_parser),
    "train-prosody": (
        "train a prosody naturalness model on recordings against failures made from them",
        train_prosody_parser,
    ),
}


def parse_args(argv=None) -> tuple[str, tuple]:
    """(command, its option dataclasses)."""
    return parse_command(PARSERS, argv, "listen.py", __doc__.split("\n\n")[0])


COMMANDS = {
    "pairs": command_pairs,
    "serve": command_serve,
    "results": command_results,
    "export": command_export,
    "ai-label": command_ai_label,
    "train-reward": command_train_reward,
    "train-prosody": command_train_prosody,
}


def main(argv=None) -> None:
    command, options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with reported_errors():  # an empty store, no clips, an output path taken
        COMMANDS[command](*options)


if __name__ == "__main__":
    main()
