"""The GRPO trainer (llasa.trainer): its callbacks."""

from types import SimpleNamespace

import pytest

import llasa.trainer as trainer_module


def test_truncation_warning_is_rate_limited(caplog):
    # A high clipped ratio warns once, then not again within the interval; a low one never warns.
    from transformers import TrainerControl, TrainerState

    args = SimpleNamespace(max_completion_length=100)
    callback = trainer_module.TruncationWarningCallback(threshold=0.2, every_steps=10)
    state = TrainerState()
    for step, ratio in [(1, 0.5), (2, 0.9), (3, 0.1), (11, 0.3)]:
        state.global_step = step
        callback.on_log(args, state, TrainerControl(), logs={"completions/clipped_ratio": ratio})
    warnings = [r.message for r in caplog.records if "max_completion_length" in r.message]
    assert len(warnings) == 2 and warnings[0].startswith("Step 1: 50%") and warnings[1].startswith("Step 11: 30%")


def test_logged_completions_show_code_counts():
    # TRL's completions table and printout (its _logs deques) get "<N speech codes>" in place of the token text;
    # the other columns (rewards, transcripts) are left as they are.
    from collections import deque

    from llasa.format import codes_to_tokens

    logged = {
        "prompt": deque([[{"role": "user", "content": "Hi"}]], maxlen=4),
        "completion": deque([[{"role": "assistant", "content": codes_to_tokens(list(range(500)))}]], maxlen=4),
        "extra": {"transcript": deque(["hi"], maxlen=4)},
    }
    trainer_module.summarize_logged_speech(logged)
    assert list(logged["completion"]) == [[{"role": "assistant", "content": "<500 speech codes>"}]]
    assert list(logged["prompt"]) == [[{"role": "user", "content": "Hi"}]] and logged["completion"].maxlen == 4
    assert list(logged["extra"]["transcript"]) == ["hi"]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_log_probs_are_those_of_the_speech_only_distribution(tiny_llasa_dir, tmp_path, request, lora):
    # With speech-only sampling the trainer's log-probs and entropies (TRL's fused LM head) are the log-softmax over
    # the speech tokens and END alone, at TRL's temperature; the full-vocabulary ones without it; the head is put back.
    # With LoRA (adapters moved off their zero start) they are the adapted model's, adapters on, not the base's.
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from llasa.format import SpeechVocab
    from llasa.sampling import SpeechOnly

    tokenizer = AutoTokenizer.from_pretrained(tiny_llasa_dir)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        num_generations=2,
        per_device_train_batch_size=2,
        max_completion_length=4,
        temperature=0.8,
    )
    peft_config = None
    if lora:
        from peft import LoraConfig

        request.getfixturevalue("peft_lora")
        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = trainer_module.LlasaGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_llasa_dir),
        reward_funcs=[lambda completions, **kwargs: [0.0] * len(completions)],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["Hi."] * 2}),
        processing_class=tokenizer,
        speech_only=SpeechOnly(vocab),
        peft_config=peft_config,
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in trainer.model.named_parameters():
            if "lora_B" in name:  # zero at the start: the adapted model would equal the base
                weight.copy_(torch.randn(weight.shape, generator=generator))
    prompt = torch.randint(0, 400, (2, 5), generator=generator)
    completion = vocab.first_speech_id + torch.randint(0, 65536, (2, 6), generator=generator)
    completion[1, -1] = vocab.speech_end_id
    input_ids, mask = torch.cat([prompt, completion], 1), torch.ones(2, 11, dtype=torch.long)
    allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
    allowed[vocab.allowed_ids()] = True

    def restricted(logits):
        return torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), -1)

    with torch.no_grad():
        logps, entropy, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, mask, 6, compute_entropy=True
        )
        logits = trainer.model(input_ids=input_ids, attention_mask=mask).logits[:, 4:-1] / 0.8
    expected = restricted(logits).gather(-1, completion[..., None])[..., 0]
    assert torch.allclose(logps, expected, atol=1e-5)
    entropies = -(restricted(logits).exp() * restricted(logits).nan_to_num(neginf=0.0)).sum(-1)
    assert torch.allclose(entropy, entropies, atol=1e-4)
    assert "get_output_embeddings" not in vars(trainer.model)
    if lora:
        with torch.no_grad(), trainer.model.disable_adapter():
            base = trainer.model(input_ids=input_ids, attention_mask=mask).logits[:, 4:-1] / 0.8
        # every log-prob a thousand times the tolerance above from the base model's
        assert (logps - restricted(base).gather(-1, completion[..., None])[..., 0]).abs().min() > 0.01
    trainer.speech_only = None
    with torch.no_grad():
        full, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, mask, 6)
    assert torch.allclose(full, torch.log_softmax(logits, -1).gather(-1, completion[..., None])[..., 0], atol=1e-5)
    assert (full < logps).all()  # the full vocabulary spreads the mass over more tokens


