"""Where the trainer computes: the device (one GPU per rank under --devices), autocast's dtype and
cuDNN's settings."""
from __future__ import annotations

import torch

from harness.core import collectives
from harness.core.config import TrainConfig


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when available; under --devices each rank takes its own GPU."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and device.index is None and collectives.world_size() > 1:
        device = torch.device("cuda", collectives.rank())
    return device


def amp_dtype(device: torch.device, tc: TrainConfig) -> torch.dtype | None:
    """The autocast dtype, or None for full precision (always on CPU). 'auto' takes bf16 only where
    the GPU computes it natively (Ampere and later): T4 and P100 emulate it slowly, so they get fp16."""
    if device.type != "cuda" or not tc.amp:
        return None
    if tc.amp_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[tc.amp_dtype]


def configure_cuda(tc: TrainConfig) -> None:
    """cuDNN autotuning (and TF32 matmuls in fp32) unless determinism was asked for."""
    torch.backends.cudnn.benchmark = not tc.deterministic
    torch.backends.cudnn.deterministic = tc.deterministic
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.set_float32_matmul_precision("high")
