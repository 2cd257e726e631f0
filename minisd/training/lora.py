"""Training a LoRA on the tiny shapes model: teach it the colour cyan (chapter 09).

The packaged tiny model never saw cyan; "cyan" is a word of CLIP's vocabulary whose embedding row
its text encoder never trained. Adapters on the UNet's attention and feed-forward layers and on the
text encoder's attention and MLP learn it from cyan scenes; half of every batch is ordinary scenes,
so what the model already draws is kept. The base weights stay frozen: only A and B train.
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

from minisd.metrics.adherence import adherence, evaluate_adherence
from minisd.models import lora
from minisd.pipelines import StableDiffusionPipeline
from minisd.pipelines.lora_formats import lora_state_dict, save_lora_file
from minisd.schedulers import DDPMScheduler
from minisd.shapes import TINY_CONFIGS, TINY_SAMPLING, ShapeScene, ShapesDataset, novel_scene
from minisd.training.checkpoints import load_state, save_state
from minisd.training.data import RenderedDataset, SceneList, encode_posteriors, noisy_batch

UNET_TARGETS = lora.UNET_ATTENTION + lora.UNET_FEED_FORWARD
TEXT_TARGETS = lora.TEXT_ATTENTION + lora.TEXT_MLP
# cyan captions kept out of training, to test on captions the adapter never saw
HELD_OUT_NOVEL = {("circle", "red"), ("square", "yellow"), ("triangle", "purple"), ("circle", "black")}


def novel_scenes(n: int, seed: int, held_out: bool) -> list[ShapeScene]:
    """n cyan scenes whose (shape, background) is in HELD_OUT_NOVEL (held_out) or not (training)."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        scene = novel_scene(rng)
        if ((scene.shapes[0].shape, scene.background) in HELD_OUT_NOVEL) == held_out:
            out.append(scene)
    return out


def lora_dataset(num_novel: int = 512, num_base: int = 512, seed: int = 0, progress: bool = True):
    """Half cyan scenes, half the base model's own kind of scene (from its training split)."""
    base = ShapesDataset(num_base, seed=seed + 1)
    scenes = novel_scenes(num_novel, seed, held_out=False) + [base.scene(i) for i in range(num_base)]
    return RenderedDataset(SceneList(scenes), progress)


def add_adapters(
    pipe: StableDiffusionPipeline, rank: int = 4, adapter_name: str = "cyan", seed: int = 0
) -> int:
    """Freeze the pipeline's models and add one adapter to the UNet and text encoder (A drawn from
    `seed`); returns the number of trainable parameters."""
    for model in (pipe.unet, pipe.text_encoder, pipe.vae):
        model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lora.inject_lora(pipe.unet, adapter_name, rank, target_modules=UNET_TARGETS, init="gaussian")
        lora.inject_lora(pipe.text_encoder, adapter_name, rank, target_modules=TEXT_TARGETS, init="gaussian")
    return sum(p.numel() for p in trainable(pipe, adapter_name))


def trainable(pipe: StableDiffusionPipeline, adapter_name: str) -> list[torch.nn.Parameter]:
    return [
        *lora.lora_parameters(pipe.unet, [adapter_name]),
        *lora.lora_parameters(pipe.text_encoder, [adapter_name]),
    ]


