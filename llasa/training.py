"""Preparing a GRPO run on Llasa: prompts from a dataset, the policy with Llasa's stop ids, the completion budget,
the reward, and the codec for voice prompts and samples."""

import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from trl import GRPOConfig, ModelConfig

from llasa.checks import has_speakable_text
from llasa.codec import encode_voice_prompt, load_codec, load_codec_once
from llasa.data import load_source
from llasa.device import outside_zero3, release_cached_memory
from llasa.format import (
    CODES_COLUMN,
    DURATION_COLUMN,
    MAX_CONTEXT_TOKENS,
    TEXT_COLUMN,
    TOKENS_PER_SECOND,
    VOICE_CODES_COLUMN,
    SpeechVocab,
    build_messages,
    chat_template_kwargs,
    codes_from,
    render_prompt,
)
from llasa.rewards import load_reward_functions
from llasa.sampling import SpeechOnly, expected_speech_tokens
from llasa.scores import DEFAULT_CHARS_PER_SECOND

logger = logging.getLogger(__name__)

DEFAULT_LENGTH_MARGIN = 1.3  # completion budget = longest expected utterance x this


@dataclass(frozen=True)
class VoicePrompt:
    """A reference voice: its transcript and XCodec2 codes, put before every target text."""

    text: str
    codes: list[int]


@dataclass(frozen=True)
class PromptSummary:
    """What building the prompts kept and dropped, and the lengths that size generation."""

    rows: int  # rows read
    kept: int
    empty_text: int = 0
    no_words: int = 0  # texts without a letter or digit (punctuation, emoji): nothing for the WER to score
    no_voice_prompt: int = 0  # per-row voice cloning without reference codes or transcript
    too_long: int = 0  # prompt + expected speech beyond the context
    max_prompt_tokens: int = 0
    max_speech_tokens: int = 0  # longest expected utterance, END token included

    @property
    def dropped(self) -> int:
        return self.empty_text + self.no_words + self.no_voice_prompt + self.too_long

    def report(self) -> str:
        return (
            f"{self.rows} rows read, {self.kept} kept, {self.dropped} dropped ({self.empty_text} empty text, "
            f"{self.no_words} text without a letter or digit, "
            f"{self.too_long} too long for the {MAX_CONTEXT_TOKENS}-token context, {self.no_voice_prompt} without "
            f"a voice prompt); longest prompt {self.max_prompt_tokens} tokens, longest expected speech "
            f"{self.max_speech_tokens} tokens ({self.max_speech_tokens / TOKENS_PER_SECOND:.1f} s)"
        )


def load_training_dataset(dataset: str, split: str = "train", config: str | None = None):
    """The training rows from a save_to_disk folder, a JSON/JSONL/CSV/Parquet file or a hub id (the loader
    create_dataset.py reads --dataset with)."""
    return load_source(dataset, split, config).dataset


def load_voice_prompt(prompt_wav: str, prompt_text: str, codec_id: str, device) -> VoicePrompt:
    """Encode the reference recording once for the whole run, with a full codec that is freed afterwards (the
    reward and the samples only decode)."""
    if not prompt_text.strip():
        raise ValueError("--prompt_text is empty: give the words spoken in --prompt_wav.")
    codes = encode_voice_prompt(load_codec(codec_id, device=str(device)), prompt_wav)
    return VoicePrompt(text=prompt_text.strip(), codes=codes)


