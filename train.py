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

import logging
from dataclasses import dataclass, field

import llasa  # noqa: F401  before TRL: llasa.quiet filters notices that importing TRL would print

# isort: split
from trl import GRPOConfig, ModelConfig, get_peft_config

from llasa.checks import check_codec, check_exists, check_llasa_model, check_output_dir, check_voice_prompt
from llasa.cli import ScriptParser, reported_errors
from llasa.format import SAMPLING_TEMPERATURE, SAMPLING_TOP_K, TOKENS_PER_SECOND, SpeechVocab
from llasa.rewards import check_reward_config
from llasa.run_setup import (
    DEFAULT_LENGTH_MARGIN,
    PromptSummary,
    build_prompts,
    check_resume,
    configure_generation,
    configure_speech_only,
    fall_back_to_fp32_without_gpu,
    load_policy,
    load_reward_funcs,
    load_reward_models,
    load_run_codec,
    load_training_dataset,
    load_voice_prompt,
    no_pin_memory_without_accelerator,
    resume_target,
    run_codec_id,
)
from llasa.sampling import DEFAULT_MIN_SPEECH_FRACTION, SpeechOnly, check_min_speech_fraction, describe_sampling
from llasa.sources import check_saved_rows
from llasa.text import DEFAULT_CHARS_PER_SECOND
from llasa.trainer import LlasaGRPOTrainer, check_speech_only_support, check_trl_support

logger = logging.getLogger("train")

# The reference implementation's spellings that differ from ours by more than dashes vs underscores
# (the parser already accepts --output-dir for --output_dir).
RENAMED_FLAGS = {"--model-id": "--model_name_or_path", "--dataset-id": "--dataset"}


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
        metadata={
            "help": "Letters and digits per second assumed for rows without a duration (about 4 for Chinese/Japanese)."
        },
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
    speech_only: bool = field(
        default=True,
        metadata={
            "help": "Sample only speech tokens and <|SPEECH_GENERATION_END|>, the end not before --min_speech_fraction "
            "of the text's expected length; the trainer's log-probs see the same restriction (--no_speech_only: "
            "any token)."
        },
    )
    min_speech_fraction: float = field(
        default=DEFAULT_MIN_SPEECH_FRACTION,
        metadata={"help": "Share of a text's expected speech tokens before the end may be sampled (speech_only)."},
    )

    def __post_init__(self):
        if self.dataset is None:
            raise ValueError(
                "No dataset: pass --dataset (hub id, save_to_disk folder, or JSON/JSONL/CSV/Parquet file)."
            )
        if self.reward_config is None:
            raise ValueError("No reward: pass --reward_config (e.g. reward_models/wer_nll.json).")
        if (self.prompt_wav is None) != (self.prompt_text is None):
            raise ValueError("Voice cloning with one voice needs both --prompt_wav and --prompt_text.")
        if (self.prompt_codes_column is None) != (self.prompt_text_column is None):
            raise ValueError("Voice cloning per row needs both --prompt_codes_column and --prompt_text_column.")
        if self.prompt_wav is not None and self.prompt_codes_column is not None:
            raise ValueError(
                "Pass either --prompt_wav/--prompt_text (one voice) or the per-row prompt columns, not both."
            )
        if self.chars_per_second <= 0 or self.length_margin <= 0:
            raise ValueError("--chars_per_second and --length_margin must be positive.")
        check_min_speech_fraction(self.min_speech_fraction)


@dataclass
class LlasaGRPOConfig(GRPOConfig):
    """GRPOConfig with defaults for Llasa: the paper's GRPO settings, Llasa's sampling, a speech-sized budget."""

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (arXiv 2509.18798)."})
    beta: float = field(default=0.1, metadata={"help": "KL coefficient (arXiv 2509.18798)."})
    temperature: float = field(
        default=SAMPLING_TEMPERATURE, metadata={"help": "Sampling temperature (Llasa model card)."}
    )
    top_k: int = field(
        default=SAMPLING_TOP_K,
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

    def __post_init__(self):
        fall_back_to_fp32_without_gpu(self)
        no_pin_memory_without_accelerator(self)
        super().__post_init__()


def make_parser() -> ScriptParser:
    return ScriptParser((ScriptArguments, LlasaGRPOConfig, ModelConfig), renamed=RENAMED_FLAGS)


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, LlasaGRPOConfig, ModelConfig]:
    parser = make_parser()
    script_args, training_args, model_args = parser.parse(argv)
    if model_args.model_name_or_path is None:
        parser.error("No model: pass --model_name_or_path (e.g. HKUSTAudio/Llasa-1B-Multilingual).")
    return script_args, training_args, model_args


