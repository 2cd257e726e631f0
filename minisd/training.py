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
import hashlib
import itertools
import json
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minisd.assets import cache_dir
from minisd.attention import recording_cross_attention
from minisd.clip import CLIPTextModel
from minisd.data.shapes import ShapesDataset, shape_coverage
from minisd.schedulers import DDPMScheduler
from minisd.tokenizer import CLIPTokenizer
from minisd.unet import UNet2DConditionModel
from minisd.vae import AutoencoderKL, DiagonalGaussianDistribution

TINY_CONFIGS: dict[str, dict] = {
    "text_encoder": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "layer_norm_eps": 1e-5,
        "hidden_act": "quick_gelu",
    },
    "vae": {  # three blocks, two downsamplers: f = 4, 32x32x3 pixels <-> 8x8x4 latents
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "block_out_channels": [16, 32, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 32,
        "scaling_factor": 1.0,  # replaced by 1/std of the trained autoencoder's latents
    },
    "unet": {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "attention_head_dim": 4,
        "cross_attention_dim": 64,
        "norm_num_groups": 8,
    },
    "scheduler": {  # SD v1.5's noise schedule
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
    },
}

# how `python -m minisd generate` samples the tiny model when no option says otherwise
TINY_SAMPLING = {"steps": 25, "guidance": 3.0, "scheduler": "ddim", "height": 32, "width": 32, "upscale": 8}


class RenderedDataset(torch.utils.data.Dataset):
    """A dataset drawn once into memory: images [N, 3, H, W] and captions, indexed without redrawing
    (and, from a ShapesDataset, the scenes, for `grounding_targets`)."""

    def __init__(self, dataset: torch.utils.data.Dataset, progress: bool = True):
        items = [dataset[i] for i in tqdm(range(len(dataset)), desc="drawing scenes", disable=not progress)]
        self.images = torch.stack([x for x, _ in items])  # [N, 3, H, W] in [-1, 1]
        self.captions = [c for _, c in items]
        scene = getattr(dataset, "scene", None)
        self.scenes = [scene(i) for i in range(len(dataset))] if scene else None

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return self.images[i], self.captions[i]


def batch_indices(n: int, batch_size: int, step: int, seed: int = 0) -> list[int]:
    """The dataset indices of a training step, a function of (seed, step) alone: a resumed run sees
    exactly the batches an uninterrupted one would."""
    rng = random.Random(seed * 1_000_003 + step)
    return [rng.randrange(n) for _ in range(batch_size)]


