"""Fitting a KL autoencoder (chapter 07): L1 reconstruction + a small KL term, and its latent scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minisd.models.vae import AutoencoderKL
from minisd.training.data import batch


def train_autoencoder(
    vae: AutoencoderKL,
    dataset: torch.utils.data.Dataset,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    kl_weight: float = 1e-6,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> list[float]:
    """Fit the autoencoder with L1 reconstruction + kl_weight * KL; returns the loss per step.

    The model is moved to `device` (default the CPU, where a run is reproducible bit for bit).
    """
    vae.to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    vae.train()
    losses = []
    for step in tqdm(range(steps), desc="autoencoder", disable=not progress):
        x, _ = batch(dataset, batch_size, step, seed=1)
        x = x.to(device)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / x[0].numel()  # per pixel, like the L1 term: the LDM paper's ratio
        loss = F.l1_loss(recon, x) + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


@torch.inference_mode()
def latent_scaling_factor(vae: AutoencoderKL, dataset: torch.utils.data.Dataset, n: int = 512) -> float:
    """1 / std of the latents over `n` images: how SD's 0.18215 was chosen (unit-variance latents)."""
    x = torch.stack([dataset[i][0] for i in range(min(n, len(dataset)))]).to(vae.device)
    latents = vae.encode(x).latent_dist.sample(torch.Generator().manual_seed(0))
    return 1.0 / latents.std().item()
