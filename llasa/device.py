"""Which device a model runs on: one rule for the policy, the codec, the reward and the scorers."""

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """`device` as a torch device; "auto" is this process's GPU ("cuda:N", as accelerate sets it), else the CPU."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
