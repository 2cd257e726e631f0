"""Runtime environment: the device, FAST mode and the banner each chapter prints first."""

from __future__ import annotations

import os
import platform

import torch

from minisd.device import get_device

# what a cell on random weights prints; `tools.chapters.output_problems` looks for it in behaviour cells
RANDOM_WEIGHTS = "RANDOM weights (set MINISD_SD15 for the real ones)"


def is_fast() -> bool:
    """True when MINISD_FAST=1: chapters take fewer steps and train smaller models (used by CI)."""
    return os.environ.get("MINISD_FAST", "0") not in ("", "0", "false", "False")


def print_environment() -> None:
    """Print versions and the device; in FAST mode a banner saying the results are shortened."""
    import numpy

    print(f"python {platform.python_version()} | torch {torch.__version__} | numpy {numpy.__version__}")
    print(f"device: {get_device()} | threads: {torch.get_num_threads()}")
    if is_fast():
        print("=" * 72)
        print("FAST MODE (MINISD_FAST=1): fewer steps, smaller models; pictures will be rougher.")
        print("=" * 72)
