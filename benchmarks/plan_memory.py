"""GPU memory plan for GRPO on Llasa: what each part holds, and what each lever saves. Arithmetic, not a measurement.

Parameter counts come from the models' configurations, built on the meta device (no weights, no download): Llasa-1B
is Llama-3.2-1B's shape with Llasa's 193,800-token vocabulary (tied embeddings), Whisper-large-v3 and XCodec2 at
their published sizes. Bytes per parameter follow how train.py trains (TRL's defaults): float32 weights with bf16
autocast, float32 gradients, AdamW's two float32 moments, and a float32 reference model when beta > 0.

The log-probs never hold the logits of a micro-batch: TRL 1.16's fused LM head (trl/kernels/chunked_logprob.py) works
in tiles of 4096 tokens x 32768 vocabulary entries, and its backward adds the head's gradient into a float32 buffer of
the head's size before handing it over. Rows marked "(estimate)" are sized from shapes rather than counted: the
tile (bf16 under autocast), openai-whisper's cross-attention keys and values for one reward batch (the decoder keeps
them for every clip while it transcribes), and the vLLM reserve (a share of the GPU). Activations are not counted:
gradient checkpointing keeps them small.

    python benchmarks/plan_memory.py                       # the recipe's settings, one 40 GB GPU
    python benchmarks/plan_memory.py --gpu_gb 80
"""

from dataclasses import dataclass, field

from llasa.cli import ScriptParser

GB = 1e9
FLOAT32, HALF = 4, 2  # bytes per value; float16 and bfloat16 alike
ADAM_MOMENTS = 2  # AdamW keeps two float32 moments per trained parameter
HEAD_TILE = (4096, 32768)  # TRL 1.16's fused LM head: tokens x vocabulary entries per projection tile
REWARD_BATCH = 16  # clips decoded and transcribed together (the reward config's batch_size)


def llasa_1b_config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=193800,  # Llama-3.2's 128,256 + 8 markers + 65,536 speech tokens
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=True,
    )


def count_parameters(build) -> int:
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def whisper_large_v3_config():
    from transformers import WhisperConfig

    return WhisperConfig(
        vocab_size=51866,
        num_mel_bins=128,
        encoder_layers=32,
        decoder_layers=32,
        d_model=1280,
        encoder_attention_heads=20,
        decoder_attention_heads=20,
        encoder_ffn_dim=5120,
        decoder_ffn_dim=5120,
    )


def whisper_large_v3_parameters() -> int:
    from transformers import WhisperForConditionalGeneration

    return count_parameters(lambda: WhisperForConditionalGeneration(whisper_large_v3_config()))


def cross_attention_cache_bytes(decoder_layers: int, frames: int, width: int, clips: int) -> int:
    """The keys and values of every decoder layer over the encoder's frames, in float16, for `clips` clips."""
    return decoder_layers * 2 * frames * width * HALF * clips


def xcodec2_parameters() -> int:
    """The reward's XCodec2: decode-only (quantizer and acoustic decoder; no w2v-BERT, no acoustic encoder)."""
    from transformers import Xcodec2Config

    from llasa.codec import xcodec2_decoder_class

    return count_parameters(lambda: xcodec2_decoder_class()(Xcodec2Config()))


@dataclass(frozen=True)
class Setup:
    name: str
    beta: float = 0.1
    lora_fraction: float | None = None  # trained share of the parameters with LoRA; None = full fine-tuning
    zero3_gpus: int = 1  # ZeRO-3 shards weights, gradients and optimizer states over this many GPUs
    reward_on_policy_gpu: bool = True
    vllm_share: float = 0.0  # share of the GPU that colocated vLLM reserves (its own copy of weights + KV cache)


@dataclass(frozen=True)
class Sizes:
    """What the plan reads from the models: parameter counts, the LM head's shape, the reward's cache."""

    policy: int  # parameters
    vocab: int
    hidden: int
    whisper: int  # parameters
    codec: int  # parameters (decode-only)
    cross_attention_cache: int  # bytes, one reward batch


