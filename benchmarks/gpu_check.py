"""The GPU check at Llasa-1B's real size: the reward batched against one clip at a time, three GRPO steps of the
recipe (seconds per step, the share of each phase, each step's gradient norm), peak GPU memory beside
plan_memory.py's arithmetic, and the first steps of the learning check (benchmarks/learning_check.py) on the GPU.

Every model has random weights and the published shape, built here (nothing is downloaded): the policy is
Llama-3.2-1B's architecture with Llasa's 193,800-token vocabulary and a tokenizer laid out like Llasa's (the
Llama-3 special tokens at 128000-128255, Llasa's markers at 128256-128263, <|s_0|> at 128264), XCodec2 at
transformers' Xcodec2Config sizes (those of the released checkpoint) and Whisper at large-v3's. Their output is
noise, so the check measures time and memory, not quality. A random policy never writes the end token, and under the
recipe's speech-only sampling a completion that reaches the budget is cut and masked: every step would learn nothing
(gradient 0). So END is made likely (testing.tiny_models.make_end_likely) once speech-only sampling allows it, and each
row's duration puts that point a few tokens before the budget: the completions end, count in the loss, and cost what
full-length ones do.

    bash benchmarks/gpu_check.sh            # one H100 / H200, in under 8 minutes
    bash benchmarks/gpu_check.sh --tiny     # the same path with tiny models on a CPU (the test suite runs it)
"""

import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from llasa.cli import ScriptParser

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "llasa-1b-grpo.yaml"
REWARD_CONFIG = REPO / "reward_models" / "wer_nll.json"
LLAMA_3_VOCAB = 128256  # Llama-3.2's tokenizer: 128000 BPE tokens and 256 special tokens
LLAMA_3_NAMED_SPECIALS = {  # the special tokens Llama-3 names, by offset from 128000; the others are reserved
    0: "<|begin_of_text|>",
    1: "<|end_of_text|>",
    4: "<|finetune_right_pad_id|>",
    6: "<|start_header_id|>",
    7: "<|end_header_id|>",
    8: "<|eom_id|>",
    9: "<|eot_id|>",
    10: "<|python_tag|>",
}
N_SPECIALS = 256
END_PROBABILITY = 0.5  # of END at each step it may come, before top-k: it comes at the first such step
END_MARGIN = 0.05  # share of the budget left after the point where END may come
# About 10 s of speech: the reward benchmark's reference text, and the GRPO prompts' texts.
TEXTS = [
    "The quick brown fox jumps over the lazy dog, then runs back across the field to the old farm near the river.",
    "A rainbow appeared after the summer rain, and the children ran outside to see its colours over the hills.",
]


@dataclass(frozen=True)
class Size:
    """One scale of the check: the models' shapes and the workload."""

    name: str
    base_vocab: int  # tokens before Llasa's markers
    policy: dict  # LlamaConfig sizes
    whisper: str | None  # "large-v3": its shape (testing/tiny_whisper.py); None: the tiny English model there
    real_codec: bool  # Xcodec2Config's default sizes, else testing/tiny_models.py's tiny codec
    reward_completions: int
    reward_seconds: float
    transcript_tokens: int  # cap on the random Whisper's transcripts (it never stops by itself)
    group: int  # completions per prompt, and per device step
    completion_tokens: int
    steps: int
    learning_steps: int  # of the learning check's full run
    flags: list[str] = field(default_factory=list)  # train.py flags of this scale


FULL = Size(
    name="full",
    base_vocab=LLAMA_3_VOCAB,
    policy={  # benchmarks/plan_memory.py's Llasa-1B
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "tie_word_embeddings": True,
    },
    whisper="large-v3",
    real_codec=True,
    reward_completions=64,
    reward_seconds=10.0,
    transcript_tokens=40,  # about what a 10 s sentence takes
    group=8,  # the recipe's
    completion_tokens=750,  # 15 s
    steps=3,
    learning_steps=10,
)
TINY = Size(
    name="tiny",
    base_vocab=2 * N_SPECIALS,  # the 256 byte tokens and the 256 special tokens
    policy={
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
    },
    whisper=None,
    real_codec=False,
    reward_completions=4,
    reward_seconds=1.0,
    transcript_tokens=8,
    group=4,
    completion_tokens=16,
    steps=2,  # a warm-up step and one timed
    learning_steps=0,  # the suite runs the learning check on its own
    flags=["--use_cpu", "--bf16", "false", "--gradient_checkpointing", "false"],
)


