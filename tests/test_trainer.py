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
