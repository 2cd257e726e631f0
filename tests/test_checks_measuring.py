"""The measuring exercises' checkers pass a correct answer and fail known-wrong ones."""

import torch
import torch.nn.functional as F

from minisd.book import checks


def test_info_nce_checker():
    def right(logits, captions):
        same = torch.tensor([[a == b for b in captions] for a in captions]).float()
        targets = same / same.sum(1, keepdim=True)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2

    def one_way(logits, captions):
        same = torch.tensor([[a == b for b in captions] for a in captions]).float()
        return F.cross_entropy(logits, same / same.sum(1, keepdim=True))

    def diagonal_only(logits, captions):
        target = torch.arange(len(captions))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def hard_targets(logits, captions):  # every match a target of weight 1: rows do not sum to 1
        same = torch.tensor([[a == b for b in captions] for a in captions]).float()
        return (F.cross_entropy(logits, same) + F.cross_entropy(logits.T, same)) / 2

    assert checks.info_nce(right)
    for wrong in (one_way, diagonal_only, hard_targets):
        assert not checks.info_nce(wrong), wrong.__name__


def test_patchify_checker():
    def right(x, p):
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # [B, gh, gw, C, p, p]
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def channel_last(x, p):
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)  # [B, gh, gw, p, p, C]
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def column_by_column(x, p):
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 4, 2, 1, 3, 5)  # [B, gw, gh, C, p, p]
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def unfold_rows_of_pixels(x, p):  # reshapes without moving axes: stripes, not squares
        b, c, h, w = x.shape
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    assert checks.patchify(right)
    for wrong in (channel_last, column_by_column, unfold_rows_of_pixels):
        assert not checks.patchify(wrong), wrong.__name__


def test_clip_score_from_features_checker():
    def right(image, text):
        return float((100 * F.cosine_similarity(image, text, dim=-1)).clamp(min=0).mean())

    def no_clamp(image, text):
        return float((100 * F.cosine_similarity(image, text, dim=-1)).mean())

    def dot_not_cosine(image, text):
        return float((100 * (image * text).sum(-1)).clamp(min=0).mean())

    def clamp_after_mean(image, text):
        return max(float((100 * F.cosine_similarity(image, text, dim=-1)).mean()), 0.0)

    assert checks.clip_score_from_features(right)
    for wrong in (no_clamp, dot_not_cosine, clamp_after_mean):
        assert not checks.clip_score_from_features(wrong), wrong.__name__
