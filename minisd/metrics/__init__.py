"""Measuring a text-to-image model: prompt adherence and diversity, where its words are read, and
the field's two numbers, FID and CLIP score."""

from minisd.metrics.adherence import (
    adherence,
    attention_binding,
    evaluate_adherence,
    format_rows,
    plot_rows,
    relation_control,
)
from minisd.metrics.clip_score import clip_preprocess, clip_score, clip_similarities, rank_correlation
from minisd.metrics.fid import extract_features, feature_statistics, fid, frechet_distance
from minisd.metrics.guidance_sweep import format_sweep, guidance_sweep, plot_sweep, reference_scores
from minisd.metrics.zero_shot import format_zero_shot, shapes_zero_shot, zero_shot_accuracy

__all__ = [
    "adherence",
    "attention_binding",
    "clip_preprocess",
    "clip_score",
    "rank_correlation",
    "clip_similarities",
    "evaluate_adherence",
    "extract_features",
    "feature_statistics",
    "fid",
    "format_rows",
    "format_sweep",
    "format_zero_shot",
    "frechet_distance",
    "guidance_sweep",
    "plot_rows",
    "plot_sweep",
    "reference_scores",
    "relation_control",
    "shapes_zero_shot",
    "zero_shot_accuracy",
]
