"""The command line's ControlNet parts (chapter 11): `generate --control IMAGE --controlnet PATH` and
`train-controlnet OUT`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from minisd.cli_checks import positive_int, read_picture


def control_options(p: argparse.ArgumentParser) -> None:
    """generate's options: the condition picture and the ControlNet that reads it."""
    p.add_argument("--control", metavar="IMAGE", help="a ControlNet's condition picture (needs --controlnet)")
    p.add_argument(
        "--controlnet", metavar="PATH", help="a ControlNet: diffusers folder or original 1.0/1.1 file"
    )


def control_inputs(args: argparse.Namespace) -> tuple[dict, dict]:
    """--control and --controlnet, read before the base model loads: (the call's arguments, the
    pipeline's) or ({}, {}) without them."""
    from minisd.errors import UserError
    from minisd.models.controlnet import ControlNetModel

    if (args.control is None) != (args.controlnet is None):
        raise UserError("--control IMAGE (the condition) and --controlnet PATH go together")
    if args.control is None:
        return {}, {}
    if args.init_image is not None:
        raise UserError("--control draws from text; it cannot be combined with --init-image")
    image = read_picture(args.control, "--control")
    path = Path(args.controlnet)
    if not path.exists():
        raise UserError(f"--controlnet {path}: no such file or folder")
    net = ControlNetModel.from_pretrained(path) if path.is_dir() else ControlNetModel.from_single_file(path)
    return {"image": image}, {"controlnet": net}


def cmd_train_controlnet(args: argparse.Namespace) -> None:
    from minisd.training.controlnet import train_tiny_controlnet

    r = train_tiny_controlnet(
        args.output, args.steps, args.kind, args.weights, args.checkpoint_dir, not args.no_evaluate,
        device=args.device,
    )  # fmt: skip
    print(f"wrote {args.output}: {r['trainable_params']:,} parameters trained in {r['train_seconds']:.0f} s")
    for name, row in r.get("adherence", {}).items():
        print(f"{name}: mask IoU {row['iou']:.2f}, colour {row['color']:.0%}, shape {row['shape']:.0%}")
    print(f"try it: python -m minisd generate PROMPT --control MASK.png --controlnet {args.output}")


def add_train_controlnet(add: Callable[..., argparse.ArgumentParser]) -> None:
    """The train-controlnet subcommand (`add(name, help=...)` makes a subparser)."""
    p = add("train-controlnet", help="teach the tiny model where objects go with a ControlNet (chapter 11)")
    p.add_argument("output", help="the ControlNet folder to write")
    p.add_argument("--steps", type=positive_int, default=1000, help="training steps")
    p.add_argument("--kind", choices=["mask", "outline"], default="mask", help="the condition to learn")
    p.add_argument("--weights", help="the base model folder (default: the packaged tiny model)")
    p.add_argument("--checkpoint-dir", help="keep the training state here; rerun to resume")
    p.add_argument("--no-evaluate", action="store_true", help="skip measuring adherence with and without it")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    p.set_defaults(func=cmd_train_controlnet)
