"""Which device and dtype a model runs on: one rule for the policy, the codec, the reward and the scorers."""

import contextlib
import re

import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")  # what every --dtype flag and config "dtype" accepts
HALF_DTYPES = (torch.float16, torch.bfloat16)
_DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def resolve_device(device: str = "auto") -> torch.device:
    """`device` as a torch device; "auto" is this process's GPU ("cuda:N", as accelerate sets it), else the CPU.

    A bare "cuda" also means this process's GPU, with its index spelled out: libraries outside torch (CTranslate2,
    onnxruntime) would otherwise read it as GPU 0 in every process.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def check_device_name(device) -> None:
    """Refuse a device name before any model loads: auto, cpu, mps, cuda or cuda:N."""
    if not (isinstance(device, str) and _DEVICE_NAME.fullmatch(device)):
        raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'.")


def resolve_dtype(
    dtype, device: torch.device | str, gpu_default: torch.dtype = torch.bfloat16, *, half_on_cpu: bool = False
) -> torch.dtype:
    """The weights' dtype. "auto" (or None): `gpu_default` on a CUDA GPU (bfloat16 only where the GPU supports it,
    else float32), float32 elsewhere. A name or torch dtype is checked: half precision is for GPUs only, unless
    `half_on_cpu` (Whisper's float16 runs, slowly, on a CPU too)."""
    device = torch.device(device)
    if dtype is None or dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        if gpu_default == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return torch.float32  # float16 weights would overflow where bfloat16 was trained
        return gpu_default
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"Unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}.")
        dtype = getattr(torch, dtype)
    if dtype not in (torch.float32, *HALF_DTYPES):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}.")
    if dtype in HALF_DTYPES and device.type != "cuda" and not half_on_cpu:
        raise ValueError(f"Half precision ({dtype}) is for GPUs; on {device} use float32 (or auto).")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype as the libraries outside torch name it: torch.float16 -> "float16"."""
    return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def outside_zero3():
    """Load models that are not trained (codec, Whisper, scorers) whole on every process, even under DeepSpeed ZeRO-3.

    Once TrainingArguments holds a stage-3 DeepSpeed config, transformers builds every `from_pretrained` model inside
    `deepspeed.zero.Init`: partitioned across the processes, with collective calls that hang when one process loads
    alone. The config is unset while the block runs and set back after it, for the policy and its reference model.
    Also a decorator.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    # transformers keeps only a weak reference to the config: hold it here while it is unset.
    reference = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = reference() if reference is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def release_cached_memory(device) -> None:
    """Hand the blocks freed while loading (full-precision copies, load buffers) back to the GPU, for the policy."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