def build_prompts(
    dataset,
    tokenizer,
    *,
    text_column: str = TEXT_COLUMN,
    duration_column: str | None = DURATION_COLUMN,
    voice: VoicePrompt | None = None,
    prompt_codes_column: str | None = None,
    prompt_text_column: str | None = None,
    chars_per_second: float = DEFAULT_CHARS_PER_SECOND,
):
    """The dataset with Llasa's conversational `prompt`, the target in `text` (and, when cloning a voice, the
    voice's codes in `prompt_code_ids`), the other columns kept for the reward, and what was dropped.

    Rows with an empty text, without their voice prompt (per-row cloning), or whose prompt leaves no room for the
    expected speech in the 2048-token context are dropped and counted.
    """
    from datasets import Dataset

    columns = list(dataset.column_names)
    _check_columns(columns, text_column, prompt_codes_column, prompt_text_column)
    has_duration = duration_column is not None and duration_column in columns
    code_lengths = reference_code_lengths(dataset)
    counts = defaultdict(int)
    kept, texts, messages, rendered, speech_tokens, voice_codes = [], [], [], [], [], []
    for index, row in enumerate(
        dataset.select_columns(
            _needed_columns(columns, text_column, duration_column, prompt_codes_column, prompt_text_column)
        )
    ):
        text = "" if row[text_column] is None else str(row[text_column]).strip()
        if not text:
            counts["empty_text"] += 1
            continue
        if not has_speakable_text(text):
            counts["no_words"] += 1
            continue
        row_voice = voice
        if prompt_codes_column is not None:
            codes, ref_text = codes_from(row[prompt_codes_column]), row[prompt_text_column]
            if not codes or ref_text is None or not str(ref_text).strip():
                counts["no_voice_prompt"] += 1
                continue
            row_voice = VoicePrompt(text=str(ref_text).strip(), codes=codes)
        prompt_text, prompt_codes = (None, None) if row_voice is None else (row_voice.text, row_voice.codes)
        kept.append(index)
        texts.append(text)
        voice_codes.append(prompt_codes)
        messages.append(build_messages(text, prompt_text, prompt_codes))
        rendered.append(render_prompt(tokenizer, text, prompt_text, prompt_codes))
        if code_lengths is not None and code_lengths[index]:
            speech_tokens.append(code_lengths[index] + 1)  # the reference recording's own length, END included
        else:
            speech_tokens.append(
                expected_speech_tokens(text, row[duration_column] if has_duration else None, chars_per_second)
            )
    # The rendered prompt already starts with <|begin_of_text|>: no special tokens added.
    prompt_tokens = (
        [len(ids) for ids in tokenizer(rendered, add_special_tokens=False)["input_ids"]] if rendered else []
    )
    fits = [p + s <= MAX_CONTEXT_TOKENS for p, s in zip(prompt_tokens, speech_tokens, strict=True)]
    counts["too_long"] = fits.count(False)
    keep = [i for i, ok in enumerate(fits) if ok]
    summary = PromptSummary(
        rows=len(dataset),
        kept=len(keep),
        empty_text=counts["empty_text"],
        no_words=counts["no_words"],
        no_voice_prompt=counts["no_voice_prompt"],
        too_long=counts["too_long"],
        max_prompt_tokens=max((prompt_tokens[i] for i in keep), default=0),
        max_speech_tokens=max((speech_tokens[i] for i in keep), default=0),
    )
    built = {TEXT_COLUMN: [texts[i] for i in keep], "prompt": [messages[i] for i in keep]}
    if voice is not None or prompt_codes_column is not None:
        # The reward's speaker similarity compares each completion with the voice it was asked to clone.
        built[VOICE_CODES_COLUMN] = [voice_codes[i] for i in keep]
    return _with_other_columns(Dataset.from_dict(built), dataset, [kept[i] for i in keep]), summary


def reference_code_lengths(dataset) -> list[int | None] | None:
    """Per row, the number of codes of its reference recording (create_dataset.py's audio_code_ids), read from the
    Arrow column without decoding the codes; None when the dataset has no such list column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if CODES_COLUMN not in dataset.column_names:
        return None
    codes = dataset.with_format("arrow")[CODES_COLUMN]
    if not (pa.types.is_list(codes.type) or pa.types.is_large_list(codes.type)):
        return None
    return pc.list_value_length(codes).to_pylist()


def _check_columns(columns: list[str], text_column, prompt_codes_column, prompt_text_column) -> None:
    for flag, name in (
        ("--text_column", text_column),
        ("--prompt_codes_column", prompt_codes_column),
        ("--prompt_text_column", prompt_text_column),
    ):
        if name is not None and name not in columns:
            raise ValueError(
                f"The dataset has no column {name!r} ({flag}); its columns are: {', '.join(columns)}. "
                f"Pass {flag} naming one of them."
            )


def _with_other_columns(built, dataset, rows: list[int]):
    """`built` beside the source's other columns of `rows`, raw audio left out: no reward reads it, and decoding it
    for every batch would only cost time."""
    from datasets import Audio, concatenate_datasets

    audio = [name for name, feature in dataset.features.items() if isinstance(feature, Audio)]
    others = dataset.remove_columns([name for name in built.column_names if name in dataset.column_names] + audio)
    if not others.column_names:
        return built
    # In memory: the user's dataset folder may be read-only, and needs no cache file of ours.
    others = others.select(rows).flatten_indices(keep_in_memory=True)
    return concatenate_datasets([built, others], axis=1)


def _needed_columns(columns, *names) -> list[str]:
    return [name for name in dict.fromkeys(names) if name is not None and name in columns]


def size_completion_length(
    max_speech_tokens: int, max_prompt_tokens: int, margin: float = DEFAULT_LENGTH_MARGIN
) -> int:
    """Room for the longest expected utterance plus a margin, within the context left by the longest prompt."""
    wanted = math.ceil(max_speech_tokens * margin)
    return max(1, min(wanted, MAX_CONTEXT_TOKENS - max_prompt_tokens))


def stop_at_speech_end(model, tokenizer) -> list[int]:
    """Make <|SPEECH_GENERATION_END|> an eos id of the model's generation config (TRL stops there; checkpoints keep it)."""
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    model.generation_config.eos_token_id = vocab.stop_ids(model.generation_config.eos_token_id)
    return model.generation_config.eos_token_id