def batch(
    dataset: torch.utils.data.Dataset, batch_size: int, step: int, seed: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """The batch of a training step: images [B, 3, H, W] in [-1, 1] and their captions."""
    items = [dataset[i] for i in batch_indices(len(dataset), batch_size, step, seed)]
    return torch.stack([x for x, _ in items]), [c for _, c in items]


def word_tokens(tokenizer: CLIPTokenizer, caption: str) -> list[int]:
    """The token index of each word of the caption: its last token (which has read the whole word)."""
    # the start token is index 0, so a word whose last token is the n-th of the caption is at n
    return list(itertools.accumulate(len(tokenizer.encode(w)) - 2 for w in caption.split()))


def grounding_targets(
    dataset: RenderedDataset, tokenizer: CLIPTokenizer, side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every scene, the token of each colour and shape word (0: none) [N, 4] and how much the
    object(s) it names cover each cell of the side x side latent grid [N, 4, side * side]."""
    tokens = torch.zeros(len(dataset), 4, dtype=torch.long)
    masks = torch.zeros(len(dataset), 4, side * side)
    for i, scene in enumerate(dataset.scenes):
        positions = word_tokens(tokenizer, scene.caption)
        for j, (word, shapes) in enumerate(scene.object_words()):
            tokens[i, j] = positions[word]
            cover = np.max([shape_coverage(scene.shapes[k], side) for k in shapes], axis=0)  # [side, side]
            masks[i, j] = torch.from_numpy(cover).flatten()
    return tokens, masks


def grounding_loss(maps: torch.Tensor, tokens: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """TokenCompose's token loss: (1 - the share of a word's attention that falls on its object)^2.

    maps [B, HW, L] (cross-attention weights), tokens [B, K] (0: none), masks [B, K, HW] -> a scalar.
    """
    attention = maps.gather(2, tokens[:, None, :].expand(-1, maps.shape[1], -1)).transpose(1, 2)  # [B, K, HW]
    inside = (attention * masks).sum(-1) / attention.sum(-1).clamp_min(1e-8)  # [B, K]
    used = tokens > 0
    return ((1 - inside[used]) ** 2).mean() if used.any() else maps.new_zeros(())


@torch.inference_mode()
def encode_posteriors(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The frozen autoencoder's posterior parameters (mean and log-variance) [N, 8, h, w] of every
    image, computed once: a training step then only samples z = mean + std * noise."""
    return torch.cat([vae.encode(x).parameters for x in images.split(batch_size)])


def train_autoencoder(
    vae: AutoencoderKL,
    dataset: ShapesDataset,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    kl_weight: float = 1e-6,
    progress: bool = True,
) -> list[float]:
    """Fit the autoencoder with L1 reconstruction + kl_weight * KL; returns the loss per step."""
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    vae.train()
    losses = []
    for step in tqdm(range(steps), desc="autoencoder", disable=not progress):
        x, _ = batch(dataset, batch_size, step, seed=1)
        posterior = vae.encode(x)
        recon = vae.decode(posterior.sample())
        kl = posterior.kl().mean() / x[0].numel()  # per pixel, like the L1 term: the LDM paper's ratio
        loss = F.l1_loss(recon, x) + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


@torch.inference_mode()
def latent_scaling_factor(vae: AutoencoderKL, dataset: ShapesDataset, n: int = 512) -> float:
    """1 / std of the latents over `n` images: how SD's 0.18215 was chosen (unit-variance latents)."""
    x = torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))])
    return 1.0 / vae.encode(x).sample(torch.Generator().manual_seed(0)).std().item()


