"""The command line's measuring tools: `train-clip OUT` trains the shapes world's tiny
CLIP, `evaluate-fid` sweeps the guidance scale and reports FID and CLIP score under it."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

from minisd.cli_checks import check_image_path, finite_float, positive_int, seed, training_device


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
    print(f"try it: python -m minisd evaluate-fid --clip {args.output}")


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


def cmd_evaluate_fid(args: argparse.Namespace, load_pipeline: Callable) -> None:
    import json

    import torch

    from minisd.errors import UserError
    from minisd.loading.files import atomic_path, check_destination
    from minisd.metrics.guidance_sweep import format_sweep, guidance_sweep, plot_sweep, reference_scores
    from minisd.models.clip_vision import CLIPModel
    from minisd.schedulers import get_scheduler
    from minisd.shapes import tiny_clip_path

    # before any work: the outputs can be written, the options make sense, the CLIP loads
    plot_format = check_image_path(args.plot) if args.plot else None
    if args.json:
        check_destination(Path(args.json), overwrite=True)
    if args.samples < 2:
        raise UserError(f"--samples {args.samples}: FID compares two sets' covariances, so give at least 2")
    get_scheduler(args.scheduler)  # an unknown name fails now, listing the known ones
    clip_path = Path(args.clip) if args.clip else tiny_clip_path()
    if not (clip_path / "config.json").is_file():
        raise UserError(f"--clip {clip_path}: not a CLIP model folder (config.json + model.safetensors)")
    clip = CLIPModel.from_pretrained(clip_path, dtype=torch.float32).eval()
    pipe = load_pipeline(args)
    rows = guidance_sweep(
        pipe, clip, args.guidance, args.samples, args.steps, args.scheduler, args.batch_size, args.seed
    )
    reference = reference_scores(clip, args.samples, args.seed, batch_size=args.batch_size)
    print(
        f"{args.samples} pictures per guidance scale, {args.steps} {args.scheduler} steps, CLIP {clip_path}"
    )
    print(format_sweep(rows, reference))
    print("real: the captions' own scenes rendered, a perfect model (FID's floor at this sample count)")
    if args.json:
        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(json.dumps({"rows": rows, "real": reference}, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        with atomic_path(args.plot) as tmp:
            plot_sweep(rows, reference).savefig(tmp, format=plot_format.lower(), dpi=100, bbox_inches="tight")
        print(f"wrote {args.plot}")


def add_evaluate_fid(
    add: Callable[..., argparse.ArgumentParser],
    weights_options: Callable[[argparse.ArgumentParser], None],
    load_pipeline: Callable,
) -> None:
    """The evaluate-fid subcommand; `weights_options` adds --weights/--config/--dtype, `load_pipeline(args)`
    loads the model they name (both from the main command line)."""
    p = add(
        "evaluate-fid",
        help="FID and CLIP score of the tiny model vs guidance, under the tiny CLIP",
        description="For each guidance scale, draw --samples pictures from held-out captions, then compute "
        "FID (tiny-CLIP image features, against as many other held-out scenes rendered) and CLIP score (tiny "
        "CLIP); 'real' is a perfect model, the captions' own scenes rendered. 1000 pictures take about 2 "
        "minutes per scale on one CPU core (20 steps with guidance; half that at guidance 1).",
    )
    p.add_argument(
        "--guidance",
        type=finite_float,
        nargs="+",
        default=[1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0],
        help="guidance scales to compare (default 1 1.5 2 3 5 7.5 10)",
    )
    p.add_argument(
        "--samples", type=positive_int, default=1000, help="pictures per guidance scale (default 1000)"
    )
    p.add_argument("--steps", type=positive_int, default=20, help="denoising steps per picture (default 20)")
    p.add_argument("--scheduler", default="ddim", help="sampler (default ddim; see generate --scheduler)")
    p.add_argument(
        "--batch-size", type=positive_int, default=250, help="pictures per pipeline call (default 250)"
    )
    p.add_argument("--seed", type=seed, default=0, help="random seed of the captions and the noise")
    p.add_argument("--clip", help="the CLIP model folder to measure with (default: the packaged tiny CLIP)")
    p.add_argument("--plot", help="also save FID against CLIP score, one point per guidance scale, as a PNG")
    p.add_argument("--json", help="also save the rows (and the real pictures' scores) as JSON")
    weights_options(p)
    p.set_defaults(func=functools.partial(cmd_evaluate_fid, load_pipeline=load_pipeline))
