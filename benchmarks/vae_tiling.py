"""Tiled VAE decoding of a large image, minisd vs diffusers, side by side (full v1.5 config, random weights).

    PYTHONPATH=. python benchmarks/vae_tiling.py --latent 128   # a 1024x1024 image, 9 tiles of 512

Reports each library's time, their ratio, the relative max difference of the two tiled decodes, and
the largest activation the decoder held (a tile's versus the whole image's).
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import AutoencoderKL as RefAutoencoderKL

from minisd.models.vae import AutoencoderKL

SD15_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=int, default=128, help="latent side (image side = 8x)")
    args = parser.parse_args()
    torch.manual_seed(0)
    ref = RefAutoencoderKL.from_config(SD15_VAE).eval()
    ref.enable_tiling()
    ours = AutoencoderKL.from_config(SD15_VAE).eval()
    ours.load_state_dict(ref.state_dict())
    z = torch.randn(1, 4, args.latent, args.latent)
    largest = []
    for m in ours.decoder.modules():
        m.register_forward_hook(lambda m, i, o: largest.append(o.numel()))
    with torch.inference_mode():
        start = time.perf_counter()
        image = ours.decode(z, tiled=True).sample
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        ref_image = ref.decode(z).sample
        t_ref = time.perf_counter() - start
    diff = ((image - ref_image).abs().max() / ref_image.abs().max()).item()
    side = 8 * args.latent
    threads = torch.get_num_threads()
    print(f"tiled decode of a {side}x{side} image (latent {args.latent}x{args.latent}), {threads} threads")
    print(f"minisd {t_ours:.1f} s, diffusers {t_ref:.1f} s, ratio minisd/diffusers {t_ours / t_ref:.2f}")
    print(f"relative max diff minisd vs diffusers (both tiled): {diff:.2e}")
    print(f"largest decoder activation: {max(largest):,} values per tile; untiled {256 * side * side:,}")


if __name__ == "__main__":
    main()
