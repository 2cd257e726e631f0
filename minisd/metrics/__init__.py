"""Measuring a text-to-image model: prompt adherence and diversity, and where its words are read."""

from minisd.metrics.adherence import (
    adherence,
    attention_binding,
    evaluate_adherence,
    format_rows,
    plot_rows,
    relation_control,
)

__all__ = [
    "adherence",
    "attention_binding",
    "evaluate_adherence",
    "format_rows",
    "plot_rows",
    "relation_control",
]
