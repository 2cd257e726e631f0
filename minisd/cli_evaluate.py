"""The command line's `evaluate`: the tiny model against the guidance scale, graded by the shapes reader
(prompt adherence, by default) or, with `--fid --clip-score`, by FID and CLIP score under the tiny CLIP."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

from minisd.cli_checks import check_image_path, finite_float, positive_int, seed

ADHERENCE_DEFAULTS = {"guidance": [1.0, 2.0, 3.0, 5.0, 7.5], "prompts": 48, "samples": 4, "steps": 25}
SWEEP_ONLY = ("clip", "json", "scheduler", "batch_size")  # the options that only the sweep reads


def _fill_defaults(args: argparse.Namespace, defaults: dict) -> None:
    """Give each option left unset (None) its default in the mode chosen."""
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _write_figure(fig, path: str, image_format: str) -> None:
    """Save a matplotlib figure to `path` (checked beforehand by `check_image_path`), atomically."""
    from minisd.loading.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=image_format.lower(), dpi=100, bbox_inches="tight")
    print(f"wrote {path}")


def cmd_evaluate(args: argparse.Namespace, load_pipeline: Callable) -> None:
    """Adherence per guidance scale (the shapes reader), or the FID/CLIP-score sweep with either flag."""
    from minisd.errors import UserError
    from minisd.metrics import attention_binding, evaluate_adherence, format_rows, plot_rows, relation_control

    if args.fid or args.clip_score:
        cmd_evaluate_sweep(args, load_pipeline)
        return
    for name in SWEEP_ONLY:  # an option this mode would not read is a mistake, not ignored
        if getattr(args, name) is not None:
            option = "--" + name.replace("_", "-")
            raise UserError(f"{option} is read only by the FID/CLIP-score sweep: add --fid --clip-score")
    _fill_defaults(args, ADHERENCE_DEFAULTS)
    plot_format = check_image_path(args.plot) if args.plot else None
    pipe = load_pipeline(args)
    rows = evaluate_adherence(
        pipe, args.guidance, num_prompts=args.prompts, samples_per_prompt=args.samples,
        num_inference_steps=args.steps, seed=args.seed,
    )  # fmt: skip
    print(format_rows(rows))
    control = relation_control(pipe, num_scenes=args.prompts, seed=args.seed)
    print(
        f"relation word: a held-out caption shows its relation in {control['relation']:.0%}, its twin "
        f"with the opposite word the reversed one in {control['reversed']:.0%} (both {control['both']:.0%}); "
        f"the two pictures differ by {control['changed']:.3f} on average (0 = the word is ignored)"
    )
    binding = attention_binding(pipe, num_scenes=args.prompts, seed=args.seed)
    print(
        f"cross-attention: a colour or shape word is read more on its own object than on the other in "
        f"{binding['binding']:.0%} of cases (0.5 = chance), {binding['contrast']:.2f}x as much; "
        f"{binding['word_share']:.0%} of the attention goes to the words"
    )
    if args.plot:
        _write_figure(plot_rows(rows), args.plot, plot_format)


def cmd_evaluate_sweep(args: argparse.Namespace, load_pipeline: Callable) -> None:
    """`evaluate --fid --clip-score`: one picture per held-out caption and guidance scale, FID and CLIP
    score of each scale's pictures (they share them, so both are always measured)."""
    import json

    import torch

    from minisd.errors import UserError
    from minisd.loading.files import atomic_path, check_destination
    from minisd.metrics.guidance_sweep import (
        GUIDANCE_SCALES,
        format_sweep,
        guidance_sweep,
        plot_sweep,
        reference_scores,
    )
    from minisd.models.clip_vision import CLIPModel
    from minisd.schedulers import get_scheduler
    from minisd.shapes import tiny_clip_path

    # before any work: the options make sense, the outputs can be written, the CLIP loads
    if args.samples is not None:
        raise UserError(
            f"--samples {args.samples}: the FID/CLIP-score sweep draws one picture per held-out caption; "
            "set the pictures per guidance scale with --prompts"
        )
    sweep_defaults = {"guidance": list(GUIDANCE_SCALES), "prompts": 1000, "steps": 20}
    _fill_defaults(args, {**sweep_defaults, "scheduler": "ddim", "batch_size": 250})
    plot_format = check_image_path(args.plot) if args.plot else None
    if args.json:
        check_destination(Path(args.json), overwrite=True)
    if args.prompts < 2:
        raise UserError(f"--prompts {args.prompts}: FID compares two sets' covariances, so give at least 2")
    get_scheduler(args.scheduler)  # an unknown name fails now, listing the known ones
    clip_path = Path(args.clip) if args.clip else tiny_clip_path()
    if not (clip_path / "config.json").is_file():
        raise UserError(f"--clip {clip_path}: not a CLIP model folder (config.json + model.safetensors)")
    clip = CLIPModel.from_pretrained(clip_path, dtype=torch.float32).eval()
    pipe = load_pipeline(args)
    rows = guidance_sweep(
        pipe, clip, args.guidance, args.prompts, args.steps, args.scheduler, args.batch_size, args.seed
    )
    reference = reference_scores(clip, args.prompts, args.seed, batch_size=args.batch_size)
    print(
        f"{args.prompts} pictures per guidance scale (one per held-out caption), {args.steps} "
        f"{args.scheduler} steps, CLIP {clip_path}"
    )
    print(format_sweep(rows, reference))
    print("real: the captions' own scenes rendered, a perfect model (FID's floor at this sample count)")
    if args.json:
        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(json.dumps({"rows": rows, "real": reference}, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        _write_figure(plot_sweep(rows, reference), args.plot, plot_format)


def add_sweep_options(p: argparse.ArgumentParser) -> None:
    """The switch to the FID/CLIP-score sweep, and the options that only the sweep reads."""
    both = "either flag measures both FID and CLIP score, since they share the pictures"
    p.add_argument(
        "--fid",
        action="store_true",
        help=f"FID (tiny-CLIP features) vs guidance instead of adherence; {both}",
    )
    p.add_argument(
        "--clip-score",
        action="store_true",
        help=f"CLIP score (tiny CLIP) vs guidance instead of adherence; {both}",
    )
    sweep = "with --fid/--clip-score:"
    p.add_argument("--clip", help=f"{sweep} the CLIP model folder to measure with (default: the tiny CLIP)")
    p.add_argument("--scheduler", help=f"{sweep} sampler (default ddim; see generate --scheduler)")
    p.add_argument(
        "--batch-size", type=positive_int, help=f"{sweep} pictures per pipeline call (default 250)"
    )
    p.add_argument("--json", help=f"{sweep} also save the rows (and the real pictures' scores) as JSON")


def add_evaluate(
    add: Callable[..., argparse.ArgumentParser],
    weights_options: Callable[[argparse.ArgumentParser], None],
    load_pipeline: Callable,
) -> None:
    """The evaluate subcommand; `weights_options` adds --weights/--config/--dtype, `load_pipeline(args)`
    loads the model they name (both from the main command line)."""
    p = add(
        "evaluate",
        help="the tiny model vs guidance: prompt adherence, or FID and CLIP score (--fid --clip-score)",
        description="Without --fid/--clip-score: the shapes reader grades pictures of held-out captions "
        "(adherence and diversity per guidance scale), then the relation-word control and where the words "
        "are read. With --fid or --clip-score (either: both numbers are measured, they share the pictures): "
        "for each guidance scale, one picture per held-out caption, FID (tiny-CLIP image features, against "
        "as many other held-out scenes rendered) and CLIP score (tiny CLIP); 'real' is a perfect model, the "
        "captions' own scenes rendered. 1000 pictures take about 2 minutes per scale on one CPU core (20 "
        "steps with guidance; half that at guidance 1).",
    )
    p.add_argument(
        "--guidance",
        type=finite_float,
        nargs="+",
        help="guidance scales to compare (default 1 2 3 5 7.5; with --fid/--clip-score 1 1.5 2 3 5 7.5 10)",
    )
    p.add_argument(
        "--prompts",
        type=positive_int,
        help="held-out captions (default 48; with --fid/--clip-score 1000, one picture each per scale)",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        help="pictures per caption, diversity needs 2+ (default 4; not with --fid/--clip-score)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        help="denoising steps per picture (default 25; with --fid/--clip-score 20)",
    )
    p.add_argument("--seed", type=seed, default=0, help="random seed of the captions and the noise")
    p.add_argument(
        "--plot",
        help="also save a PNG: adherence and diversity against guidance (with --fid/--clip-score: FID "
        "against CLIP score, one point per guidance scale)",
    )
    add_sweep_options(p)
    weights_options(p)
    p.set_defaults(func=functools.partial(cmd_evaluate, load_pipeline=load_pipeline))