def load_policy(model_args: ModelConfig, training_args: GRPOConfig):
    """The model and tokenizer, loaded as TRL would from the path, with Llasa's stop id added."""
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import get_quantization_config

    quantization_config = get_quantization_config(model_args)
    # A quantized model is placed at load time, one copy per process; others are moved by the Trainer.
    device_map = {"": PartialState().local_process_index} if quantization_config is not None else None
    model_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        "quantization_config": quantization_config,
        "device_map": device_map,
        **(training_args.model_init_kwargs or {}),  # --model_init_kwargs wins
    }
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **model_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        padding_side="left",
    )
    stop_at_speech_end(model, tokenizer)
    return model, tokenizer


def configure_generation(training_args: GRPOConfig, summary: PromptSummary, stop_ids: list[int], margin: float):
    """Fill in what depends on the data and the tokenizer: the completion budget, the pinned date, vLLM's stop ids."""
    if training_args.max_completion_length is None:
        training_args.max_completion_length = size_completion_length(
            summary.max_speech_tokens, summary.max_prompt_tokens, margin
        )
    elif training_args.max_completion_length + summary.max_prompt_tokens > MAX_CONTEXT_TOKENS:
        logger.warning(
            "max_completion_length %d + the longest prompt (%d tokens) exceeds Llasa's %d-token context.",
            training_args.max_completion_length,
            summary.max_prompt_tokens,
            MAX_CONTEXT_TOKENS,
        )
    # The prompt must render exactly as at inference: the chat template's date is pinned.
    training_args.chat_template_kwargs = {**(training_args.chat_template_kwargs or {}), **chat_template_kwargs()}
    if training_args.use_vllm:
        # vLLM reads the eos of the checkpoint it loaded, not our generation config: pass the stop ids explicitly.
        generation_kwargs = dict(training_args.generation_kwargs or {})
        given = generation_kwargs.get("stop_token_ids") or []
        generation_kwargs["stop_token_ids"] = list(dict.fromkeys([*stop_ids, *given]))
        training_args.generation_kwargs = generation_kwargs
        if training_args.vllm_max_model_length is None:
            # Llama-3.2's config allows 131072 positions; Llasa was trained on 2048, and vLLM's cache needs no more.
            training_args.vllm_max_model_length = MAX_CONTEXT_TOKENS
        match_vllm_sampling(training_args)
    return training_args


# The first-steps metrics of a vLLM run (TRL's names): the ratios near 1 and a small log-prob difference mean vLLM
# samples what the trainer scores.
VLLM_WATCH_METRICS = (
    "sampling/importance_sampling_ratio/mean",
    "sampling/importance_sampling_ratio/min",
    "sampling/sampling_logp_difference/mean",
)
TOKEN_LEVEL_CORRECTION = "token_truncate"


