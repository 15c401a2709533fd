"""Checks run before any model loads or any audio is made: model paths and ids, output paths, input files, and
what counts as text worth speaking."""

import json
import os
import re
from pathlib import Path

OUTPUT_AUDIO_SUFFIXES = (".wav",)  # what the scripts write; other extensions are refused, not silently WAV
_CAUSAL_LM_MARKERS = ("ForCausalLM",)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
SYSTEM_NAME = re.compile(r"[\w.+-]+")  # a system's name becomes a folder and a table row: no separators


def looks_like_path(name: str) -> bool:
    """Whether `name` is meant as a local path rather than a hub id: it starts with . / ~, has more than one
    separator or a backslash, or its first part is a folder here (`tests/dta` when ./tests exists)."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or os.sep != "/" and os.sep in name:
        return True
    first, sep, _ = name.partition("/")
    return bool(sep) and Path(first).is_dir()


def check_exists(name: str, flag: str) -> None:
    """A path-looking `name` that is not there is reported as such, never looked up on the hub."""
    if not Path(name).expanduser().exists() and looks_like_path(name):
        raise FileNotFoundError(f"{_named(flag, name)}: no such file or folder.")


def _named(flag: str, name) -> str:
    """How a message names a value: `--flag value`, or `--models base=value` for NAME=PATH flags."""
    return f"{flag}{name}" if flag.endswith("=") else f"{flag} {name}"


def check_llasa_model(name: str, flag: str = "--model_name_or_path") -> None:
    """A local Llasa checkpoint must be a folder with a tokenizer and a causal-LM config (or a PEFT adapter);
    a hub id is left to the loader."""
    check_exists(name, flag)
    path = Path(name).expanduser()
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(
            f"{_named(flag, name)} is a file; expected a Llasa model folder (config.json and a tokenizer)."
        )
    config = _read_json(path / "config.json")
    if config.get("model_type") == "xcodec2" or "codec_encoder_hidden_size" in config:
        raise ValueError(
            f"{_named(flag, name)} is an XCodec2 codec, not a Llasa model: pass it as --codec_id instead."
        )
    if not any((path / file).is_file() for file in _TOKENIZER_FILES):
        raise ValueError(
            f"{_named(flag, name)} is not a Llasa model: it has no tokenizer ({', '.join(_TOKENIZER_FILES)})."
        )
    if (path / "adapter_config.json").is_file():
        return
    architectures = config.get("architectures") or []
    if not any(marker in arch for arch in architectures for marker in _CAUSAL_LM_MARKERS):
        raise ValueError(
            f"{_named(flag, name)} is not a Llasa model: its config.json names no causal LM "
            f"(architectures={architectures}, model_type={config.get('model_type')!r})."
        )


def check_codec(name: str, flag: str = "--codec_id") -> None:
    """A local codec must be a folder with config.json; a hub id is left to the loader."""
    check_exists(name, flag)
    path = Path(name).expanduser()
    if path.exists() and not (path / "config.json").is_file():
        raise ValueError(f"{_named(flag, name)} is not an XCodec2 checkpoint folder (no config.json).")


def check_output_dir(path, flag: str = "--output_dir") -> None:
    """An output folder may exist, but not as a file."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder: pick another {flag}.")


def check_output_audio(path, flag: str = "--output") -> None:
    """An output clip path: not a folder, and with an extension the writer really produces."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder: give a file name such as {path / 'gen.wav'}.")
    if path.suffix.lower() not in OUTPUT_AUDIO_SUFFIXES:
        raise ValueError(
            f"{flag} {path}: only {', '.join(OUTPUT_AUDIO_SUFFIXES)} is written; use {path.with_suffix('.wav')}."
        )


def check_input_file(path, flag: str) -> None:
    """An input list: an existing, non-empty file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file.")
    if not path.is_file():
        raise ValueError(f"{flag} {path} is a folder, not a file.")
    if path.stat().st_size == 0:
        raise ValueError(f"{flag} {path} is empty.")


def check_voice_prompt(path, flag: str = "--prompt_wav") -> None:
    """A voice prompt recording: an existing file holding usable speech (decodable, finite, not silent)."""
    from llasa.audio import check_speech, load_audio

    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file.")
    try:
        check_speech(load_audio(Path(path).expanduser()), path)
    except RuntimeError as e:
        raise ValueError(f"{flag}: {e}.") from e


def split_system(value: str, kind: str = "PATH", example: str = "base=HKUSTAudio/Llasa-1B") -> tuple[str, str]:
    """NAME=PATH of a system (a model, a folder of clips), its name checked."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"expected NAME={kind} (e.g. {example}), got {value!r}")
    if not SYSTEM_NAME.fullmatch(name):
        raise ValueError(f"system name {name!r} must be letters, digits, '.', '+', '-' or '_'")
    return name, path


def check_distinct_systems(names) -> None:
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:
        raise ValueError(f"System names must differ; repeated: {', '.join(repeated)}.")


def read_text_file(path) -> str:
    """A text file's contents; bytes that are not UTF-8 are an error naming the file and the line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line}: not UTF-8 text (byte {data[e.start]:#04x}); save it as UTF-8.") from e


def read_jsonl(path) -> list:
    """The values of a JSON Lines file (blank lines skipped); a bad line is named by its file and line number."""
    rows = []
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if line.strip():
            try:
                rows.append(json_line(line))
            except ValueError as e:
                raise ValueError(f"{path} line {number}: {e}.") from e
    return rows


def json_line(line: str):
    """The value of one JSON Lines line; a bad one raises ValueError with the column (the caller names the line)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        # json counts lines within the one line it was given: only the column says where.
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None


def has_speakable_text(text: str) -> bool:
    """Whether a transcript holds a letter or digit: punctuation or emoji alone give no words to speak or score."""
    return any(char.isalnum() for char in text)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return {}
    return value if isinstance(value, dict) else {}
