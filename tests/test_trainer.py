"""The GRPO trainer (llasa.trainer): its callbacks."""

from types import SimpleNamespace

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


def test_log_probs_are_those_of_the_speech_only_distribution(tiny_llasa_dir, tmp_path):
    # With speech-only sampling the trainer's log-probs and entropies (TRL's fused LM head) are the log-softmax over
    # the speech tokens and END alone, at TRL's temperature; the full-vocabulary ones without it; the head is put back.
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
    trainer = trainer_module.LlasaGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_llasa_dir),
        reward_funcs=[lambda completions, **kwargs: [0.0] * len(completions)],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["Hi."] * 2}),
        processing_class=tokenizer,
        speech_only=SpeechOnly(vocab),
    )
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 400, (2, 5), generator=generator)
    completion = vocab.first_speech_id + torch.randint(0, 65536, (2, 6), generator=generator)
    completion[1, -1] = vocab.speech_end_id
    input_ids, mask = torch.cat([prompt, completion], 1), torch.ones(2, 11, dtype=torch.long)
    with torch.no_grad():
        logps, entropy, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, mask, 6, compute_entropy=True
        )
        logits = trainer.model(input_ids=input_ids, attention_mask=mask).logits[:, 4:-1] / 0.8
    allowed = torch.zeros(logits.shape[-1], dtype=torch.bool)
    allowed[vocab.allowed_ids()] = True
    restricted = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), -1)
    expected = restricted.gather(-1, completion[..., None])[..., 0]
    assert torch.allclose(logps, expected, atol=1e-5)
    assert torch.allclose(entropy, -(restricted.exp() * restricted.nan_to_num(neginf=0.0)).sum(-1), atol=1e-4)
    assert "get_output_embeddings" not in vars(trainer.model)
    trainer.speech_only = None
    with torch.no_grad():
        full, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, mask, 6)
    assert torch.allclose(full, torch.log_softmax(logits, -1).gather(-1, completion[..., None])[..., 0], atol=1e-5)
    assert (full < logps).all()  # the full vocabulary spreads the mass over more tokens
