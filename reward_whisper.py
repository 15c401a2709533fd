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

import argparse
import functools
import json
import logging
from pathlib import Path

from llasa.asr import BACKENDS, WHISPER_SAMPLE_RATE
from llasa.cli import add_flag, positive_int, read_jsonl, reported_errors
from llasa.device import DTYPES
from llasa.format import codes_from
from llasa.rewards import COMBINE_RULES, RewardConfig, WhisperReward, check_reward_config, load_reward

logger = logging.getLogger(__name__)

__all__ = ["RewardConfig", "WhisperReward", "load_reward"]


def rows_from_args(args, parser) -> tuple[list, list, dict, str]:
    """(audio paths or code lists, texts, extra columns, "audio" | "codes") from the command line."""
    if args.audio is not None:
        if args.text is None or len(args.text) != len(args.audio):
            parser.error("--audio needs one --text per file.")
        columns = {}
        if args.reference_audio is not None:
            if len(args.reference_audio) not in (1, len(args.audio)):
                parser.error("--reference_audio takes one file for all --audio files, or one per file.")
            columns["reference_audio"] = args.reference_audio * (len(args.audio) // len(args.reference_audio))
        return args.audio, args.text, columns, "audio"
    path = args.input_file if args.input_file is not None else args.codes_file
    key = "audio" if args.input_file is not None else "codes"
    rows = read_jsonl(path)
    if not rows:
        parser.error(f"{path} holds no line to score.")
    for number, row in enumerate(rows, 1):
        if key not in row or "text" not in row:
            parser.error(f"{path}:{number} needs the keys {key!r} and 'text'.")
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = functools.partial(add_flag, parser)  # every flag with underscores or dashes
    add("reward_config", default="reward_models/wer_nll.json", help="reward config JSON")
    inputs = parser.add_mutually_exclusive_group(required=True)
    add_flag(inputs, "audio", nargs="+", help="audio files to score")
    add_flag(inputs, "input_file", help='JSONL of {"audio": path, "text": reference}')
    add_flag(inputs, "codes_file", help='JSONL of {"codes": "<|s_1|>..." or [1, ...], "text": reference}')
    add("text", nargs="+", help="reference texts, one per --audio file")
    add(
        "reference_audio",
        nargs="+",
        help="recordings of the reference texts (one, or one per --audio file): the expected duration, pitch spread "
        "and voice of the duration, pitch and speaker_similarity components. JSONL files: a 'reference_audio' key",
    )
    add("asr_backend", choices=BACKENDS, help="overrides the config")
    add("asr_model", help="overrides the config")
    add("language", help="overrides the config")
    add("codec_id", help="overrides the config")
    add("combine", choices=COMBINE_RULES, help="overrides the config")
    add("device", help="overrides the config: auto, cpu, cuda, cuda:1...")
    add("dtype", choices=DTYPES, help="overrides the config")
    add("batch_size", type=positive_int, help="overrides the config")
    args = parser.parse_args(argv)
    if args.text is not None and args.audio is None:
        parser.error("--text goes with --audio; JSONL files carry their own texts.")
    if args.reference_audio is not None and args.audio is None:
        parser.error("--reference_audio goes with --audio; JSONL files carry a 'reference_audio' key per line.")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    overrides = {key: getattr(args, key) for key in ("asr_backend", "asr_model", "language", "codec_id", "combine")}
    overrides.update(device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    try:  # the inputs are read before any model loads
        items, texts, columns, kind = rows_from_args(args, parser)
    except (OSError, ValueError) as e:  # an unreadable list, a bad line
        parser.error(str(e))
    with reported_errors():
        config = check_reward_config(args.reward_config, **overrides)
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
            audio.append(load_audio(path, WHISPER_SAMPLE_RATE))
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
