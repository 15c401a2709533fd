"""A tiny random checkpoint in the original XCodec2 layout (the `xcodec2` package), built offline.

The package's `XCodec2Model.__init__` downloads facebook/w2v-bert-2.0 (model and feature extractor)
and hard-codes a full-size acoustic encoder and decoder. `offline_original_xcodec2()` swaps, inside
the package's module only, the downloads for a tiny random Wav2Vec2-BERT and its default feature
extractor, and shrinks the acoustic encoder and the decoder's transformer. The fixed 2048/1024
projections stay, so the checkpoint is still ~40M parameters (~160 MB), built once per session.
Building and loading the checkpoint both need the stand-ins active.
"""

import contextlib
import functools
from pathlib import Path

import pytest
import torch

SEMANTIC_HIDDEN = 16
SEMANTIC_LAYER = 16  # the package reads hidden_states[16] of the semantic model


class _TinyWav2Vec2Bert:
    """Stands in for transformers.Wav2Vec2BertModel inside the package: no download."""

    @staticmethod
    def from_pretrained(name, **kwargs):
        from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

        config = Wav2Vec2BertConfig(
            hidden_size=SEMANTIC_HIDDEN,
            output_hidden_size=SEMANTIC_HIDDEN,
            num_hidden_layers=SEMANTIC_LAYER,
            num_attention_heads=1,
            intermediate_size=16,
            conv_depthwise_kernel_size=3,
            left_max_position_embeddings=8,
            right_max_position_embeddings=8,
            **kwargs,
        )
        return Wav2Vec2BertModel(config)


class _DefaultFeatureExtractor:
    """Stands in for AutoFeatureExtractor inside the package: w2v-bert-2.0's extractor type, defaults."""

    @staticmethod
    def from_pretrained(name, **kwargs):
        from transformers import SeamlessM4TFeatureExtractor

        return SeamlessM4TFeatureExtractor()


@contextlib.contextmanager
def offline_original_xcodec2():
    """Patch the `xcodec2` package's module so that XCodec2Model builds offline and small."""
    import xcodec2.modeling_xcodec2 as original

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(original, "Wav2Vec2BertModel", _TinyWav2Vec2Bert)
        patch.setattr(original, "AutoFeatureExtractor", _DefaultFeatureExtractor)
        # fc_prior is a fixed 2048 -> 2048 layer: semantic and acoustic widths must add up to 2048.
        encoder = functools.partial(original.CodecEncoder_Transformer, ngf=2, hidden_dim=2048 - SEMANTIC_HIDDEN)
        patch.setattr(original, "CodecEncoder_Transformer", encoder)
        patch.setattr(original, "CodecDecoderVocos", functools.partial(original.CodecDecoderVocos, depth=0))
        yield


def build_tiny_original_xcodec2(output_dir, seed: int = 0) -> Path:
    """Save a random original-layout XCodec2 checkpoint (config.json + model.safetensors); needs the stand-ins."""
    from xcodec2.modeling_xcodec2 import BigCodecConfig, XCodec2Model

    torch.manual_seed(seed)
    model = XCodec2Model(BigCodecConfig(semantic_hidden_size=SEMANTIC_HIDDEN)).eval()
    with torch.no_grad():
        # Random latents are tiny and would all round to the middle code; spread them over the codebook.
        model.generator.quantizer.project_in.weight.mul_(30.0)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    return output_dir
