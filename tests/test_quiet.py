"""llasa.quiet: the notices a user cannot act on do not reach them, in a fresh interpreter where FutureWarnings are
errors, once train.py (the one script that imports TRL before llasa) is imported."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What every training run does underneath: import torchao (transformers does, with any model), build TRL's
# GRPOConfig (gradient_checkpointing by default) and read the policy's checkpointing state as TRL does at each step.
SNIPPET = """
import tempfile
import train
import torchao
from transformers import LlamaConfig, LlamaForCausalLM
from trl import GRPOConfig

GRPOConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, report_to="none")
model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                     num_attention_heads=1, num_key_value_heads=1))
print(model.is_gradient_checkpointing)
"""


@pytest.mark.slow  # a fresh interpreter importing torch, transformers and TRL
def test_unactionable_notices_are_silenced(tmp_path):
    # The rename warning is real (pytest's own filters let it through here)...
    from trl import GRPOConfig

    with pytest.warns(FutureWarning, match="`gradient_checkpointing` is deprecated"):
        GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    # ...and neither it nor torchao's kernel notice reaches a user of the scripts.
    quiet = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", SNIPPET],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "False"
    assert "Skipping import of cpp extensions" not in quiet.stderr
    assert "deprecated" not in quiet.stderr
