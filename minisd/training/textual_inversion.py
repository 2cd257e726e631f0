"""Training a textual-inversion embedding on the tiny shapes model (chapter 08).

The model never saw the colour cyan. Instead of changing the model, find a word it already
understands: add one new token, `<cyan>`, start its embedding row from a colour the model knows
("blue"), and learn that single row of the text encoder's token-embedding table with the ordinary
noise-prediction loss on pictures of cyan shapes captioned "a <cyan> circle on a red background".
The UNet, the VAE and every other parameter stay frozen; `train_embedding` checks afterwards that
they are bit for bit what they were. The result is a diffusers `learned_embeds.safetensors`.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from minisd.loading.textual_inversion import add_embedding
from minisd.models.vae import DiagonalGaussianDistribution
from minisd.schedulers import DDPMScheduler
from minisd.shapes import TINY_CONFIGS, novel_scene, render_scene
from minisd.training.checkpoints import load_state, save_state
from minisd.training.data import batch_indices, encode_posteriors


def color_dataset(n: int, token: str, color: str = "cyan", seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """n pictures of one shape in `color` [n, 3, 32, 32] in [-1, 1], captioned with `token` for the
    colour's name ("a <cyan> circle on a red background")."""
    rng = random.Random(seed)
    scenes = [novel_scene(rng, color) for _ in range(n)]
    images = np.stack([render_scene(s) for s in scenes])  # [n, 32, 32, 3] uint8
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, [s.caption.replace(f"a {color} ", f"a {token} ", 1) for s in scenes]


def train_embedding(
    pipe,
    token: str = "<cyan>",
    initializer: str = "blue",
    color: str = "cyan",
    steps: int = 600,
    batch_size: int = 32,
    lr: float = 2e-2,
    num_images: int = 512,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    progress: bool = True,
) -> dict:
    """Learn `token`'s embedding row in `pipe` (added to its tokenizer and text encoder, started
    from `initializer`'s row) from pictures of shapes in `color` -> {"vector" [1, D], "losses",
    "seconds", "trained_parameters"}.

    With `checkpoint_dir`, the state is saved every `checkpoint_every` steps and a second call with
    the same directory resumes. Raises if any frozen parameter changed.
    """
    tok, text, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    device = pipe.device
    init = text.text_model.embeddings.token_embedding.weight[tok.encode(initializer)[1:2]].detach().clone()
    if token not in tok.vocab:
        add_embedding(tok, text, token, init)
    row = tok.vocab[token]
    frozen = {k: v.detach().clone() for k, v in [*unet.state_dict().items(), *vae.state_dict().items()]}
    frozen |= {f"text.{k}": v.detach().clone() for k, v in text.state_dict().items()}
    table = text.text_model.embeddings.token_embedding.weight
    for model in (unet, vae, text):
        model.eval().requires_grad_(False)
    table.requires_grad_(True)
    keep = torch.zeros(table.shape[0], 1, device=device, dtype=table.dtype)
    keep[row] = 1
    hook = table.register_hook(lambda grad: grad * keep)  # only the new row gets a gradient
    opt = torch.optim.Adam([table], lr=lr)  # no weight decay: zero gradients leave the other rows exact

    state = {"step": 0, "losses": [], "seconds": 0.0}
    ckpt = Path(checkpoint_dir) / "embedding_state.pt" if checkpoint_dir else None
    with torch.no_grad():
        table[row] = init[0]
    if (saved := load_state(ckpt, device)) is not None:
        with torch.no_grad():
            table[row] = saved["vector"][0].to(device)
        opt.load_state_dict(saved["optimizer"])
        state = {k: saved[k] for k in state}
    images, captions = color_dataset(num_images, token, color)
    posteriors = encode_posteriors(vae, images.to(device))  # [N, 8, 8, 8]
    scheduler = DDPMScheduler.from_config(TINY_CONFIGS["scheduler"])
    start = time.perf_counter() - state["seconds"]
    for step in tqdm(range(state["step"], steps), desc=f"embedding {token}", disable=not progress):
        idx = batch_indices(num_images, batch_size, step)
        gen = torch.Generator().manual_seed(step)
        latents = DiagonalGaussianDistribution(posteriors[idx]).sample(gen) * vae.scaling_factor
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen).to(device)
        ids = tok([captions[i] for i in idx]).to(device)  # [B, 77]
        mask = tok.attention_mask(ids) if pipe.mask_text_padding else None
        pred = unet(
            scheduler.add_noise(latents, noise, t), t, text(ids)[0], encoder_attention_mask=mask
        ).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"], state["seconds"] = step + 1, time.perf_counter() - start
        state["losses"].append(loss.item())
        if ckpt and (state["step"] % checkpoint_every == 0 or state["step"] == steps):
            saved = {"vector": table[row : row + 1].detach().cpu(), "optimizer": opt.state_dict(), **state}
            save_state(ckpt, saved)
    hook.remove()
    table.requires_grad_(False)
    after = {**unet.state_dict(), **vae.state_dict()} | {f"text.{k}": v for k, v in text.state_dict().items()}
    table_key = "text.text_model.embeddings.token_embedding.weight"
    changed = [k for k, v in frozen.items() if k != table_key and not torch.equal(v, after[k])]
    others = torch.ones(table.shape[0], dtype=torch.bool)
    others[row] = False
    if changed or not torch.equal(frozen[table_key][others], after[table_key][others]):
        raise RuntimeError(
            f"frozen parameters changed during training: {changed or ['other embedding rows']}"
        )
    return {
        "vector": table[row : row + 1].detach().cpu().clone(),  # [1, D]
        "losses": state["losses"],
        "seconds": state["seconds"],
        "trained_parameters": table.shape[1],
    }


def save_embedding(path: str | os.PathLike, token: str, vector: torch.Tensor) -> Path:
    """Write diffusers' layout, a safetensors file {token: [n, D]}, which `load_textual_inversion` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({token: vector.detach().cpu().contiguous()}, path)
    return path
