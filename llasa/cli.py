"""Command-line conventions the scripts share: flags spelled with underscores or dashes, validated numbers."""

import argparse


def add_flag(parser, name: str, *aliases: str, **kwargs) -> None:
    """A flag accepted as --max_length and --max-length (and likewise for each alias), stored under `name`."""
    spellings = dict.fromkeys(f"--{spelling}" for n in (name, *aliases) for spelling in (n, n.replace("_", "-")))
    parser.add_argument(*spellings, dest=name, **kwargs)


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
