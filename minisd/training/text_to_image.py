"""Training a tiny text-to-image latent diffusion model on the CPU (chapter 07).

The same recipe as Stable Diffusion, scaled down until it trains on two CPU cores in minutes:
first an autoencoder (L1 reconstruction + a small KL term), then the UNet and a small CLIP text
encoder together, from scratch (as the LDM paper trains its text transformer), with the
noise-prediction loss, 10% caption dropout for classifier-free guidance, AdamW and EMA weights.
Every model is one of minisd's own classes built from a config; the result is saved in the
diffusers folder layout, so `StableDiffusionPipeline.from_pretrained` loads it like SD v1.5.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minisd.models.attention_maps import recording_cross_attention
from minisd.models.clip import CLIPTextModel
from minisd.models.tokenizer import CLIPTokenizer
from minisd.models.unet import UNet2DConditionModel
from minisd.models.vae import AutoencoderKL
from minisd.schedulers import DDPMScheduler
from minisd.shapes import TINY_CONFIGS, ShapesDataset
from minisd.training.checkpoints import load_state, save_state
from minisd.training.data import RenderedDataset, encode_posteriors, noisy_batch
from minisd.training.ema import EMA
from minisd.training.grounding import grounding_loss, grounding_targets, upsample_map


def train_text_to_image(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    vae: AutoencoderKL,
    tokenizer: CLIPTokenizer,
    dataset: ShapesDataset,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    caption_dropout: float = 0.1,
    ema_decay: float = 0.999,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    mask_text_padding: bool = False,
    grounding_weight: float = 0.0,
    ground_relation: bool = False,
    train_text_encoder: bool = True,
    extra_channels: Callable[[list[int], torch.Generator], torch.Tensor] | None = None,
    loss_weight: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """Train the UNet and text encoder on the noise-prediction loss; returns EMA models and losses.

    `mask_text_padding` hides the padding after EOT from the UNet's cross-attention (then sample
    with a pipeline whose `mask_text_padding` is set too). `grounding_weight` adds that times
    `grounding_loss` on the cross-attention of the colour and shape words (needs a ShapesDataset;
    the maps of the latent grid and, upsampled, of the grid half its side);
    `ground_relation` grounds the relation word(s) too, on the first object.
    `train_text_encoder` False keeps the text encoder frozen (fine-tuning the UNet alone).
    `extra_channels(indices, generator)`, when given, returns [B, C, h, w] that are concatenated to
    the noisy latents of those dataset items (an inpainting UNet's mask and masked-picture latents),
    drawn with the step's generator after its other draws. `loss_weight(timesteps, extra)`, when
    given, weighs each squared error of the noise loss (`extra` is None without `extra_channels`).

    With `checkpoint_dir`, the state is saved every `checkpoint_every` steps and a run started
    again with the same directory resumes where it stopped.

    The models are moved to `device` (default the CPU, where a run is reproducible bit for bit);
    the random draws of every step come from a CPU generator, so they do not depend on the device.
    """
    for model in (unet, text_encoder, vae):
        model.to(device)
    scheduler = DDPMScheduler.from_config(TINY_CONFIGS["scheduler"])
    text_encoder.requires_grad_(train_text_encoder)
    params = [*unet.parameters(), *(text_encoder.parameters() if train_text_encoder else [])]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    ema_unet, ema_text = EMA(unet, ema_decay), EMA(text_encoder, ema_decay)
    state = {"step": 0, "losses": []}
    ckpt = Path(checkpoint_dir) / "training_state.pt" if checkpoint_dir else None
    if (saved := load_state(ckpt, device)) is not None:
        unet.load_state_dict(saved["unet"])
        text_encoder.load_state_dict(saved["text_encoder"])
        ema_unet.model.load_state_dict(saved["ema_unet"])
        ema_text.model.load_state_dict(saved["ema_text_encoder"])
        ema_unet.updates = ema_text.updates = saved["step"]
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["lr_scheduler"])
        state = {"step": saved["step"], "losses": saved["losses"]}
    vae.eval().requires_grad_(False)
    if not isinstance(dataset, RenderedDataset):
        dataset = RenderedDataset(dataset, progress)
    # the autoencoder is frozen from here on: encode every scene once
    posteriors = encode_posteriors(vae, dataset.images.to(device))  # [N, 8, h, w]
    side = posteriors.shape[-1]
    if grounding_weight:
        if dataset.scenes is None:
            raise ValueError(
                "grounding_weight needs a ShapesDataset: its scenes say where each word's object is"
            )
        ground_tokens, ground_masks = grounding_targets(dataset, tokenizer, side, ground_relation)
    unet.train()
    text_encoder.train(train_text_encoder)
    desc = "unet + text encoder" if train_text_encoder else "unet"
    bar = tqdm(range(state["step"], steps), desc=desc, disable=not progress)
    for step in bar:
        b = noisy_batch(
            dataset, posteriors, step, batch_size, vae=vae, tokenizer=tokenizer, scheduler=scheduler,
            caption_dropout=caption_dropout, mask_text_padding=mask_text_padding, device=device,
        )  # fmt: skip
        noisy, extra = b.noisy, None  # q(x_t | x_0)
        if extra_channels is not None:
            extra = extra_channels(b.idx, b.generator).to(device)  # [B, C, 8, 8]
            noisy = torch.cat([noisy, extra], dim=1)  # [B, 4 + C, 8, 8]
        with (
            recording_cross_attention(unet, side) if grounding_weight else nullcontext([]) as fine,
            recording_cross_attention(unet, side // 2) if grounding_weight else nullcontext([]) as coarse,
        ):
            pred = unet(noisy, b.t, text_encoder(b.ids)[0], encoder_attention_mask=b.mask).sample
        if loss_weight is None:
            loss = F.mse_loss(pred, b.noise)
        else:
            loss = (loss_weight(b.t, extra) * (pred - b.noise) ** 2).mean()
        if grounding_weight:
            tokens = ground_tokens[b.idx] * ~b.dropped[:, None]  # no words to ground in a dropped caption
            maps = fine + [upsample_map(m, side // 2) for m in coarse]  # each [B, side * side, L]
            loss = loss + grounding_weight * grounding_loss(
                torch.stack(maps).mean(0), tokens.to(device), ground_masks[b.idx].to(device)
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema_unet.update(unet)
        ema_text.update(text_encoder)
        state["step"] = step + 1
        state["losses"].append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(state['losses'][-50:]) / len(state['losses'][-50:]):.4f}")
        if ckpt and (state["step"] % checkpoint_every == 0 or state["step"] == steps):
            saved = {
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema_unet": ema_unet.model.state_dict(),
                "ema_text_encoder": ema_text.model.state_dict(),
                "optimizer": opt.state_dict(),
                "lr_scheduler": sched.state_dict(),
                **state,
            }
            save_state(ckpt, saved)
    return {"unet": ema_unet.model, "text_encoder": ema_text.model, "losses": state["losses"]}


def save_model(
    folder: str | os.PathLike,
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    vae: AutoencoderKL,
    tokenizer: CLIPTokenizer,
    dtype: torch.dtype = torch.float16,
    mask_text_padding: bool = False,
) -> None:
    """Write the model in the diffusers folder layout (model_index.json + one folder per part).

    `mask_text_padding` is recorded in model_index.json, where `StableDiffusionPipeline` reads it.
    """
    folder = Path(folder)
    for name, model in [("unet", unet), ("text_encoder", text_encoder), ("vae", vae)]:
        copy.deepcopy(model).to(dtype).save_pretrained(folder / name)
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    scheduler = {"_class_name": "DDIMScheduler", **TINY_CONFIGS["scheduler"]}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "mask_text_padding": mask_text_padding,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
