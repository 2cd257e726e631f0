"""FID and CLIP score: the Fréchet distance against a scipy implementation and closed forms, the
CLIP score against the formula evaluated with transformers' CLIPModel on the same weights."""

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
import transformers

from minisd.metrics.clip_score import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    clip_preprocess,
    clip_score,
    rank_correlation,
)
from minisd.metrics.fid import feature_statistics, fid, frechet_distance
from minisd.models.clip_vision import CLIPModel
from minisd.models.tokenizer import CLIPTokenizer


def scipy_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """The references' recipe (pytorch-fid, clean-fid): scipy's sqrtm of the product, an eps * I
    offset when it is not finite, the real part when the imaginary one is small."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def random_stats(rng, d, n):
    """Mean and covariance of n samples of a random correlated d-dimensional Gaussian."""
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("d, n", [(8, 200), (64, 500), (64, 40)], ids=["small", "wide", "rank-deficient"])
def test_frechet_distance_matches_scipy(d, n):
    """Random covariances, full rank and (n < d) singular."""
    rng = np.random.default_rng(d + n)
    a, b = random_stats(rng, d, n), random_stats(rng, d, n)
    want = scipy_frechet_distance(*a, *b)
    assert frechet_distance(*a, *b) == pytest.approx(want, rel=1e-6, abs=1e-6)
    assert frechet_distance(*a, *a) == pytest.approx(0.0, abs=1e-6 * np.trace(a[1]))


def test_frechet_distance_on_nearly_singular_covariances():
    rng = np.random.default_rng(1)
    d = 32
    basis = rng.standard_normal((d, 3))  # rank 3, plus a whisper of full-rank noise
    sigma1 = basis @ basis.T + 1e-9 * np.eye(d)
    basis2 = basis + 0.1 * rng.standard_normal((d, 3))
    sigma2 = basis2 @ basis2.T + 1e-9 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    want = scipy_frechet_distance(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(2)
    d = 16
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = rng.uniform(0.1, 3, d), rng.uniform(0, 3, d)
    s2[:4] = 0  # degenerate directions are allowed
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want, rel=1e-12)
    # The same in any rotated basis: the distance does not depend on the coordinates
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    got = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert got == pytest.approx(want, rel=1e-7)  # sqrt of rounding-sized eigenvalues of the zero ones
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9 + 1)
    # Torch tensors are accepted as well
    t = torch.tensor
    assert frechet_distance(t(mu1), t(np.diag(s1)), t(mu2), t(np.diag(s2))) == pytest.approx(want, rel=1e-12)


def test_frechet_distance_refuses_what_is_not_a_covariance():
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"\[D, D\]"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_feature_statistics_and_fid_with_any_encoder():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 6))
    mu, sigma = feature_statistics(torch.tensor(x, dtype=torch.float64))
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(sigma, np.cov(x.T))
    torch.manual_seed(0)
    real, fake = torch.rand(60, 3, 8, 8), torch.rand(60, 3, 8, 8) * 0.5
    projection = torch.randn(3 * 8 * 8, 5)

    def encoder(images):
        return images.flatten(1) @ projection  # [b, 5]

    want = frechet_distance(*feature_statistics(encoder(real)), *feature_statistics(encoder(fake)))
    assert fid(real, fake, encoder, batch_size=16) == pytest.approx(want, rel=1e-5)
    assert fid(real, real, encoder, batch_size=7) == pytest.approx(0.0, abs=1e-3)
    assert fid(real, fake, encoder) > 1.0


def test_clip_preprocess_is_the_processors_normalisation():
    images = torch.rand(2, 3, 40, 32)
    got = clip_preprocess(images, 32)  # shorter side already 32: only the centre crop and normalisation
    mean, std = torch.tensor(OPENAI_CLIP_MEAN)[:, None, None], torch.tensor(OPENAI_CLIP_STD)[:, None, None]
    torch.testing.assert_close(got, (images[:, :, 4:36] - mean) / std)
    assert clip_preprocess(torch.rand(1, 3, 64, 96), 32).shape == (1, 3, 32, 32)


def test_clip_score_matches_the_formula_with_transformers(tmp_path):
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    text = dict(vision, vocab_size=49408)
    config = transformers.CLIPConfig(
        text_config=text, vision_config=dict(vision, image_size=16, patch_size=4), projection_dim=16
    )
    ref = transformers.CLIPModel(config).eval()
    ref.save_pretrained(tmp_path)
    ours = CLIPModel.from_pretrained(tmp_path)
    images = torch.rand(12, 3, 16, 16)
    prompts = ["a red circle", "a blue square", "two green triangles", "a cat"] * 3
    tok = CLIPTokenizer()  # the same ids go to both models

    def preprocess(x):
        return clip_preprocess(x, 16)

    with torch.no_grad():
        image_features = ref.get_image_features(pixel_values=preprocess(images)).pooler_output
        text_features = ref.get_text_features(input_ids=tok(prompts)).pooler_output
    cos = torch.nn.functional.cosine_similarity(image_features, text_features)
    want = (100 * cos).clamp(min=0).mean().item()
    assert clip_score(images, prompts, ours, tok, preprocess, batch_size=2) == pytest.approx(want, rel=1e-5)
    assert clip_score(images, prompts, ref, tok, preprocess) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="one prompt per picture"):
        clip_score(images, prompts[:2], ours, tok, preprocess)


class FixedFeatures(torch.nn.Module):
    """A stand-in CLIP whose image and text features are given vectors, in order."""

    def __init__(self, image, text):
        super().__init__()
        self.image, self.text = torch.nn.Parameter(image), torch.nn.Parameter(text)

    def get_image_features(self, pixel_values):
        return SimpleNamespace(pooler_output=self.image[pixel_values.long()])

    def get_text_features(self, input_ids):
        return SimpleNamespace(pooler_output=self.text[input_ids])


def test_clip_score_clips_negative_cosines_at_zero():
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    text = torch.tensor([[1.0, 1.0], [0.0, -1.0], [1.0, 0.0]])
    model = FixedFeatures(image, text)
    ids = {"a": 0, "b": 1, "c": 2}

    def tokenizer(prompts):
        return torch.tensor([ids[p] for p in prompts])

    pictures = torch.arange(3.0)
    # cosines: 1/sqrt(2), -1 (clipped to 0), 1/sqrt(2)
    want = 100 * (2 / 2**0.5) / 3
    got = clip_score(pictures, ["a", "b", "c"], model, tokenizer, lambda x: x, batch_size=2)
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "with-ties"])
def test_rank_correlation_equals_scipy_spearman(ties):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 4, 200) / 4 if ties else rng.standard_normal(200)  # a reader's 0, 1/4, ... scores
    b = a + rng.standard_normal(200)
    assert rank_correlation(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert rank_correlation(a, a) == pytest.approx(1.0) and rank_correlation(a, -a) == pytest.approx(-1.0)
