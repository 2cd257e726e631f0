"""The command line's `train-clip OUT`: trains the shapes world's tiny CLIP, the instrument of
`evaluate --fid --clip-score` (chapter 12)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from minisd.cli_checks import positive_int, seed, training_device


def cmd_train_clip(args: argparse.Namespace) -> None:
    from minisd.loading.files import check_destination
    from minisd.metrics.zero_shot import format_zero_shot
    from minisd.models.tokenizer import CLIPTokenizer
    from minisd.training.clip import train_tiny_clip

    # before training: the folder can be written (new or empty), the vocabulary reads, the device exists
    check_destination(Path(args.output), overwrite=True, is_folder=True)
    CLIPTokenizer()
    device = training_device(args.device)
    result = train_tiny_clip(
        args.output, args.steps, args.batch_size, args.num_scenes, args.seed, args.checkpoint_dir,
        device=device,
    )  # fmt: skip
    log = result["log"]
    loss = sum(log["losses"][-50:]) / len(log["losses"][-50:])
    print("zero-shot accuracy (chance: colour and background 1/6, shape 1/3, relation 1/4):")
    print(format_zero_shot(log["zero_shot"]))
    print(f"wrote {args.output} in {log['seconds']} s, final loss {loss:.3f}")
    print(f"try it: python -m minisd evaluate --fid --clip-score --clip {args.output}")


def add_train_clip(add: Callable[..., argparse.ArgumentParser]) -> None:
    """The train-clip subcommand (`add(name, help=...)` makes a subparser)."""
    p = add(
        "train-clip",
        help="train the shapes world's tiny CLIP, contrastively",
        description="Train a tiny CLIP (two 64-wide towers) on captioned training scenes, save it in "
        "transformers' layout (fp16), and measure its zero-shot accuracy on held-out colour-shape pairs "
        "(about 25 minutes on one CPU core). "
        "Resumable: checkpoints are kept (default under ~/.cache/minisd/checkpoints, one per OUT); "
        "run the same command again to continue an interrupted run.",
    )
    p.add_argument("output", help="the folder to write (new or empty): config.json, model.safetensors, log")
    p.add_argument("--steps", type=positive_int, default=1200, help="training steps (default 1200)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="pictures per step (default 128)")
    p.add_argument(
        "--num-scenes", type=positive_int, default=10_000, help="training scenes drawn (default 10000)"
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the scenes and the initial weights")
    p.add_argument("--checkpoint-dir", help="keep the training state here; rerun to resume")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, mps, or auto (the best one)")
    p.set_defaults(func=cmd_train_clip)
