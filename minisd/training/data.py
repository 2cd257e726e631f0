"""Training data pieces: a dataset drawn once into memory, reproducible batches, cached posteriors."""

from __future__ import annotations

import random
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from minisd.models.tokenizer import CLIPTokenizer
from minisd.models.vae import AutoencoderKL, DiagonalGaussianDistribution
from minisd.schedulers import DDPMScheduler
from minisd.shapes import ShapeScene, render_scene


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


class SceneList(torch.utils.data.Dataset):
    """Given scenes, drawn: item i is (image [3, size, size] in [-1, 1], caption)."""

    def __init__(self, scenes: list[ShapeScene], size: int = 32):
        self.scenes, self.size = scenes, size

    def __len__(self) -> int:
        return len(self.scenes)

    def scene(self, i: int) -> ShapeScene:
        return self.scenes[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        img = torch.from_numpy(render_scene(self.scenes[i], self.size)).permute(2, 0, 1).float() / 127.5 - 1
        return img, self.scenes[i].caption


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


@torch.inference_mode()
def encode_posteriors(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The frozen autoencoder's posterior parameters (mean and log-variance) [N, 8, h, w] of every
    image, computed once: a training step then only samples z = mean + std * noise."""
    return torch.cat([vae.encode(x).latent_dist.parameters for x in images.split(batch_size)])


class NoisyBatch(NamedTuple):
    """One denoising-training step's inputs, every random draw from the step's own generator."""

    idx: list[int]  # the dataset items
    noisy: torch.Tensor  # [B, 4, h, w] x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise
    noise: torch.Tensor  # [B, 4, h, w] what the UNet learns to predict
    t: torch.Tensor  # [B] timesteps
    ids: torch.Tensor  # [B, 77] token ids, "" where the caption was dropped
    mask: torch.Tensor | None  # [B, 77] the text attention mask, or None
    dropped: torch.Tensor  # [B] bool: captions replaced by "" (classifier-free guidance's unconditional half)
    generator: torch.Generator  # for any further draw of this step


def noisy_batch(
    dataset: RenderedDataset,
    posteriors: torch.Tensor,
    step: int,
    batch_size: int,
    *,
    vae: AutoencoderKL,
    tokenizer: CLIPTokenizer,
    scheduler: DDPMScheduler,
    caption_dropout: float,
    mask_text_padding: bool,
    device: str | torch.device,
) -> NoisyBatch:
    """The batch of training step `step`: latents sampled from the cached posteriors, noised to random
    timesteps, with a `caption_dropout` share of captions dropped; a function of the step alone."""
    idx = batch_indices(len(dataset), batch_size, step)
    gen = torch.Generator().manual_seed(step)
    dropped = torch.rand(len(idx), generator=gen) < caption_dropout
    captions = ["" if d else dataset.captions[i] for i, d in zip(idx, dropped.tolist(), strict=True)]
    latents = DiagonalGaussianDistribution(posteriors[idx]).sample(gen) * vae.scaling_factor  # [B, 4, h, w]
    noise = torch.randn(latents.shape, generator=gen).to(device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen).to(device)
    ids = tokenizer(captions).to(device)  # [B, 77]
    mask = tokenizer.attention_mask(ids) if mask_text_padding else None
    return NoisyBatch(idx, scheduler.add_noise(latents, noise, t), noise, t, ids, mask, dropped, gen)