class EMA:
    """Exponential moving average of a model's weights, with the usual warm-up of the decay."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - d)


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
    progress: bool = True,
) -> dict:
    """Train the UNet and text encoder on the noise-prediction loss; returns EMA models and losses.

    `mask_text_padding` hides the padding after EOT from the UNet's cross-attention (then sample
    with a pipeline whose `mask_text_padding` is set too). `grounding_weight` adds that times
    `grounding_loss` on the cross-attention of the colour and shape words (needs a ShapesDataset).

    With `checkpoint_dir`, the state is saved every `checkpoint_every` steps and a run started
    again with the same directory resumes where it stopped.
    """
    scheduler = DDPMScheduler.from_config(TINY_CONFIGS["scheduler"])
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    ema_unet, ema_text = EMA(unet, ema_decay), EMA(text_encoder, ema_decay)
    state = {"step": 0, "losses": []}
    ckpt = Path(checkpoint_dir) / "training_state.pt" if checkpoint_dir else None
    if ckpt and ckpt.is_file():
        saved = torch.load(ckpt, weights_only=True)
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
    posteriors = encode_posteriors(vae, dataset.images)  # [N, 8, h, w]
    side = posteriors.shape[-1]
    if grounding_weight:
        if dataset.scenes is None:
            raise ValueError(
                "grounding_weight needs a ShapesDataset: its scenes say where each word's object is"
            )
        ground_tokens, ground_masks = grounding_targets(dataset, tokenizer, side)
    unet.train()
    text_encoder.train()
    bar = tqdm(range(state["step"], steps), desc="unet + text encoder", disable=not progress)
    for step in bar:
        idx = batch_indices(len(dataset), batch_size, step)
        captions = [dataset.captions[i] for i in idx]
        gen = torch.Generator().manual_seed(step)  # this step's noise, timesteps and dropped captions
        drop = torch.rand(len(captions), generator=gen) < caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        posterior = DiagonalGaussianDistribution(posteriors[idx])
        latents = posterior.sample(gen) * vae.scaling_factor  # [B, 4, 8, 8]
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        noisy = scheduler.add_noise(latents, noise, t)  # q(x_t | x_0)
        ids = tokenizer(captions)  # [B, 77]
        mask = tokenizer.attention_mask(ids) if mask_text_padding else None
        with recording_cross_attention(unet, side) if grounding_weight else nullcontext([]) as maps:
            pred = unet(noisy, t, text_encoder(ids), mask)
        loss = F.mse_loss(pred, noise)
        if grounding_weight:
            tokens = ground_tokens[idx] * ~drop[:, None]  # no words to ground in a dropped caption
            loss = loss + grounding_weight * grounding_loss(
                torch.stack(maps).mean(0), tokens, ground_masks[idx]
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
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            saved = {
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema_unet": ema_unet.model.state_dict(),
                "ema_text_encoder": ema_text.model.state_dict(),
                "optimizer": opt.state_dict(),
                "lr_scheduler": sched.state_dict(),
                **state,
            }
            torch.save(saved, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)  # never leave a half-written checkpoint
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


def default_checkpoint_dir(folder: Path) -> Path:
    """Where `train_tiny_model` keeps the checkpoints of a run writing to `folder`: in the cache,
    one directory per output folder, never inside it (it may be the package)."""
    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    return cache_dir() / "checkpoints" / f"{folder.name}-{key}"


def train_tiny_model(
    folder: str | os.PathLike,
    vae_steps: int = 2500,
    steps: int = 3000,
    batch_size: int = 64,
    num_scenes: int = 20_000,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    mask_text_padding: bool = True,
    grounding_weight: float = 0.01,
    progress: bool = True,
) -> dict:
    """The whole recipe: autoencoder, its scaling factor, then UNet + text encoder; saved to `folder`.

    `num_scenes` training scenes are drawn once into memory. Checkpoints go to `checkpoint_dir`
    (default: one folder per output folder under `~/.cache/minisd/checkpoints`); running again with
    the same directory resumes. Returns the loss histories and the scaling factor, which are also
    written, with the recipe and the seconds this call took, to `folder/training_log.json`.
    """
    start = time.time()
    folder = Path(folder)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(folder)
    torch.manual_seed(seed)
    dataset = RenderedDataset(ShapesDataset(length=num_scenes, seed=seed), progress)
    vae_dir = checkpoint_dir / "vae"
    if (vae_dir / "config.json").is_file():
        vae = AutoencoderKL.from_pretrained(vae_dir)
        vae_losses = json.loads((vae_dir / "losses.json").read_text())
    else:
        vae = AutoencoderKL.from_config(TINY_CONFIGS["vae"])
        vae_losses = train_autoencoder(vae, dataset, vae_steps, batch_size=16, progress=progress)
        vae.scaling_factor = latent_scaling_factor(vae.eval(), dataset)
        vae.save_pretrained(vae_dir)
        (vae_dir / "losses.json").write_text(json.dumps(vae_losses))
    unet = UNet2DConditionModel.from_config(TINY_CONFIGS["unet"])
    text_encoder = CLIPTextModel.from_config(TINY_CONFIGS["text_encoder"])
    tokenizer = CLIPTokenizer()
    result = train_text_to_image(
        unet, text_encoder, vae, tokenizer, dataset, steps, batch_size=batch_size,
        checkpoint_dir=checkpoint_dir, mask_text_padding=mask_text_padding, grounding_weight=grounding_weight,
        progress=progress,
    )  # fmt: skip
    save_model(
        folder, result["unet"], result["text_encoder"], vae, tokenizer, mask_text_padding=mask_text_padding
    )
    recipe = dict(vae_steps=vae_steps, steps=steps, batch_size=batch_size, num_scenes=num_scenes, seed=seed)
    log = {
        "seconds": round(time.time() - start, 1),  # of this call: a resumed run counts its own part only
        "machine": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "recipe": {**recipe, "mask_text_padding": mask_text_padding, "grounding_weight": grounding_weight},
        "scaling_factor": vae.scaling_factor,
        "vae_losses": [round(x, 5) for x in vae_losses],
        "losses": [round(x, 5) for x in result["losses"]],
    }
    (folder / "training_log.json").write_text(json.dumps(log))
    return log