def plan(setup: Setup, sizes: Sizes, gpu_gb: float) -> dict[str, float]:
    """Gigabytes per GPU for each part of the run."""
    trained = sizes.policy if setup.lora_fraction is None else sizes.policy * setup.lora_fraction
    shard = setup.zero3_gpus
    head_trained = setup.lora_fraction is None  # LoRA leaves the head frozen: no gradient for it
    on_gpu = setup.reward_on_policy_gpu
    parts = {
        "policy weights": sizes.policy * FLOAT32 / shard,
        "gradients": trained * FLOAT32 / shard,
        "AdamW states": trained * FLOAT32 * ADAM_MOMENTS / shard,
        # With LoRA the reference is the same weights with the adapters switched off: no second copy.
        "reference model": sizes.policy * FLOAT32 / shard if setup.beta > 0 and setup.lora_fraction is None else 0.0,
        "LM-head gradient buffer (fp32, backward)": sizes.vocab * sizes.hidden * FLOAT32 if head_trained else 0.0,
        "LM-head tile (bf16, estimate)": HEAD_TILE[0] * HEAD_TILE[1] * HALF,
        "Whisper (fp16 on a GPU)": sizes.whisper * HALF if on_gpu else 0.0,
        f"Whisper cross-attention cache, {REWARD_BATCH} clips (estimate)": sizes.cross_attention_cache
        if on_gpu
        else 0.0,
        "XCodec2 decoder (fp32)": sizes.codec * FLOAT32 if on_gpu else 0.0,
    }
    parts = {name: value / GB for name, value in parts.items()}
    parts["vLLM reserve (estimate)"] = setup.vllm_share * gpu_gb
    return parts


def llasa_1b_sizes() -> Sizes:
    from transformers import LlamaForCausalLM

    config, whisper = llasa_1b_config(), whisper_large_v3_config()
    return Sizes(
        policy=count_parameters(lambda: LlamaForCausalLM(config)),
        vocab=config.vocab_size,
        hidden=config.hidden_size,
        whisper=whisper_large_v3_parameters(),
        codec=xcodec2_parameters(),
        cross_attention_cache=cross_attention_cache_bytes(
            whisper.decoder_layers, whisper.max_source_positions, whisper.d_model, REWARD_BATCH
        ),
    )


@dataclass(frozen=True)
class Arguments:
    gpu_gb: float = field(default=40.0, metadata={"help": "GPU memory, GB (default: a 40 GB A100)."})
    lora_fraction: float = field(default=0.01, metadata={"help": "Trained share with LoRA (r=16: ~1%%)."})


def main(argv=None) -> None:
    [args] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)

    sizes = llasa_1b_sizes()
    print(
        f"Parameters: Llasa-1B {sizes.policy / 1e9:.2f} B, Whisper-large-v3 {sizes.whisper / 1e9:.2f} B, "
        f"XCodec2 {sizes.codec / 1e9:.2f} B; GPU: {args.gpu_gb:g} GB\n"
    )
    setups = [
        Setup("recipe (full, beta 0.1)"),
        Setup("beta 0", beta=0.0),
        Setup("LoRA", lora_fraction=args.lora_fraction),
        Setup("ZeRO-3 on 4 GPUs", zero3_gpus=4),
        Setup("reward on another GPU", reward_on_policy_gpu=False),
        Setup("LoRA + vLLM colocate 0.3", lora_fraction=args.lora_fraction, vllm_share=0.3),
    ]
    tables = [plan(setup, sizes, args.gpu_gb) for setup in setups]
    print("| part (GB per GPU) | " + " | ".join(setup.name for setup in setups) + " |")
    print("|---|" + "---:|" * len(setups))
    for part in tables[0]:
        print(f"| {part} | " + " | ".join(f"{table[part]:.1f}" for table in tables) + " |")
    totals = [sum(table.values()) for table in tables]
    print("| **total** | " + " | ".join(f"**{total:.1f}**" for total in totals) + " |")
    print("| fits in the GPU | " + " | ".join("yes" if t <= args.gpu_gb else "no" for t in totals) + " |")


if __name__ == "__main__":
    main()
