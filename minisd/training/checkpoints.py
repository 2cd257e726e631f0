"""Training state on disk: every trainer in the book saves and resumes the same way."""

from __future__ import annotations

from pathlib import Path

import torch


def load_state(ckpt: Path | None, device: str | torch.device | None = None) -> dict | None:
    """The state saved at `ckpt` (tensors only: nothing pickled runs), or None when there is none yet."""
    if ckpt is None or not ckpt.is_file():
        return None
    return torch.load(ckpt, weights_only=True, map_location=device)


def save_state(ckpt: Path, state: dict) -> None:
    """Write `state` to `ckpt` through a temporary file, so a stopped run never leaves half a checkpoint."""
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    tmp = ckpt.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(ckpt)
