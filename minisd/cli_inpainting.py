"""The command line's inpainting training (chapter 10): `train-inpainting OUT`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from minisd.cli_checks import positive_int


def cmd_train_inpainting(args: argparse.Namespace) -> None:
    from minisd.training.inpainting import train_inpainting

    log = train_inpainting(args.output, args.steps, checkpoint_dir=args.checkpoint_dir)
    print(f"wrote {args.output} in {log['seconds']:.0f} s, final loss {log['final_loss']:.4f}")


def add_train_inpainting(add: Callable[..., argparse.ArgumentParser]) -> None:
    """The train-inpainting subcommand (`add(name, help=...)` makes a subparser)."""
    p = add("train-inpainting", help="fine-tune the tiny model for inpainting: 9 input channels (chapter 10)")
    p.add_argument("output", help="the model folder to write (diffusers layout)")
    p.add_argument(
        "--steps", type=positive_int, default=4000, help="training steps (the packaged model: 4000)"
    )
    p.add_argument("--checkpoint-dir", help="keep the training state here; rerun to resume")
    p.set_defaults(func=cmd_train_inpainting)
