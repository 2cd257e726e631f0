"""FID and CLIP score against the guidance scale: the field's trade-off curve, on the tiny model.

For each guidance scale, the model draws one picture for each of N held-out captions (colour-shape
pairs it never saw). FID compares the tiny CLIP's image features of those pictures with those of N
other held-out scenes rendered by the shapes world (another draw, so that neither set is a copy of
the other); CLIP score asks the tiny CLIP how well each picture matches its caption.
`reference_scores` gives the two numbers of a perfect model, whose pictures are the captions' own
scenes rendered: its FID is the floor that N samples allow, its CLIP score the ceiling.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from minisd.metrics.clip_score import clip_preprocess, clip_score
from minisd.metrics.fid import extract_features, feature_statistics, frechet_distance
from minisd.models.tokenizer import CLIPTokenizer
from minisd.shapes import ShapeScene, ShapesDataset, render_scene

GUIDANCE_SCALES = (1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)


def heldout_scenes(num_samples: int, seed: int = 0) -> list[ShapeScene]:
    """`num_samples` scenes of the held-out split (their first object is a HELD_OUT pair)."""
    data = ShapesDataset(num_samples, seed=seed, split="heldout")
    return [data.scene(i) for i in range(num_samples)]


def rendered(scenes: Sequence[ShapeScene], size: int = 32) -> torch.Tensor:
    """The scenes drawn by the shapes world: float [N, 3, size, size] in [0, 1]."""
    pictures = torch.stack([torch.from_numpy(render_scene(s, size)) for s in scenes])  # [N, H, W, 3]
    return pictures.permute(0, 3, 1, 2).float() / 255


@torch.inference_mode()
def generate(
    pipe,
    prompts: Sequence[str],
    guidance_scale: float,
    num_inference_steps: int = 20,
    scheduler: str | None = "ddim",
    batch_size: int = 250,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """One picture per prompt, `batch_size` prompts per pipeline call: float [N, 3, H, W] in [0, 1].

    Batch b starts from the noise of seed `seed + b`, so every guidance scale starts from the same
    noise and the differences between scales are the guidance's, not the draw's.
    """
    chunks = []
    starts = range(0, len(prompts), batch_size)
    for b, start in enumerate(tqdm(starts, desc=f"guidance {guidance_scale:g}", disable=not progress)):
        images = pipe(
            list(prompts[start : start + batch_size]),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed + b),
            output_type="pt",
            scheduler=scheduler,
            progress=False,
        ).images  # [b, 3, H, W] in [0, 1]
        chunks.append(images.float().cpu())
    return torch.cat(chunks)


def _clip_parts(clip_model: torch.nn.Module) -> tuple[Callable, Callable]:
    """The tiny CLIP's preprocessing and image encoder (projected features [b, P])."""
    size = clip_model.vision_model.embeddings.image_size
    device = next(clip_model.parameters()).device

    def preprocess(images: torch.Tensor) -> torch.Tensor:
        return clip_preprocess(images, size)

    def encode(images: torch.Tensor) -> torch.Tensor:
        return clip_model.get_image_features(preprocess(images).to(device)).pooler_output

    return preprocess, encode


def _real_statistics(clip_model: torch.nn.Module, num_samples: int, seed: int, batch_size: int):
    """Mean and covariance of the tiny CLIP's features of the real set: N held-out scenes of seed + 1."""
    _, encode = _clip_parts(clip_model)
    with torch.inference_mode():
        features = extract_features(rendered(heldout_scenes(num_samples, seed + 1)), encode, batch_size)
    return feature_statistics(features)


def _scores(images, prompts, real_stats, clip_model, tokenizer, batch_size: int) -> dict[str, float]:
    preprocess, encode = _clip_parts(clip_model)
    with torch.inference_mode():
        stats = feature_statistics(extract_features(images, encode, batch_size))
    return {
        "fid": frechet_distance(*stats, *real_stats),
        "clip_score": clip_score(images, prompts, clip_model, tokenizer, preprocess, batch_size),
    }


