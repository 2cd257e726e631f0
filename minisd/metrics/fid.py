"""Fréchet distance between two sets of pictures (FID).

Each set is summarised by the mean and covariance of its feature vectors (Inception's in the
papers; any image encoder here, e.g. a CLIP image tower), and the two Gaussians are compared:

    d^2 = |mu1 - mu2|^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))

Lower is closer; it mixes fidelity (the means) with diversity (the covariances), and it is biased
upwards with few samples, so only distances from equal sample counts compare.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

# The references (pytorch-fid, clean-fid) take the real part of scipy's complex square root when
# the imaginary part of its diagonal stays below this, and raise otherwise.
IMAGINARY_TOLERANCE = 1e-3


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (rounding's tiny negative eigenvalues count as 0)."""
    values, vectors = np.linalg.eigh(sigma)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for covariances S1, S2, computed stably.

    S1 S2 is not symmetric, which is why the references need a general matrix square root (scipy's
    sqrtm), an eps * I offset when it fails on a singular product, and a rule for the imaginary
    rounding noise it returns. S1 S2 has the same eigenvalues as the symmetric A = S1^(1/2) S2 S1^(1/2),
    so the trace is the sum of the square roots of A's eigenvalues: eigh of symmetric matrices,
    finite for singular covariances too. A negative eigenvalue -v makes the root imaginary (i sqrt v):
    like the references, a small one is dropped and a large one (the inputs are not covariances) raises.
    """
    root = _psd_sqrt(sigma1)
    a = root @ sigma2 @ root
    values = np.linalg.eigvalsh((a + a.T) / 2)  # symmetrised against rounding
    imaginary = np.sqrt((-values).clip(min=0)).max(initial=0.0)
    if imaginary > IMAGINARY_TOLERANCE:
        raise ValueError(
            f"the covariances give an imaginary square root (part {imaginary:.3g}): are they covariance "
            "matrices (symmetric, positive semi-definite)?"
        )
    return float(np.sqrt(values.clip(min=0)).sum())


def _as_array(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    array = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has non-finite values (NaN or inf): were the features computed in fp16?")
    return array


def frechet_distance(
    mu1: np.ndarray | torch.Tensor,
    sigma1: np.ndarray | torch.Tensor,
    mu2: np.ndarray | torch.Tensor,
    sigma2: np.ndarray | torch.Tensor,
) -> float:
    """The squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (FID when the
    statistics are of Inception features): |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))."""
    mu1, mu2 = _as_array(mu1, "mu1"), _as_array(mu2, "mu2")
    sigma1, sigma2 = _as_array(sigma1, "sigma1"), _as_array(sigma2, "sigma2")
    d = mu1.shape[-1]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"need means [D] and covariances [D, D] of one D, got {mu1.shape}, {sigma1.shape}, "
            f"{mu2.shape}, {sigma2.shape}"
        )
    diff = mu1 - mu2
    tr_covmean = trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased, divided by N - 1) of features [N, D], in float64."""
    x = _as_array(features, "features")
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


ImageEncoder = Callable[[torch.Tensor | Sequence], torch.Tensor]


@torch.no_grad()
def extract_features(
    images: torch.Tensor | Sequence, encoder: ImageEncoder, batch_size: int = 64, progress: bool = False
) -> torch.Tensor:
    """Run `encoder` over `images` in batches: [N, ...] (or a list, e.g. of PIL pictures) -> [N, D].

    `encoder` takes a slice of `images` (a tensor [b, ...] or a list) and returns features [b, D].
    """
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="features", disable=not progress):
        out = encoder(images[start : start + batch_size])
        chunks.append(torch.as_tensor(out).detach().float().cpu().flatten(1))  # [b, D]
    if not chunks:
        raise ValueError("no images to encode")
    return torch.cat(chunks)


def fid(
    images_a: torch.Tensor | Sequence,
    images_b: torch.Tensor | Sequence,
    encoder: ImageEncoder,
    batch_size: int = 64,
    progress: bool = False,
) -> float:
    """FID between two sets of pictures under `encoder` (any image -> feature callable).

    Both sets should hold the same number of pictures: the estimate is biased by the sample count.
    """
    stats_a = feature_statistics(extract_features(images_a, encoder, batch_size, progress))
    stats_b = feature_statistics(extract_features(images_b, encoder, batch_size, progress))
    return frechet_distance(*stats_a, *stats_b)
