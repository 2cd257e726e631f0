"""The whole tiny-model recipe (chapter 07): autoencoder, scaling factor, UNet + text encoder, saved."""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import torch

from minisd.loading.assets import cache_dir
from minisd.models import AutoencoderKL, CLIPTextModel, CLIPTokenizer, UNet2DConditionModel
from minisd.shapes import NOVEL_COLORS, TINY_CONFIGS, ShapesDataset, novel_scene
from minisd.training.autoencoder import latent_scaling_factor, train_autoencoder
from minisd.training.checkpoints import load_state, save_state
from minisd.training.data import RenderedDataset, SceneList
from minisd.training.text_to_image import save_model, train_text_to_image


def default_checkpoint_dir(folder: Path) -> Path:
    """Where `train_tiny_model` keeps the checkpoints of a run writing to `folder`: in the cache,
    one directory per output folder, never inside it (it may be the package)."""
    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    return cache_dir() / "checkpoints" / f"{folder.name}-{key}"


def train_tiny_model(
    folder: str | os.PathLike,
    vae_steps: int = 2500,
    steps: int = 4000,
    batch_size: int = 64,
    num_scenes: int = 20_000,
    novel_color_scenes: int = 2_000,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    mask_text_padding: bool = True,
    grounding_weight: float = 0.3,
    ground_relation: bool = True,
    caption_dropout: float = 0.1,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """The whole recipe: autoencoder, its scaling factor, then UNet + text encoder; saved to `folder`.

    `num_scenes` training scenes are drawn once into memory. The autoencoder also sees
    `novel_color_scenes` objects in colours no caption names (NOVEL_COLORS): an image codec should
    reproduce any colour, so that a later adapter (LoRA, textual inversion) can teach the UNet one.
    Checkpoints go to `checkpoint_dir` (default: one folder per output folder under
    `~/.cache/minisd/checkpoints`); running again with the same directory resumes. `caption_dropout`
    is the share of captions replaced by "" in training, what classifier-free guidance needs. Returns the loss
    histories and the scaling factor, which are also written, with the recipe and the seconds this
    call took, to `folder/training_log.json`.
    Training runs on `device`: the CPU by default, where the packaged model is reproduced bit for
    bit (`minisd.device.get_device()` picks a GPU when there is one).
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
        if (saved := load_state(vae_dir / "rng_state.pt")) is not None:
            torch.set_rng_state(saved["torch"])  # the UNet starts as in an uninterrupted run
    else:
        rng = random.Random(seed)
        novel = [novel_scene(rng, rng.choice(sorted(NOVEL_COLORS))) for _ in range(novel_color_scenes)]
        images = torch.utils.data.ConcatDataset([dataset, RenderedDataset(SceneList(novel), progress)])
        vae = AutoencoderKL.from_config(TINY_CONFIGS["vae"])
        vae_losses = train_autoencoder(
            vae, images, vae_steps, batch_size=16, progress=progress, device=device
        )
        vae.scaling_factor = latent_scaling_factor(vae.eval(), dataset)
        vae.save_pretrained(vae_dir)
        (vae_dir / "losses.json").write_text(json.dumps(vae_losses))
        save_state(vae_dir / "rng_state.pt", {"torch": torch.get_rng_state()})
    unet = UNet2DConditionModel.from_config(TINY_CONFIGS["unet"])
    text_encoder = CLIPTextModel.from_config(TINY_CONFIGS["text_encoder"])
    tokenizer = CLIPTokenizer()
    result = train_text_to_image(
        unet, text_encoder, vae, tokenizer, dataset, steps, batch_size=batch_size,
        checkpoint_dir=checkpoint_dir, mask_text_padding=mask_text_padding, grounding_weight=grounding_weight,
        ground_relation=ground_relation, caption_dropout=caption_dropout, progress=progress, device=device,
    )  # fmt: skip
    save_model(
        folder, result["unet"], result["text_encoder"], vae, tokenizer, mask_text_padding=mask_text_padding
    )
    recipe = dict(
        vae_steps=vae_steps, steps=steps, batch_size=batch_size, num_scenes=num_scenes,
        novel_color_scenes=novel_color_scenes, seed=seed,
    )  # fmt: skip
    log = {
        "seconds": round(time.time() - start, 1),  # of this call: a resumed run counts its own part only
        "machine": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "device": str(device),
        "recipe": {
            **recipe,
            "mask_text_padding": mask_text_padding,
            "grounding_weight": grounding_weight,
            "ground_relation": ground_relation,
            "caption_dropout": caption_dropout,
        },
        "scaling_factor": vae.scaling_factor,
        "vae_losses": [round(x, 5) for x in vae_losses],
        "losses": [round(x, 5) for x in result["losses"]],
    }
    (folder / "training_log.json").write_text(json.dumps(log))
    return log