def build_tokenizer(output_dir: Path, base_vocab: int) -> Path:
    """A tokenizer with Llasa's layout: byte-level tokens (plus unused fillers) up to base_vocab - 256, Llama-3's 256
    special tokens, Llasa's 8 markers, then <|s_0|> .. <|s_65535|>; Llama-3.2's chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    from testing.tiny_models import save_llasa_tokenizer

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({f"<filler_{i}>": i for i in range(len(vocab), base_vocab - N_SPECIALS)})
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    reserved = iter(range(N_SPECIALS))
    specials = [
        LLAMA_3_NAMED_SPECIALS.get(i) or f"<|reserved_special_token_{next(reserved)}|>" for i in range(N_SPECIALS)
    ]
    bpe.add_special_tokens([AddedToken(token, special=True) for token in specials])
    return save_llasa_tokenizer(bpe, output_dir)


def build_policy(output_dir: Path, size: Size, device: torch.device):
    """A random LlamaForCausalLM of the size's shape over the Llasa-layout tokenizer, saved (bfloat16) with it; the
    tokenizer."""
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from llasa.device import release_cached_memory
    from llasa.format import SPEECH_GENERATION_END, SpeechVocab
    from testing.tiny_models import make_end_likely

    tokenizer = AutoTokenizer.from_pretrained(build_tokenizer(output_dir, size.base_vocab))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=131072,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **size.policy,
    )
    torch.manual_seed(0)
    with device:  # built where it is fastest to initialise: the GPU when there is one
        model = LlamaForCausalLM(config)
    make_end_likely(model, SpeechVocab.from_tokenizer(tokenizer), END_PROBABILITY)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(SPEECH_GENERATION_END), tokenizer.eos_token_id],
        do_sample=True,
    )
    model.to(torch.bfloat16).save_pretrained(output_dir)  # loaded back in float32, as train.py trains
    del model
    release_cached_memory(device)  # the memory peaks measured later are the run's own
    return tokenizer


def build_codec(output_dir: Path, size: Size) -> Path:
    """XCodec2 at the released checkpoint's sizes (transformers' Xcodec2Config defaults), else the tiny one."""
    from transformers import Xcodec2Config, Xcodec2FeatureExtractor, Xcodec2Model

    from testing.tiny_models import build_tiny_xcodec2

    if not size.real_codec:
        return build_tiny_xcodec2(output_dir)
    config = Xcodec2Config()
    torch.manual_seed(0)
    Xcodec2Model(config).eval().save_pretrained(output_dir)
    Xcodec2FeatureExtractor(sampling_rate=config.sampling_rate, hop_length=config.hop_length).save_pretrained(
        output_dir
    )
    return output_dir


def write_reward_config(work_dir: Path, size: Size) -> Path:
    """reward_models/wer_nll.json (the recipe's reward) with the random Whisper and codec of this size."""
    from testing.tiny_whisper import LARGE_V3_DIMENSIONS, build_openai_whisper

    dims = LARGE_V3_DIMENSIONS if size.whisper == "large-v3" else None
    config = json.loads(REWARD_CONFIG.read_text())
    config.update(
        asr_backend="openai-whisper",
        asr_model=str(build_openai_whisper(work_dir / "whisper.pt", dims=dims)),
        codec_id=str(build_codec(work_dir / "codec", size)),
        max_new_tokens=size.transcript_tokens,
        device="auto",
        vad=False,  # the random policy's audio is noise: silero-vad would score every clip 0 before Whisper
    )
    path = work_dir / "reward.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function) -> tuple[float, object]:
    synchronize()
    start = time.perf_counter()
    result = function()
    synchronize()
    return time.perf_counter() - start, result


@dataclass(frozen=True)
class RewardTiming:
    completions: int
    seconds_of_speech: float
    batched: float  # seconds for the whole batch in one call
    one_at_a_time: float  # seconds for the same completions, one call each
    max_difference: float  # largest reward difference between the two

    def report(self) -> str:
        return (
            f"reward: {self.completions} completions of {self.seconds_of_speech:g} s: batched {self.batched:.3f} s, "
            f"one at a time {self.one_at_a_time:.3f} s, ratio {self.one_at_a_time / self.batched:.2f}x, "
            f"max reward difference {self.max_difference:.1e}"
        )


def time_reward(reward, vocab, size: Size) -> RewardTiming:
    """The reward on random speech codes, as one batch and one completion per call, after a warm-up call."""
    from llasa.format import TOKENS_PER_SECOND

    rng = np.random.default_rng(0)
    n_codes = int(size.reward_seconds * TOKENS_PER_SECOND)
    ids = [
        vocab.codes_to_ids(rng.integers(0, 65536, n_codes).tolist()) + [vocab.speech_end_id]
        for _ in range(size.reward_completions)
    ]
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(ids))]
    reward(completion_ids=ids[:2], text=texts[:2])  # warm-up: CUDA kernels, allocator
    batched_s, batched = timed(lambda: reward(completion_ids=ids, text=texts))
    alone_s, alone = timed(lambda: [reward(completion_ids=[i], text=[t])[0] for i, t in zip(ids, texts, strict=True)])
    difference = max(abs(a - b) for a, b in zip(batched, alone, strict=True) if a is not None and b is not None)
    return RewardTiming(len(ids), size.reward_seconds, batched_s, alone_s, difference)


