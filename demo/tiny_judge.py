"""A tiny random-weight Qwen2-Audio (an audio-language model transformers ships) saved with its processor, as the
audio-LLM judge of `listen.py ai-label --judge` and the `judge` reward component load a real one.

Its processor is the real Qwen2AudioProcessor (Whisper features at 16 kHz, 128 mel bins, the chat template that
renders audio blocks as <|audio_bos|><|AUDIO|>...<|audio_eos|>) over a small byte-level BPE holding Qwen's special
tokens; its answers are random tokens.

    python -m demo.tiny_judge --output_dir outputs/tiny_judge
"""

import argparse
from pathlib import Path

from llasa.cli import add_flag

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
SCRIPT_BIAS = 1000.0  # script_answer: far above any logit of the random model
# Enough text for a BPE that spells any prompt and answer, with the verdict words as tokens.
_CORPUS = [
    "You are an expert listener judging text-to-speech. Both recordings should say:",
    "Reasons: the first recording is clearer. Better: 1 2 same. Score: 7 10",
    "system user assistant You are a helpful assistant. Audio 1: Audio 2:",
]


def build_tiny_judge(output_dir, seed: int = 0) -> Path:
    """A 1-layer Qwen2AudioForConditionalGeneration (16-wide encoder and decoder) and its processor, saved."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=QWEN_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer)
    config = Qwen2AudioConfig(
        audio_config={
            "d_model": 16,
            "encoder_layers": 1,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 32,
            "num_mel_bins": 128,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
        },
        audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flag(parser, "output_dir", default="outputs/tiny_judge", help="Where to save it.")
    print(build_tiny_judge(parser.parse_args(argv).output_dir))


if __name__ == "__main__":
    main()


def script_answer(folder, answer: str) -> Path:
    """Make the judge saved in `folder` give `answer` to any question, word for word, under greedy decoding: its saved
    generation config biases each next token of the answer (transformers' `sequence_bias`, keyed by every prefix of
    the answer, longer prefixes weighing more) and stops after it. Loading, prompting and parsing stay real; the
    answer becomes one a test knows in advance."""
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    config = GenerationConfig.from_pretrained(folder)
    config.sequence_bias = [[ids[: length + 1], SCRIPT_BIAS * (length + 1)] for length in range(len(ids))]
    config.save_pretrained(folder)
    return Path(folder)
