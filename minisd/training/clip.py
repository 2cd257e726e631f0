"""Training a tiny CLIP on the shapes world, contrastively.

A batch of pictures and their captions gives a similarity matrix (cosines times exp(logit_scale),
the learned temperature); the loss asks each caption to pick its own picture out of the batch and
each picture its own caption (symmetric InfoNCE, as CLIP). The shapes world has few distinct
captions, so a batch often holds the same caption twice: those pairs count as matches too (soft
targets), instead of asking the model to tell identical captions apart. A random batch rarely holds
two scenes that differ only in a shape or in the relation word, so colours alone would match it; each
picture therefore also meets hard negatives, its caption with the shape or the relation changed
(text only, as NegCLIP does). Only the training split is seen: the held-out colour-shape pairs never
appear, not even as negatives, so zero-shot accuracy on them (`minisd.metrics.zero_shot_accuracy`)
measures composition.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from minisd.loading.files import check_destination
from minisd.metrics.clip_score import clip_preprocess
from minisd.metrics.zero_shot import candidate_scenes, shapes_zero_shot
from minisd.models.clip_vision import CLIPModel
from minisd.models.tokenizer import CLIPTokenizer
from minisd.shapes import TINY_CONFIGS, ShapeScene, ShapesDataset
from minisd.training.checkpoints import load_state, save_state
from minisd.training.data import RenderedDataset, batch_indices
from minisd.training.tiny import default_checkpoint_dir

# Both towers 64 wide: the tiny text-to-image model's text encoder, and a 3-layer vision transformer
# over 8x8 patches of 4x4 pixels (65 tokens with the class token) of the 32x32 scenes.
TINY_CLIP_CONFIG: dict = {
    "text_config": dict(TINY_CONFIGS["text_encoder"]),
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "image_size": 32,
        "patch_size": 4,
    },
    "projection_dim": 64,
}
TEXT_LENGTH = 32  # tokens per caption in training (the shapes world's longest is 14)
MAX_LOGIT_SCALE = 4.6052  # log(100): CLIP caps its temperature so the logits cannot blow up


def shapes_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """Scenes [B, 3, 32, 32] in [-1, 1] (as ShapesDataset gives them) -> the tiny CLIP's pixel_values."""
    return clip_preprocess((images + 1) / 2, TINY_CLIP_CONFIG["vision_config"]["image_size"])


def contrastive_loss_with_duplicates(
    logits_per_text: torch.Tensor, captions: list[str], negatives: list[str] = ()
) -> torch.Tensor:
    """Symmetric InfoNCE where every picture whose caption is the same counts as a match: logits
    [B + M, B] (the B captions' rows, then M extra `negatives`' rows) -> a scalar. The negatives only
    compete for the pictures. Equals CLIP's loss when all captions differ and there are no negatives."""
    b, columns = len(captions), [*captions, *negatives]
    same = torch.tensor([[a == c for a in captions] for c in columns], device=logits_per_text.device)
    text_targets = same[:b].float() / same[:b].sum(1, keepdim=True)  # [B_txt, B_img], rows sum to 1
    image_targets = same.T.float() / same.T.sum(1, keepdim=True)  # [B_img, B_txt + M]
    text_loss = F.cross_entropy(logits_per_text[:b], text_targets)
    return (text_loss + F.cross_entropy(logits_per_text.T, image_targets)) / 2


def hard_negatives(scenes: list[ShapeScene], rng: random.Random) -> list[str]:
    """For each scene, its caption with another shape for one object and, for a relation, another
    relation word: captions of training pairs only (no HELD_OUT pair), none the scene's own."""
    out = []
    for scene in scenes:
        for attribute in ("shape", "relation"):
            others = [
                c.caption
                for c in candidate_scenes(scene, attribute)
                if c.caption != scene.caption and not c.is_held_out()
            ]
            if others:
                out.append(rng.choice(others))
    return out


