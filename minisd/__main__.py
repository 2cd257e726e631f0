"""Command line: `python -m minisd setup | sync-chapters | convert | generate`."""

from __future__ import annotations

import argparse


def cmd_setup(args: argparse.Namespace) -> None:
    from minisd.assets import fetch_clip_bpe
    from minisd.env import print_environment

    print_environment()
    path = fetch_clip_bpe(force=args.force)
    print(f"CLIP BPE vocabulary: {path}")
    from minisd.tokenizer import CLIPTokenizer

    prompt = "a photograph of an astronaut riding a horse"
    ids = CLIPTokenizer.from_pretrained(path).encode(prompt)
    expected = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]  # the ids OpenAI's CLIP gives
    print(f"{prompt!r} -> {ids}")
    if ids != expected:
        raise SystemExit(f"tokenizer check failed: expected {expected}; the vocabulary file may be damaged")
    print("tokenizer check: ok")


def cmd_sync_chapters(args: argparse.Namespace) -> None:
    from minisd.notebooks import sync_chapters

    for path, n in sync_chapters(write=not args.check).items():
        print(f"{path}: {n} marked cell(s) {'differ' if args.check else 'rewritten'}")


def cmd_convert(args: argparse.Namespace) -> None:
    from pathlib import Path

    from minisd.checkpoint import FILE_SUFFIXES, folder_to_single_file, single_file_to_folder

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


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from minisd.pipeline import StableDiffusionPipeline

    if args.weights is None:
        raise SystemExit(
            "no model given: pass --weights PATH, a diffusers folder or a .safetensors/.ckpt file of "
            "SD v1.5 (e.g. from huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5)"
        )
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    pipe = StableDiffusionPipeline.from_pretrained(args.weights, config=args.config, dtype=dtype)
    images = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        height=args.height,
        width=args.width,
        generator=torch.Generator().manual_seed(args.seed),
        scheduler=args.scheduler,
    )
    images[0].save(args.output)
    print(f"wrote {args.output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m minisd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="fetch CLIP's BPE vocabulary and check the installation")
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.set_defaults(func=cmd_setup)
    p = sub.add_parser("sync-chapters", help="rewrite the marked chapter cells from the package")
    p.add_argument("--check", action="store_true", help="only report cells that differ")
    p.set_defaults(func=cmd_sync_chapters)
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
    p = sub.add_parser("generate", help="text to image with Stable Diffusion v1.x")
    p.add_argument("prompt")
    p.add_argument("--weights", help="a diffusers folder or a .safetensors/.ckpt single file (required)")
    p.add_argument(
        "--config", help="for a single file: a diffusers folder with its configs (default SD v1.5)"
    )
    p.add_argument("-o", "--output", default="out.png")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scheduler", default="pndm", help="pndm, ddim, euler, euler_a, dpm++2m, dpm++2m_karras, ..."
    )
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.set_defaults(func=cmd_generate)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
