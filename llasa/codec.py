"""XCodec2, Llasa's speech codec: 16 kHz mono waveforms <-> one code in [0, 65535] per 320 samples.

`load_codec` reads the checkpoint's config.json and picks the backend:

- transformers' native port (`HKUSTAudio/xcodec2-hf`; config `model_type: "xcodec2"` with a
  `semantic_model_config`): `TransformersXcodec2`, batched;
- the original release (`HKUSTAudio/xcodec2`; config with `codec_encoder_hidden_size`, architecture
  `XCodec2Model`) through the `xcodec2` package: `OriginalXcodec2`, one clip at a time.

Both return, for a clip of N samples, N // 320 + 1 codes (the codec pads every clip up to the next
multiple of 320 and beyond), and decode n codes to exactly n * 320 samples.

Batches only ever hold clips of the same code length. The codec has no padding mask where it matters:
padding a short clip in a batch changes its last codes (the acoustic encoder's convolutions see the
padding; their receptive field spans several frames) and, when decoding, changes all of its audio
(the decoder's GroupNorm takes statistics over the whole time axis and its attention is not masked).
So a clip's codes and audio never depend on which other clips share its batch. On a GPU, kernels chosen
per batch shape (and PyTorch's default TF32 convolutions) still flip codes that sit on an FSQ rounding
boundary: about 1% of codes between a batch of 8 and one clip at a time in float32, far more in half
precision, so encode datasets in float32. Decoded audio agrees to ~1e-4.
"""

import json
import os
from collections import defaultdict

import numpy as np
import torch

from llasa.device import resolve_device, resolve_dtype
from llasa.format import CODEBOOK_SIZE, CODEC_SAMPLE_RATE, SAMPLES_PER_TOKEN

XCODEC2_INSTALL_HINT = "pip install -r requirements-xcodec2.txt && pip install --no-deps xcodec2==0.1.5"
# The transformers port needs no extra package; its codes equal the original release's.
DEFAULT_CODEC_ID = "HKUSTAudio/xcodec2-hf"
DEFAULT_BATCH_SIZE = 16  # clips per forward pass (transformers backend)


def num_codes(num_samples: int) -> int:
    """How many codes XCodec2 gives a clip of `num_samples` samples at 16 kHz."""
    return num_samples // SAMPLES_PER_TOKEN + 1