def vocabulary_cuts(training_args: GRPOConfig) -> dict:
    """The sampling options that leave tokens out of the sampled vocabulary (top_k, top_p below 1, min_p), from the
    config and from generation_kwargs (which TRL applies last)."""
    values = {"top_k": training_args.top_k, "top_p": training_args.top_p, "min_p": training_args.min_p}
    values.update({name: value for name, value in (training_args.generation_kwargs or {}).items() if name in values})
    off = {"top_k": (None, 0, -1), "top_p": (None, 1, 1.0), "min_p": (None, 0, 0.0)}
    return {name: value for name, value in values.items() if value not in off[name]}


def match_vllm_sampling(training_args: GRPOConfig) -> GRPOConfig:
    """Keep vLLM's importance-sampling correction meaningful on speech-long completions.

    vLLM returns each token's log-prob after its top-k / top-p / min-p cut, renormalised over the tokens kept; the
    trainer recomputes it over the whole vocabulary. Their ratio is then the kept mass, below 1, at every token, and
    a sequence-level correction multiplies 500-1500 of them: the weight underflows and GRPO barely learns. So, with
    the correction on, the cut is switched off for vLLM (pass --vllm_importance_sampling_correction false to keep
    it), and a sequence-level correction becomes token-level truncated: each token's ratio is clipped on its own,
    which also holds where vLLM samples from a restricted set of tokens the trainer does not see.
    """
    if not (training_args.use_vllm and training_args.vllm_importance_sampling_correction):
        return training_args
    cuts = vocabulary_cuts(training_args)
    if cuts:
        logger.warning(
            "vLLM's log-probs are taken after the sampling cut (%s), the trainer's over the whole vocabulary: their "
            "ratio would bias the importance-sampling correction. Sampling without the cut (top_k 0, top_p 1.0); "
            "to keep it, pass --vllm_importance_sampling_correction false.",
            ", ".join(f"{name} {value}" for name, value in cuts.items()),
        )
        training_args.top_k, training_args.top_p, training_args.min_p = 0, 1.0, None
        kwargs = training_args.generation_kwargs or {}
        training_args.generation_kwargs = {name: value for name, value in kwargs.items() if name not in cuts}
    if training_args.vllm_importance_sampling_mode.startswith("sequence"):
        logger.info(
            "vllm_importance_sampling_mode %s -> %s: a sequence's ratio multiplies one per speech token (50 per "
            "second).",
            training_args.vllm_importance_sampling_mode,
            TOKEN_LEVEL_CORRECTION,
        )
        training_args.vllm_importance_sampling_mode = TOKEN_LEVEL_CORRECTION
    logger.info("vLLM generation: watch %s in the first steps.", ", ".join(VLLM_WATCH_METRICS))
    return training_args


def fall_back_to_fp32_without_gpu(training_args: GRPOConfig) -> bool:
    """Mixed precision needs a GPU: without one, a bf16 request (TRL's default) or an fp16 one trains in float32
    instead, with one warning, rather than stopping. Call before GRPOConfig.__post_init__ checks the setup."""
    import torch
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    bf16 = not training_args.fp16 if training_args.bf16 is None else training_args.bf16
    no_bf16 = bf16 and not training_args.use_cpu and not (is_torch_bf16_gpu_available() or is_torch_xla_available())
    no_fp16 = training_args.fp16 and not torch.cuda.is_available()
    if not (no_bf16 or no_fp16):
        return False
    logger.warning(
        "%s mixed precision needs a GPU and none that supports it was found: training in float32 instead "
        "(pass --bf16 false to silence this).",
        "bf16" if no_bf16 else "fp16",
    )
    training_args.bf16, training_args.fp16 = False, False
    return True


def no_pin_memory_without_accelerator(training_args: GRPOConfig) -> None:
    """Pinned memory only speeds copies to an accelerator: without one, torch's DataLoader warns at every epoch
    that it is unused. Leave it off there (the Trainer's default turns it on)."""
    import torch

    if not torch.accelerator.is_available():
        training_args.dataloader_pin_memory = False


def configure_speech_only(training_args: GRPOConfig, speech_only: SpeechOnly | None, dataset, duration_column) -> None:
    """vLLM's part of speech-only sampling: allowed_token_ids and min_tokens in generation_kwargs (transformers
    generation gets the trainer's logits processor instead). vLLM's sampling parameters are the same for every prompt,
    so its min_tokens is the smallest row minimum of the dataset, where transformers applies each row's own."""
    if speech_only is None or not training_args.use_vllm:
        return
    columns = dataset.column_names
    durations = dataset[duration_column] if duration_column in columns else [None] * len(dataset)
    minimum = min(speech_only.min_tokens(text, d) for text, d in zip(dataset[TEXT_COLUMN], durations, strict=True))
    generation_kwargs = dict(training_args.generation_kwargs or {})
    generation_kwargs.setdefault("allowed_token_ids", speech_only.vocab.allowed_ids())
    generation_kwargs.setdefault("min_tokens", minimum)
    training_args.generation_kwargs = generation_kwargs


