"""Which device a model runs on: one rule for the policy, the codec, the reward and the scorers."""

import torch


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
