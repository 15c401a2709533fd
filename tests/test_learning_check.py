"""The learning check's short version: GRPO through train.py (speech-only sampling, cut completions masked), with
full fine-tuning and with LoRA, raises the duration score of a tiny Llasa-shaped policy whose END is likely enough
for its lengths to vary; and LoRA can reach that END at all."""

import pytest

from benchmarks.learning_check import RISE, check


@pytest.mark.slow
def test_grpo_raises_the_duration_score(tmp_path, peft_lora):
    # A sign error, a mask that zeroes the loss, a bias that blocks the gradient or a policy whose END adapters cannot
    # reach would leave the score flat or falling: here, with full fine-tuning and with LoRA, the mean of the last 5
    # steps is at least RISE above the first 5, and every step whose completions did not all score the best (1) has
    # a gradient (once all do, the advantages are 0).
    curves = check(["full", "lora"], steps=10, learning_rate=1e-2, work_dir=tmp_path, report=lambda line: None)
    for curve in curves:
        assert curve.last - curve.first >= RISE, (curve.run.name, curve.scores)
        steps = zip(curve.scores, curve.grad_norms, strict=True)
        assert all(norm > 0 for score, norm in steps if score < 1), (curve.run.name, curve.grad_norms)


def test_lora_adapters_can_make_end_likelier_on_the_checks_policy(tmp_path, peft_lora, one_torch_thread):
    # The check's policy gives END its chance through a hidden-state signal holding about half of the final norm's
    # fixed budget, so adapters on its linear layers (LoRA leaves the head and the norms alone) can raise END's
    # probability, as GRPO needs them to: 5 Adam steps maximising log p(END) take its mean over the speech positions
    # of Llasa's prompt from about END_PROBABILITY to above 0.3. A signal filling the whole budget put END's logit at
    # its ceiling for adapters, and the check's LoRA run learned nothing.
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.learning_check import END_PROBABILITY, ROWS
    from llasa.format import SpeechVocab, render_prompt
    from testing.tiny_models import build_tiny_llasa

    policy_dir = build_tiny_llasa(tmp_path / "llasa", end_probability=END_PROBABILITY)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(policy_dir), lora)
    prompt = tokenizer(render_prompt(tokenizer, ROWS[0]["text"]), add_special_tokens=False)["input_ids"]
    speech = vocab.first_speech_id + torch.randint(0, 65536, (8, 20), generator=torch.Generator().manual_seed(0))
    input_ids = torch.cat([torch.tensor(prompt).expand(8, -1), speech], 1)
    allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
    allowed[vocab.allowed_ids()] = True

    def end_log_probs():  # at every speech position, over what speech-only sampling draws from
        logits = model(input_ids=input_ids).logits[:, len(prompt) - 1 : -1]
        return torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), -1)[..., vocab.speech_end_id]

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    means = []
    for _ in range(6):
        log_probs = end_log_probs()
        means.append(log_probs.exp().mean().item())
        optimizer.zero_grad()
        (-log_probs.mean()).backward()
        optimizer.step()
    assert means[0] == pytest.approx(END_PROBABILITY, abs=0.01)
    assert means[-1] > 0.3, means
