"""Tokenize a speech dataset with XCodec2 into the dataset that train.py and inference.py read.

    python create_dataset.py --dataset your_dataset_name_or_path --output_dir tokenized_dataset --codec_id HKUSTAudio/xcodec2 --sampling_rate 16000

`--dataset` is a Hugging Face hub id (with `--split`, `--config`), a folder written by `save_to_disk`, a folder
of audio files with their transcripts (`metadata.csv` or `metadata.jsonl` naming `file_name` and `text`, or a
`.txt` beside each audio file), or a JSON / JSONL / CSV file of audio paths and texts (relative paths are read
from the file's folder). Every clip is read as 16 kHz mono, kept if its duration is within
[--min_duration, --max_duration] and its transcript is not empty, and encoded in batches.

Each row of the output holds:
  text               the transcript (stripped)
  audio_code_ids     the XCodec2 codes, 50 per second, each in [0, 65535]
  audio_code_tokens  the same codes as Llasa's speech tokens `<|s_N|>`
  duration           seconds of 16 kHz audio
  prompt             [user turn]: `Convert the text to speech:<|TEXT_UNDERSTANDING_START|>...`
  completion         [assistant turn]: <|SPEECH_GENERATION_START|> + speech tokens + <|SPEECH_GENERATION_END|>
  chat_template_kwargs  {"date_string": ...}: pins the date the Llama-3.2 chat template writes
plus the source's other columns (the audio itself only with --keep_audio; a column of file paths is kept).
`prompt` + `completion` is TRL's conversational prompt-completion form, and TRL's SFT renders it as exactly
Llasa's training sequence (ending <|SPEECH_GENERATION_END|><|eot_id|>). train.py builds its GRPO prompts from
`text` (and optional voice-prompt columns) with the shared format module.

Shards are written to `<output_dir>.partial/` as they finish; a run that is interrupted and started again with
the same arguments resumes from the first unfinished shard whose rows (audio file, size and time; transcript)
are unchanged. The dataset appears at --output_dir only once complete, with a `llasa_dataset.json` that marks it as
this tool's: --overwrite replaces only such a folder. Clips with NaN/inf samples, WAV files cut short, silent clips,
clips the codec fails on and transcripts without a letter or digit are skipped, named in the log and counted.
"""

import argparse
import functools
import logging
from dataclasses import fields

from llasa.cli import add_flag, non_negative_float, positive_int, reported_errors
from llasa.dataset import DEFAULT_MAX_DURATION, Options, create_dataset
from llasa.format import CODEC_SAMPLE_RATE, MAX_CONTEXT_TOKENS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    add = functools.partial(add_flag, parser)  # every flag with underscores or dashes: --output_dir, --output-dir
    add(
        "dataset",
        "dataset_id",
        required=True,
        help="Hub id, save_to_disk folder, audio folder, or JSON/JSONL/CSV/Parquet file.",
    )
    add("output_dir", default=Options.output_dir, help="Where save_to_disk writes the result.")
    add("codec_id", default=Options.codec_id, help="XCodec2 checkpoint (hub id or local folder).")
    add("sampling_rate", type=int, default=CODEC_SAMPLE_RATE, help="Must be 16000: XCodec2 reads 16 kHz audio.")
    add("split", default=Options.split, help="Split of a hub or save_to_disk dataset.")
    add("config", default=None, help="Configuration (subset) of a hub dataset.")
    add("audio_column", default=None, help="Column with the audio or its path (default: detected).")
    add("text_column", default=None, help="Column with the transcript (default: detected).")
    add(
        "min_duration",
        type=non_negative_float,
        default=Options.min_duration,
        help="Seconds; shorter clips are skipped.",
    )
    add(
        "max_duration",
        type=non_negative_float,
        default=Options.max_duration,
        help=f"Seconds; longer clips are skipped (default {DEFAULT_MAX_DURATION:g}: prompt + speech within "
        f"Llasa's {MAX_CONTEXT_TOKENS}-token context).",
    )
    add(
        "batch_size",
        type=positive_int,
        default=Options.batch_size,
        help="Clips per codec call.",
    )
    add("shard_size", type=positive_int, default=Options.shard_size, help="Rows per resumable shard.")
    add("device", default=Options.device, help="Where the codec runs: auto, cpu, cuda, cuda:1...")
    add("keep_audio", action="store_true", help="Keep the source's audio column in the output.")
    add(
        "overwrite",
        action="store_true",
        help="Replace an --output_dir this tool wrote earlier (never another folder), and discard an unfinished "
        "run made with other settings.",
    )
    add("push_id", default=None, help="Also push the result to this hub dataset repo.")
    return parser


def parse_options(argv: list[str] | None = None) -> Options:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sampling_rate != CODEC_SAMPLE_RATE:
        parser.error(f"--sampling_rate {args.sampling_rate}: XCodec2 reads {CODEC_SAMPLE_RATE} Hz audio only.")
    if args.min_duration > args.max_duration:
        parser.error(f"--min_duration {args.min_duration} is above --max_duration {args.max_duration}.")
    return Options(**{f.name: getattr(args, f.name) for f in fields(Options)})


def main(argv: list[str] | None = None) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm

    options = parse_options(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with reported_errors(), logging_redirect_tqdm():
        create_dataset(options)


if __name__ == "__main__":
    main()
