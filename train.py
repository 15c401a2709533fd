"""GRPO fine-tuning of Llasa with TRL's GRPOTrainer, rewarded by Whisper recognition of the generated speech.

    accelerate launch train.py --model_name_or_path HKUSTAudio/Llasa-1B-Multilingual --dataset your_dataset.json \
        --reward_config reward_models/wer_nll.json --output_dir llasa-grpo-exp1

With the paper's recipe and a DeepSpeed ZeRO-2 launch (every GRPOConfig / ModelConfig field is also a flag, and flags
override the recipe):

    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml --num_processes 8 train.py \
        --config recipes/llasa-1b-grpo.yaml --dataset tokenized_dataset --output_dir llasa-grpo-exp1

`--dataset` is a hub id (`--dataset_split`), a `save_to_disk` folder (create_dataset.py's output) or a JSON / JSONL /
CSV / Parquet file; only a text column is needed. Voice cloning (speaker adaptation): `--prompt_wav speaker.wav
--prompt_text "..."` gives every prompt one reference voice; `--prompt_codes_column` + `--prompt_text_column` give
each row its own. LoRA: `--use_peft --lora_r 16`. vLLM generation: `--use_vllm` (colocated) or `--use_vllm
--vllm_mode server` with `trl vllm-serve --model <model>` running beside it.
"""

import contextlib
import json
import logging
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser
from trl.data_utils import is_conversational
from trl.extras.profiling import ProfilingContext

import llasa
from llasa import MAX_CONTEXT_TOKENS, TOKENS_PER_SECOND, SpeechVocab

logger = logging.getLogger("train")

DEFAULT_CHARS_PER_SECOND = 14.0  # English read speech; about 4 for Chinese or Japanese characters
DEFAULT_LENGTH_MARGIN = 1.3  # completion budget = longest expected utterance x this
# The reference implementation's spellings that differ from ours by more than dashes vs underscores
# (the parser already accepts --output-dir for --output_dir).
FLAG_ALIASES = {"--model-id": "--model_name_or_path", "--dataset-id": "--dataset"}


