"""A tiny random WavLM speaker-verification model (transformers' WavLMForXVector) saved to disk, as the real
microsoft/wavlm-base-plus-sv is laid out: weights, config and feature extractor."""

from pathlib import Path

XVECTOR_DIM = 16


def build_tiny_wavlm_xvector(folder: Path) -> Path:
    """A tiny random WavLMForXVector with its feature extractor, saved as from_pretrained reads them."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    from llasa.audio import SAMPLE_RATE

    torch.manual_seed(0)
    config = WavLMConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        num_buckets=16,
        max_bucket_distance=64,
        tdnn_dim=(32, 32),
        tdnn_kernel=(3, 1),
        tdnn_dilation=(1, 1),
        xvector_output_dim=XVECTOR_DIM,
    )
    WavLMForXVector(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return folder