def train_clip(
    model: CLIPModel,
    tokenizer: CLIPTokenizer,
    dataset: ShapesDataset | RenderedDataset,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    negatives: bool = True,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """Train `model` contrastively on `dataset`'s pictures and captions; returns it and the losses.

    With `negatives`, each picture also meets `hard_negatives` of its scene (when the dataset has scenes).

    AdamW with a linear warm-up and cosine decay; `logit_scale` is learned and capped at log(100).
    With `checkpoint_dir`, the state is saved every `checkpoint_every` steps and a run started again
    with the same directory resumes where it stopped (the batches are a function of the step).
    """
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)

    def schedule(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    state = {"step": 0, "losses": []}
    ckpt = Path(checkpoint_dir) / "clip_training_state.pt" if checkpoint_dir else None
    if (saved := load_state(ckpt, device)) is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["lr_scheduler"])
        state = {"step": saved["step"], "losses": saved["losses"]}
    if not isinstance(dataset, RenderedDataset):
        dataset = RenderedDataset(dataset, progress)
    model.train()
    bar = tqdm(range(state["step"], steps), desc="CLIP", disable=not progress)
    for step in bar:
        idx = batch_indices(len(dataset), batch_size, step)
        captions = [dataset.captions[i] for i in idx]
        scenes = [dataset.scenes[i] for i in idx] if negatives and dataset.scenes else []
        extra = hard_negatives(scenes, random.Random(step))  # a function of the step: resumable
        pixels = shapes_pixel_values(dataset.images[idx]).to(device)  # [B, 3, 32, 32]
        # captions are at most 14 tokens: with a causal mask the EOT state, all CLIP reads of a caption,
        # is the same at 32 tokens as at 77, at less than half the cost
        ids = tokenizer([*captions, *extra], max_length=TEXT_LENGTH).to(device)  # [B + M, 32]
        out = model(input_ids=ids, pixel_values=pixels)
        loss = contrastive_loss_with_duplicates(out.logits_per_text, captions, extra)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        state["step"] = step + 1
        state["losses"].append(loss.item())
        if step % 50 == 0:
            recent = state["losses"][-50:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", scale=f"{model.logit_scale.exp():.1f}")
        if ckpt and (state["step"] % checkpoint_every == 0 or state["step"] == steps):
            saved = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "lr_scheduler": sched.state_dict(),
                **state,
            }
            save_state(ckpt, saved)
    model.eval()
    return {"model": model, "losses": state["losses"]}


def train_tiny_clip(
    folder: str | os.PathLike,
    steps: int = 1200,
    batch_size: int = 128,
    num_scenes: int = 10_000,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    eval_scenes: int = 500,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """The whole recipe (about 25 minutes on one CPU core): a TINY_CLIP_CONFIG model trained on
    `num_scenes` training scenes, saved to `folder` in transformers' layout (config.json +
    model.safetensors, fp16) with `training_log.json` (recipe, losses, seconds and zero-shot accuracy
    on `eval_scenes` held-out and training scenes each: `minisd.metrics.zero_shot.shapes_zero_shot`).
    Checkpoints go to `checkpoint_dir` (default: under `~/.cache/minisd/checkpoints`, one per output
    folder); running again resumes. Returns the model (fp32), the losses and the log."""
    start = time.time()
    folder = Path(folder)
    check_destination(folder, overwrite=True, is_folder=True)  # before training, not after
    torch.manual_seed(seed)
    model = CLIPModel.from_config(TINY_CLIP_CONFIG)
    result = train_clip(
        model,
        CLIPTokenizer(),
        ShapesDataset(length=num_scenes, seed=seed),
        steps,
        batch_size,
        checkpoint_dir=checkpoint_dir or default_checkpoint_dir(folder),
        progress=progress,
        device=device,
    )
    copy.deepcopy(result["model"]).to(torch.float16).save_pretrained(folder)
    recipe = dict(steps=steps, batch_size=batch_size, num_scenes=num_scenes, seed=seed)
    log = {
        "recipe": recipe,
        "seconds": round(time.time() - start),  # of this call: a resumed run counts its own part only
        "machine": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}, device {device}",
        "losses": [round(x, 5) for x in result["losses"]],
    }
    if eval_scenes:
        log["zero_shot"] = shapes_zero_shot(result["model"], eval_scenes)
    (folder / "training_log.json").write_text(json.dumps(log))
    return {**result, "log": log}