@dataclass(frozen=True)
class ScriptArguments:
    """What train.py adds to TRL's GRPOConfig and ModelConfig flags."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "Hub id, save_to_disk folder (create_dataset.py's output) or JSON/JSONL/CSV/Parquet."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a hub or save_to_disk dataset."})
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration (subset) of a hub dataset."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text to speak."})
    duration_column: str = field(
        default="duration",
        metadata={"help": "Column of utterance seconds, used to size max_completion_length (optional)."},
    )
    reward_config: str | None = field(
        default=None, metadata={"help": "Reward JSON config, e.g. reward_models/wer_nll.json."}
    )
    codec_id: str | None = field(
        default=None,
        metadata={
            "help": "XCodec2 checkpoint to encode --prompt_wav and decode saved samples (default: the reward's codec)."
        },
    )
    prompt_wav: str | None = field(
        default=None, metadata={"help": "Voice cloning: one reference recording for every prompt."}
    )
    prompt_text: str | None = field(default=None, metadata={"help": "Voice cloning: the transcript of --prompt_wav."})
    prompt_codes_column: str | None = field(
        default=None,
        metadata={"help": "Voice cloning per row: column of the reference audio's XCodec2 codes (or speech tokens)."},
    )
    prompt_text_column: str | None = field(
        default=None, metadata={"help": "Voice cloning per row: column of the reference audio's transcript."}
    )
    chars_per_second: float = field(
        default=DEFAULT_CHARS_PER_SECOND,
        metadata={"help": "Speaking rate assumed for rows without a duration (about 4 for Chinese/Japanese)."},
    )
    length_margin: float = field(
        default=DEFAULT_LENGTH_MARGIN,
        metadata={"help": "Default max_completion_length = longest expected utterance times this."},
    )
    truncation_warning_ratio: float = field(
        default=0.2, metadata={"help": "Warn when more than this share of completions hit max_completion_length."}
    )
    sample_every_steps: int = field(
        default=100, metadata={"help": "Write generated clips under output_dir/samples/ every N steps (0: never)."}
    )
    num_samples_to_save: int = field(default=4, metadata={"help": "Clips written each time."})


@dataclass
class LlasaGRPOConfig(GRPOConfig):
    """GRPOConfig with defaults for Llasa: the paper's GRPO settings, Llasa's sampling, a speech-sized budget."""

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (arXiv 2509.18798)."})
    beta: float = field(default=0.1, metadata={"help": "KL coefficient (arXiv 2509.18798)."})
    temperature: float = field(
        default=llasa.SAMPLING_TEMPERATURE, metadata={"help": "Sampling temperature (Llasa model card)."}
    )
    top_k: int = field(
        default=llasa.SAMPLING_TOP_K,
        metadata={"help": "Top-k sampling, as inference.py samples (0: off; the model card's example used 50)."},
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={
            "help": "Speech tokens per completion (50 per second). Default: sized from the dataset's longest "
            "expected utterance, within the 2048-token context."
        },
    )
    mask_truncated_completions: bool = field(
        default=True,
        metadata={"help": "Leave completions cut at max_completion_length out of the loss (a cut clip is no sample)."},
    )
    log_completions: bool = field(
        default=True,
        metadata={"help": "Write the completions table (texts, rewards, transcripts) under output_dir/completions/."},
    )
    num_completions_to_print: int | None = field(default=2, metadata={"help": "Completions printed at each log."})


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
    no_voice_prompt: int = 0  # per-row voice cloning without reference codes or transcript
    too_long: int = 0  # prompt + expected speech beyond the context
    max_prompt_tokens: int = 0
    max_speech_tokens: int = 0  # longest expected utterance, END token included

    @property
    def dropped(self) -> int:
        return self.empty_text + self.no_voice_prompt + self.too_long

    def report(self) -> str:
        return (
            f"{self.rows} rows read, {self.kept} kept, {self.dropped} dropped ({self.empty_text} empty text, "
            f"{self.too_long} too long for the {MAX_CONTEXT_TOKENS}-token context, {self.no_voice_prompt} without "
            f"a voice prompt); longest prompt {self.max_prompt_tokens} tokens, longest expected speech "
            f"{self.max_speech_tokens} tokens ({self.max_speech_tokens / TOKENS_PER_SECOND:.1f} s)"
        )


# ---------------------------------------------------------------------------------------------------- arguments


def map_flag_aliases(argv: list[str]) -> list[str]:
    """Rewrite the reference implementation's flag spellings (`--model-id x`, `--dataset-id=x`) to ours."""
    mapped = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        mapped.append(FLAG_ALIASES.get(name, name) + sep + value if name in FLAG_ALIASES else arg)
    return mapped


def make_parser() -> TrlParser:
    return TrlParser((ScriptArguments, LlasaGRPOConfig, ModelConfig))


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, LlasaGRPOConfig, ModelConfig]:
    parser = make_parser()
    argv = map_flag_aliases(sys.argv[1:] if argv is None else list(argv))
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    check_script_args(script_args, model_args)
    return script_args, training_args, model_args


