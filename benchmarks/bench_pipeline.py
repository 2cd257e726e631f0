"""minisd vs diffusers: seconds per image and peak GPU memory of the whole text-to-image pipeline.

On a GPU (the numbers to report):
    python benchmarks/bench_pipeline.py --weights $MINISD_SD15            # fp16, 512x512, 50 steps
    python benchmarks/bench_pipeline.py --size sd15                         # random weights, v1.5 sizes
On a CPU, a quick correctness run with a tiny random-weight model:
    python benchmarks/bench_pipeline.py --size tiny --device cpu --dtype fp32 --height 64 --width 64 --steps 3

Both pipelines load the same diffusers folder and get the same initial latents; the script also
reports max|diff| of their images, so a fast but wrong run cannot go unnoticed.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from minisd.device import get_device
from minisd.loading.configs import CONFIG_DIR
from minisd.models.tokenizer import CLIPTokenizer
from minisd.pipelines import StableDiffusionPipeline

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PROMPT = "a photograph of an astronaut riding a horse"
TINY = {  # the v1.5 block structure with small widths
    "unet": {"block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32},
    "vae": {"block_out_channels": [32, 32, 64, 64]},
    "text_encoder": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
}


def random_model_folder(folder: Path, size: str) -> Path:
    """Save a random-weight SD (v1.5 sizes, or tiny) as a diffusers folder with diffusers itself."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from diffusers import StableDiffusionPipeline as RefPipeline
    from transformers import CLIPTextConfig, CLIPTextModel
    from transformers import CLIPTokenizer as RefTokenizer

    def config(name: str, file: str = "config.json") -> dict:
        base = json.loads((CONFIG_DIR / name / file).read_text())
        return {**base, **(TINY.get(name, {}) if size == "tiny" else {})}

    text_config = {k: v for k, v in config("text_encoder").items() if k != "architectures"}
    CLIPTokenizer().save_pretrained(folder / "tokenizer")
    RefPipeline(
        unet=UNet2DConditionModel.from_config(config("unet")),
        vae=AutoencoderKL.from_config(config("vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig(**text_config)),
        tokenizer=RefTokenizer.from_pretrained(folder / "tokenizer"),
        scheduler=PNDMScheduler.from_config(config("scheduler", "scheduler_config.json")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def measure(run, device: torch.device, repeats: int) -> tuple[float, float, np.ndarray]:
    """(seconds per call after one warm-up, peak GPU memory in GiB or nan, the images)."""
    run()  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        images = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak, images


def images_of(pipe, **call):
    """The images of one pipeline call."""
    return pipe(**call).images


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", help="a diffusers SD v1.5 folder (default: random weights, see --size)")
    parser.add_argument("--size", choices=["sd15", "tiny"], default="sd15", help="random-weight model size")
    parser.add_argument("--device", default=None, help="default: minisd.get_device()")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp16")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    from diffusers import StableDiffusionPipeline as RefPipeline

    device = torch.device(args.device) if args.device else get_device()
    dtype = DTYPES[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.weights) if args.weights else random_model_folder(Path(tmp), args.size)
        shape = (1, 4, args.height // 8, args.width // 8)
        latents = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        call = dict(prompt=PROMPT, num_inference_steps=args.steps, height=args.height, width=args.width)
        call |= dict(output_type="np", latents=latents.to(device, dtype))

        ours = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, device=device)
        ours_s, ours_mem, ours_img = measure(
            partial(images_of, ours, progress=False, **call), device, args.repeats
        )
        del ours
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        ref = RefPipeline.from_pretrained(folder, torch_dtype=dtype, safety_checker=None).to(device)
        ref.set_progress_bar_config(disable=True)
        ref_s, ref_mem, ref_img = measure(lambda: ref(**call).images, device, args.repeats)

    result = {
        "device": str(device),
        "dtype": args.dtype,
        "size": f"{args.height}x{args.width}",
        "steps": args.steps,
        "minisd_s_per_image": round(ours_s, 3),
        "diffusers_s_per_image": round(ref_s, 3),
        "time_ratio_minisd_over_diffusers": round(ours_s / ref_s, 3),
        "minisd_peak_gib": round(ours_mem, 3),
        "diffusers_peak_gib": round(ref_mem, 3),
        "max_abs_image_diff": float(np.abs(ours_img - ref_img).max()),
    }
    for key, value in result.items():
        print(f"{key:34s} {value}")
    return result


if __name__ == "__main__":
    main()
