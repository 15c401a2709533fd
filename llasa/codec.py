"""XCodec2, Llasa's speech codec: 16 kHz mono waveforms <-> one code in [0, 65535] per 320 samples.

`load_codec` reads the checkpoint's config.json and picks the backend:

- transformers' native port (`HKUSTAudio/xcodec2-hf`; config `model_type: "xcodec2"` with a
  `semantic_model_config`): `TransformersXcodec2`, batched;
- the original release (`HKUSTAudio/xcodec2`; config with `codec_encoder_hidden_size`, architecture
  `XCodec2Model`) through the `xcodec2` package: `OriginalXcodec2`, one clip at a time.

Both return, for a clip of N samples, N // 320 + 1 codes (the codec pads every clip up to the next
multiple of 320 and beyond), and decode n codes to exactly n * 320 samples. `decode_only=True` loads
only the quantizer and the acoustic decoder (no w2v-BERT semantic model, no acoustic encoder), for
callers that never encode: the reward, training samples, inference without voice prompts.

The codec has no padding mask of its own: padding a short clip in a batch changes its last codes (the
acoustic encoder's convolutions see the padding; their receptive field spans several frames) and, when
decoding, all of its audio (the decoder's GroupNorm takes statistics over the whole time axis and its
attention is not masked). So encode batches only hold clips of the same code length, and decoding has
two batching modes (`BATCHING_MODES`):

- "masked" (the default on a GPU): clips of different lengths share a batch, neighbours in length, with
  at most MAX_PADDING of the batch's frames being padding; the decoder runs with a padding mask (GroupNorm
  on each clip's own frames, padding zeroed before every convolution, padded keys masked out of attention,
  padded frames left out of the ISTFT's overlap-add), so each clip's audio is its one-at-a-time audio up to
  float rounding (convolutions round differently on longer inputs). Batches of one length run the
  unmodified decoder.
- "exact" (the default on the CPU): only clips of the same code length share a batch, through the
  unmodified decoder: each clip's audio is what decoding it alone gives.

benchmarks/bench_codec.py compares them. Masked batching needs a fraction of the decoder calls (8
completions of 2-6 s: 2 calls instead of 8), which is what a GPU's per-call overhead is paid on; on a CPU,
decoding is compute-bound and the padding is extra work (real-size codec, one thread: masked runs at 0.81x
the speed of exact). Hence `default_batching`.

On a GPU, kernels chosen per batch shape (and PyTorch's default TF32 convolutions) still flip codes that
sit on an FSQ rounding boundary: about 1% of codes between a batch of 8 and one clip at a time in float32,
far more in half precision, so encode datasets in float32. Decoded audio agrees to ~1e-4.
"""

import functools
import json
import os
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from llasa.audio import SAMPLE_RATE
from llasa.device import outside_zero3, resolve_device, resolve_dtype
from llasa.format import CODEBOOK_SIZE, SAMPLES_PER_TOKEN
from llasa.model_cache import load_once

XCODEC2_INSTALL_HINT = "pip install -r requirements-xcodec2.txt && pip install --no-deps xcodec2==0.1.5"
# The transformers port needs no extra package; its codes equal the original release's.
DEFAULT_CODEC_ID = "HKUSTAudio/xcodec2-hf"
DEFAULT_BATCH_SIZE = 16  # clips per forward pass (transformers backend)
BATCHING_MODES = ("masked", "exact")
# At most this share of a masked batch's frames is padding (wasted work): neighbours in length share a batch.
MAX_PADDING = 0.25
# What decoding never uses in transformers' Xcodec2Model: the w2v-BERT semantic model and its adapter, the acoustic
# encoder, the encoder's fusion layer.
ENCODER_MODULES = ("semantic_encoder", "semantic_adapter", "acoustic_encoder", "fc_encoder")
# All that `decode_code` uses in the `xcodec2` package's XCodec2Model.
ORIGINAL_DECODER_MODULES = ("generator", "fc_post_a")


