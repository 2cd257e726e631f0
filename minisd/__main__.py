"""Command line: `python -m minisd setup | convert | generate | evaluate | train-tiny | train-lora`."""

from __future__ import annotations

import argparse

SD_SAMPLING = {"steps": 50, "guidance": 7.5, "scheduler": "pndm", "height": 512, "width": 512, "upscale": 1}


def cmd_setup(args: argparse.Namespace) -> None:
    from minisd.book.env import print_environment
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
        raise SystemExit(f"tokenizer check failed: expected {expected}; the vocabulary file may be damaged")
    print("tokenizer check: ok")


def cmd_convert(args: argparse.Namespace) -> None:
    from pathlib import Path

    from minisd.convert import folder_to_single_file, single_file_to_folder
    from minisd.loading import FILE_SUFFIXES

    src, dst = Path(args.src), Path(args.dst)
    if src.is_dir():
        if dst.suffix not in FILE_SUFFIXES:
            raise SystemExit(
                f"converting the folder {src} to one file: DST must end in .safetensors or .ckpt"
            )
        folder_to_single_file(src, dst, variant=args.variant)
    elif src.is_file():
        single_file_to_folder(src, dst, config=args.config, use_ema=args.ema)
    else:
        raise SystemExit(f"{src} does not exist (expected a diffusers folder or a .safetensors/.ckpt file)")
    print(f"wrote {dst}")


def _load_pipeline(args: argparse.Namespace):
    """The pipeline of --weights, or the packaged tiny shapes model when none is given."""
    import torch

    from minisd.pipelines import StableDiffusionPipeline
    from minisd.shapes import tiny_model_path

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    weights = args.weights or tiny_model_path()
    if args.weights is None:
        print(f"no --weights: using the tiny shapes model trained in chapter 07 ({weights})")
    return StableDiffusionPipeline.from_pretrained(weights, config=args.config, dtype=dtype)


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

    from minisd.shapes import TINY_SAMPLING

    pipe = _load_pipeline(args)
    _load_loras(pipe, args.lora)
    # unset options: SD v1.5's usual settings, or the tiny model's own (32x32 pixels, DDIM)
    defaults = TINY_SAMPLING if args.weights is None else SD_SAMPLING
    opts = {k: defaults[k] if getattr(args, k) is None else getattr(args, k) for k in defaults}
    images = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        num_inference_steps=opts["steps"],
        guidance_scale=opts["guidance"],
        height=opts["height"],
        width=opts["width"],
        generator=torch.Generator().manual_seed(args.seed),
        scheduler=opts["scheduler"],
    ).images
    image = images[0]
    if opts["upscale"] > 1:  # a 32x32 picture is hard to see: enlarge with visible pixels
        size = (image.width * opts["upscale"], image.height * opts["upscale"])
        image = image.resize(size, Image.Resampling.NEAREST)
    image.save(args.output)
    print(f"wrote {args.output} ({image.width}x{image.height})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from minisd.metrics import attention_binding, evaluate_adherence, format_rows, plot_rows, relation_control

    pipe = _load_pipeline(args)
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
        plot_rows(rows).savefig(args.plot, dpi=100, bbox_inches="tight")
        print(f"wrote {args.plot}")


def cmd_train_tiny(args: argparse.Namespace) -> None:
    from pathlib import Path

    from minisd.device import get_device
    from minisd.loading.assets import cache_dir
    from minisd.training import train_tiny_model

    folder = Path(args.output) if args.output else cache_dir() / "tiny_shapes"
    device = get_device() if args.device == "auto" else args.device
    kwargs = {"vae_steps": 40, "steps": 200} if args.fast else {}
    result = train_tiny_model(folder, checkpoint_dir=args.checkpoint_dir, device=device, **kwargs)
    print(f"wrote {folder}: final loss {sum(result['losses'][-100:]) / len(result['losses'][-100:]):.4f}")
    print(f"try it: python -m minisd evaluate --weights {folder}")


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
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minisd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="fetch CLIP's BPE vocabulary and check the installation")
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.set_defaults(func=cmd_setup)
    p = sub.add_parser("convert", help="diffusers folder <-> original single-file checkpoint (either way)")
    p.add_argument("src", help="a diffusers folder (model_index.json) or a .safetensors/.ckpt file")
    p.add_argument("dst", help="the file (.safetensors or .ckpt) or folder to write")
    p.add_argument(
        "--config", help="file -> folder: a diffusers folder whose configs to use (default SD v1.5)"
    )
    p.add_argument("--variant", help="folder -> file: read e.g. the fp16 variant of the weights")
    p.add_argument(
        "--ema", action=argparse.BooleanOptionalAction, default=None, help="use the EMA UNet weights"
    )
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("generate", help="text to image with SD v1.x (or, without --weights, the tiny model)")
    p.add_argument("prompt")
    p.add_argument("-o", "--output", default="out.png")
    p.add_argument("--steps", type=int, help="denoising steps (SD: 50, tiny model: 25)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (SD: 7.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", help="pndm (SD), ddim (tiny), euler, euler_a, dpm++2m, dpm++2m_karras, ...")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--height", type=int, help="pixels (SD: 512, tiny model: 32)")
    p.add_argument("--width", type=int, help="pixels (SD: 512, tiny model: 32)")
    p.add_argument("--upscale", type=int, help="enlarge the saved PNG N times, nearest pixel (tiny: 8)")
    p.add_argument(
        "--lora", action="append", default=[], metavar="PATH[:SCALE]", help="a LoRA file (repeatable)"
    )
    weights_options(p)
    p.set_defaults(func=cmd_generate)
    p = sub.add_parser("evaluate", help="prompt adherence on held-out captions vs guidance (tiny model)")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 7.5])
    p.add_argument("--prompts", type=int, default=48, help="held-out captions")
    p.add_argument("--samples", type=int, default=4, help="images per caption (diversity needs 2+)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="also save adherence and diversity against guidance as a PNG")
    weights_options(p)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("train-tiny", help="train the tiny shapes model on the CPU (chapter 07)")
    p.add_argument(
        "--output",
        help="folder to write (default ~/.cache/minisd/tiny_shapes; the packaged model is replaced only "
        "by an explicit --output minisd/shapes/weights/tiny_shapes)",
    )
    p.add_argument("--fast", action="store_true", help="a few hundred steps, to try the recipe")
    p.add_argument(
        "--checkpoint-dir", help="where to keep checkpoints; rerun to resume (default under ~/.cache/minisd)"
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default: reproduces the packaged model bit for bit), cuda, mps, or auto (the best one)",
    )
    p.set_defaults(func=cmd_train_tiny)
    p = sub.add_parser("train-lora", help="teach the tiny model the colour cyan with a LoRA (chapter 08)")
    p.add_argument(
        "--output", help="the .safetensors to write (default ~/.cache/minisd/cyan_lora.safetensors)"
    )
    p.add_argument("--weights", help="the base model folder (default: the packaged tiny model)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--checkpoint-dir", help="keep the training state here; rerun to resume")
    p.add_argument("--no-evaluate", action="store_true", help="skip the before/after adherence measurements")
    p.set_defaults(func=cmd_train_lora)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
