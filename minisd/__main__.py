"""Command line: `minisd setup | convert | generate | evaluate [--fid --clip-score] | train-tiny |
train-lora | train-embedding | train-inpainting | train-controlnet | train-clip` (`python -m minisd ...`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minisd.cli_checks import (
    check_image_path,
    finite_float,
    picture_inputs,
    positive_int,
    prog_name,
    report_errors,
    seed,
    training_device,
    undo_upscale,
    unit_float,
)
from minisd.cli_clip import add_train_clip
from minisd.cli_controlnet import add_train_controlnet, control_inputs, control_options
from minisd.cli_evaluate import add_evaluate
from minisd.cli_inpainting import add_train_inpainting

SD_SAMPLING = {"steps": 50, "guidance": 7.5, "scheduler": "pndm", "height": 512, "width": 512, "upscale": 1}


def cmd_setup(args: argparse.Namespace) -> None:
    from minisd.book.env import print_environment
    from minisd.errors import UserError
    from minisd.loading.assets import fetch_clip_bpe

    print_environment()
    path = fetch_clip_bpe(force=args.force)
    print(f"CLIP BPE vocabulary: {path}")
    from minisd.models.tokenizer import CLIPTokenizer

    prompt = "a photograph of an astronaut riding a horse"
    ids = CLIPTokenizer.from_pretrained(path).encode(prompt)
    expected = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]  # the ids OpenAI's CLIP gives
    print(f"{prompt!r} -> {ids}")
    if ids != expected:
        raise UserError(
            f"tokenizer check failed: expected {expected}; the vocabulary file {path} may be damaged: "
            "fetch it again with --force"
        )
    print("tokenizer check: ok")


def cmd_convert(args: argparse.Namespace) -> None:
    from minisd.convert import folder_to_single_file, single_file_to_folder
    from minisd.errors import UserError
    from minisd.loading import FILE_SUFFIXES

    src, dst = Path(args.src), Path(args.dst)
    if src.is_dir():
        if dst.suffix not in (".safetensors", ".ckpt"):
            raise UserError(f"converting the folder {src} to one file: DST must end in .safetensors or .ckpt")
        folder_to_single_file(src, dst, variant=args.variant, overwrite=args.overwrite)
    elif src.is_file():
        if dst.suffix in FILE_SUFFIXES:
            raise UserError(
                f"{src} is one file, so DST is the diffusers folder to write: {dst} looks like a file name "
                "(file-to-file: convert to a folder, then the folder to a file)"
            )
        single_file_to_folder(src, dst, config=args.config, use_ema=args.ema, overwrite=args.overwrite)
    else:
        raise FileNotFoundError(
            f"{src} does not exist (expected a diffusers folder or a .safetensors/.ckpt file)"
        )
    print(f"wrote {dst}")


def _load_pipeline(args: argparse.Namespace, pipeline_class: type | None = None, **parts):
    """The pipeline of --weights, or the packaged tiny shapes model when none is given."""
    import torch

    from minisd.pipelines import StableDiffusionPipeline
    from minisd.shapes import tiny_model_path

    pipeline_class = pipeline_class or StableDiffusionPipeline
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    weights = args.weights or tiny_model_path()
    if args.weights is None:
        print(f"no --weights: using the tiny shapes model trained in chapter 07 ({weights})")
    return pipeline_class.from_pretrained(weights, config=args.config, dtype=dtype, **parts)


def _load_loras(pipe, specs: list[str]) -> None:
    """--lora PATH[:SCALE], repeatable: each file an adapter, all active with their scales."""
    names, scales = [], []
    for i, spec in enumerate(specs):
        path, _, scale = spec.rpartition(":")
        try:
            scales.append(float(scale))
        except ValueError:  # no scale given (or a ':' inside the path)
            path = spec
            scales.append(1.0)
        names.append(f"lora_{i}")
        pipe.load_lora_weights(path, adapter_name=names[-1])
        print(f"LoRA {path} at scale {scales[-1]:g}")
    if names:
        pipe.set_adapters(names, scales)


def cmd_generate(args: argparse.Namespace) -> None:
    import torch
    from PIL import Image

    from minisd.loading.files import atomic_path
    from minisd.schedulers import get_scheduler
    from minisd.shapes import TINY_SAMPLING, unknown_words

    image_format = check_image_path(args.output, args.overwrite)  # before any work, not after sampling
    if args.scheduler is not None:
        get_scheduler(args.scheduler)  # an unknown name fails now, listing the known ones
    picture_args, pipeline_class = picture_inputs(args)
    control_args, control_parts = control_inputs(args)
    if control_parts:
        from minisd.pipelines import StableDiffusionControlNetPipeline as pipeline_class
    pipe = _load_pipeline(args, pipeline_class, **control_parts)
    _load_loras(pipe, args.lora)
    for spec in args.embedding or []:
        path, sep, token = spec.rpartition(":")
        if not sep or "/" in token or "\\" in token:  # no token given (or a Windows drive letter)
            path, token = spec, ""
        pipe.load_textual_inversion(path, token=token or None)
    if args.weights is None and not (args.embedding or args.lora) and (unknown := unknown_words(args.prompt)):
        print(
            f"warning: the tiny shapes model has never seen {', '.join(map(repr, unknown))}; it knows only "
            "captions like 'a red circle above a blue triangle on a yellow background' (chapter 07)"
        )
    # unset options: SD v1.5's usual settings, or the tiny model's own (32x32 pixels, DDIM)
    defaults = TINY_SAMPLING if args.weights is None else SD_SAMPLING
    opts = {k: defaults[k] if getattr(args, k) is None else getattr(args, k) for k in defaults}
    picture_args, control_args = (undo_upscale(p, opts) for p in (picture_args, control_args))
    images = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        num_inference_steps=opts["steps"],
        guidance_scale=opts["guidance"],
        generator=torch.Generator().manual_seed(args.seed),
        **(picture_args or {"height": opts["height"], "width": opts["width"]}),
        **control_args,
        scheduler=opts["scheduler"],
        long_prompt=args.long_prompt,
    ).images
    image = images[0]
    if opts["upscale"] > 1:  # a 32x32 picture is hard to see: enlarge with visible pixels
        size = (image.width * opts["upscale"], image.height * opts["upscale"])
        image = image.resize(size, Image.Resampling.NEAREST)
    with atomic_path(args.output) as tmp:  # a full disk leaves no partial picture
        image.save(tmp, format=image_format)
    print(f"wrote {args.output} ({image.width}x{image.height})")


def cmd_train_tiny(args: argparse.Namespace) -> None:
    from minisd.loading.assets import cache_dir
    from minisd.loading.files import check_destination
    from minisd.models.tokenizer import CLIPTokenizer
    from minisd.training import train_tiny_model

    folder = Path(args.output) if args.output else cache_dir() / "tiny_shapes"
    if not args.output:
        folder.parent.mkdir(parents=True, exist_ok=True)
    # before training: the folder can be written (a model folder is replaced), the vocabulary reads
    check_destination(folder, overwrite=True, is_folder=True)
    CLIPTokenizer()
    device = training_device(args.device)
    kwargs = {"vae_steps": 40, "steps": 200} if args.fast else {}
    kwargs["caption_dropout"] = args.caption_dropout
    result = train_tiny_model(folder, checkpoint_dir=args.checkpoint_dir, device=device, **kwargs)
    print(f"wrote {folder}: final loss {sum(result['losses'][-100:]) / len(result['losses'][-100:]):.4f}")
    print(f"try it: python -m minisd evaluate --weights {folder}")


def cmd_train_embedding(args: argparse.Namespace) -> None:
    from pathlib import Path

    from minisd.pipelines import StableDiffusionPipeline
    from minisd.shapes import tiny_model_path
    from minisd.training.textual_inversion import save_embedding, train_embedding

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_path(), device="cpu")
    result = train_embedding(pipe, args.token, steps=args.steps, checkpoint_dir=args.checkpoint_dir)
    path = save_embedding(Path(args.output) / "learned_embeds.safetensors", args.token, result["vector"])
    loss = sum(result["losses"][-50:]) / len(result["losses"][-50:])
    print(
        f"wrote {path}: {result['trained_parameters']} parameters trained in {result['seconds']:.0f} s, "
        f"loss {loss:.4f}"
    )
    print(f'try it: python -m minisd generate "a {args.token} circle on a red background" --embedding {path}')


def cmd_train_lora(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from minisd.loading.assets import cache_dir
    from minisd.shapes import tiny_model_path
    from minisd.training.lora import train_cyan_lora

    output = Path(args.output) if args.output else cache_dir() / "cyan_lora.safetensors"
    report = train_cyan_lora(
        output,
        args.weights or tiny_model_path(),
        args.steps,
        args.rank,
        args.checkpoint_dir,
        not args.no_evaluate,
    )
    print(json.dumps(report, indent=2))
    print(
        f"wrote {output}; try: python -m minisd generate 'a cyan circle on a red background' --lora {output}"
    )


def weights_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights", help="a diffusers folder or .safetensors/.ckpt file (default: the tiny model)"
    )
    p.add_argument(
        "--config", help="for a single file: a diffusers folder with its configs (default SD v1.5)"
    )
    p.add_argument(
        "--dtype", choices=["fp32", "fp16", "bf16"], default="fp32", help="compute precision (default fp32)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand each, every argument with its help."""
    parser = argparse.ArgumentParser(prog=prog_name(sys.argv[0]), description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    add = lambda name, **kw: sub.add_parser(name, parents=[common], **kw)  # noqa: E731
    p = add("setup", help="fetch CLIP's BPE vocabulary and check the installation")
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.set_defaults(func=cmd_setup)
    p = add("convert", help="diffusers folder <-> original single-file checkpoint (either way)")
    p.add_argument("src", help="a diffusers folder (model_index.json) or a .safetensors/.ckpt file")
    p.add_argument("dst", help="the file (.safetensors or .ckpt) or folder to write")
    p.add_argument(
        "--config", help="file -> folder: a diffusers folder whose configs to use (default SD v1.5)"
    )
    p.add_argument("--variant", help="folder -> file: read e.g. the fp16 variant of the weights")
    p.add_argument(
        "--ema", action=argparse.BooleanOptionalAction, default=None, help="use the EMA UNet weights"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing DST file or model folder")
    p.set_defaults(func=cmd_convert)
    p = add("generate", help="text to image with SD v1.x (or, without --weights, the tiny model)")
    p.add_argument(
        "prompt", help="what to draw, e.g. 'a red circle above a blue triangle on a yellow background'"
    )
    p.add_argument(
        "-o", "--output", default="out.png", help="picture to write (.png, .jpg, ...; default out.png)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o picture")
    p.add_argument("--steps", type=positive_int, help="denoising steps (SD: 50, tiny model: 25)")
    p.add_argument("--guidance", type=finite_float, help="classifier-free guidance scale (SD: 7.5)")
    p.add_argument("--seed", type=seed, default=0, help="random seed: the same seed draws the same picture")
    p.add_argument(
        "--scheduler",
        help="sampler: pndm (SD), ddim (tiny), ddpm, euler, euler_a, lms, dpm++2m or dpm++2m_karras",
    )
    p.add_argument("--negative-prompt", default=None, help="what to steer away from (default: none)")
    p.add_argument("--height", type=positive_int, help="pixels (SD: 512, tiny model: 32)")
    p.add_argument("--width", type=positive_int, help="pixels (SD: 512, tiny model: 32)")
    p.add_argument(
        "--init-image", metavar="IN", help="image-to-image: change this picture (its size is kept)"
    )
    p.add_argument(
        "--strength",
        type=unit_float,
        help="with --init-image: how much to redraw, 0 to 1 (default 0.8; --mask: 1)",
    )
    p.add_argument(
        "--mask", metavar="MASK", help="with --init-image: repaint only where this picture is white"
    )
    p.add_argument(
        "--upscale", type=positive_int, help="enlarge the saved PNG N times, nearest pixel (tiny: 8)"
    )
    p.add_argument(
        "--long-prompt",
        action="store_true",
        help="read the prompt as the web UI does: any length (75-token chunks), (word:1.2) weights, BREAK",
    )
    p.add_argument(
        "--embedding",
        action="append",
        metavar="PATH[:TOKEN]",
        help="load a textual-inversion embedding (web UI .pt/.safetensors or diffusers'), optionally renamed",
    )
    p.add_argument(
        "--lora", action="append", default=[], metavar="PATH[:SCALE]", help="a LoRA file (repeatable)"
    )
    control_options(p)
    weights_options(p)
    p.set_defaults(func=cmd_generate)
    add_evaluate(add, weights_options, _load_pipeline)
    p = add("train-tiny", help="train the tiny shapes model on the CPU (chapter 07)")
    p.add_argument(
        "--output",
        help="folder to write (default ~/.cache/minisd/tiny_shapes; the packaged model is replaced only "
        "by an explicit --output minisd/shapes/weights/tiny_shapes)",
    )
    p.add_argument("--fast", action="store_true", help="a few hundred steps, to try the recipe")
    p.add_argument(
        "--caption-dropout", type=unit_float, default=0.1, help="share of captions trained as '' (for CFG)"
    )
    p.add_argument(
        "--checkpoint-dir", help="where to keep checkpoints; rerun to resume (default under ~/.cache/minisd)"
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default: reproduces the packaged model bit for bit), cuda, mps, or auto (the best one)",
    )
    p.set_defaults(func=cmd_train_tiny)
    p = add("train-embedding", help="textual inversion: learn one new word (<cyan>) on the tiny model")
    p.add_argument("--output", default="cyan_embedding", help="folder for learned_embeds.safetensors")
    p.add_argument("--token", default="<cyan>", help="the new word to learn")
    p.add_argument("--steps", type=positive_int, default=600, help="training steps")
    p.add_argument("--checkpoint-dir", help="keep the training state here; rerun to resume")
    p.set_defaults(func=cmd_train_embedding)
    p = add("train-lora", help="teach the tiny model the colour cyan with a LoRA (chapter 09)")
    p.add_argument(
        "--output", help="the .safetensors to write (default ~/.cache/minisd/cyan_lora.safetensors)"
    )
    p.add_argument("--weights", help="the base model folder (default: the packaged tiny model)")
    p.add_argument("--steps", type=positive_int, default=400, help="training steps")
    p.add_argument("--rank", type=positive_int, default=4, help="the rank r of every LoRA update")
    p.add_argument("--checkpoint-dir", help="keep the training state here; rerun to resume")
    p.add_argument("--no-evaluate", action="store_true", help="skip the before/after adherence measurements")
    p.set_defaults(func=cmd_train_lora)
    add_train_inpainting(add)
    add_train_controlnet(add)
    add_train_clip(add)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run a command; a user's mistake ends in one line and exit status 2 (the traceback with --debug)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with report_errors(f"{parser.prog} {args.command}", debug=args.debug):
        args.func(args)


if __name__ == "__main__":
    main()