def num_codes(num_samples: int) -> int:
    """How many codes XCodec2 gives a clip of `num_samples` samples at 16 kHz."""
    return num_samples // SAMPLES_PER_TOKEN + 1


class Xcodec2Codec:
    """The interface every backend offers: `encode`, `decode`, `sample_rate`, `device`, `batching`, `decode_only`."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self, model, device: torch.device, batch_size: int, *, batching: str | None = None, decode_only: bool = False
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.batching = default_batching(device) if batching is None else batching
        self.decode_only = decode_only

    @property
    def batching(self) -> str:
        """How `decode` batches clips of different lengths: one of BATCHING_MODES (see the module's docstring)."""
        return self._batching

    @batching.setter
    def batching(self, mode: str) -> None:
        self._batching = _checked_batching(mode)

    @torch.inference_mode()
    def encode(self, waveforms: list[np.ndarray]) -> list[list[int]]:
        """Codes of each 16 kHz mono float32 waveform: N // 320 + 1 ints in [0, 65535] for N samples."""
        if self.decode_only:
            raise RuntimeError(
                "This XCodec2 was loaded with decode_only=True: it has no semantic model or acoustic encoder, so it "
                "cannot encode audio. Load it with load_codec(..., decode_only=False) to encode."
            )
        waveforms = [_check_waveform(wav, index) for index, wav in enumerate(waveforms)]
        codes = [[] for _ in waveforms]
        for batch in _same_length_batches([num_codes(len(wav)) for wav in waveforms], self.batch_size):
            for index, clip_codes in zip(batch, self._encode_batch([waveforms[i] for i in batch]), strict=True):
                codes[index] = clip_codes
        return codes

    @torch.inference_mode()
    def decode(self, codes: list[list[int]]) -> list[np.ndarray]:
        """A 16 kHz mono float32 waveform of exactly len(codes) * 320 samples for each code list."""
        codes = [_check_codes(clip_codes, index) for index, clip_codes in enumerate(codes)]
        waveforms = [np.zeros(0, dtype=np.float32) for _ in codes]  # no codes, no audio
        nonempty = [index for index, clip_codes in enumerate(codes) if len(clip_codes)]
        lengths = [len(codes[index]) for index in nonempty]
        batches = _same_length_batches if self.batching == "exact" else _length_sorted_batches
        for batch in batches(lengths, self.batch_size):
            indices = [nonempty[i] for i in batch]
            audio = self._decode_batch([codes[i] for i in indices]).float().cpu().numpy()
            for row, index in enumerate(indices):
                waveforms[index] = audio[row, : len(codes[index]) * SAMPLES_PER_TOKEN].copy()
        return waveforms

    def _encode_batch(self, waveforms: list[np.ndarray]) -> list[list[int]]:
        """Codes of waveforms that all give the same number of codes."""
        raise NotImplementedError

    def _decode_batch(self, codes: list[np.ndarray]) -> torch.Tensor:
        """Audio (batch, samples) of code arrays, each clip's audio in its first len(codes) * 320 samples."""
        raise NotImplementedError


class TransformersXcodec2(Xcodec2Codec):
    """transformers' `Xcodec2Model` with its `Xcodec2FeatureExtractor`; batches of `batch_size` clips.

    Decoding reads only `model.quantizer` and `model.acoustic_decoder`, so `model` may be the decode-only model
    (`feature_extractor` is then None).
    """

    def __init__(
        self,
        model,
        feature_extractor,
        device: torch.device,
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        batching: str | None = None,
        decode_only: bool = False,
    ):
        super().__init__(model, device, batch_size, batching=batching, decode_only=decode_only)
        self.feature_extractor = feature_extractor
        self.dtype = model.dtype

    def _encode_batch(self, waveforms):
        inputs = self.feature_extractor(waveforms, sampling_rate=self.sample_rate, return_tensors="pt")
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        for name in ("input_values", "input_features"):
            inputs[name] = inputs[name].to(self.dtype)
        audio_codes = self.model.encode(**inputs).audio_codes[:, 0]  # (batch, n_codes)
        return _checked_codes(audio_codes, num_codes(len(waveforms[0])))

    def _decode_batch(self, codes):
        padded, lengths = _padded_codes(codes, self.device)
        latents = self.model.quantizer.from_codes(padded[..., None])  # (batch, n_codes, quantization_dim)
        decoder = self.model.acoustic_decoder
        if len({len(clip_codes) for clip_codes in codes}) == 1:
            return decoder(latents)[:, 0]  # what Xcodec2Model.decode runs
        return _masked_decode(decoder, latents, lengths)


class OriginalXcodec2(Xcodec2Codec):
    """The `xcodec2` package's `XCodec2Model` (`encode_code`, `decode_code`), one clip at a time, float32."""

    def __init__(self, model, device: torch.device, *, decode_only: bool = False):
        # encode_code reads only the first clip of a batch, and decode_code has no padding mask: one clip per call
        super().__init__(model, device, batch_size=1, batching="exact", decode_only=decode_only)

    def _encode_batch(self, waveforms):
        wav = torch.from_numpy(waveforms[0])[None].to(self.device)
        return _checked_codes(self.model.encode_code(wav)[:, 0], num_codes(len(waveforms[0])))

    def _decode_batch(self, codes):
        padded, _ = _padded_codes(codes, self.device)
        return self.model.decode_code(padded[:, None, :])[:, 0]


def default_batching(device: torch.device) -> str:
    """The batching mode `decode` uses unless told: "exact" on the CPU, "masked" on a GPU (see the module's docstring)."""
    return "exact" if device.type == "cpu" else "masked"


def _checked_batching(mode: str) -> str:
    if mode not in BATCHING_MODES:
        raise ValueError(f"batching must be one of {BATCHING_MODES}, got {mode!r}.")
    return mode


def decode_continuations(
    codec, codes: list[list[int]], prompts: list[list[int] | None]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prompt audio, new audio) of each generated code list, decoded by `codec` after its voice prompt's codes.

    XCodec2's decoder sees the whole sequence (unmasked attention, normalisation over time), so new speech
    decoded with its voice prompt as left context differs from the same codes decoded alone. Llasa's own voice
    cloning decodes them together and cuts the prompt's len(prompt) * 320 samples off; so does every part of
    this project (inference, the reward, training samples), so that what is rewarded is what users hear.
    """
    prompts = [list(prompt or []) for prompt in prompts]
    waveforms = codec.decode([prompt + list(new) for prompt, new in zip(prompts, codes, strict=True)])
    cuts = [len(prompt) * SAMPLES_PER_TOKEN for prompt in prompts]
    return [(wav[:cut], wav[cut:]) for wav, cut in zip(waveforms, cuts, strict=True)]


@outside_zero3()
def load_codec(
    name_or_path,
    *,
    device="auto",
    dtype=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batching: str | None = None,
    decode_only: bool = False,
) -> Xcodec2Codec:
    """Load an XCodec2 checkpoint (hub id or local folder) for inference.

    device: "auto" (this process's GPU when there is one, else the CPU), or anything `torch.device` accepts.
    dtype: None or float32; float16 / bfloat16 (or their names) for the transformers backend on a GPU.
    batching: how `decode` batches clips of different lengths, one of BATCHING_MODES; None for
        `default_batching(device)` (transformers backend; the original release decodes one clip at a time).
    decode_only: load only what decoding uses (no w2v-BERT semantic model, no acoustic encoder); `encode` then
        raises. For callers that never encode: the reward, training samples, inference without voice prompts.
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device, gpu_default=torch.float32)  # unset: float32, as datasets should be encoded
    if batching is not None:
        _checked_batching(batching)
    config = _read_config(name_or_path)
    if _is_transformers_xcodec2(config):
        return _load_transformers_xcodec2(name_or_path, device, dtype, batch_size, batching, decode_only)
    if _is_original_xcodec2(config):
        if dtype != torch.float32:
            raise ValueError(
                f"The original XCodec2 release ({name_or_path}) runs in float32 only; use dtype=None, "
                "or the transformers checkpoint HKUSTAudio/xcodec2-hf for half precision."
            )
        return _load_original_xcodec2(name_or_path, device, decode_only)
    raise ValueError(
        f"{name_or_path} is not an XCodec2 checkpoint (config.json has model_type="
        f"{config.get('model_type')!r}, architectures={config.get('architectures')}). Expected "
        "HKUSTAudio/xcodec2-hf (transformers) or HKUSTAudio/xcodec2 (the original release)."
    )


def _is_transformers_xcodec2(config: dict) -> bool:
    return config.get("model_type") == "xcodec2" and "semantic_model_config" in config


def _is_original_xcodec2(config: dict) -> bool:
    return "codec_encoder_hidden_size" in config or "XCodec2Model" in config.get("architectures", [])


def _read_config(name_or_path) -> dict:
    from transformers.utils import cached_file

    try:
        config_file = cached_file(name_or_path, "config.json")
    except OSError as e:
        raise OSError(f"Cannot find the XCodec2 checkpoint {name_or_path}: {e}") from e
    if config_file is None:
        raise ValueError(f"{name_or_path} is not an XCodec2 checkpoint: it has no config.json.")
    with open(config_file) as f:
        return json.load(f)


def _load_transformers_xcodec2(name_or_path, device, dtype, batch_size, batching, decode_only) -> TransformersXcodec2:
    from transformers import Xcodec2FeatureExtractor, Xcodec2Model

    model_class = xcodec2_decoder_class() if decode_only else Xcodec2Model
    model = model_class.from_pretrained(name_or_path, dtype=dtype).to(device).eval()
    codebook_size = int(np.prod(model.config.quantization_levels))
    if model.config.hop_length != SAMPLES_PER_TOKEN or codebook_size != CODEBOOK_SIZE:
        raise ValueError(
            f"{name_or_path} is not Llasa's XCodec2: hop {model.config.hop_length} samples and "
            f"{codebook_size} codes, expected {SAMPLES_PER_TOKEN} and {CODEBOOK_SIZE}."
        )
    feature_extractor = None if decode_only else Xcodec2FeatureExtractor.from_pretrained(name_or_path)
    return TransformersXcodec2(
        model, feature_extractor, device, batch_size, batching=batching, decode_only=decode_only
    )


@functools.cache
def xcodec2_decoder_class():
    """A transformers model class holding only what `Xcodec2Model.decode` uses: the quantizer and acoustic decoder.

    `from_pretrained` on an Xcodec2Model checkpoint builds and loads just those; the encoder weights it skips are
    never read into memory (safetensors loads tensor by tensor).
    """
    from transformers.models.xcodec2.modeling_xcodec2 import (
        Xcodec2Decoder,
        Xcodec2PreTrainedModel,
        Xcodec2Quantizer,
    )

    class Xcodec2DecoderModel(Xcodec2PreTrainedModel):
        _keys_to_ignore_on_load_unexpected = [rf"^{name}\." for name in ENCODER_MODULES]

        def __init__(self, config):
            super().__init__(config)
            self.quantizer = Xcodec2Quantizer(config)
            self.acoustic_decoder = Xcodec2Decoder(config)
            self.post_init()

    return Xcodec2DecoderModel


def _load_original_xcodec2(name_or_path, device, decode_only) -> OriginalXcodec2:
    try:
        from xcodec2.modeling_xcodec2 import BigCodecConfig, XCodec2Model
    except ImportError as e:
        raise ImportError(
            f"{name_or_path} is an original XCodec2 checkpoint, which needs the `xcodec2` package: "
            f"{XCODEC2_INSTALL_HINT}"
        ) from e
    from transformers.utils import cached_file

    weights_file = cached_file(name_or_path, "model.safetensors")
    if decode_only:
        model = _original_decoder_class()()
        state_dict = _read_safetensors(weights_file, ORIGINAL_DECODER_MODULES)
        optional = ()
    else:
        # Not XCodec2Model.from_pretrained: transformers >= 5 builds models on the meta device, where the
        # package's FSQ quantizer fails in __init__ ("Tensor.item() cannot be called on meta tensors").
        # The constructor loads the semantic model (facebook/w2v-bert-2.0) itself; the checkpoint may
        # carry it too, so only its keys may be missing.
        model = XCodec2Model(BigCodecConfig.from_pretrained(name_or_path))
        state_dict = _read_safetensors(weights_file)
        optional = ("semantic_model.",)
    result = model.load_state_dict(state_dict, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith(optional)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{name_or_path} does not match the xcodec2 package's XCodec2Model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )
    return OriginalXcodec2(model.to(device).eval(), device, decode_only=decode_only)


def _original_decoder_class():
    """The decoding half of the `xcodec2` package's XCodec2Model, with its own `decode_code`.

    XCodec2Model.__init__ downloads and builds w2v-BERT and the acoustic encoder whatever one needs; this builds
    only the two modules `decode_code` reads.
    """
    import xcodec2.modeling_xcodec2 as original

    class OriginalXcodec2Decoder(torch.nn.Module):
        decode_code = original.XCodec2Model.decode_code

        def __init__(self):
            super().__init__()
            self.generator = original.CodecDecoderVocos()
            self.fc_post_a = torch.nn.Linear(2048, 1024)  # fixed in XCodec2Model too

    return OriginalXcodec2Decoder


def _read_safetensors(path, modules: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, or only those of the named top-level modules (the rest is never read)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys() if modules is None or key.split(".", 1)[0] in modules}


# ---------------------------------------------------------------------------------------------------
# Decoding clips of different lengths in one batch (transformers' Xcodec2Decoder, with a padding mask)
# ---------------------------------------------------------------------------------------------------


def _masked_decode(decoder, latents: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`Xcodec2Decoder.forward` on latents (batch, frames, dim) padded after each clip's `lengths` frames.

    Every step that mixes frames is told which are padding, so the frames of a clip see what they would see alone:
    GroupNorm runs on each clip's own frames, padding is zeroed before each convolution (as the
    convolution's own zero padding would be alone), attention masks padded keys, and the ISTFT leaves padded frames
    out of its overlap-add and window envelope. Per-frame steps (linear layers, RMSNorm, LayerNorm) need nothing.
    Returns audio (batch, frames * hop); samples past a clip's length are meaningless.
    """
    frames = torch.arange(latents.shape[1], device=latents.device)
    valid = frames[None, :] < lengths[:, None]  # (batch, frames)
    keep = valid[..., None].to(latents.dtype)  # (batch, frames, 1)
    clip_lengths = lengths.tolist()
    hidden = decoder.fc(latents)
    hidden = decoder.embed((hidden * keep).transpose(1, 2)).transpose(1, 2)
    for block in decoder.prior_net:
        hidden = _masked_resnet_block(block, hidden, keep, clip_lengths)
    # As in Xcodec2Decoder.forward: RoPE over head indices, the same for every frame.
    position_ids = torch.arange(decoder.num_attention_heads, device=hidden.device)[None]
    position_embeddings = decoder.rotary_emb(hidden, position_ids)
    # Additive mask (batch, 1, 1, frames) for the eager and SDPA attention: padded keys get no weight.
    attention_mask = torch.zeros(valid.shape, dtype=hidden.dtype, device=hidden.device)
    attention_mask = attention_mask.masked_fill(~valid, torch.finfo(hidden.dtype).min)[:, None, None, :]
    for layer in decoder.layers:
        hidden = layer(hidden, attention_mask=attention_mask, position_embeddings=position_embeddings)
    for block in decoder.post_net:
        hidden = _masked_resnet_block(block, hidden, keep, clip_lengths)
    return _masked_istft(decoder.head, decoder.norm(hidden), valid)


def _masked_resnet_block(block, hidden: torch.Tensor, keep: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """`Xcodec2ResNetBlock.forward` on (batch, frames, channels); `keep` (batch, frames, 1) marks real frames."""
    keep = keep.transpose(1, 2)
    residual = hidden.transpose(1, 2)
    hidden = block.activation1(_masked_group_norm(block.norm1, residual, lengths))
    hidden = block.conv1(hidden * keep)
    hidden = block.activation2(_masked_group_norm(block.norm2, hidden, lengths))
    hidden = F.dropout(hidden, p=block.activation_dropout, training=block.training)
    hidden = block.conv2(hidden * keep)
    return (hidden + residual).transpose(1, 2)


def _masked_group_norm(norm: torch.nn.GroupNorm, hidden: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """`norm` on (batch, channels, frames), clip by clip over each clip's own `lengths` frames; padding comes out 0.

    The module itself rather than a masked mean and variance of the whole batch: it rounds as one-at-a-time decoding
    does, where masked statistics differ by ~1e-7 and the later layers amplify that (to ~1e-5 on the tiny codec).
    """
    normalized = torch.zeros_like(hidden)
    for row, length in enumerate(lengths):
        normalized[row, :, :length] = norm(hidden[row : row + 1, :, :length])[0]
    return normalized


def _masked_istft(head, hidden: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """`Xcodec2ISTFTHead.forward` with the frames `valid` (batch, frames) marks as padding left out."""
    magnitude, phase = head.linear(hidden).chunk(2, dim=-1)
    keep = valid[..., None].float()  # (batch, frames, 1)
    # A padded frame's spectrum is zeroed, so its waveform is zero and adds nothing to its neighbours.
    spectrum = torch.polar(torch.exp(magnitude.float()).clamp(max=1e2) * keep, phase.float())
    window = head.window.float()
    frames = torch.fft.irfft(spectrum, head.n_fft, dim=-1, norm="backward").transpose(1, 2) * window[None, :, None]
    size = (frames.shape[-1] - 1) * head.hop_length + head.n_fft
    audio = F.fold(frames, output_size=(1, size), kernel_size=(1, head.n_fft), stride=(1, head.hop_length))[:, 0, 0]
    envelope = _window_envelopes(window.square(), valid.float(), head.hop_length)
    cut = slice(head.padding, -head.padding)  # the ISTFT's "same" padding, off both ends
    return audio[:, cut] / envelope[:, cut].clamp(min=1e-11)  # the same floor as the head


def _window_envelopes(squared_window: torch.Tensor, keep: torch.Tensor, hop: int) -> torch.Tensor:
    """Each clip's ISTFT window envelope: `squared_window` added at hop spacing at the frames `keep` (batch, frames)
    marks, as the head's fold adds it at all of a clip's frames alone (the same sums, bit for bit).

    A window spans `taps` hops, so output hop m sums window piece k at frame m - k, for k < taps: one small matmul.
    """
    taps = len(squared_window) // hop
    frames_behind = F.pad(keep, (taps - 1, taps - 1)).unfold(1, taps, 1).flip(-1)  # [m, k] = keep[m - k]
    return (frames_behind @ squared_window.reshape(taps, hop)).flatten(1)


def _padded_codes(codes: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Code arrays as one (batch, longest) LongTensor padded with code 0, and their lengths."""
    lengths = [len(clip_codes) for clip_codes in codes]
    padded = np.zeros((len(codes), max(lengths)), dtype=np.int64)
    for row, clip_codes in enumerate(codes):
        padded[row, : len(clip_codes)] = clip_codes
    return torch.as_tensor(padded, device=device), torch.tensor(lengths, device=device)


def _same_length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by equal length, in chunks of at most `batch_size`."""
    groups = defaultdict(list)
    for index, length in enumerate(lengths):
        groups[length].append(index)
    return [
        group[start : start + batch_size] for group in groups.values() for start in range(0, len(group), batch_size)
    ]


def _length_sorted_batches(lengths: list[int], batch_size: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices sorted longest first, in batches of at most `batch_size` neighbours whose padding (the share of the
    batch's frames that are padding) stays within `max_padding`."""
    batches = []
    for index in sorted(range(len(lengths)), key=lambda index: -lengths[index]):
        batch = batches[-1] if batches else []
        longest = lengths[batch[0]] if batch else 0
        frames = sum(lengths[i] for i in batch) + lengths[index]
        if batch and len(batch) < batch_size and 1 - frames / (longest * (len(batch) + 1)) <= max_padding:
            batch.append(index)
        else:
            batches.append([index])
    return batches


def _check_waveform(wav, index: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"waveforms[{index}] must be a non-empty 1-D (mono, 16 kHz) array, got shape {wav.shape}.")
    return wav


def _check_codes(codes, index: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.size == 0:
        return codes.astype(np.int64).reshape(0)
    if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes[{index}] must be a flat list of ints, got {codes.dtype} shaped {codes.shape}.")
    if codes.min() < 0 or codes.max() >= CODEBOOK_SIZE:
        raise ValueError(
            f"codes[{index}] holds {codes.min()}..{codes.max()}, outside XCodec2's codebook [0, {CODEBOOK_SIZE - 1}]."
        )
    return codes.astype(np.int64)


def _checked_codes(codes: torch.Tensor, expected: int) -> list[list[int]]:
    """(batch, n_codes) codes as lists, after checking the codec made the number of codes it should."""
    if codes.shape[-1] != expected:
        raise RuntimeError(f"XCodec2 returned {codes.shape[-1]} codes where {expected} were expected.")
    return codes.long().tolist()


def load_codec_once(
    codec_id, device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE, decode_only: bool = True
) -> Xcodec2Codec:
    """The codec (float32), loaded once per process for each checkpoint, device, batch size and part: the reward
    and the training samples share one decode-only copy (no semantic model or acoustic encoder in memory)."""
    return _load_codec(os.fspath(codec_id), str(resolve_device(device)), batch_size, decode_only)


@load_once
def _load_codec(codec_id: str, device: str, batch_size: int, decode_only: bool) -> Xcodec2Codec:
    try:
        return load_codec(codec_id, device=device, batch_size=batch_size, decode_only=decode_only)
    except Exception as e:
        raise RuntimeError(f"Could not load the codec {codec_id!r} on {device}: {e}") from e


def decode_speech(codec, codes: list[list[int]], prompts: list[list[int] | None] | None = None) -> list:
    """`decode_continuations` for rows that may hold no speech: (prompt audio, new audio) per row that has codes,
    None per row without, decoded together in one codec call."""
    prompts = [None] * len(codes) if prompts is None else prompts
    with_speech = [i for i, row in enumerate(codes) if len(row) > 0]
    decoded = decode_continuations(codec, [list(codes[i]) for i in with_speech], [prompts[i] for i in with_speech])
    audio = [None] * len(codes)
    for i, pair in zip(with_speech, decoded, strict=True):
        audio[i] = pair
    return audio


def encode_voice_prompt(codec, path) -> list[int]:
    """The codes of a voice prompt recording (any format, rate and channels); errors name the file and the fix."""
    from llasa.audio import BadAudioError, check_speech, load_audio

    wav = load_audio(path, SAMPLE_RATE)
    if wav.size == 0:
        raise ValueError(f"The voice prompt {path} holds no audio.")
    try:
        check_speech(wav, f"voice prompt {path}")
    except BadAudioError as e:
        raise ValueError(f"{e}: record or pick another voice prompt.") from e
    codes = [int(code) for code in codec.encode([wav])[0]]
    if not codes:
        raise ValueError(f"The voice prompt {path} is too short to hold a single speech code.")
    return codes
