"""The scripts' command line, the one place that parses it: flags generated from the library's option dataclasses.

Every script parses with `ScriptParser` (TRL's TrlParser), so that everywhere `--config file.yaml` sets any flag
(flags given on the command line win), `--max_length` and `--max-length` are one flag, a boolean is `--flag` or
`--flag false` (and, where it defaults to true, `--no_flag`), an unknown flag is an error naming the nearest valid
spelling, and the reference implementation's spellings are mapped to ours. Library modules never import this one:
they take the option dataclasses the parser fills. Bad input the library reports by raising ends a script the same
way bad usage does (`reported_errors`: `error: ...` and exit status 2).
"""

import difflib
import errno
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, is_dataclass
from typing import NoReturn

from trl import TrlParser

from llasa.audio import SAMPLE_RATE

CONFIG_FLAG = "--config"
YAML_SUFFIXES = (".yaml", ".yml")

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


@dataclass(frozen=True)
class SampleRateArguments:
    """The reference implementation's --sampling_rate, kept for its commands: XCodec2 reads and writes 16 kHz only."""

    sampling_rate: int = field(
        default=SAMPLE_RATE,
        metadata={"help": f"Must be {SAMPLE_RATE}: XCodec2 reads and writes {SAMPLE_RATE} Hz audio."},
    )

    def __post_init__(self):
        if self.sampling_rate != SAMPLE_RATE:
            raise ValueError(
                f"--sampling_rate {self.sampling_rate}: XCodec2 reads and writes {SAMPLE_RATE} Hz audio only "
                "(resample files with sox or ffmpeg if another rate is needed)."
            )


class ScriptParser(TrlParser):
    """TrlParser that also suggests the nearest flag for an unknown one, maps renamed flags, honours a field's
    `nargs` metadata (TRL's lists take one value or more; `"*"` allows none) and reports an option class's
    failed check as a usage error (`error: ...`, exit status 2)."""

    def __init__(self, dataclass_types, renamed: dict[str, str] | None = None, **kwargs):
        self.renamed = dict(renamed or {})  # an older spelling -> our flag (`--model-id` -> `--model_name_or_path`)
        super().__init__(dataclass_types, **kwargs)
        # TRL reads the file before argparse sees the command line; the flag is declared for --help.
        self.add_argument(
            CONFIG_FLAG,
            metavar="FILE.yaml",
            help="YAML file of flags (its keys are the flags' names); flags given here win",
        )

    @staticmethod
    def _parse_dataclass_field(parser, field):
        TrlParser._parse_dataclass_field(parser, field)
        if "nargs" in field.metadata:  # HfArgumentParser replaces it with "+" for lists
            action = next(a for a in reversed(parser._actions) if f"--{field.name}" in a.option_strings)
            action.nargs = field.metadata["nargs"]

    def parse(self, argv: Sequence[str] | None = None) -> tuple:
        """The option dataclasses of `argv` (default: sys.argv[1:]), in the order the parser was given them."""
        argv = self.map_spellings(sys.argv[1:] if argv is None else list(argv))
        try:
            *options, from_config, from_line = self.parse_args_and_config(
                argv, return_remaining_strings=True, separate_remaining_strings=True
            )
        except OSError as e:  # the --config file
            self.error(f"{CONFIG_FLAG}: {e}")
        except (ValueError, TypeError) as e:  # an option class's check, or a YAML value of the wrong kind
            self.error(str(e))
        if from_config:
            self.error(f"{CONFIG_FLAG}: unknown key {from_config[0].lstrip('-')!r}{self.suggestion(from_config[0])}")
        if from_line:
            flag = next((s for s in from_line if s.startswith("-")), from_line[0])
            self.error(f"unrecognised argument {flag}{self.suggestion(flag)}")
        return tuple(option for option in options if is_dataclass(option))  # not the --config holder

    def map_spellings(self, argv: list[str]) -> list[str]:
        """`--config=x` as `--config x` (TRL looks for the flag alone), and renamed flags as ours, with a note."""
        mapped = []
        for arg in argv:
            name, sep, value = arg.partition("=")
            if name == CONFIG_FLAG and sep:
                mapped += [name, value]
            elif name in self.renamed:
                print(f"note: {name} is spelt {self.renamed[name]} here.", file=sys.stderr)
                mapped.append(self.renamed[name] + sep + value)
            else:
                mapped.append(arg)
        return mapped

    def suggestion(self, flag: str) -> str:
        """': did you mean --x?' for the nearest valid flag, or ' (see --help)' when none is near."""
        name = flag.partition("=")[0]
        spellings = [s for s in self._option_string_actions if s.startswith("--")] + [CONFIG_FLAG]
        if not name.startswith("-"):
            name = f"--{name}"
        match = difflib.get_close_matches(name, spellings, n=1, cutoff=0.6)
        return f": did you mean {match[0]}?" if match else " (see --help)"


def parse_command(
    commands: dict[str, tuple[str, Callable[[], ScriptParser]]],
    argv: Sequence[str] | None,
    prog: str,
    description: str,
):
    """(command, its option dataclasses) for scripts with commands (`evaluate.py compare ...`). `commands` maps each
    name to its description and a function building its parser: only the chosen command's parser is built (and its
    option classes imported), and `--config` and `--help` work per command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    listing = "\n".join(f"  {name:<14} {about}" for name, (about, _) in commands.items())
    usage = f"usage: {prog} {{{','.join(commands)}}} ...\n\n{description}\n\ncommands:\n{listing}\n"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage, file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    if argv[0] not in commands:
        match = difflib.get_close_matches(argv[0], list(commands), n=1)
        hint = f": did you mean {match[0]}?" if match else f": choose one of {', '.join(commands)}"
        sys.stderr.write(f"{usage}\n{prog}: error: unknown command {argv[0]!r}{hint}\n")
        sys.exit(2)
    about, build = commands[argv[0]]
    parser = build()
    parser.prog, parser.description = f"{prog} {argv[0]}", about
    return argv[0], parser.parse(argv[1:])
