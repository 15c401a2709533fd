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
"""

import argparse
import json
import logging
from pathlib import Path

from llasa.cli import add_flag, non_negative_float, positive_int, reported_errors
from llasa.listening.clips import PAIR_BY, find_clips, identical_notes, pair_clips, parse_system
from llasa.listening.export import EXPORT_FORMATS
from llasa.listening.judge import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS
from llasa.listening.store import KINDS, PreferenceStore
from llasa.outputs import check_replaceable, claim, write_text

logger = logging.getLogger(__name__)

RESULT_FILES = ("results.json", "results.md", "results.png")


def system_folder(value: str) -> tuple[str, Path]:
    try:
        return parse_system(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def open_store(db, systems: list[tuple[str, Path]] | None, pair_by: str = "auto") -> PreferenceStore:
    """The store of --db, with the --pairs folders' clips registered when given; they are found and paired before
    the file is created, so that a wrong folder leaves no empty store behind. Without folders the store must exist.
    """
    if not systems:
        return PreferenceStore(db, create=False)
    names = [name for name, _ in systems]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"System names must differ; repeated: {', '.join(repeated)}.")
    clips = {name: find_clips(name, folder) for name, folder in systems}
    for name, found in clips.items():
        if not found:
            raise ValueError(f"The folder of {name!r} holds no audio file (.wav, .flac, .mp3, .ogg).")
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


def command_serve(args) -> None:
    from llasa.listening.server import serve

    store = open_store(args.db, args.systems, args.pair_by)
    if store.pair_count() == 0:
        raise ValueError(f"{args.db} holds no pair to rate: name the systems' folders with --pairs NAME=DIR ...")
    query = f"?token={args.token}" if args.token else ""
    print(f"Listening test on http://{args.host}:{args.port}/{query} ({store.pair_count()} pairs, Ctrl+C stops)")
    serve(store, host=args.host, port=args.port, token=args.token)


def command_results(args) -> None:
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


def command_export(args) -> None:
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


def export_preferences(args, judgments: list[dict]) -> None:
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


def command_ai_label(args) -> None:
    if args.judge is not None:
        judge_with_audio_llm(args)
        return
    from llasa.asr import WHISPER_SAMPLE_RATE
    from llasa.audio import load_audio
    from llasa.listening.labeling import label_pairs, machine_rater
    from llasa.rewards import check_reward_config, load_reward

    config = check_reward_config(args.reward_config, device=args.device)  # before the store is created
    store = open_store(args.db, args.systems, args.pair_by)
    reward = load_reward(config)
    reward.load_models(codec=False)  # clips are audio already: no codec

    def score(waveforms, texts):
        if any(not text for text in texts):
            raise ValueError("The reward needs each clip's text: pair clips whose folders say their texts.")
        return [clip.reward for clip in reward.score_audio(waveforms, texts)]

    rater = machine_rater(args.rater or Path(args.reward_config).stem)
    done = label_pairs(store, score, rater, lambda path: load_audio(path, WHISPER_SAMPLE_RATE), margin=args.margin)
    print(
        f"{rater}: {done.new} new judgments, {done.already} pairs judged before, {done.unscored} left unlabelled "
        f"(a clip could not be scored); store: {store.path}"
    )


def judge_with_audio_llm(args) -> None:
    """Both orders of every pair judged by an audio-language model, as machine judgments with its reasons."""
    from llasa.audio import load_audio
    from llasa.listening.judge import DEFAULT_RUBRIC, check_judge_model, judge_pairs, load_judge, read_rubric

    check_judge_model(args.judge)
    rubric = DEFAULT_RUBRIC if args.rubric is None else read_rubric(args.rubric)
    store = open_store(args.db, args.systems, args.pair_by)
    if store.pair_count() == 0:
        raise ValueError(f"{args.db} holds no pair to judge: name the systems' folders with --pairs NAME=DIR ...")
    judge = load_judge(args.judge, args.device or "auto", args.dtype, args.batch_size, args.max_new_tokens)
    done = judge_pairs(store, judge, lambda path: load_audio(path, judge.sample_rate), args.rater, rubric)
    print(
        f"{done.rater}: {done.new} new judgments ({done.position_flips} judged differently in the two orders, "
        f"stored as 'same'), {done.already} pairs judged before, {done.malformed} left unlabelled for a malformed "
        f"answer, {done.unreadable} for an unreadable clip; store: {store.path}"
    )


def command_train_reward(args) -> None:
    from llasa.audio import load_audio
    from llasa.listening.preference import (
        CONFIG_NAME,
        SAMPLE_RATE,
        WEIGHTS_NAME,
        FeatureConfig,
        TrainingOptions,
        comparisons_from_judgments,
        train_preference_model,
    )

    model_files = [Path(args.output_dir) / name for name in (CONFIG_NAME, WEIGHTS_NAME)]
    check_replaceable(model_files, "--output_dir")
    judgments = PreferenceStore(args.db, create=False).judgments(tuple(args.kinds))
    options = TrainingOptions(hidden=args.hidden, steps=args.steps, held_out=args.held_out, seed=args.seed)
    model = train_preference_model(
        comparisons_from_judgments(judgments),
        lambda path: load_audio(path, SAMPLE_RATE),
        FeatureConfig(embedding=args.embedding),
        options,
    )
    claim(model_files, "--output_dir")
    model.save(args.output_dir)
    print(json.dumps(model.metrics, indent=2))
    logger.info("Saved the preference model to %s", args.output_dir)


def add_systems(parser, required: bool) -> None:
    add_flag(
        parser,
        "systems",
        "pairs",
        nargs="+",
        type=system_folder,
        required=required,
        metavar="NAME=DIR",
        help="each system's folder of clips; clips of the same text (else file name) across systems are paired",
    )
    add_flag(parser, "pair_by", choices=PAIR_BY, default="auto", help="(default: auto: text when known, else id)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    pairs = commands.add_parser("pairs", help="register the systems' clips and their pairs in the store")
    add_systems(pairs, required=True)
    pairs.add_argument("--db", required=True, help="the SQLite store (created if missing)")

    serve = commands.add_parser("serve", help="the A/B listening page")
    add_systems(serve, required=False)
    serve.add_argument("--db", required=True, help="the SQLite store (created if missing)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine)")
    serve.add_argument("--port", type=positive_int, default=8000, help="(default: 8000)")
    serve.add_argument("--token", help="access token every request must carry (share the printed link with raters)")

    results = commands.add_parser("results", help="win rates, Bradley-Terry strengths, agreement, table and plot")
    results.add_argument("--db", required=True)
    add_flag(results, "output_dir", required=True, help="where results.md, results.json and results.png go")
    add_flag(results, "include_machine", action="store_true", help="count ai-label's judgments too")
    results.add_argument("--bootstrap", type=positive_int, default=1000, help="resamples (default: 1000)")
    results.add_argument("--seed", type=int, default=0)

    export = commands.add_parser("export", help="judgments to JSONL and/or a datasets dataset")
    export.add_argument("--db", required=True)
    export.add_argument("--output", help="JSONL file to write")
    add_flag(export, "dataset_dir", help="folder for the datasets dataset (save_to_disk)")
    export.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="(default: both)")
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="judgments",
        help="judgments: one record per judgment; dpo: one preference pair per decided pair (prompt, chosen, "
        "rejected speech tokens) for train_dpo.py (default: judgments)",
    )
    add_flag(export, "codec_id", help="dpo: XCodec2 checkpoint that encodes clips written without their codes")
    export.add_argument("--device", default="auto", help="dpo: the codec's device (default: auto)")

    label = commands.add_parser(
        "ai-label", help="judge pairs with an audio-language model or a reward config, as machine judgments"
    )
    add_systems(label, required=False)
    label.add_argument("--db", required=True)
    judge = label.add_mutually_exclusive_group(required=True)
    judge.add_argument(
        "--judge",
        help="audio-language model (hub id or folder, e.g. Qwen/Qwen2-Audio-7B-Instruct) that compares "
        "each pair in both orders on a rubric",
    )
    add_flag(judge, "reward_config", help="the reward config whose score decides")
    label.add_argument("--rater", help="machine rater name (default: ai:<model name> or ai:<config file stem>)")
    label.add_argument(
        "--margin", type=non_negative_float, default=0.0, help="reward: score difference judged 'same' (default: 0)"
    )
    label.add_argument("--device", help="the judge's or reward's device (default: auto / the config's)")
    label.add_argument(
        "--rubric",
        help="judge: a file of criteria, one per line (default: prosody, pronunciation, voice consistency, artefacts)",
    )
    label.add_argument("--dtype", default="auto", help="judge: auto, float32, bfloat16 or float16 (default: auto)")
    add_flag(
        label,
        "batch_size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"judge: answers generated at once (default: {DEFAULT_BATCH_SIZE})",
    )
    add_flag(
        label,
        "max_new_tokens",
        type=positive_int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"judge: longest answer in tokens (default: {DEFAULT_MAX_NEW_TOKENS})",
    )

    train = commands.add_parser("train-reward", help="train the preference model on the stored judgments")
    train.add_argument("--db", required=True)
    add_flag(train, "output_dir", required=True, help="folder for config.json + model.safetensors")
    train.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="(default: both)")
    train.add_argument("--embedding", choices=("resemblyzer", "none"), default="resemblyzer")
    train.add_argument("--hidden", type=int, default=0, help="hidden width of the head (0: linear; default)")
    train.add_argument("--steps", type=positive_int, default=500)
    add_flag(train, "held_out", type=float, default=0.2, help="share of texts held out to measure accuracy")
    train.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    if args.command == "export" and not (args.output or args.dataset_dir):
        export.error("Name at least one output: --output FILE.jsonl and/or --dataset_dir DIR.")
    if args.command == "ai-label" and args.rubric is not None and args.judge is None:
        label.error("--rubric is the audio-language judge's (--judge): a reward config scores by its components.")
    return args


COMMANDS = {
    "pairs": lambda args: open_store(args.db, args.systems, args.pair_by),
    "serve": command_serve,
    "results": command_results,
    "export": command_export,
    "ai-label": command_ai_label,
    "train-reward": command_train_reward,
}


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with reported_errors():  # an empty store, no clips, an output path taken
        COMMANDS[args.command](args)


if __name__ == "__main__":
    main()
