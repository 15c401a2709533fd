"""Command-line conventions the scripts share: flags spelled with underscores or dashes, validated numbers, JSON
Lines input, the synthesis flags of inference.py and evaluate.py, and how bad input ends a script."""

import argparse
import errno
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from llasa.format import MAX_CONTEXT_TOKENS, SAMPLING_TEMPERATURE, SAMPLING_TOP_K, SAMPLING_TOP_P


def add_flag(parser, name: str, *aliases: str, **kwargs) -> None:
    """A flag accepted as --max_length and --max-length (and likewise for each alias), stored under `name`."""
    spellings = dict.fromkeys(f"--{spelling}" for n in (name, *aliases) for spelling in (n, n.replace("_", "-")))
    parser.add_argument(*spellings, dest=name, **kwargs)


USAGE_ERROR_STATUS = 2  # argparse's exit status for bad usage; every script's for bad input
# Errors the library raises on bad input: a wrong path, model or file, a bad value; a model or file that fails to load.
BAD_INPUT_ERRORS = (OSError, ValueError, RuntimeError)
# The fix for an operating-system error that names no fix of its own.
OS_ERROR_FIXES = {
    errno.ENOSPC: "free some space there or write elsewhere, then run the command again",
    errno.EDQUOT: "free some space there or write elsewhere, then run the command again",
    errno.EROFS: "that disk is read-only: pick a folder on a writable disk",
    errno.EACCES: "check its permissions, or pick a folder you can write to",
    errno.EPERM: "check its permissions, or pick a folder you can write to",
}


def fail(message: str) -> NoReturn:
    """End the script as argparse ends bad usage: `error: message` on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    stop = SystemExit(f"error: {message}")  # the message stays readable to callers of main(argv)
    stop.code = USAGE_ERROR_STATUS
    raise stop


def describe_error(error: BaseException) -> str:
    """One line for an error: the library's own message, or an OS error's path, reason and fix."""
    if isinstance(error, OSError) and error.errno in OS_ERROR_FIXES:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror}{where}: {OS_ERROR_FIXES[error.errno]}."
    return str(error)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Bad input the library reports by raising (`BAD_INPUT_ERRORS`) ends the script with `error: ...` and exit
    status 2, not a traceback (which is kept at debug level)."""
    try:
        yield
    except BAD_INPUT_ERRORS as e:
        logging.getLogger(__name__).debug("Traceback of the error below", exc_info=True)
        fail(describe_error(e))


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def read_jsonl(path) -> list[dict]:
    """The objects of a JSON Lines file (blank lines skipped); a bad line is named by its file and line number."""
    from llasa.checks import read_text_file

    rows = []
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                # json counts lines within the one line it was given: report the file's line and the column.
                raise ValueError(f"{path} line {number}: not valid JSON ({e.msg} at column {e.colno}).") from e
    return rows


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the codec, sampling and devices of the scripts that synthesise speech (inference.py, evaluate.py)."""
    from llasa.codec import DEFAULT_CODEC_ID
    from llasa.device import DTYPES

    add_flag(
        parser,
        "codec_id",
        help=f"XCodec2 checkpoint (default: the --reward_config's codec_id, else {DEFAULT_CODEC_ID})",
    )
    add_flag(
        parser,
        "max_length",
        type=positive_int,
        default=MAX_CONTEXT_TOKENS,
        help="prompt + speech tokens (default: 2048, Llasa's training length)",
    )
    add_flag(
        parser,
        "temperature",
        type=float,
        default=SAMPLING_TEMPERATURE,
        help=f"sampling temperature; 0 = greedy (default: {SAMPLING_TEMPERATURE}, as in training)",
    )
    add_flag(parser, "top_p", type=float, default=SAMPLING_TOP_P, help=f"nucleus sampling (default: {SAMPLING_TOP_P})")
    add_flag(
        parser, "top_k", type=int, default=SAMPLING_TOP_K, help=f"top-k sampling; 0 = off (default: {SAMPLING_TOP_K})"
    )
    add_flag(parser, "repetition_penalty", type=float, default=None, help="(default: the model's generation config)")
    add_flag(parser, "seed", type=int, default=None, help="random seed: the same seed gives the same speech")
    add_flag(
        parser, "batch_size", type=positive_int, default=1, help="texts generated together (each as num_samples rows)"
    )
    add_flag(parser, "device", default="auto", help="auto, cuda, cuda:1, cpu, mps (default: auto)")
    add_flag(
        parser, "dtype", default="auto", choices=DTYPES, help="model weights (default: bfloat16 on GPU, else float32)"
    )


def sampling_options(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The `SamplingOptions` of the flags `add_model_arguments` adds, checked."""
    from llasa.synthesis import SamplingOptions

    if args.temperature < 0:
        parser.error(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}.")
    if not 0 < args.top_p <= 1:
        parser.error(f"--top_p must be in (0, 1], got {args.top_p}.")
    return SamplingOptions(
        max_length=args.max_length,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