def write_dataset(path: Path, n_rows: int, size: Size) -> Path:
    """Rows whose duration lets END come (after the recipe's min_speech_fraction of it) a few tokens before the
    budget: the completions end there rather than being cut."""
    from llasa.format import TOKENS_PER_SECOND
    from llasa.sampling import DEFAULT_MIN_SPEECH_FRACTION

    end_from = size.completion_tokens * (1 - END_MARGIN)
    seconds = end_from / DEFAULT_MIN_SPEECH_FRACTION / TOKENS_PER_SECOND
    rows = [{"text": TEXTS[i % len(TEXTS)], "duration": seconds} for i in range(n_rows)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def grpo_flags(policy: Path, dataset: Path, reward_config: Path, output_dir: Path, size: Size) -> list[str]:
    """The recipe, with this check's model, data, length and step count (one device step per optimizer step)."""
    return [
        *("--config", str(RECIPE), "--model_name_or_path", str(policy), "--dataset", str(dataset)),
        *("--reward_config", str(reward_config), "--output_dir", str(output_dir), "--dtype", "float32"),
        *("--num_generations", str(size.group), "--per_device_train_batch_size", str(size.group)),
        *("--gradient_accumulation_steps", "1", "--max_steps", str(size.steps)),
        *("--max_completion_length", str(size.completion_tokens), "--logging_steps", "1"),
        *("--save_strategy", "no", "--sample_every_steps", "0", "--report_to", "none", "--disable_tqdm", "true"),
        *size.flags,
    ]


def planned_memory(policy: Path, reward, size: Size) -> dict[str, float]:
    """benchmarks/plan_memory.py's arithmetic for the models loaded here."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from benchmarks.plan_memory import REWARD_BATCH, Setup, Sizes, count_parameters, cross_attention_cache_bytes, plan

    def count(model) -> int:
        return sum(p.numel() for p in model.parameters())

    config = AutoConfig.from_pretrained(policy)
    dims = reward.backend.model.dims  # openai-whisper's
    sizes = Sizes(
        policy=count_parameters(lambda: AutoModelForCausalLM.from_config(config)),
        vocab=config.vocab_size,
        hidden=config.hidden_size,
        whisper=count(reward.backend.model),
        codec=count(reward.codec.model),
        cross_attention_cache=cross_attention_cache_bytes(
            dims.n_text_layer, dims.n_audio_ctx, dims.n_audio_state, REWARD_BATCH
        ),
    )
    return plan(Setup("recipe"), sizes, 0.0)


def memory_report(log_history: list[dict], planned: dict[str, float]) -> list[str]:
    """The run's peak GPU memory (train.py logs it) beside the arithmetic."""
    peaks = [entry for entry in log_history if "memory/peak_allocated_gb" in entry]
    if peaks:
        allocated = max(entry["memory/peak_allocated_gb"] for entry in peaks)
        reserved = max(entry["memory/peak_reserved_gb"] for entry in peaks)
        measured = f"peak memory: {allocated:.1f} GB allocated, {reserved:.1f} GB reserved"
    else:
        measured = "peak memory: n/a (no GPU)"
    parts = ", ".join(f"{name} {gb:.2f}" for name, gb in planned.items() if gb > 0)
    return [measured, f"planned memory: {sum(planned.values()):.2f} GB ({parts})"]


def learning_report(log_history: list[dict]) -> str:
    """Each step's gradient norm and share of cut completions: a gradient norm of 0 means the step learned nothing
    (GRPO's loss itself is about 0 at every first pass over a group, whose advantages sum to 0)."""
    steps = [entry for entry in log_history if "grad_norm" in entry and "completions/clipped_ratio" in entry]
    norms = ", ".join(f"{entry['grad_norm']:.3g}" for entry in steps)
    cut = ", ".join(f"{entry['completions/clipped_ratio']:.0%}" for entry in steps)
    return f"gradient norm per step: {norms} (completions cut at the budget: {cut})"


def run_train(argv: list[str]) -> None:
    """train.py as a user runs it, in its own process."""
    result = subprocess.run([sys.executable, str(REPO / "train.py"), *argv], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"train.py failed ({result.returncode}):\n{result.stderr[-4000:]}")


def run(size: Size, work_dir: Path) -> list[str]:
    """Build the models, time the reward, run the GRPO steps with train.py; the report's lines."""
    from benchmarks import learning_check
    from llasa.device import release_cached_memory
    from llasa.evaluation.profiling import profile_report, step_profile
    from llasa.evaluation.run_log import read_log_history
    from llasa.format import SpeechVocab
    from llasa.model_cache import unload_models
    from llasa.rewards import load_reward

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [f"gpu_check: size {size.name} on {name}"]
    started = time.perf_counter()
    policy = work_dir / "llasa"
    tokenizer = build_policy(policy, size, device)
    reward_config = write_reward_config(work_dir, size)
    lines.append(f"build: {time.perf_counter() - started:.1f} s (random weights)")

    vocab = SpeechVocab.from_tokenizer(tokenizer)
    lines.append(
        f"tokenizer: {len(tokenizer)} tokens, <|eot_id|> {vocab.eot_id}, <|SPEECH_GENERATION_END|> "
        f"{vocab.speech_end_id}, <|s_0|> {vocab.first_speech_id}"
    )
    reward = load_reward(reward_config, speech_vocab=vocab)
    reward.load_models()
    lines.append(time_reward(reward, vocab, size).report())
    planned = planned_memory(policy, reward, size)
    del reward  # train.py loads its own: the GPU is the run's alone, once the loaded models are forgotten too
    unload_models()
    gc.collect()
    release_cached_memory(device)

    dataset = write_dataset(work_dir / "dataset.jsonl", 2 * size.group, size)
    run_train(grpo_flags(policy, dataset, reward_config, work_dir / "run", size))
    log_history = read_log_history(work_dir / "run")
    profile = step_profile(log_history, skip_first=size.steps > 1)
    lines.append(
        f"grpo: {size.steps} steps of {size.group} completions x {size.completion_tokens} tokens, "
        f"{'fp32 on the CPU' if '--use_cpu' in size.flags else 'bf16, gradient checkpointing'} (the first step, a "
        "warm-up, left out of the profile)"
    )
    lines.extend(profile_report(profile).splitlines())
    lines.append(learning_report(log_history))
    lines.extend(memory_report(log_history, planned))
    lines.extend(
        learning_check.first_steps(work_dir / "learning_check", size.learning_steps, gpu=device.type == "cuda")
    )
    lines.append(f"total: {time.perf_counter() - started:.1f} s")
    return lines


@dataclass(frozen=True)
class Arguments:
    tiny: bool = field(default=False, metadata={"help": "Tiny models on the CPU: the same path, in a minute."})
    work_dir: str | None = field(default=None, metadata={"help": "Where to write the models (default: temp)."})


def main(argv=None) -> None:
    parser = ScriptParser(Arguments, description=__doc__.split("\n\n")[0])
    [args] = parser.parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    size = TINY if args.tiny else FULL
    if not args.tiny and not torch.cuda.is_available():
        parser.error("No GPU: the full-size check needs one (--tiny runs the same path on a CPU).")
    if args.work_dir is not None:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        print("\n".join(run(size, Path(args.work_dir))), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work_dir:  # the models take 10 GB at full size
        print("\n".join(run(size, Path(work_dir))), flush=True)


if __name__ == "__main__":
    main()