def train_lora(
    pipe: StableDiffusionPipeline,
    dataset: RenderedDataset,
    steps: int = 600,
    batch_size: int = 32,
    lr: float = 3e-3,
    adapter_name: str = "cyan",
    caption_dropout: float = 0.1,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    callback: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> list[float]:
    """Train the adapter `adapter_name` (see `add_adapters`) on the noise-prediction loss; returns the
    losses. With `checkpoint_dir`, a run started again with the same directory resumes.
    `callback(step, loss)` runs after every step (e.g. to draw samples as training goes)."""
    unet, text_encoder, vae, tokenizer = pipe.unet, pipe.text_encoder, pipe.vae, pipe.tokenizer
    params = trainable(pipe, adapter_name)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = DDPMScheduler.from_config(TINY_CONFIGS["scheduler"])
    losses: list[float] = []
    ckpt = Path(checkpoint_dir) / "lora_state.pt" if checkpoint_dir else None
    if (saved := load_state(ckpt)) is not None:
        for p, value in zip(params, saved["params"], strict=True):
            p.data.copy_(value)
        opt.load_state_dict(saved["optimizer"])
        losses = saved["losses"]
    posteriors = encode_posteriors(vae, dataset.images.to(pipe.device))  # [N, 8, h, w]
    unet.train(), text_encoder.train()
    bar = tqdm(range(len(losses), steps), desc=f"LoRA {adapter_name!r}", disable=not progress)
    for step in bar:
        b = noisy_batch(
            dataset, posteriors, step, batch_size, vae=vae, tokenizer=tokenizer, scheduler=scheduler,
            caption_dropout=caption_dropout, mask_text_padding=pipe.mask_text_padding, device=pipe.device,
        )  # fmt: skip
        pred = unet(b.noisy, b.t, text_encoder(b.ids)[0], encoder_attention_mask=b.mask)
        loss = F.mse_loss(pred.sample, b.noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if callback is not None:
            callback(step + 1, losses[-1])
        if ckpt and (len(losses) % checkpoint_every == 0 or len(losses) == steps):
            state = {"params": [p.detach() for p in params], "optimizer": opt.state_dict(), "losses": losses}
            save_state(ckpt, state)
    unet.eval(), text_encoder.eval()
    return losses


@torch.inference_mode()
def novel_adherence(pipe: StableDiffusionPipeline, num_prompts: int = 32, seed: int = 1, **call) -> dict:
    """How often held-out cyan captions come out right, read by the shapes reader ("all": colour,
    shape, background and count all right)."""
    scenes = novel_scenes(num_prompts, seed, held_out=True)
    args = dict(num_inference_steps=TINY_SAMPLING["steps"], guidance_scale=TINY_SAMPLING["guidance"])
    generator = torch.Generator().manual_seed(seed)
    images = pipe([s.caption for s in scenes], **{**args, **call}, scheduler=TINY_SAMPLING["scheduler"],
                  generator=generator, output_type="np", progress=False).images  # fmt: skip
    rates = adherence(images, scenes)
    return {"color": rates["color"], "all": rates["all: single"]}


def base_adherence(pipe: StableDiffusionPipeline, num_prompts: int = 48) -> dict:
    """The model's adherence on its own held-out captions at the tiny model's guidance."""
    row = evaluate_adherence(
        pipe, [TINY_SAMPLING["guidance"]], num_prompts, samples_per_prompt=2, progress=False
    )[0]
    return {k: row[k] for k in ("color", "shape", "background", "all: single")}


def train_cyan_lora(
    output: str | os.PathLike,
    base: str | os.PathLike,
    steps: int = 600,
    rank: int = 4,
    checkpoint_dir: str | os.PathLike | None = None,
    evaluate: bool = True,
    progress: bool = True,
) -> dict:
    """The one command behind the packaged adapter: train on the tiny model at `base`, save it as a
    diffusers/PEFT .safetensors to `output`, and measure before and after. Returns the numbers."""
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(base, device="cpu")
    report: dict = {}
    if evaluate:
        report["novel_before"], report["base_before"] = novel_adherence(pipe), base_adherence(pipe)
    report["trainable_params"] = add_adapters(pipe, rank)
    report["unet_params"] = sum(p.numel() for p in pipe.unet.parameters() if not p.requires_grad)
    start = time.time()
    losses = train_lora(
        pipe, lora_dataset(progress=progress), steps, checkpoint_dir=checkpoint_dir, progress=progress
    )
    report["train_seconds"] = round(time.time() - start, 1)
    report["final_loss"] = float(np.mean(losses[-50:]))
    path = save_lora_file(
        lora_state_dict({"unet": pipe.unet, "text_encoder": pipe.text_encoder}, "cyan"), output
    )
    report["file_bytes"] = path.stat().st_size
    if evaluate:
        report["novel_after"], report["base_after"] = novel_adherence(pipe), base_adherence(pipe)
    path.with_suffix(".json").write_text(json.dumps(report, indent=2))
    return report
