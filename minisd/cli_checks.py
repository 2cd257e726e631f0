"""What the command line checks before any work, and its one error handler (chapter 06)."""

from __future__ import annotations

import contextlib
import math
import sys
import traceback
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path

from minisd.errors import USER_ERRORS

SEED_RANGE = (0, 2**64 - 1)  # what torch.Generator.manual_seed takes


def prog_name(argv0: str) -> str:
    """How the user started the command line: the installed `minisd`, or `python -m minisd`."""
    path = Path(argv0)
    return "python -m minisd" if path.name == "__main__.py" and path.parent.name == "minisd" else "minisd"


def _whole_number(text: str) -> int:
    from argparse import ArgumentTypeError

    try:
        return int(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    from argparse import ArgumentTypeError

    value = _whole_number(text)
    if value < 1:
        raise ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite real number."""
    from argparse import ArgumentTypeError

    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """argparse type: a number from 0 to 1 (image-to-image's strength)."""
    from argparse import ArgumentTypeError

    value = finite_float(text)
    if not 0 <= value <= 1:
        raise ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def read_picture(path: str | Path, option: str):
    """The picture at `path` (a PIL image, loaded now), or a UserError naming the option."""
    from PIL import Image, UnidentifiedImageError

    from minisd.errors import UserError

    try:
        with Image.open(path) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise UserError(f"{option} {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{option} {path}: not a picture PIL can read ({e})") from None


def seed(text: str) -> int:
    """argparse type: a seed torch accepts, 0 to 2**64 - 1."""
    from argparse import ArgumentTypeError

    value = _whole_number(text)
    low, high = SEED_RANGE
    if not low <= value <= high:
        raise ArgumentTypeError(f"must be between {low} and 2**64 - 1, got {value}")
    return value


def training_device(name: str):
    """A train command's --device: "auto" is the best one here (`get_device`), any other a name torch
    knows (cpu, cuda, cuda:1, mps), or a UserError."""
    import torch

    from minisd.device import get_device
    from minisd.errors import UserError

    device = get_device() if name == "auto" else name
    try:
        torch.device(device)
    except RuntimeError:
        raise UserError(
            f"--device {device!r}: not a device torch knows; use cpu, cuda, mps or auto"
        ) from None
    return device


def check_image_path(path: str | Path, overwrite: bool = True) -> str:
    """The PIL format to save `path` in; its folder must exist, its extension be one PIL writes, and
    an existing file is refused unless `overwrite`."""
    from PIL import Image

    from minisd.errors import UserError
    from minisd.loading.files import check_destination

    path = Path(path)
    check_destination(path, overwrite=True)
    Image.init()
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise UserError(
            f"{path}: cannot write pictures of type {path.suffix or '(no extension)'!r}; use .png or .jpg"
        )
    check_destination(path, overwrite)
    return image_format


def picture_inputs(args: Namespace) -> tuple[dict, type | None]:
    """--init-image, --strength and --mask, checked and read before any model loads: (the call's picture
    arguments, the pipeline class) or ({}, None) for text-to-image."""
    from minisd.errors import UserError
    from minisd.pipelines import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    if args.init_image is None:
        if args.strength is not None or args.mask is not None:
            raise UserError("--strength and --mask need --init-image IN (the picture to change)")
        return {}, None
    if args.height is not None or args.width is not None:
        raise UserError(
            "with --init-image the picture's size is the output's: resize it instead of --height/--width"
        )
    kwargs = {"image": read_picture(args.init_image, "--init-image")}
    if args.strength is not None:
        kwargs["strength"] = args.strength
    if args.mask is None:
        return kwargs, StableDiffusionImg2ImgPipeline
    return {**kwargs, "mask_image": read_picture(args.mask, "--mask")}, StableDiffusionInpaintPipeline


def undo_upscale(pictures: dict, opts: dict) -> dict:
    """Input pictures of exactly `opts["upscale"]` times the model's size (a PNG `generate` saved, read
    back) shrunk to the model's size, nearest pixel; other sizes and arguments unchanged."""
    from PIL import Image

    native, k = (opts["width"], opts["height"]), opts["upscale"]
    return {
        key: p.resize(native, Image.Resampling.NEAREST)
        if isinstance(p, Image.Image) and k > 1 and p.size == (native[0] * k, native[1] * k)
        else p
        for key, p in pictures.items()
    }


@contextlib.contextmanager
def report_errors(prog: str, debug: bool = False) -> Iterator[None]:
    """Turn a user's mistake into `prog: error: message` and exit status 2; `debug` keeps the traceback."""
    try:
        yield
    except USER_ERRORS as e:
        if debug:
            raise
        message = str(e) or type(e).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