def resume_target(value: str | None) -> str | bool | None:
    """--resume_from_checkpoint: a checkpoint folder, or "true"/"last" for the latest one in output_dir."""
    if value is not None and value.lower() in ("true", "last"):
        return True
    return value


def check_resume(value: str | None, output_dir) -> None:
    """--resume_from_checkpoint, checked before any model loads: an existing checkpoint folder, or "true"/"last"
    with a checkpoint-N folder in output_dir."""
    target = resume_target(value)
    if target is True:
        from transformers.trainer_utils import get_last_checkpoint

        if not Path(output_dir).is_dir() or get_last_checkpoint(str(output_dir)) is None:
            raise ValueError(
                f"--resume_from_checkpoint {value}: {output_dir} holds no checkpoint-N folder to resume from; "
                "drop the flag to start afresh."
            )
    elif target is not None and not Path(target).is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: no such folder; name a checkpoint-N folder of a run's --output_dir."
        )


def load_reward_funcs(reward_config: str, tokenizer, training_args: GRPOConfig | None = None) -> list:
    """The reward of the JSON config (checked now, its models loaded later), reading TRL's completion ids: one
    function, or one per component ("per_component": true), whose weights go to training_args.reward_weights."""
    functions, weights = load_reward_functions(reward_config, speech_vocab=SpeechVocab.from_tokenizer(tokenizer))
    if training_args is not None and len(functions) > 1:
        set_reward_weights(training_args, [function.__name__ for function in functions], weights)
    return functions


def set_reward_weights(training_args: GRPOConfig, names: list[str], weights: list[float]) -> None:
    """The config's component weights as TRL's reward_weights, unless --reward_weights gives one per component."""
    if training_args.reward_weights is None:
        training_args.reward_weights = list(weights)
    elif len(training_args.reward_weights) != len(names):
        raise ValueError(
            f"--reward_weights gives {len(training_args.reward_weights)} weights, but the reward config has "
            f"{len(names)} components ({', '.join(names)}): give one per component, or leave it out to use the "
            "config's weights."
        )
    logger.info(
        "Per-component rewards: %s (aggregation %s).",
        ", ".join(f"{n} x {w:g}" for n, w in zip(names, training_args.reward_weights, strict=True)),
        training_args.multi_objective_aggregation,
    )


def load_reward_models(reward_funcs: list, training_args: GRPOConfig) -> None:
    """Load the reward's models now, whole on every process, so that a model that cannot load fails before the first
    step.

    Every process loads the same models in the same order, with DeepSpeed ZeRO-3 kept out (`outside_zero3`): no
    collective call runs while loading, so the main process can go first (processes never download or write the same
    cache file at once) while the others wait, without a hang.
    """
    with training_args.main_process_first(local=True, desc="loading the reward models"), outside_zero3():
        for reward in reward_funcs:
            if hasattr(reward, "load_models"):
                reward.load_models()
    release_cached_memory(training_args.device)


def run_codec_id(codec_id: str | None, reward_funcs: list) -> str:
    """The codec of the run: --codec_id, else the reward's."""
    if codec_id is not None:
        return codec_id
    for reward in reward_funcs:
        config = getattr(reward, "config", None)
        if getattr(config, "codec_id", None) is not None:
            return config.codec_id
    raise ValueError(
        "No codec to encode the voice prompt or decode samples: pass --codec_id (e.g. HKUSTAudio/xcodec2)."
    )


def load_run_codec(codec_id: str | None, reward_funcs: list, device):
    """The decode-only codec for samples: the reward's own when --codec_id does not name another (no second copy)."""
    if codec_id is None:
        for reward in reward_funcs:
            if getattr(reward, "codec", None) is not None:
                return reward.codec
    return load_codec_once(run_codec_id(codec_id, reward_funcs), device=str(device))
