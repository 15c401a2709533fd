"""llasa.quiet: the notices a user cannot act on do not reach them, in a fresh interpreter where FutureWarnings are
errors; the same code without the library shows that the notices are real."""

import subprocess
import sys

import pytest

# What every command does underneath: import torchao (transformers does, with any model), build TRL's GRPOConfig
# (gradient_checkpointing by default) and read the policy's checkpointing state as TRL does at each step.
SNIPPET = """
import tempfile
{import_llasa}
import torchao
from transformers import LlamaConfig, LlamaForCausalLM
from trl import GRPOConfig

GRPOConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, report_to="none")
model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                     num_attention_heads=1, num_key_value_heads=1))
print(model.is_gradient_checkpointing)
"""


def run_snippet(import_llasa: bool) -> subprocess.CompletedProcess:
    code = SNIPPET.format(import_llasa="import llasa" if import_llasa else "")
    return subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-c", code], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # two fresh interpreters importing torch, transformers and TRL
def test_unactionable_notices_are_silenced():
    quiet = run_snippet(import_llasa=True)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "False"
    assert "Skipping import of cpp extensions" not in quiet.stderr

    # Without the library's filters, torchao's notice is printed and transformers' rename warning is raised.
    loud = run_snippet(import_llasa=False)
    assert "Skipping import of cpp extensions due to incompatible torch version" in loud.stderr
    assert loud.returncode != 0 and "`gradient_checkpointing` is deprecated" in loud.stderr
