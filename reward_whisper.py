"""The Whisper reward for GRPO on Llasa, and a command line that scores clips with it before a long run.

`load_reward` is the public entry point (TRL scripts import it): it builds the reward of a reward_models/*.json config,
a callable with TRL's reward signature. The reward itself lives in `llasa.rewards` (components, config, scoring).

    from reward_whisper import load_reward
    reward = load_reward("reward_models/wer_nll.json", speech_vocab=SpeechVocab.from_tokenizer(tokenizer))

Score audio files, or replay completions (speech-token strings or code lists) from a JSONL file:

    python reward_whisper.py --reward_config reward_models/wer_nll.json --audio a.wav b.wav --text "first" "second"
    python reward_whisper.py --reward_config reward_models/wer_nll.json --input_file clips.jsonl   # {"audio", "text"}
    python reward_whisper.py --reward_config reward_models/wer_nll.json --codes_file completions.jsonl  # {"codes", "text"}
    python reward_whisper.py --reward_config reward_models/prosody_reward.json --audio a.wav --text "first" \\
        --reference_audio ref.wav

A JSONL line's other keys are columns: {"audio": "a.wav", "text": "first", "reference_audio": "ref.wav"}.

One JSON object is printed per clip: the reward, the raw measures (the error rate with the normalised reference and
transcript lengths it was taken over, "ref_words" and "hyp_words" or "ref_chars" and "hyp_chars"; the NLL;
"asr_fallback", 1 where Whisper's greedy transcript looped and was decoded again), the transcript and each component's
score.
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llasa.audio import SAMPLE_RATE
from llasa.checks import read_jsonl
from llasa.cli import ScriptParser, reported_errors
from llasa.format import codes_from
from llasa.rewards import (
    RewardConfig,
    RewardOverrides,
    SpeechReward,
    WhisperReward,
    check_reward_config,
    load_reward,
)

logger = logging.getLogger(__name__)

__all__ = ["RewardConfig", "SpeechReward", "WhisperReward", "load_reward"]


@dataclass(frozen=True)
class ScoringArguments:
    """The reward config and the clips it scores: audio files with their texts, or a JSONL file."""

    reward_config: str = field(default="reward_models/wer_nll.json", metadata={"help": "Reward config JSON."})
    audio: list[str] | None = field(default=None, metadata={"help": "Audio files to score."})
    input_file: str | None = field(default=None, metadata={"help": 'JSONL of {"audio": path, "text": reference}.'})
    codes_file: str | None = field(
        default=None, metadata={"help": 'JSONL of {"codes": "<|s_1|>..." or [1, ...], "text": reference}.'}
    )
    text: list[str] | None = field(default=None, metadata={"help": "Reference texts, one per --audio file."})
    reference_audio: list[str] | None = field(
        default=None,
        metadata={
            "help": "Recordings of the reference texts (one, or one per --audio file): the expected duration, pitch "
            "spread and voice of the duration, pitch and speaker_similarity components. JSONL files: a "
            "'reference_audio' key."
        },
    )

    def __post_init__(self):
        given = [name for name in ("audio", "input_file", "codes_file") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("Give one of --audio, --input_file or --codes_file.")
        if self.text is not None and self.audio is None:
            raise ValueError("--text goes with --audio; JSONL files carry their own texts.")
        if self.reference_audio is not None and self.audio is None:
            raise ValueError(
                "--reference_audio goes with --audio; JSONL files carry a 'reference_audio' key per line."
            )
        if self.audio is not None and (self.text is None or len(self.text) != len(self.audio)):
            raise ValueError("--audio needs one --text per file.")
        if self.reference_audio is not None and len(self.reference_audio) not in (1, len(self.audio)):
            raise ValueError("--reference_audio takes one file for all --audio files, or one per file.")


def read_rows(arguments: ScoringArguments) -> tuple[list, list, dict, str]:
    """(audio paths or code lists, texts, extra columns, "audio" | "codes") of the clips to score."""
    if arguments.audio is not None:
        columns = {}
        if arguments.reference_audio is not None:
            copies = len(arguments.audio) // len(arguments.reference_audio)
            columns["reference_audio"] = arguments.reference_audio * copies
        return arguments.audio, arguments.text, columns, "audio"
    path = arguments.input_file if arguments.input_file is not None else arguments.codes_file
    key = "audio" if arguments.input_file is not None else "codes"
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path} holds no line to score.")
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or key not in row or "text" not in row:
            raise ValueError(f"{path}:{number} needs the keys {key!r} and 'text'.")
    folder = Path(path).parent  # relative audio paths are read from the list's folder, as inference.py reads them
    items = [
        str(folder / row[key]) if key == "audio" else codes_from(row[key], f"{path}:{n}")
        for n, row in enumerate(rows, 1)
    ]
    extra = sorted({name for row in rows for name in row} - {key, "text"})
    columns = {name: [row.get(name) for row in rows] for name in extra}
    for name in {"reference_audio", "prompt_audio"} & set(columns):
        columns[name] = [None if value is None else str(folder / value) for value in columns[name]]
    return items, [row["text"] for row in rows], columns, key


def make_parser() -> ScriptParser:
    return ScriptParser((ScoringArguments, RewardOverrides), description=__doc__.split("\n\n")[0])


def parse_args(argv=None) -> tuple[ScoringArguments, RewardOverrides]:
    return make_parser().parse(argv)


def main(argv=None):
    parser = make_parser()
    arguments, overrides = parser.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:  # the inputs are read before any model loads
        items, texts, columns, kind = read_rows(arguments)
    except (OSError, ValueError) as e:  # an unreadable list, a bad line
        parser.error(str(e))
    with reported_errors():
        config = check_reward_config(arguments.reward_config, **asdict(overrides))
        if kind == "audio":
            items, texts, columns, audio = readable_clips(items, texts, columns)
            clips = load_reward(config).score_audio(audio, texts, columns)
        else:
            clips = load_reward(config).score_codes(items, texts, columns)
    for index, (item, clip) in enumerate(zip(items, clips, strict=True)):
        source = {"audio": item} if kind == "audio" else {"index": index}
        print(json.dumps({**source, **clip.to_json()}, ensure_ascii=False))


def readable_clips(paths: list, texts: list, columns: dict) -> tuple[list, list, dict, list]:
    """The rows whose audio loads, with their waveforms; each other clip is skipped, named and counted (an error
    when none is left)."""
    from llasa.audio import load_audio

    kept, audio = [], []
    for index, path in enumerate(paths):
        try:
            audio.append(load_audio(path, SAMPLE_RATE))
        except (OSError, RuntimeError) as e:  # a missing, corrupt or unsupported file
            logger.warning("Skipping %s: %s", path, e)
            continue
        kept.append(index)
    if len(kept) < len(paths):
        logger.warning(
            "Skipped %d of %d clips that could not be read (named above).", len(paths) - len(kept), len(paths)
        )
    if not kept:
        raise ValueError("No clip could be read: nothing to score.")
    columns = {name: [values[i] for i in kept] for name, values in columns.items()}
    return [paths[i] for i in kept], [texts[i] for i in kept], columns, audio


if __name__ == "__main__":
    main()
