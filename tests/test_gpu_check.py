"""The GPU check's script (benchmarks/gpu_check.sh) end to end at tiny size on the CPU: its report's fields."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"(\d+(?:\.\d+)?)"


@pytest.mark.slow
def test_tiny_gpu_check_reports_every_field(tmp_path):
    # The same code path as on a GPU (Llasa-layout tokenizer, reward benchmark, GRPO steps run by train.py with
    # the recipe, profile, memory plan), with tiny models; the printed report holds each figure.
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--tiny", "--work_dir", str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout[result.stdout.index("gpu_check: size tiny") :]
    reward = re.search(
        rf"reward: 4 completions of 1 s: batched {NUMBER} s, one at a time {NUMBER} s, ratio {NUMBER}x, "
        r"max reward difference (\S+)",
        report,
    )
    assert reward is not None, report
    assert float(reward.group(4)) < 1e-6  # one call per completion gives the batch's rewards
    # the ratio is of the unrounded times; the printed times are rounded to 1 ms
    assert float(reward.group(2)) / float(reward.group(1)) == pytest.approx(float(reward.group(3)), rel=0.03)
    assert "grpo: 2 steps of 4 completions x 16 tokens, fp32" in report
    step = float(re.search(rf"{NUMBER} s per optimizer step \(mean of 1 steps\)", report).group(1))
    phases = re.findall(
        rf"^  (generation|reward \(decode \+ Whisper\)|reference log-probs|policy update)\s+{NUMBER} s\s+"
        rf"{NUMBER}%$",
        report,
        flags=re.M,
    )
    assert [name for name, _, _ in phases] == [
        "generation",
        "reward (decode + Whisper)",
        "reference log-probs",
        "policy update",
    ]
    assert sum(float(seconds) for _, seconds, _ in phases) == pytest.approx(step, abs=0.05)
    # END is likely where speech-only sampling allows it, just before the budget: every completion ends, none is
    # masked, and each step has a gradient (with a random policy that never ends, every one would be 0).
    learning = re.search(r"gradient norm per step: (.+) \(completions cut at the budget: (.+)\)", report)
    assert learning is not None, report
    assert all(float(norm) > 0 for norm in learning.group(1).split(", ")) and learning.group(2) == "0%, 0%"
    assert "peak memory: n/a (no GPU)" in report
    planned = re.search(rf"planned memory: {NUMBER} GB \(policy weights {NUMBER}", report)
    assert planned is not None and float(planned.group(1)) > 0
    # The Llasa-layout tokenizer: Llama-3's specials after the 256 byte tokens, Llasa's markers, the speech tokens.
    assert "tokenizer: 66056 tokens, <|eot_id|> 265, <|SPEECH_GENERATION_END|> 517, <|s_0|> 520" in report


@pytest.mark.slow
def test_full_size_tokenizer_has_llasas_ids(tmp_path):
    # At full size the tokenizer's ids are the real Llasa tokenizer's: <|eot_id|> 128009, the markers from 128256
    # (<|SPEECH_GENERATION_START|> 128260, <|SPEECH_GENERATION_END|> 128261), <|s_0|> 128264, 193,800 in all.
    from transformers import AutoTokenizer

    from benchmarks.gpu_check import LLAMA_3_VOCAB, build_tokenizer
    from llasa.format import SpeechVocab

    tokenizer = AutoTokenizer.from_pretrained(build_tokenizer(tmp_path, LLAMA_3_VOCAB))
    vocab = SpeechVocab.from_tokenizer(tokenizer)
    assert len(tokenizer) == 193800 and tokenizer.bos_token_id == 128000
    assert (vocab.eot_id, vocab.speech_start_id, vocab.speech_end_id, vocab.first_speech_id) == (
        128009,
        128260,
        128261,
        128264,
    )