def check_script_args(script_args: ScriptArguments, model_args: ModelConfig) -> None:
    """Reject missing or contradictory options with the fix in the message."""
    if model_args.model_name_or_path is None:
        raise ValueError("No model: pass --model_name_or_path (e.g. HKUSTAudio/Llasa-1B-Multilingual).")
    if script_args.dataset is None:
        raise ValueError("No dataset: pass --dataset (hub id, save_to_disk folder, or JSON/JSONL/CSV/Parquet file).")
    if script_args.reward_config is None:
        raise ValueError("No reward: pass --reward_config (e.g. reward_models/wer_nll.json).")
    if (script_args.prompt_wav is None) != (script_args.prompt_text is None):
        raise ValueError("Voice cloning with one voice needs both --prompt_wav and --prompt_text.")
    if (script_args.prompt_codes_column is None) != (script_args.prompt_text_column is None):
        raise ValueError("Voice cloning per row needs both --prompt_codes_column and --prompt_text_column.")
    if script_args.prompt_wav is not None and script_args.prompt_codes_column is not None:
        raise ValueError("Pass either --prompt_wav/--prompt_text (one voice) or the per-row prompt columns, not both.")
    if script_args.chars_per_second <= 0 or script_args.length_margin <= 0:
        raise ValueError("--chars_per_second and --length_margin must be positive.")


# ---------------------------------------------------------------------------------------------------- data


def load_training_dataset(dataset: str, split: str = "train", config: str | None = None):
    """The training rows from a save_to_disk folder, a JSON/JSONL/CSV/Parquet file or a hub id (create_dataset.py's
    loader: the two scripts read --dataset alike)."""
    from create_dataset import load_source

    return load_source(dataset, split, config).dataset


def load_voice_prompt(prompt_wav: str, prompt_text: str, codec) -> VoicePrompt:
    """Encode the reference recording once for the whole run."""
    from llasa.audio import load_audio

    if not prompt_text.strip():
        raise ValueError("--prompt_text is empty: give the words spoken in --prompt_wav.")
    codes = [int(code) for code in codec.encode([load_audio(prompt_wav, llasa.CODEC_SAMPLE_RATE)])[0]]
    if not codes:
        raise ValueError(f"--prompt_wav {prompt_wav} is too short to hold a single speech code.")
    return VoicePrompt(text=prompt_text.strip(), codes=codes)


def expected_speech_tokens(text: str, duration: float | None, chars_per_second: float) -> int:
    """Speech tokens the utterance should take, END included: from its duration, else from its length in chars."""
    seconds = duration if duration is not None and duration > 0 else len(text) / chars_per_second
    return math.ceil(seconds * TOKENS_PER_SECOND) + 1


def build_prompts(
    dataset,
    tokenizer,
    *,
    text_column: str = "text",
    duration_column: str | None = "duration",
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
    from datasets import Audio, Dataset, concatenate_datasets

    columns = list(dataset.column_names)
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
    has_duration = duration_column is not None and duration_column in columns
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
        row_voice = voice
        if prompt_codes_column is not None:
            codes, ref_text = llasa.codes_from(row[prompt_codes_column]), row[prompt_text_column]
            if not codes or ref_text is None or not str(ref_text).strip():
                counts["no_voice_prompt"] += 1
                continue
            row_voice = VoicePrompt(text=str(ref_text).strip(), codes=codes)
        prompt_text, prompt_codes = (None, None) if row_voice is None else (row_voice.text, row_voice.codes)
        kept.append(index)
        texts.append(text)
        voice_codes.append(prompt_codes)
        messages.append(llasa.build_messages(text, prompt_text, prompt_codes))
        rendered.append(llasa.render_prompt(tokenizer, text, prompt_text, prompt_codes))
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
        no_voice_prompt=counts["no_voice_prompt"],
        too_long=counts["too_long"],
        max_prompt_tokens=max((prompt_tokens[i] for i in keep), default=0),
        max_speech_tokens=max((speech_tokens[i] for i in keep), default=0),
    )
    built = {"text": [texts[i] for i in keep], "prompt": [messages[i] for i in keep]}
    if voice is not None or prompt_codes_column is not None:
        # The reward's speaker similarity compares each completion with the voice it was asked to clone.
        from reward_whisper import VOICE_PROMPT_CODES_COLUMN

        built[VOICE_PROMPT_CODES_COLUMN] = [voice_codes[i] for i in keep]
    built = Dataset.from_dict(built)
    # Raw audio is dropped: no reward reads it, and decoding it for every batch would only cost time.
    audio = [name for name, feature in dataset.features.items() if isinstance(feature, Audio)]
    others = dataset.remove_columns([name for name in built.column_names if name in columns] + audio)
    if others.column_names:
        # In memory: the user's dataset folder may be read-only, and needs no cache file of ours.
        others = others.select([kept[i] for i in keep]).flatten_indices(keep_in_memory=True)
        built = concatenate_datasets([built, others], axis=1)
    return built, summary