def guidance_sweep(
    pipe,
    clip_model: torch.nn.Module,
    guidance_scales: Sequence[float] = GUIDANCE_SCALES,
    num_samples: int = 1000,
    num_inference_steps: int = 20,
    scheduler: str | None = "ddim",
    batch_size: int = 250,
    seed: int = 0,
    tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
    progress: bool = True,
) -> list[dict]:
    """One row per guidance scale: "guidance_scale", "fid", "clip_score", "samples" and "seconds"
    (the time to generate the samples).

    `clip_model` is a shapes-world CLIP (`CLIPModel.from_pretrained(tiny_clip_path())`), `tokenizer`
    its tokenizer (default `CLIPTokenizer()`). `scheduler` names the sampler (None: the model's own).
    """
    if num_samples < 2:
        raise ValueError(f"num_samples={num_samples}: FID needs at least 2 pictures (in practice hundreds)")
    tokenizer = tokenizer or CLIPTokenizer()
    prompts = [s.caption for s in heldout_scenes(num_samples, seed)]
    real_stats = _real_statistics(clip_model, num_samples, seed, batch_size)
    rows = []
    for scale in guidance_scales:
        start = time.time()
        images = generate(pipe, prompts, scale, num_inference_steps, scheduler, batch_size, seed, progress)
        seconds = time.time() - start
        scores = _scores(images, prompts, real_stats, clip_model, tokenizer, batch_size)
        rows.append(
            {"guidance_scale": float(scale), **scores, "samples": num_samples, "seconds": round(seconds, 1)}
        )
    return rows


def reference_scores(
    clip_model: torch.nn.Module,
    num_samples: int = 1000,
    seed: int = 0,
    tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
    batch_size: int = 250,
) -> dict[str, float]:
    """`guidance_sweep`'s two numbers for a perfect model, whose picture of each caption is its scene
    rendered: "fid" (against the same real set: the floor of N-sample FID) and "clip_score"."""
    tokenizer = tokenizer or CLIPTokenizer()
    scenes = heldout_scenes(num_samples, seed)
    real_stats = _real_statistics(clip_model, num_samples, seed, batch_size)
    return _scores(
        rendered(scenes), [s.caption for s in scenes], real_stats, clip_model, tokenizer, batch_size
    )


def format_sweep(rows: list[dict], reference: dict[str, float] | None = None) -> str:
    """The sweep as a text table, one row per guidance scale (and one for real pictures)."""
    lines = ["guidance      FID  CLIP score  seconds"]
    for r in rows:
        lines.append(
            f"{r['guidance_scale']:8g}  {r['fid']:7.3f}  {r['clip_score']:10.2f}  {r['seconds']:7.1f}"
        )
    if reference:
        lines.append(f"{'real':>8}  {reference['fid']:7.3f}  {reference['clip_score']:10.2f}")
    return "\n".join(lines)


def plot_sweep(rows: list[dict] | dict[str, list[dict]], reference: dict[str, float] | None = None):
    """FID against CLIP score, one labelled point per guidance scale (and a star for real pictures).

    `rows` is one sweep, or several by name ({"10% dropout": rows, ...}), drawn as one curve each.
    """
    import matplotlib.pyplot as plt

    sweeps = rows if isinstance(rows, dict) else {"": rows}
    fig, ax = plt.subplots(figsize=(5.5, 3.8) if len(sweeps) == 1 else (7, 4.5))
    for k, (name, sweep) in enumerate(sweeps.items()):
        x, y = [r["clip_score"] for r in sweep], [r["fid"] for r in sweep]
        ax.plot(x, y, "o-", color=f"C{k}", label=name or None)
        for r in sweep:
            ax.annotate(f"w={r['guidance_scale']:g}", (r["clip_score"], r["fid"]), textcoords="offset points",
                        xytext=(5, 4), fontsize=8, color=f"C{k}")  # fmt: skip
    if reference:
        ax.plot(
            reference["clip_score"], reference["fid"], "*", color="C3", markersize=12, label="real pictures"
        )
    if reference or len(sweeps) > 1:
        ax.legend()
    ax.set(xlabel="CLIP score (tiny CLIP)", ylabel="FID (tiny-CLIP features)")
    samples = next(iter(sweeps.values()))[0]["samples"]
    ax.set_title(f"one point per guidance scale, {samples} samples each")
    fig.tight_layout()
    return fig
