"""Tokenize a speech dataset with XCodec2 into the dataset that train.py and inference.py read.

    python create_dataset.py --dataset your_dataset_name_or_path --output_dir tokenized_dataset --codec_id HKUSTAudio/xcodec2 --sampling_rate 16000

`--dataset` is a Hugging Face hub id (with `--split`, `--dataset_config`), a folder written by `save_to_disk`, a folder
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
Every flag can also come from `--config file.yaml`; `--config NAME` with a name that is not a YAML file is the hub
dataset's configuration, as `--dataset_config NAME`.
"""

import logging
import sys

from llasa.cli import YAML_SUFFIXES, SampleRateArguments, ScriptParser, reported_errors
from llasa.dataset import Options, create_dataset


def dataset_config_spelling(argv: list[str]) -> list[str]:
    """`--config NAME` named the hub dataset's configuration before `--config` read YAML files: keep it so."""
    argv = list(argv)
    for index, arg in enumerate(argv[:-1]):
        if arg == "--config" and not argv[index + 1].endswith(YAML_SUFFIXES):
            argv[index] = "--dataset_config"
    return argv


def parse_options(argv: list[str] | None = None) -> Options:
    parser = ScriptParser((Options, SampleRateArguments), description=__doc__.split("\n\n")[0])
    options, _ = parser.parse(dataset_config_spelling(sys.argv[1:] if argv is None else argv))
    return options


def main(argv: list[str] | None = None) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm

    options = parse_options(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with reported_errors(), logging_redirect_tqdm():
        create_dataset(options)


if __name__ == "__main__":
    main()