def tiny_trainer(model_dir, tmp_path, reward, **overrides):
    """A LlasaGRPOTrainer on the tiny Llasa, CPU, speech-only sampling, one group of 4 per step."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from llasa.format import SpeechVocab
    from llasa.sampling import SpeechOnly

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    options = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        num_generations=4,
        per_device_train_batch_size=4,
        max_completion_length=4,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        mask_truncated_completions=True,
    )
    args = GRPOConfig(**{**options, **overrides})
    return trainer_module.LlasaGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["Hello there, how are you today?"] * 4}),
        processing_class=tokenizer,
        speech_only=SpeechOnly(SpeechVocab.from_tokenizer(tokenizer)),
    )


def test_a_step_with_every_completion_cut_says_so_and_the_run_says_nothing_was_learned(
    tiny_llasa_dir, tmp_path, caplog
):
    # END is blocked for the first half of the text's expected speech (~90 tokens here) and the budget is 4 tokens:
    # every completion is cut and masked. Each step warns with the fixes, and the end says no weight moved.
    import random

    trainer = tiny_trainer(tiny_llasa_dir, tmp_path, lambda completions, **kw: [random.random() for _ in completions])
    with caplog.at_level("INFO", logger="llasa.trainer"):
        trainer.train()
    warnings = [r.message for r in caplog.records if "learns nothing" in r.message]
    assert [w.split(":")[0] for w in warnings] == ["Step 1", "Step 2"]
    assert all(fix in warnings[0] for fix in ("--max_completion_length", "--min_speech_fraction", "END"))
    assert "--mask_truncated_completions false" in warnings[0]
    assert "Training left every trained weight unchanged over 2 steps: nothing was learned." in caplog.text


def test_the_end_of_a_run_that_learned_says_the_weights_changed(tiny_llasa_dir, tmp_path, caplog):
    # The same run with the cut completions kept in the loss and rewards that differ: the weights move.
    import random

    trainer = tiny_trainer(
        tiny_llasa_dir,
        tmp_path,
        lambda completions, **kw: [random.random() for _ in completions],
        mask_truncated_completions=False,
        max_steps=1,
    )
    with caplog.at_level("INFO", logger="llasa.trainer"):
        trainer.train()
    assert "learns nothing" not in caplog.text
    n_trained = sum(p.requires_grad for p in trainer.model.parameters())
    assert f"Training changed {n_trained} of the {n_trained} trained weight tensors." in caplog.text


def test_installed_trl_passes_the_support_check_and_a_moved_method_is_refused_in_one_line(monkeypatch):
    # The hooks the trainer relies on exist with the expected parameters; a TRL whose method lost or renamed one is
    # refused with the supported range named (the range requirements.txt pins).
    from trl import GRPOTrainer

    trainer_module.check_trl_support()

    def moved(self, prompt_token_ids, images, multimodal_fields, num_generations):
        pass

    with monkeypatch.context() as patch:
        patch.setattr(GRPOTrainer, "_generate_single_turn", moved)
        with pytest.raises(ValueError) as error:
            trainer_module.check_trl_support()
    message = str(error.value)
    assert "\n" not in message and "GRPOTrainer._generate_single_turn takes (self, prompt_token_ids, ...)" in message
    assert "supports trl>=1.16,<1.17" in message
    monkeypatch.delattr(GRPOTrainer, "_calculate_rewards")
    with pytest.raises(ValueError, match=r"GRPOTrainer._calculate_rewards is gone\. This project supports trl"):
        trainer_module.check_trl_support()


def test_continuous_batching_with_speech_only_is_refused():
    args = SimpleNamespace(use_transformers_continuous_batching=True)
    with pytest.raises(ValueError, match="--speech_only false"):
        trainer_module.check_speech_only_support(args, speech_only=True)
    trainer_module.check_speech_only_support(args, speech_only=False)


def test_one_process_that_sees_several_gpus_trains_on_one(monkeypatch, tmp_path):
    # Eight GPUs visible, no distributed launcher: transformers counts all eight (TRL would refuse nn.DataParallel);
    # the trainer's rule brings it to one, on cuda:0, leaving the others to the reward.
    import torch
    from trl import GRPOConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    from accelerate.state import AcceleratorState

    try:
        args = GRPOConfig(output_dir=str(tmp_path), report_to="none", bf16=False)
        assert args.n_gpu == 8
        trainer_module.use_one_gpu_per_process(args)
        assert args.n_gpu == 1 and args.device == torch.device("cuda", 0)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)  # the simulated GPUs stay in this test


def test_the_trainer_builds_where_one_process_counts_several_gpus(tiny_llasa_dir, tmp_path):
    # TRL's GRPOTrainer refuses n_gpu > 1 (nn.DataParallel); LlasaGRPOTrainer applies the rule first and builds.
    from trl import GRPOTrainer

    trainer = tiny_trainer(tiny_llasa_dir, tmp_path, lambda completions, **kw: [0.0] * len(completions))
    trainer.args._n_gpu = 8  # what transformers counts on an 8-GPU host
    with pytest.raises(ValueError, match="DataParallel"):
        GRPOTrainer(
            model=trainer.model,
            reward_funcs=trainer.reward_funcs,
            args=trainer.args,
            train_dataset=trainer.train_dataset,
            processing_class=trainer.processing_class,
        )
    rebuilt = trainer_module.LlasaGRPOTrainer(
        model=trainer.model,
        reward_funcs=trainer.reward_funcs,
        args=trainer.args,
        train_dataset=trainer.train_dataset,
        processing_class=trainer.processing_class,
    )
    assert rebuilt.args.n_gpu == 1


def test_speech_only_bias_follows_an_fsdp2_head(tmp_path):
    # Under FSDP2 the head's weight is a DTensor and TRL calls full_tensor() on weight and bias: the speech-only bias
    # comes as a DTensor on the same mesh, whole once gathered (one CPU process, gloo).
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    from llasa.format import SpeechVocab

    vocab = SpeechVocab(eot_id=5, speech_start_id=6, speech_end_id=7, first_speech_id=8)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        head = torch.nn.Linear(4, 8 + 65536, bias=False)
        head.weight = torch.nn.Parameter(distribute_tensor(head.weight.detach(), mesh, [Shard(0)]))
        model = SimpleNamespace(get_output_embeddings=lambda: head)
        with trainer_module.speech_only_log_probs(model, vocab):
            bias = model.get_output_embeddings().bias
        assert isinstance(bias, DTensor)
        whole = bias.full_tensor()
        assert (
            whole.shape == (8 + 65536,) and (whole[7:] == 0).all() and (whole[:7] == trainer_module.MASKED_LOGIT).all()
        )
    finally:
        dist.destroy_process_group()