class Xcodec2Codec:
    """The interface every backend offers: `encode`, `decode`, `sample_rate`, `device`."""

    sample_rate = CODEC_SAMPLE_RATE

    def __init__(self, model, device: torch.device, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.model = model
        self.device = device
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode(self, waveforms: list[np.ndarray]) -> list[list[int]]:
        """Codes of each 16 kHz mono float32 waveform: N // 320 + 1 ints in [0, 65535] for N samples."""
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
        for batch in _same_length_batches(lengths, self.batch_size):
            indices = [nonempty[i] for i in batch]
            code_batch = torch.as_tensor(np.stack([codes[i] for i in indices]), device=self.device)
            audio = self._decode_batch(code_batch).float().cpu().numpy()
            for row, index in enumerate(indices):
                waveforms[index] = audio[row, : len(codes[index]) * SAMPLES_PER_TOKEN].copy()
        return waveforms

    def _encode_batch(self, waveforms: list[np.ndarray]) -> list[list[int]]:
        """Codes of waveforms that all give the same number of codes."""
        raise NotImplementedError

    def _decode_batch(self, codes: torch.Tensor) -> torch.Tensor:
        """Audio (batch, samples) of a (batch, n_codes) LongTensor."""
        raise NotImplementedError


class TransformersXcodec2(Xcodec2Codec):
    """transformers' `Xcodec2Model` with its `Xcodec2FeatureExtractor`; batches of `batch_size` clips."""

    def __init__(self, model, feature_extractor, device: torch.device, batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__(model, device, batch_size)
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
        return self.model.decode(audio_codes=codes[:, None, :]).audio_values[:, 0]


class OriginalXcodec2(Xcodec2Codec):
    """The `xcodec2` package's `XCodec2Model` (`encode_code`, `decode_code`), one clip at a time, float32."""

    def __init__(self, model, device: torch.device):
        super().__init__(model, device, batch_size=1)  # encode_code reads only the first clip of a batch

    def _encode_batch(self, waveforms):
        wav = torch.from_numpy(waveforms[0])[None].to(self.device)
        return _checked_codes(self.model.encode_code(wav)[:, 0], num_codes(len(waveforms[0])))

    def _decode_batch(self, codes):
        return self.model.decode_code(codes[:, None, :])[:, 0]


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


def load_codec(name_or_path, *, device="auto", dtype=None, batch_size: int = DEFAULT_BATCH_SIZE) -> Xcodec2Codec:
    """Load an XCodec2 checkpoint (hub id or local folder) for inference.

    device: "auto" (this process's GPU when there is one, else the CPU), or anything `torch.device` accepts.
    dtype: None or float32; float16 / bfloat16 (or their names) for the transformers backend on a GPU.
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device, gpu_default=torch.float32)  # unset: float32, as datasets should be encoded
    config = _read_config(name_or_path)
    if _is_transformers_xcodec2(config):
        return _load_transformers_xcodec2(name_or_path, device, dtype, batch_size)
    if _is_original_xcodec2(config):
        if dtype != torch.float32:
            raise ValueError(
                f"The original XCodec2 release ({name_or_path}) runs in float32 only; use dtype=None, "
                "or the transformers checkpoint HKUSTAudio/xcodec2-hf for half precision."
            )
        return _load_original_xcodec2(name_or_path, device)
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


def _load_transformers_xcodec2(name_or_path, device, dtype, batch_size) -> TransformersXcodec2:
    from transformers import Xcodec2FeatureExtractor, Xcodec2Model

    model = Xcodec2Model.from_pretrained(name_or_path, dtype=dtype).to(device).eval()
    codebook_size = int(np.prod(model.config.quantization_levels))
    if model.config.hop_length != SAMPLES_PER_TOKEN or codebook_size != CODEBOOK_SIZE:
        raise ValueError(
            f"{name_or_path} is not Llasa's XCodec2: hop {model.config.hop_length} samples and "
            f"{codebook_size} codes, expected {SAMPLES_PER_TOKEN} and {CODEBOOK_SIZE}."
        )
    feature_extractor = Xcodec2FeatureExtractor.from_pretrained(name_or_path)
    return TransformersXcodec2(model, feature_extractor, device, batch_size)


def _load_original_xcodec2(name_or_path, device) -> OriginalXcodec2:
    try:
        from xcodec2.modeling_xcodec2 import BigCodecConfig, XCodec2Model
    except ImportError as e:
        raise ImportError(
            f"{name_or_path} is an original XCodec2 checkpoint, which needs the `xcodec2` package: "
            f"{XCODEC2_INSTALL_HINT}"
        ) from e
    from safetensors.torch import load_file
    from transformers.utils import cached_file

    # Not XCodec2Model.from_pretrained: transformers >= 5 builds models on the meta device, where the
    # package's FSQ quantizer fails in __init__ ("Tensor.item() cannot be called on meta tensors").
    # The constructor loads the semantic model (facebook/w2v-bert-2.0) itself; the checkpoint may
    # carry it too, so only its keys may be missing.
    model = XCodec2Model(BigCodecConfig.from_pretrained(name_or_path))
    state_dict = load_file(cached_file(name_or_path, "model.safetensors"))
    result = model.load_state_dict(state_dict, strict=False)
    missing = [key for key in result.missing_keys if not key.startswith("semantic_model.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{name_or_path} does not match the xcodec2 package's XCodec2Model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}."
        )
    return OriginalXcodec2(model.to(device).eval(), device)


def _same_length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped by equal length, in chunks of at most `batch_size`."""
    groups = defaultdict(list)
    for index, length in enumerate(lengths):
        groups[length].append(index)
    return [
        group[start : start + batch_size] for group in groups.values() for start in range(0, len(group), batch_size)
    ]


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


def load_codec_once(codec_id, device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE) -> Xcodec2Codec:
    """The codec (float32), loaded once per process for each checkpoint, device and batch size: the reward, the
    training samples and the voice prompt share one copy."""
    codec_id = os.fspath(codec_id)
    device = str(resolve_device(device))
    key = (codec_id, device, batch_size)
    if key not in _LOADED_CODECS:
        try:
            _LOADED_CODECS[key] = load_codec(codec_id, device=device, batch_size=batch_size)
        except Exception as e:
            raise RuntimeError(f"Could not load the codec {codec_id!r} on {device}: {e}") from e
    return _LOADED_CODECS[key]


_LOADED_CODECS: dict[tuple, Xcodec2Codec] = {}


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

    wav = load_audio(path, CODEC_SAMPLE_RATE)
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