def _needed_columns(columns, *names) -> list[str]:
    return [name for name in dict.fromkeys(names) if name is not None and name in columns]


def size_completion_length(
    max_speech_tokens: int, max_prompt_tokens: int, margin: float = DEFAULT_LENGTH_MARGIN
) -> int:
    """Room for the longest expected utterance plus a margin, within the context left by the longest prompt."""
    wanted = math.ceil(max_speech_tokens * margin)
    return max(1, min(wanted, MAX_CONTEXT_TOKENS - max_prompt_tokens))


# ---------------------------------------------------------------------------------------------------- model


def stop_at_speech_end(model, tokenizer) -> list[int]:
    """Make <|SPEECH_GENERATION_END|> an eos id of the model's generation config (TRL stops there; checkpoints keep it)."""
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    model.generation_config.eos_token_id = list(dict.fromkeys([vocab.speech_end_id, vocab.eot_id, *eos]))
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
    training_args.chat_template_kwargs = {**(training_args.chat_template_kwargs or {}), **llasa.chat_template_kwargs()}
    if training_args.use_vllm:
        # vLLM reads the eos of the checkpoint it loaded, not our generation config: pass the stop ids explicitly.
        generation_kwargs = dict(training_args.generation_kwargs or {})
        given = generation_kwargs.get("stop_token_ids") or []
        generation_kwargs["stop_token_ids"] = list(dict.fromkeys([*stop_ids, *given]))
        training_args.generation_kwargs = generation_kwargs
        if training_args.vllm_max_model_length is None:
            # Llama-3.2's config allows 131072 positions; Llasa was trained on 2048, and vLLM's cache needs no more.
            training_args.vllm_max_model_length = MAX_CONTEXT_TOKENS
    return training_args


def resume_target(value: str | None) -> str | bool | None:
    """--resume_from_checkpoint: a checkpoint folder, or "true"/"last" for the latest one in output_dir."""
    if value is not None and value.lower() in ("true", "last"):
        return True
    return value


# ---------------------------------------------------------------------------------------------------- trainer


class LlasaGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that continues Llasa's opened assistant turn and logs speech-specific metrics.

    TRL 1.16 renders every conversational prompt with `add_generation_prompt=True`, which would close the assistant
    turn that holds <|SPEECH_GENERATION_START|> (and the voice prompt's codes) and open an empty one. Llasa must
    continue that turn, exactly as `llasa.render_prompt` renders it for inference.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.profiling_seconds = defaultdict(float)  # filled by record_profiling() and StepTimer, emptied at each log
        self.profiled_steps = 0  # optimizer steps timed since the last log
        self.latest_batch = None  # (texts, completion ids) of the last scored generation batch

    def _tokenize_prompts(self, prompts: list):
        if not (is_conversational({"prompt": prompts[0]}) and prompts[0][-1]["role"] == "assistant"):
            return super()._tokenize_prompts(prompts)
        rendered = [
            self.processing_class.apply_chat_template(
                prompt, tokenize=False, continue_final_message=True, **self.chat_template_kwargs
            )
            for prompt in prompts
        ]
        # The template writes <|begin_of_text|> itself.
        prompt_ids = self.processing_class(text=rendered, add_special_tokens=False)["input_ids"]
        return prompt_ids, None, {}

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        from reward_whisper import VOICE_PROMPT_CODES_COLUMN

        # Kept for SpeechSamplesCallback: texts, voice prompts (voice cloning) and the generated ids.
        self.latest_batch = (
            [row.get("text") for row in inputs],
            [row.get(VOICE_PROMPT_CODES_COLUMN) for row in inputs],
            completion_ids_list,
        )
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if self.profiled_steps > 0:
            # Seconds per optimizer step since the last log, under TRL's own names.
            for name, seconds in self.profiling_seconds.items():
                logs[f"profiling/Time taken: {name}"] = seconds / self.profiled_steps
            self.profiling_seconds.clear()
            self.profiled_steps = 0
        super().log(logs, start_time)


@contextlib.contextmanager
def record_profiling(trainer: LlasaGRPOTrainer):
    """Collect TRL's profiling timings (sent only to wandb/mlflow/trackio) into the trainer's logs as well."""
    original = ProfilingContext._log_metrics

    def log_metrics(context, duration):
        trainer.profiling_seconds[context.name] += duration
        original(context, duration)

    ProfilingContext._log_metrics = log_metrics
    try:
        yield
    finally:
        ProfilingContext._log_metrics = original


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (generation, reward, update, optimizer), logged with the profiling times."""

    def __init__(self, trainer: LlasaGRPOTrainer):
        self.trainer = trainer
        self.started = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.started is None:
            self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.profiling_seconds["step"] += time.perf_counter() - self.started
        self.trainer.profiled_steps += 1
        self.started = None


class TruncationWarningCallback(TrainerCallback):
    """Warn when many completions hit max_completion_length: the budget is too short for the speech."""

    def __init__(self, threshold: float, every_steps: int = 100):
        self.threshold = threshold
        self.every_steps = every_steps  # repeat at most this often
        self.last_warned = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        ratio = (logs or {}).get("completions/clipped_ratio")
        if ratio is None or ratio <= self.threshold or not state.is_world_process_zero:
            return
        if self.last_warned is not None and state.global_step - self.last_warned < self.every_steps:
            return
        self.last_warned = state.global_step
        logger.warning(
            "Step %d: %.0f%% of completions reached max_completion_length (%s tokens = %.1f s) without "
            "<|SPEECH_GENERATION_END|>. Raise --max_completion_length if the texts need longer speech.",
            state.global_step,
            100 * ratio,
            args.max_completion_length,
            args.max_completion_length / TOKENS_PER_SECOND,
        )


class SpeechSamplesCallback(TrainerCallback):
    """Every N steps, decode a few of the latest completions to WAV under output_dir/samples/step-N/ and send
    them to the trackers in report_to (wandb, tensorboard) when present."""

    def __init__(self, trainer: LlasaGRPOTrainer, codec_loader, every_steps: int, num_samples: int):
        self.trainer = trainer
        self.codec_loader = codec_loader  # called once, on the first save
        self.codec = None
        self.every_steps = every_steps
        self.num_samples = num_samples
        self.vocab = SpeechVocab.from_tokenizer(trainer._tokenizer)

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_steps <= 0 or state.global_step % self.every_steps != 0 or not state.is_world_process_zero:
            return
        if self.trainer.latest_batch is None:
            return
        texts, voice_prompts, completion_ids = (values[: self.num_samples] for values in self.trainer.latest_batch)
        folder = Path(args.output_dir) / "samples" / f"step-{state.global_step}"
        written = write_samples(folder, texts, voice_prompts, completion_ids, self.vocab, self._codec())
        send_audio_to_trackers(self.trainer, args.report_to, written, state.global_step)

    def _codec(self):
        if self.codec is None:
            self.codec = self.codec_loader()
        return self.codec


def write_samples(
    folder: Path, texts: list, voice_prompts: list, completion_ids: list, vocab: SpeechVocab, codec
) -> list[dict]:
    """Decode completions (after their voice prompt's codes, as inference does) to WAV files plus samples.jsonl
    (text, file, seconds, whether END was generated)."""
    from llasa.audio import write_wav
    from llasa.codec import decode_continuations

    parsed = [vocab.parse(ids) for ids in completion_ids]
    speech = [i for i, p in enumerate(parsed) if p.codes]
    decoded = decode_continuations(
        codec, [parsed[i].codes for i in speech], [llasa.codes_from(voice_prompts[i]) for i in speech]
    )
    waveforms = iter(wav for _, wav in decoded)
    records = []
    for index, (text, speech_codes) in enumerate(zip(texts, parsed, strict=True)):
        record = {"text": text, "codes": len(speech_codes.codes), "ended": speech_codes.ended, "file": None}
        if speech_codes.codes:
            wav = next(waveforms)
            path = write_wav(folder / f"sample-{index}.wav", wav, codec.sample_rate)
            record.update(file=path.name, seconds=len(wav) / codec.sample_rate, waveform=wav)
        records.append(record)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "samples.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps({k: v for k, v in record.items() if k != "waveform"}) + "\n")
    return records


def send_audio_to_trackers(trainer, report_to: list[str], records: list[dict], step: int) -> None:
    """Log the clips to wandb (wandb.Audio) and tensorboard (add_audio) when they are active."""
    clips = [(i, r) for i, r in enumerate(records) if r.get("waveform") is not None]
    if not clips:
        return
    if "wandb" in report_to:
        import wandb

        if wandb.run is not None:
            audio = {
                f"samples/{i}": wandb.Audio(r["waveform"], sample_rate=llasa.CODEC_SAMPLE_RATE, caption=r["text"])
                for i, r in clips
            }
            wandb.log({**audio, "train/global_step": step})
    if "tensorboard" in report_to:
        import torch
        from transformers.integrations import TensorBoardCallback

        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                for i, r in clips:
                    callback.tb_writer.add_audio(
                        f"samples/{i}", torch.from_numpy(r["waveform"])[None], step, llasa.CODEC_SAMPLE_RATE
                    )


# ---------------------------------------------------------------------------------------------------- the run


def load_reward_funcs(reward_config: str, tokenizer) -> list:
    """The reward of the JSON config (checked now, its models loaded later), reading TRL's completion ids."""
    from reward_whisper import load_reward

    return [load_reward(reward_config, speech_vocab=SpeechVocab.from_tokenizer(tokenizer))]


def load_run_codec(codec_id: str | None, reward_funcs: list, device):
    """The codec given by --codec_id, else the reward's own (no second copy in memory)."""
    if codec_id is not None:
        from reward_whisper import load_codec_once

        return load_codec_once(codec_id, device=str(device))
    for reward in reward_funcs:
        codec = getattr(reward, "codec", None)
        if codec is not None:
            return codec
    raise ValueError(
        "No codec to encode the voice prompt or decode samples: pass --codec_id (e.g. HKUSTAudio/xcodec2)."
    )


def startup_summary(
    script_args: ScriptArguments,
    training_args: GRPOConfig,
    model_args: ModelConfig,
    summary: PromptSummary,
    sized: bool,
) -> str:
    per_step = training_args.per_device_train_batch_size * training_args.world_size
    per_update = per_step * training_args.gradient_accumulation_steps
    generation = training_args.generation_batch_size
    group = training_args.num_generations
    budget = training_args.max_completion_length
    voice = "none (the model's own voices)"
    if script_args.prompt_wav is not None:
        voice = f"one voice ({script_args.prompt_wav})"
    elif script_args.prompt_codes_column is not None:
        voice = f"per row ({script_args.prompt_codes_column}, {script_args.prompt_text_column})"
    return "\n".join(
        [
            "Llasa GRPO",
            f"  model:       {model_args.model_name_or_path}" + (" + LoRA" if model_args.use_peft else ""),
            f"  dataset:     {script_args.dataset} [{script_args.dataset_split}]: {summary.report()}",
            f"  voice:       {voice}",
            f"  reward:      {script_args.reward_config}",
            f"  batch:       {per_update} completions per update ({training_args.per_device_train_batch_size} "
            f"per device x {training_args.world_size} processes x {training_args.gradient_accumulation_steps} "
            f"accumulation); {generation // group} prompts x {group} generations per generation batch",
            f"  completions: up to {budget} tokens ({budget / TOKENS_PER_SECOND:.1f} s), "
            + ("sized from the data" if sized else "as given")
            + f"; temperature {training_args.temperature}, top_p {training_args.top_p}",
            f"  GRPO:        beta {training_args.beta}, learning rate {training_args.learning_rate}, "
            f"{'vLLM ' + training_args.vllm_mode if training_args.use_vllm else 'transformers'} generation",
        ]
    )


def build_trainer(
    script_args: ScriptArguments,
    training_args: LlasaGRPOConfig,
    model_args: ModelConfig,
    reward_funcs: list | None = None,
) -> LlasaGRPOTrainer:
    """Everything up to a ready trainer: data, prompts, model, reward, callbacks; the summary is logged."""
    from trl import get_peft_config

    model, tokenizer = load_policy(model_args, training_args)
    if reward_funcs is None:
        reward_funcs = load_reward_funcs(script_args.reward_config, tokenizer)
    voice = None
    if script_args.prompt_wav is not None:
        codec = load_run_codec(script_args.codec_id, reward_funcs, training_args.device)
        voice = load_voice_prompt(script_args.prompt_wav, script_args.prompt_text, codec)
    with training_args.main_process_first(desc="building prompts"):
        dataset = load_training_dataset(script_args.dataset, script_args.dataset_split, script_args.dataset_config)
        dataset, summary = build_prompts(
            dataset,
            tokenizer,
            text_column=script_args.text_column,
            duration_column=script_args.duration_column,
            voice=voice,
            prompt_codes_column=script_args.prompt_codes_column,
            prompt_text_column=script_args.prompt_text_column,
            chars_per_second=script_args.chars_per_second,
        )
    if summary.kept == 0:
        raise ValueError(f"No usable row in {script_args.dataset}: {summary.report()}.")
    # A model that cannot load fails now, not at the first step; the main process downloads first, so that
    # processes never write the same cache file at once.
    with training_args.main_process_first(local=True, desc="loading the reward models"):
        for reward in reward_funcs:
            if hasattr(reward, "load_models"):
                reward.load_models()
    sized = training_args.max_completion_length is None
    configure_generation(training_args, summary, model.generation_config.eos_token_id, script_args.length_margin)
    trainer = LlasaGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.add_callback(StepTimer(trainer))
    trainer.add_callback(TruncationWarningCallback(script_args.truncation_warning_ratio))
    if script_args.sample_every_steps > 0 and script_args.num_samples_to_save > 0:
        trainer.add_callback(
            SpeechSamplesCallback(
                trainer,
                lambda: load_run_codec(script_args.codec_id, reward_funcs, training_args.device),
                script_args.sample_every_steps,
                script_args.num_samples_to_save,
            )
        )
    if trainer.accelerator.is_main_process:
        logger.info("%s", startup_summary(script_args, training_args, model_args, summary, sized))
    return trainer


def train(trainer: LlasaGRPOTrainer, resume_from_checkpoint: str | bool | None = None) -> None:
    """Train, then save the model, tokenizer and generation config to output_dir with the run's log history."""
    with record_profiling(trainer):
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model(trainer.args.output_dir)
    trainer.save_state()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        script_args, training_args, model_args = parse_args(argv)
        trainer = build_trainer(script_args, training_args, model_args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from e
    train(trainer, resume_target(training_args.resume_from_checkpoint))
    trainer.accelerator.print(f"Model, tokenizer and generation config saved to {training_args.output_dir}")


if __name__ == "__main__":
    main()
