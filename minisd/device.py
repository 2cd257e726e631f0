"""The one place that picks a device: no hard-coded `.cuda()` anywhere in the book."""

from __future__ import annotations

import os

import torch

from minisd.errors import UserError


def get_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU (override with MINISD_DEVICE)."""
    if name := os.environ.get("MINISD_DEVICE"):
        try:
            return torch.device(name)
        except RuntimeError as e:
            raise UserError(
                f"MINISD_DEVICE={name!r} is not a device torch knows ({str(e).splitlines()[0]}); "
                "use cpu, cuda, cuda:1 or mps, or unset it"
            ) from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
