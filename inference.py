"""Speak text with a Llasa model (the base model or a GRPO checkpoint) and the XCodec2 codec.

One text:

    python inference.py --llasa-id Llasa-1B-GRPO/checkpoint-2000 --codec-id HKUSTAudio/xcodec2 \
        --text "Hello world from Llasa with GRPO." --output gen_grpo.wav \
        --max-length 2048 --temperature 0.8 --top-p 1.0 --device auto

Voice cloning: the prompt audio (any rate or channel count) and its transcript lead the prompt, and
the model continues in that voice. The prompt's codes are decoded together with the new ones, so that
the codec's decoder sees the new speech in context rather than starting cold, and the prompt's
len(prompt codes) * 320 samples are cut off: the output holds only the new speech, unless --keep_prompt:

    python inference.py --llasa-id HKUSTAudio/Llasa-1B --codec-id HKUSTAudio/xcodec2 \
        --text "Hello world from Llasa with GRPO." --output cloned.wav \
        --prompt_wav speaker.wav --prompt_text "The words spoken in speaker.wav."

Many texts, in batches, to <output_dir>/<id>.wav. The list is plain text (one text per line; ids are
line numbers), JSONL (`text`, optional `id`, `prompt_wav`, `prompt_text`) or Seed-TTS-eval's
`id|prompt_text|prompt_wav|text`, told by the suffix (.jsonl, .lst) or by every line, or named by --input_format;
relative prompt_wav paths are read from the list file's folder:

    python inference.py --llasa-id HKUSTAudio/Llasa-1B --codec-id HKUSTAudio/xcodec2 \
        --input_file texts.jsonl --output_dir outputs/base --batch_size 8 --seed 0

Best-of-N (inference-time scaling with a verifier, as in the Llasa paper): N candidates per text,
scored by the Whisper reward; the best is written, with every candidate's scores in <id>.json:

    python inference.py --llasa-id HKUSTAudio/Llasa-1B --codec-id HKUSTAudio/xcodec2 \
        --input_file texts.jsonl --output_dir outputs/best_of_8 \
        --num_samples 8 --reward_config reward_models/wer_nll.json

Beside each clip, <id>.codes.json keeps its text, Llasa's prompt and the generated speech codes: preference data
(`listen.py export --format dpo`) trains on exactly those tokens.

Only speech tokens and <|SPEECH_GENERATION_END|> are sampled, the end not before half of each text's expected
length (--min_speech_fraction); --no-speech-only lets the model draw any token, as training with
--no_speech_only does. Every flag can also come from `--config file.yaml`.
"""

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from llasa.audio import SAMPLE_RATE
from llasa.checks import (
    check_codec,
    check_input_file,
    check_llasa_model,
    check_output_audio,
    check_output_dir,
    check_voice_prompt,
    has_speakable_text,
)
from llasa.cli import SampleRateArguments, ScriptParser, fail, reported_errors
from llasa.codec import load_codec
from llasa.outputs import check_replaceable, claim
from llasa.rewards import check_reward_config, codec_of
from llasa.sampling import SpeechOnly, describe_sampling
from llasa.synthesis import (
    INPUT_FORMATS,
    ModelOptions,
    Request,
    SamplingOptions,
    Skipped,
    load_model,
    load_scorer,
    output_paths,
    read_input_file,
    run,
    synthesize,
    write_clip,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceArguments:
    """What to speak, in whose voice, and where the audio goes."""

    model_name_or_path: str = field(
        metadata={"help": "Llasa checkpoint: hub id or folder.", "aliases": ["--llasa_id", "--llasa-id"]}
    )
    text: str | None = field(default=None, metadata={"help": "One text to speak (or --input_file)."})
    input_file: str | None = field(
        default=None,
        metadata={"help": "A list of texts: plain text, JSONL or Seed-TTS-eval (id|prompt_text|prompt_wav|text)."},
    )
    output: str = field(default="gen.wav", metadata={"help": "Output WAV for --text."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Output folder for --input_file: <output_dir>/<id>.wav."}
    )
    input_format: Literal[INPUT_FORMATS] = field(
        default="auto", metadata={"help": "Format of --input_file (auto: by suffix, else by every line)."}
    )
    prompt_wav: str | None = field(
        default=None, metadata={"help": "Voice prompt audio (for --input_file: lines without their own prompt)."}
    )
    prompt_text: str | None = field(default=None, metadata={"help": "Transcript of --prompt_wav."})
    keep_prompt: bool = field(
        default=False, metadata={"help": "Keep the voice prompt's audio in front of the output."}
    )
    num_samples: int = field(default=1, metadata={"help": "Best-of-N: candidates per text."})
    reward_config: str | None = field(
        default=None,
        metadata={"help": "Reward config (e.g. reward_models/wer_nll.json) that scores best-of-N's candidates."},
    )

    def __post_init__(self):
        if (self.text is None) == (self.input_file is None):
            raise ValueError("Give one of --text (one text) or --input_file (a list of texts).")
        if (self.prompt_wav is None) != (self.prompt_text is None):
            raise ValueError("Voice cloning needs both --prompt_wav and --prompt_text.")
        if self.input_file is not None and self.output_dir is None:
            raise ValueError("--input_file needs --output_dir.")
        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be >= 1, got {self.num_samples}.")
        if self.num_samples > 1 and self.reward_config is None:
            raise ValueError("--num_samples > 1 needs --reward_config to choose the best candidate.")


def parse_args(argv=None) -> tuple[InferenceArguments, SamplingOptions, ModelOptions]:
    parser = ScriptParser(
        (InferenceArguments, SamplingOptions, ModelOptions, SampleRateArguments),
        description=__doc__.split("\n\n")[0],
    )
    arguments, sampling, models, _ = parser.parse(argv)
    if arguments.num_samples > 1 and sampling.temperature == 0:
        parser.error("Greedy decoding (--temperature 0) gives identical candidates: sample with --temperature > 0.")
    return arguments, sampling, models


def check_paths(arguments: InferenceArguments, models: ModelOptions) -> None:
    """Every path and model the run needs, checked before any model loads or any audio is made."""
    check_llasa_model(arguments.model_name_or_path, "--model_name_or_path")
    check_codec(models.codec_id)
    if arguments.input_file is not None:
        check_input_file(arguments.input_file, "--input_file")
        check_output_dir(arguments.output_dir)
    else:
        check_output_audio(arguments.output)
        check_replaceable(text_outputs(arguments), "--output")
    if arguments.prompt_wav is not None:
        check_voice_prompt(arguments.prompt_wav)
    if arguments.reward_config is not None:
        check_reward_config(arguments.reward_config)


def text_outputs(arguments: InferenceArguments) -> list[Path]:
    """What --text writes: --output, and beside it the candidates' scores when --reward_config scores them."""
    output = Path(arguments.output)
    return [output, output.with_suffix(".json")] if arguments.reward_config is not None else [output]


def read_requests(arguments: InferenceArguments) -> tuple[list[Request], list[Skipped]]:
    """The texts to speak (--text, or --input_file's lines, with --prompt_wav for lines without their own voice) and
    the lines skipped; their outputs are checked too."""
    if arguments.input_file is None:
        text = arguments.text.strip()
        if not text:
            raise ValueError("--text is empty: give the text to speak.")
        if not has_speakable_text(text):
            raise ValueError(f"--text {text!r} has no letter or digit: nothing to speak.")
        request = Request(Path(arguments.output).stem, text, arguments.prompt_wav, arguments.prompt_text, "--text")
        return [request], []
    requests, skipped = read_input_file(arguments.input_file, arguments.input_format)
    if arguments.prompt_wav is not None:
        voice = {"prompt_wav": arguments.prompt_wav, "prompt_text": arguments.prompt_text}
        requests = [r if r.prompt_wav or r.prompt_text else replace(r, **voice) for r in requests]
    outputs = output_paths(requests, arguments.output_dir, arguments.reward_config is not None)
    check_replaceable(outputs, "--output_dir")
    return requests, skipped


def main(argv=None):
    arguments, sampling, models = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with reported_errors():
        models = replace(models, codec_id=codec_of(models.codec_id, arguments.reward_config))
        check_paths(arguments, models)
        requests, skipped = read_requests(arguments)
        speak(arguments, sampling, models, requests, skipped)


def speak(
    arguments: InferenceArguments,
    sampling: SamplingOptions,
    models: ModelOptions,
    requests: list[Request],
    skipped: list[Skipped],
) -> None:
    llasa = load_model(arguments.model_name_or_path, models.device, models.dtype)
    speech_only = SpeechOnly(llasa.vocab, sampling.min_speech_fraction) if sampling.speech_only else None
    logger.info("Sampling: %s.", describe_sampling(speech_only))
    # Voice prompts are encoded; without them the codec only decodes, and loads without its encoders.
    codec = load_codec(models.codec_id, device=models.device, decode_only=not any(r.prompt_wav for r in requests))
    scorer = None if arguments.reward_config is None else load_scorer(arguments.reward_config, device=models.device)
    if arguments.input_file is None:
        [outcome] = synthesize(llasa, codec, requests, sampling, num_samples=arguments.num_samples, scorer=scorer)
        if isinstance(outcome, Skipped):
            fail(outcome.reason)
        claim(text_outputs(arguments), "--output")
        path = write_clip(outcome, arguments.output, arguments.keep_prompt)
        logger.info("Wrote %s (%.2f s).", path, len(outcome.waveform(arguments.keep_prompt)) / SAMPLE_RATE)
        return
    summary = run(
        llasa,
        codec,
        requests,
        arguments.output_dir,
        sampling,
        batch_size=models.batch_size,
        num_samples=arguments.num_samples,
        scorer=scorer,
        keep_prompt=arguments.keep_prompt,
        skipped=skipped,
    )
    if not summary.written:
        fail("no clip was written; see the skipped lines above.")


if __name__ == "__main__":
    main()
