"""Direct preference optimisation (DPO) of Llasa with TRL's DPOTrainer, on listening-test judgments.

    python listen.py export --db ratings.sqlite --format dpo --dataset_dir prefs_round1
    accelerate launch train_dpo.py --model_name_or_path HKUSTAudio/Llasa-1B --dataset prefs_round1 \
        --output_dir llasa-dpo-round1

With the recipe (every DPOConfig / ModelConfig field is also a flag, and flags override the recipe), e.g. on 8 GPUs
with DeepSpeed ZeRO-2, or with LoRA (`--use_peft --lora_r 16`):

    accelerate launch --config_file recipes/accelerate_configs/zero2.yaml --num_processes 8 train_dpo.py \
        --config recipes/llasa-1b-dpo.yaml --dataset prefs_round1 --output_dir llasa-dpo-round1

`--dataset` is what `listen.py export --format dpo` wrote (a save_to_disk folder or JSONL file): Llasa's prompt and
the two clips' speech tokens, rendered to exactly the ids inference feeds Llasa. By default the log-probs of policy
and reference are taken over the speech tokens and <|SPEECH_GENERATION_END|> alone, the tokens Llasa samples from
(`--speech_only false`: the whole vocabulary).
"""

import logging
from dataclasses import dataclass, field

from trl import DPOConfig, ModelConfig, TrlParser, get_peft_config

from llasa.checks import check_exists, check_llasa_model, check_output_dir
from llasa.dpo import LlasaDPOTrainer, check_preference_dataset
from llasa.format import MAX_CONTEXT_TOKENS, SpeechVocab
from llasa.training import fall_back_to_fp32_without_gpu, load_policy, load_training_dataset, resume_target

logger = logging.getLogger("train_dpo")


@dataclass(frozen=True)
class ScriptArguments:
    """What train_dpo.py adds to TRL's DPOConfig and ModelConfig flags."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "What `listen.py export --format dpo` wrote: a save_to_disk folder or a JSONL file."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a hub or save_to_disk dataset."})
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration (subset) of a hub dataset."})
    speech_only: bool = field(
        default=True,
        metadata={
            "help": "Take the log-probs over the speech tokens and <|SPEECH_GENERATION_END|> alone, the tokens Llasa "
            "samples from (--speech_only false: the whole vocabulary)."
        },
    )


@dataclass
class LlasaDPOConfig(DPOConfig):
    """DPOConfig with defaults for Llasa: its context length, the DPO paper's beta and learning rate."""

    beta: float = field(
        default=0.1, metadata={"help": "How far the policy may move from the reference (DPO, arXiv 2305.18290)."}
    )
    learning_rate: float = field(
        default=1e-6, metadata={"help": "Peak learning rate (DPO, arXiv 2305.18290, Appendix B)."}
    )
    max_length: int | None = field(
        default=MAX_CONTEXT_TOKENS,
        metadata={"help": "Prompt + completion tokens: Llasa's training context (TRL's default, 1024, cuts speech)."},
    )

    def __post_init__(self):
        fall_back_to_fp32_without_gpu(self)
        super().__post_init__()


def make_parser() -> TrlParser:
    return TrlParser((ScriptArguments, LlasaDPOConfig, ModelConfig))


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, LlasaDPOConfig, ModelConfig]:
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    if model_args.model_name_or_path is None:
        raise ValueError("No model: pass --model_name_or_path (the Llasa checkpoint that spoke the judged clips).")
    if script_args.dataset is None:
        raise ValueError("No dataset: pass --dataset, what `listen.py export --format dpo` wrote.")
    return script_args, training_args, model_args


def build_trainer(
    script_args: ScriptArguments, training_args: LlasaDPOConfig, model_args: ModelConfig
) -> LlasaDPOTrainer:
    """Model, tokenizer, preference data and the trainer; every path is checked before anything loads."""
    check_llasa_model(model_args.model_name_or_path, "--model_name_or_path")
    check_output_dir(training_args.output_dir)
    check_exists(script_args.dataset, "--dataset")
    with training_args.main_process_first(desc="loading the preference dataset"):
        dataset = load_training_dataset(script_args.dataset, script_args.dataset_split, script_args.dataset_config)
    check_preference_dataset(dataset)
    model, tokenizer = load_policy(model_args, training_args)
    trainer = LlasaDPOTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        speech_only=SpeechVocab.from_tokenizer(tokenizer) if script_args.speech_only else None,
    )
    if trainer.accelerator.is_main_process:
        logger.info(
            "Llasa DPO: %s%s on %d preference pairs from %s; beta %s, learning rate %s, log-probs over %s",
            model_args.model_name_or_path,
            " + LoRA" if model_args.use_peft else "",
            len(trainer.train_dataset),
            script_args.dataset,
            training_args.beta,
            training_args.learning_rate,
            "speech tokens and END" if script_args.speech_only else "the whole vocabulary",
        )
    return trainer


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        script_args, training_args, model_args = parse_args(argv)
        trainer = build_trainer(script_args, training_args, model_args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise SystemExit(f"error: {e}") from e
    trainer.train(resume_from_checkpoint=resume_target(training_args.resume_from_checkpoint))
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    trainer.accelerator.print(f"Model and tokenizer saved to {training_args.output_dir}")


if __name__ == "__main__":
    main()
