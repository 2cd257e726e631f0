"""Training a ControlNet on the tiny shapes model: say where the objects go (chapter 11).

The base model stays frozen; `ControlNetModel.from_unet` copies its encoder and the zero
convolutions start at zero, so step 0 draws exactly what the base draws. The condition is where
the objects are (the object mask, or its outline) of scenes whose single objects sit anywhere at
any size (`free_layout`), places the text-to-image model never drew; the caption still says what
they are. Only the ControlNet trains, on the same noise-prediction loss as the base did.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minisd.metrics.control import control_adherence
from minisd.models.controlnet import ControlNetModel
from minisd.pipelines import StableDiffusionControlNetPipeline
from minisd.pipelines.loading import load_pipeline_parts
from minisd.schedulers import DDPMScheduler
from minisd.shapes import TINY_CONFIGS, ShapesDataset, condition_image, free_layout, tiny_model_path
from minisd.training.checkpoints import load_state, save_state
from minisd.training.data import RenderedDataset, SceneList, encode_posteriors, noisy_batch

# the condition embedding of the tiny model: 32x32 pixels -> the 8x8 latent grid (two halvings)
TINY_EMBEDDING = (16, 32, 32)


def control_dataset(
    num_scenes: int = 2000, seed: int = 0, kind: str = "mask", progress: bool = True
) -> tuple[RenderedDataset, torch.Tensor]:
    """Training scenes (no held-out colour-shape pair; single objects in free layouts), drawn, and their
    conditions float [N, 3, 32, 32] in {0, 1}."""
    base, rng = ShapesDataset(num_scenes, seed=seed), random.Random(seed)
    scenes = [free_layout(base.scene(i), rng) for i in range(num_scenes)]
    conditions = torch.stack([condition_image(s, kind) for s in scenes])
    return RenderedDataset(SceneList(scenes), progress), conditions


def train_controlnet(
    pipe: StableDiffusionControlNetPipeline,
    dataset: RenderedDataset,
    conditions: torch.Tensor,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 1e-3,
    caption_dropout: float = 0.2,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    callback: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> list[float]:
    """Train `pipe.controlnet` (the UNet, text encoder and VAE frozen) to steer the UNet with
    `conditions[i]` towards `dataset[i]`; returns the losses. With `checkpoint_dir`, a run started
    again with the same directory resumes. `callback(step, loss)` runs after every step."""
    unet, text_encoder, vae, tokenizer, net = (
        pipe.unet,
        pipe.text_encoder,
        pipe.vae,
        pipe.tokenizer,
        pipe.controlnet,
    )
    device = pipe.device
    for model in (unet, text_encoder, vae):
        model.eval().requires_grad_(False)
    net.train().requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    scheduler = DDPMScheduler.from_config(TINY_CONFIGS["scheduler"])
    losses: list[float] = []
    ckpt = Path(checkpoint_dir) / "controlnet_state.pt" if checkpoint_dir else None
    if (saved := load_state(ckpt, device)) is not None:
        net.load_state_dict(saved["controlnet"])
        opt.load_state_dict(saved["optimizer"])
        losses = saved["losses"]
    posteriors = encode_posteriors(vae, dataset.images.to(device))  # [N, 8, h, w]
    bar = tqdm(range(len(losses), steps), desc="ControlNet", disable=not progress)
    for step in bar:
        b = noisy_batch(
            dataset, posteriors, step, batch_size, vae=vae, tokenizer=tokenizer, scheduler=scheduler,
            caption_dropout=caption_dropout, mask_text_padding=pipe.mask_text_padding, device=device,
        )  # fmt: skip
        with torch.no_grad():
            text = text_encoder(b.ids)[0]  # [B, 77, 64]
        down, mid = net(
            b.noisy, b.t, text, conditions[b.idx].to(device), return_dict=False, encoder_attention_mask=b.mask
        )
        pred = unet(
            b.noisy, b.t, text, encoder_attention_mask=b.mask,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        ).sample  # fmt: skip
        loss = F.mse_loss(pred, b.noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if callback is not None:
            callback(step + 1, losses[-1])
        if ckpt and (len(losses) % checkpoint_every == 0 or len(losses) == steps):
            state = {"controlnet": net.state_dict(), "optimizer": opt.state_dict(), "losses": losses}
            save_state(ckpt, state)
    net.eval()
    return losses


def tiny_controlnet_pipeline(
    base: str | os.PathLike | None = None, device: str | torch.device = "cpu", seed: int = 0
) -> StableDiffusionControlNetPipeline:
    """The tiny model at `base` (default: the packaged one) with a fresh ControlNet copied from its UNet."""
    parts = load_pipeline_parts(base or tiny_model_path(), device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the condition embedding's first layers are drawn
        net = ControlNetModel.from_unet(parts["unet"], conditioning_embedding_out_channels=TINY_EMBEDDING)
    return StableDiffusionControlNetPipeline(**parts, controlnet=net)


def train_tiny_controlnet(
    output: str | os.PathLike,
    steps: int = 1000,
    kind: str = "mask",
    base: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    evaluate: bool = True,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """The one command behind the packaged ControlNet: train on the tiny model, save it (diffusers
    layout, fp16) to `output` with `training_log.json`, and measure control and text adherence with
    and without it on held-out layouts. Returns the report."""
    pipe = tiny_controlnet_pipeline(base, device)
    report: dict = {
        "kind": kind,
        "steps": steps,
        "trainable_params": sum(p.numel() for p in pipe.controlnet.parameters()),
        "unet_params": sum(p.numel() for p in pipe.unet.parameters()),
        "machine": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}, device {device}",
    }
    dataset, conditions = control_dataset(kind=kind, progress=progress)
    start, cpu = time.time(), time.process_time()
    losses = train_controlnet(
        pipe, dataset, conditions, steps, checkpoint_dir=checkpoint_dir, progress=progress
    )
    report["train_seconds"] = round(time.time() - start, 1)
    report["train_cpu_seconds"] = round(time.process_time() - cpu, 1)  # all threads: = time on one core
    report["final_loss"] = float(np.mean(losses[-50:]))
    output = Path(output)
    pipe.controlnet.to(torch.float16).save_pretrained(output)
    pipe.controlnet.float()
    if evaluate:
        report["adherence"] = control_adherence(pipe, kind=kind)
    report["losses"] = [round(x, 5) for x in losses]
    (output / "training_log.json").write_text(json.dumps(report, indent=1))
    return report