def startup_summary(
    script_args: ScriptArguments,
    training_args: GRPOConfig,
    model_args: ModelConfig,
    summary: PromptSummary,
    sized: bool,
    speech_only: SpeechOnly | None,
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
            f"  sampling:    {describe_sampling(speech_only)}",
            f"  GRPO:        beta {training_args.beta}, learning rate {training_args.learning_rate}, "
            f"{'vLLM ' + training_args.vllm_mode if training_args.use_vllm else 'transformers'} generation",
        ]
    )


def check_paths(script_args, training_args, model_args, check_reward: bool = True) -> None:
    """Every model, file and folder the run needs, checked before any model loads."""
    check_llasa_model(model_args.model_name_or_path, "--model_name_or_path")
    check_output_dir(training_args.output_dir)
    check_exists(script_args.dataset, "--dataset")
    check_saved_rows(script_args.dataset, script_args.dataset_split)
    check_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    if script_args.codec_id is not None:
        check_codec(script_args.codec_id)
    if check_reward and script_args.reward_config is not None:
        check_reward_config(script_args.reward_config)
    if script_args.prompt_wav is not None:
        check_voice_prompt(script_args.prompt_wav)


def load_speech_only(script_args: ScriptArguments, tokenizer) -> SpeechOnly | None:
    if not script_args.speech_only:
        return None
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    return SpeechOnly(vocab, script_args.min_speech_fraction, script_args.chars_per_second)


def build_trainer(
    script_args: ScriptArguments,
    training_args: LlasaGRPOConfig,
    model_args: ModelConfig,
    reward_funcs: list | None = None,
) -> LlasaGRPOTrainer:
    """Everything up to a ready trainer: model, reward, voice prompt, data and prompts, generation settings; the
    summary is logged. `reward_funcs` replaces the --reward_config reward (tests)."""
    check_paths(script_args, training_args, model_args, check_reward=reward_funcs is None)
    check_speech_only_support(training_args, script_args.speech_only)
    model, tokenizer = load_policy(model_args, training_args)
    if reward_funcs is None:
        reward_funcs = load_reward_funcs(script_args.reward_config, tokenizer, training_args)
    voice = None
    if script_args.prompt_wav is not None:
        codec_id = run_codec_id(script_args.codec_id, reward_funcs)
        voice = load_voice_prompt(script_args.prompt_wav, script_args.prompt_text, codec_id, training_args.device)
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
    load_reward_models(reward_funcs, training_args)
    sized = training_args.max_completion_length is None
    configure_generation(training_args, summary, model.generation_config.eos_token_id, script_args.length_margin)
    speech_only = load_speech_only(script_args, tokenizer)
    configure_speech_only(training_args, speech_only, dataset, script_args.duration_column)
    trainer = LlasaGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        codec_loader=lambda: load_run_codec(script_args.codec_id, reward_funcs, training_args.device),
        sample_every_steps=script_args.sample_every_steps,
        num_samples_to_save=script_args.num_samples_to_save,
        truncation_warning_ratio=script_args.truncation_warning_ratio,
        speech_only=speech_only,
        duration_column=script_args.duration_column,
    )
    if trainer.accelerator.is_main_process:
        logger.info("%s", startup_summary(script_args, training_args, model_args, summary, sized, speech_only))
    return trainer


def train(trainer: LlasaGRPOTrainer, resume_from_checkpoint: str | bool | None = None) -> None:
    """Train, then save the model, tokenizer and generation config to output_dir with the run's log history."""
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model(trainer.args.output_dir)
    trainer.save_state()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with reported_errors():  # bad input stops the run before training starts
        check_trl_support()
        script_args, training_args, model_args = parse_args(argv)
        trainer = build_trainer(script_args, training_args, model_args)
    train(trainer, resume_target(training_args.resume_from_checkpoint))
    trainer.accelerator.print(f"Model, tokenizer and generation config saved to {training_args.output_dir}")


if __name__ == "__main__":
    main()
