"""Training data pieces: a dataset drawn once into memory, reproducible batches, cached posteriors."""

from __future__ import annotations

import random

import torch
from tqdm.auto import tqdm

from minisd.models.vae import AutoencoderKL
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
