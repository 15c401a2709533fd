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
--speech_only false does.
"""

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from llasa.checks import (
    check_codec,
    check_input_file,
    check_llasa_model,
    check_output_audio,
    check_output_dir,
    check_voice_prompt,
    has_speakable_text,
)
from llasa.cli import add_flag, add_model_arguments, fail, positive_int, reported_errors, sampling_options
from llasa.codec import load_codec
from llasa.format import CODEC_SAMPLE_RATE
from llasa.outputs import check_replaceable, claim
from llasa.rewards import check_reward_config, codec_of
from llasa.sampling import DEFAULT_MIN_SPEECH_FRACTION, SpeechOnly
from llasa.synthesis import (
    INPUT_FORMATS,
    Request,
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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_flag(parser, "model_name_or_path", "llasa_id", required=True, help="Llasa checkpoint: hub id or folder")
    source = parser.add_mutually_exclusive_group(required=True)
    add_flag(source, "text", help="one text to speak")
    add_flag(
        source,
        "input_file",
        help="a list of texts: plain text, JSONL or Seed-TTS-eval (id|prompt_text|prompt_wav|text)",
    )
    add_flag(parser, "output", default="gen.wav", help="output WAV for --text (default: gen.wav)")
    add_flag(parser, "output_dir", help="output folder for --input_file: <output_dir>/<id>.wav")
    add_flag(
        parser,
        "input_format",
        default="auto",
        choices=INPUT_FORMATS,
        help="format of --input_file (default: auto: by suffix, else by every line)",
    )
    add_flag(parser, "prompt_wav", help="voice prompt audio (for --input_file: lines without their own prompt)")
    add_flag(parser, "prompt_text", help="transcript of --prompt_wav")
    add_flag(parser, "keep_prompt", action="store_true", help="keep the voice prompt's audio in front of the output")
    add_flag(parser, "num_samples", type=positive_int, default=1, help="best-of-N: candidates per text (default: 1)")
    add_flag(
        parser, "reward_config", help="reward config (e.g. reward_models/wer_nll.json) that scores the candidates"
    )
    add_flag(
        parser,
        "no_speech_only",
        action="store_true",
        help="let the model draw any token (default: only speech tokens and END, END not before "
        "--min_speech_fraction of the text's expected length)",
    )
    add_flag(
        parser,
        "min_speech_fraction",
        type=float,
        default=DEFAULT_MIN_SPEECH_FRACTION,
        help=f"share of the expected speech tokens before END may be drawn (default: {DEFAULT_MIN_SPEECH_FRACTION})",
    )
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.min_speech_fraction <= 1:
        parser.error(f"--min_speech_fraction must be in [0, 1], got {args.min_speech_fraction}.")
    args.sampling = replace(
        sampling_options(args, parser),
        speech_only=not args.no_speech_only,
        min_speech_fraction=args.min_speech_fraction,
    )
    if (args.prompt_wav is None) != (args.prompt_text is None):
        parser.error("Voice cloning needs both --prompt_wav and --prompt_text.")
    if args.input_file is not None and args.output_dir is None:
        parser.error("--input_file needs --output_dir.")
    if args.num_samples > 1 and args.reward_config is None:
        parser.error("--num_samples > 1 needs --reward_config to choose the best candidate.")
    if args.num_samples > 1 and args.temperature == 0:
        parser.error("Greedy decoding (--temperature 0) gives identical candidates: sample with --temperature > 0.")
    return args


def check_paths(args) -> None:
    """Every path and model the run needs, checked before any model loads or any audio is made."""
    check_llasa_model(args.model_name_or_path, "--llasa_id")
    check_codec(args.codec_id)
    if args.input_file is not None:
        check_input_file(args.input_file, "--input_file")
        check_output_dir(args.output_dir)
    else:
        check_output_audio(args.output)
        check_replaceable(text_outputs(args), "--output")
    if args.prompt_wav is not None:
        check_voice_prompt(args.prompt_wav)
    if args.reward_config is not None:
        check_reward_config(args.reward_config)


def text_outputs(args) -> list[Path]:
    """What --text writes: --output, and beside it the candidates' scores when --reward_config scores them."""
    output = Path(args.output)
    return [output, output.with_suffix(".json")] if args.reward_config is not None else [output]


def read_requests(args) -> tuple[list[Request], list[Skipped]]:
    """The texts to speak, with their voice prompts, and the lines skipped; their outputs are checked too."""
    if args.input_file is None:
        text = args.text.strip()
        if not text:
            raise ValueError("--text is empty: give the text to speak.")
        if not has_speakable_text(text):
            raise ValueError(f"--text {text!r} has no letter or digit: nothing to speak.")
        return [Request(Path(args.output).stem, text, args.prompt_wav, args.prompt_text, source="--text")], []
    requests, skipped = read_input_file(args.input_file, args.input_format)
    if args.prompt_wav is not None:
        requests = [
            replace(r, prompt_wav=args.prompt_wav, prompt_text=args.prompt_text)
            if r.prompt_wav is None and r.prompt_text is None
            else r
            for r in requests
        ]
    check_replaceable(output_paths(requests, args.output_dir, args.reward_config is not None), "--output_dir")
    return requests, skipped


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with reported_errors():
        args.codec_id = codec_of(args.codec_id, args.reward_config)
        check_paths(args)
        requests, skipped = read_requests(args)
        speak(args, requests, skipped)


def speak(args, requests: list[Request], skipped: list[Skipped]) -> None:
    llasa = load_model(args.model_name_or_path, args.device, args.dtype)
    logger.info(
        "Sampling: %s.",
        SpeechOnly(llasa.vocab, args.min_speech_fraction).describe() if args.sampling.speech_only else "any token",
    )
    # Voice prompts are encoded; without them the codec only decodes, and loads without its encoders.
    codec = load_codec(args.codec_id, device=args.device, decode_only=not any(r.prompt_wav for r in requests))
    scorer = None if args.reward_config is None else load_scorer(args.reward_config, device=args.device)
    if args.input_file is None:
        [outcome] = synthesize(llasa, codec, requests, args.sampling, num_samples=args.num_samples, scorer=scorer)
        if isinstance(outcome, Skipped):
            fail(outcome.reason)
        claim(text_outputs(args), "--output")
        path = write_clip(outcome, args.output, args.keep_prompt)
        logger.info("Wrote %s (%.2f s).", path, len(outcome.waveform(args.keep_prompt)) / CODEC_SAMPLE_RATE)
        return
    summary = run(
        llasa,
        codec,
        requests,
        args.output_dir,
        args.sampling,
        batch_size=args.batch_size,
        num_samples=args.num_samples,
        scorer=scorer,
        keep_prompt=args.keep_prompt,
        skipped=skipped,
    )
    if not summary.written:
        fail("no clip was written; see the skipped lines above.")


if __name__ == "__main__":
    main()
