"""Checkers for the exercises on measuring a model: CLIP's contrastive loss when captions repeat, a
convolution's patches as a matrix product, and CLIP score from feature vectors; each graded against the
package (`contrastive_loss_with_duplicates`, `CLIPVisionEmbeddings.patch_embedding`, `clip_score`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minisd.book.checks.compare import compare_cases


def info_nce(candidate: Callable) -> bool:
    """Check `candidate(logits_per_text, captions) -> loss`: the symmetric contrastive loss of a batch
    whose pictures with the same caption all count as matches, against the tiny CLIP's training loss."""
    from minisd.training.clip import contrastive_loss_with_duplicates

    gen = torch.Generator().manual_seed(0)
    cases = [
        (label, (torch.randn(len(captions), len(captions), generator=gen) * 5, captions))
        for label, captions in [
            ("four different captions (CLIP's loss)", ["a", "b", "c", "d"]),
            ("a caption twice", ["a", "b", "a", "c"]),
            ("three alike, two alike", ["a", "b", "a", "b", "a", "c"]),
            ("all alike", ["a", "a", "a"]),
        ]
    ]
    return compare_cases("info_nce", candidate, contrastive_loss_with_duplicates, cases)


def patchify(candidate: Callable) -> bool:
    """Check `candidate(pixel_values, patch_size) -> patches [B, N, C * p * p]`, the pictures cut into
    patches row by row, each flattened channel-first so that `patches @ weight.flatten(1).T` equals the
    patch embedding's strided convolution (CLIPVisionEmbeddings), on random pictures and weights."""
    from minisd.models.clip_vision import CLIPVisionEmbeddings

    gen = torch.Generator().manual_seed(0)
    cases = []
    for label, (b, c, size, p) in {
        "2 pictures, 32 px in patches of 4": (2, 3, 32, 4),
        "1 picture, 28 px in patches of 14 (ViT-L/14's patch)": (1, 3, 28, 14),
        "a single-channel picture, patches of 2": (1, 1, 6, 2),
    }.items():
        torch.manual_seed(len(cases))
        embeddings = CLIPVisionEmbeddings(hidden_size=8, image_size=size, patch_size=p, num_channels=c)
        cases.append((label, (torch.randn(b, c, size, size, generator=gen), p, embeddings.patch_embedding)))

    def through_candidate(pixels, p, conv):
        return candidate(pixels, p) @ conv.weight.flatten(1).T  # [B, N, D]

    @torch.no_grad()
    def reference(pixels, p, conv):
        return conv(pixels).flatten(2).transpose(1, 2)  # [B, N, D], the package's order

    return compare_cases("patchify", torch.no_grad()(through_candidate), reference, cases, atol=1e-4)


def clip_score_from_features(candidate: Callable) -> bool:
    """Check `candidate(image_features [N, P], text_features [N, P]) -> float`: 100 * max(cos, 0) of each
    pair, averaged (CLIPScore with w = 100), on features of any length, including pairs that disagree."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen)
    cases = [
        ("random pairs (some cosines negative)", (a, b)),
        ("features of different lengths, same directions", (a * 3, a * torch.rand(16, 1, generator=gen))),
        ("opposite pairs score 0", (a, -a)),
    ]

    def reference(image, text):
        return torch.tensor(float((100 * F.cosine_similarity(image, text, dim=-1)).clamp(min=0).mean()))

    def checked(image, text):
        return torch.tensor(float(candidate(image.clone(), text.clone())))

    return compare_cases("clip_score_from_features", checked, reference, cases, atol=1e-4)
