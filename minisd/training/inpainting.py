"""Fine-tuning the tiny model into its 9-channel inpainting variant (chapter 10).

The recipe of the official inpainting checkpoints, scaled down: the text-to-image UNet gets five
more input channels (the mask at latent size and the latents of the picture with the masked region
blanked), zero-initialised so that step 0 computes exactly what the base model computes, and is
trained on the noise-prediction loss with synthetic masks: boxes cut around one of the scene's
objects (whole, or a part of it, so that the model learns to continue what it keeps), random
rectangles, random thick strokes, a tenth of the pictures fully masked (there the model stays a
text-to-image model) and a tenth with nothing masked (there it must copy everything). In the kept
latent cells the loss is weighted towards the error of the model's estimate of the clean latents
(`kept_region_weight`): what the model must learn there is to copy, and copying is about x0.
Mask 1 = repaint. The text encoder, autoencoder and tokenizer are the base model's, frozen.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from minisd.loading.files import check_destination
from minisd.models import AutoencoderKL, CLIPTextModel, CLIPTokenizer, UNet2DConditionModel
from minisd.schedulers import DDPMScheduler
from minisd.shapes import TINY_CONFIGS, ShapeScene, ShapesDataset, shape_mask, tiny_model_path
from minisd.training.data import RenderedDataset
from minisd.training.text_to_image import save_model, train_text_to_image
from minisd.training.tiny import default_checkpoint_dir

# the mask mix, as cumulative shares: fully masked pictures, then boxes cut around an object (its
# whole box or a part of it, as when a half is to be completed), then random rectangles, then strokes
FULL_MASK, OBJECT, RECTANGLE = 0.1, 0.5, 0.75
KEEP_ALL = 0.1  # then this share of all masks is emptied: nothing to repaint
KEPT_WEIGHT_MAX = 10.0  # the cap of the loss weight in kept cells (see kept_region_weight)


def inpainting_unet(base: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy of `base` reading 9 channels; the 5 new input channels of conv_in start at zero."""
    unet = UNet2DConditionModel.from_config({**base.config, "in_channels": 9}).to(base.dtype)
    state = base.state_dict()
    weight = state["conv_in.weight"]  # [C, 4, 3, 3]
    state["conv_in.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], 5, 3, 3)], dim=1)
    unet.load_state_dict(state)
    return unet


def _randint(lo: int, hi: int, gen: torch.Generator) -> int:
    """A random integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


def _stroke(size: int, gen: torch.Generator) -> torch.Tensor:
    """A thick segment between two random points: [size, size] of 0/1."""
    (x0, y0, x1, y1), width = torch.rand(4, generator=gen) * size, 2 + 4 * torch.rand(1, generator=gen).item()
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dx, dy = x1 - x0, y1 - y0
    t = (((xs - x0) * dx + (ys - y0) * dy) / (dx * dx + dy * dy + 1e-6)).clamp(0, 1)  # closest point
    return ((xs - x0 - t * dx) ** 2 + (ys - y0 - t * dy) ** 2 <= (width / 2) ** 2).float()


def _object_box(scene: ShapeScene, size: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the box of one of the scene's objects grown by 0-4 pixels, whole (one time in
    five) or cut across at 30-70% of its height or width, keeping the part on one side."""
    shape = scene.shapes[_randint(0, len(scene.shapes) - 1, gen)]
    ys, xs = np.nonzero(shape_mask(shape, size))
    margin = _randint(0, 4, gen)
    y0, y1 = max(0, int(ys.min()) - margin), min(size, int(ys.max()) + margin + 1)
    x0, x1 = max(0, int(xs.min()) - margin), min(size, int(xs.max()) + margin + 1)
    part, cut = _randint(0, 4, gen), 0.3 + 0.4 * torch.rand(1, generator=gen).item()
    cy, cx = y0 + max(1, round(cut * (y1 - y0))), x0 + max(1, round(cut * (x1 - x0)))
    return [(y0, y1, x0, cx), (y0, y1, cx, x1), (y0, cy, x0, x1), (cy, y1, x0, x1), (y0, y1, x0, x1)][part]


def random_masks(
    n: int, size: int, gen: torch.Generator, scenes: Sequence[ShapeScene] | None = None
) -> torch.Tensor:
    """`n` training masks [n, 1, size, size] of 0/1 (1 = repaint), drawn in the shares of FULL_MASK,
    OBJECT and RECTANGLE: everything; a box around one object of `scenes[i]`, whole or a part of it
    (without scenes, a random rectangle instead); a random rectangle (a quarter to three quarters of
    the side); one to three random strokes. Then a KEEP_ALL share of them, drawn afterwards, is
    emptied (all 0)."""
    masks = torch.zeros(n, 1, size, size)
    for i, (m, kind) in enumerate(zip(masks, torch.rand(n, generator=gen).tolist(), strict=True)):
        if kind < FULL_MASK:
            m.fill_(1)
        elif kind < OBJECT and scenes is not None and scenes[i].shapes:
            y0, y1, x0, x1 = _object_box(scenes[i], size, gen)
            m[0, y0:y1, x0:x1] = 1
        elif kind < RECTANGLE:
            h, w = (size * (0.25 + 0.5 * torch.rand(2, generator=gen))).long().tolist()
            y, x = _randint(0, size - h, gen), _randint(0, size - w, gen)
            m[0, y : y + h, x : x + w] = 1
        else:
            for _ in range(_randint(1, 3, gen)):
                m[0] = m[0].maximum(_stroke(size, gen))
    masks[torch.rand(n, generator=gen) < KEEP_ALL] = 0
    return masks


def kept_region_weight(
    timesteps: torch.Tensor, small_masks: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """The per-cell loss weight [B, 1, h, w] for timesteps [B] and latent-size masks [B, 1, h, w]:
    1 in the cells to repaint; (1 - ᾱ_t) / ᾱ_t, kept within [1, KEPT_WEIGHT_MAX], in the kept cells.

    The model's estimate of the clean latents is x0 = (x_t - √(1 - ᾱ_t) ε̂) / √ᾱ_t, so its squared
    error is the noise error times (1 - ᾱ_t) / ᾱ_t: in the kept cells the weighted loss is the x0
    loss (capped), which punishes at the noisiest steps what the plain noise loss hardly sees there,
    a kept region redrawn instead of copied.
    """
    a = alphas_cumprod.to(timesteps.device)[timesteps].view(-1, 1, 1, 1)
    kept_weight = ((1 - a) / a).clamp(1, KEPT_WEIGHT_MAX)
    return 1 + (1 - small_masks) * (kept_weight - 1)


def masked_inputs(
    vae: AutoencoderKL, images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """The inpainting UNet's extra input [B, 5, h, w]: the mask at latent size (nearest, as the pipeline
    does) and the scaled latents of the pictures [B, 3, H, W] with the masked region set to 0."""
    with torch.no_grad():
        posterior = vae.encode(images * (masks < 0.5)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=gen).to(posterior.mean.device)
        latents = posterior.mean + posterior.std * noise
    small = F.interpolate(masks, size=latents.shape[2:])  # [B, 1, h, w]
    return torch.cat([small, latents * vae.scaling_factor], dim=1)


def train_inpainting(
    folder: str | os.PathLike,
    steps: int = 4_000,
    batch_size: int = 32,
    num_scenes: int = 10_000,
    lr: float = 1e-3,
    ema_decay: float = 0.999,
    seed: int = 1,
    base: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """Fine-tune the tiny model's (or `base`'s) UNet into a 9-channel inpainting UNet; save the model
    (diffusers layout, fp16) to `folder` with `training_log.json`. Resumes from `checkpoint_dir`
    (default: one folder per output folder under ~/.cache/minisd/checkpoints). Returns the log."""
    start, folder = time.time(), Path(folder)
    check_destination(folder, overwrite=True, is_folder=True)  # before training, not after
    base = Path(base) if base is not None else tiny_model_path()
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(folder)
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_pretrained(base / "vae", dtype=torch.float32, device="cpu").eval()
    text_encoder = CLIPTextModel.from_pretrained(base / "text_encoder", dtype=torch.float32, device="cpu")
    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
    unet = inpainting_unet(
        UNet2DConditionModel.from_pretrained(base / "unet", dtype=torch.float32, device="cpu")
    )
    mask_text_padding = bool(json.loads((base / "model_index.json").read_text()).get("mask_text_padding"))
    dataset = RenderedDataset(ShapesDataset(length=num_scenes, seed=seed), progress)
    size = dataset.images.shape[-1]
    alphas_cumprod = DDPMScheduler.from_config(TINY_CONFIGS["scheduler"]).alphas_cumprod

    def extra_channels(idx: list[int], gen: torch.Generator) -> torch.Tensor:
        images = dataset.images[idx].to(device)  # [B, 3, H, W] in [-1, 1]
        masks = random_masks(len(idx), size, gen, [dataset.scenes[i] for i in idx])
        return masked_inputs(vae, images, masks.to(device), gen)

    result = train_text_to_image(
        unet, text_encoder, vae, tokenizer, dataset, steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay,
        checkpoint_dir=checkpoint_dir, checkpoint_every=100, mask_text_padding=mask_text_padding,
        train_text_encoder=False, extra_channels=extra_channels, progress=progress, device=device,
        loss_weight=lambda t, extra: kept_region_weight(t, extra[:, :1], alphas_cumprod),
    )  # fmt: skip
    save_model(folder, result["unet"], text_encoder, vae, tokenizer, mask_text_padding=mask_text_padding)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(
        json.dumps({**index, "_class_name": "StableDiffusionInpaintPipeline"}, indent=2)
    )
    losses = result["losses"]
    log = {
        "seconds": round(time.time() - start, 1),  # of this call: a resumed run counts its own part only
        "machine": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "device": str(device),
        "recipe": dict(
            steps=steps,
            batch_size=batch_size,
            num_scenes=num_scenes,
            lr=lr,
            ema_decay=ema_decay,
            seed=seed,
            masks={  # the shares of the mask kinds
                kind: round(share, 3)
                for kind, share in zip(
                    ("full", "object", "rectangle", "strokes", "none"),
                    (
                        *((1 - KEEP_ALL) * p for p in (FULL_MASK, OBJECT - FULL_MASK, RECTANGLE - OBJECT)),
                        (1 - KEEP_ALL) * (1 - RECTANGLE),
                        KEEP_ALL,
                    ),
                    strict=True,
                )
            },
            kept_weight_max=KEPT_WEIGHT_MAX,
        ),
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 5) if losses else math.nan,
        "losses": [round(x, 5) for x in losses],
    }
    (folder / "training_log.json").write_text(json.dumps(log))
    return log
