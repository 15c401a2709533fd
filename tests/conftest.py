"""Session fixtures: tiny random-weight checkpoints saved to disk and loaded back like real ones."""

import pytest

from demo.tiny_models import build_tiny_llasa


@pytest.fixture(scope="session")
def tiny_llasa_dir(tmp_path_factory):
    """A tiny LlamaForCausalLM with a tokenizer laid out exactly like Llasa's, saved to disk."""
    return build_tiny_llasa(tmp_path_factory.mktemp("tiny_llasa"))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_llasa_dir):
    return tiny_llasa_dir


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
