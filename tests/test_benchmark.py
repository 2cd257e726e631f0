"""The miniature DrawBench: fixed prompts by category, scored by the shapes reader and a CLIP."""

from types import SimpleNamespace

import numpy as np
import torch

from minisd.metrics.benchmark import BENCHMARK, format_benchmark, run_benchmark
from minisd.models.clip_vision import CLIPModel
from minisd.shapes import HELD_OUT, render_scene
from minisd.training.clip import TINY_CLIP_CONFIG


class Painter:
    """A stand-in pipeline: draws each prompt's scene perfectly, or a blank picture."""

    def __init__(self, perfect: bool):
        self.perfect = perfect
        self.scenes = {s.caption: s for scenes in BENCHMARK.values() for s in scenes}

    def __call__(self, prompts, **kwargs):
        if self.perfect:
            pictures = [torch.from_numpy(render_scene(self.scenes[p])) for p in prompts]  # [H, W, 3] uint8
            return SimpleNamespace(images=torch.stack(pictures).permute(0, 3, 1, 2) / 255)
        return SimpleNamespace(images=torch.full((len(prompts), 3, 32, 32), 0.5))


def test_categories_test_what_they_say():
    assert all(not s.is_held_out() for k in ("colours", "counts", "relations") for s in BENCHMARK[k])
    assert {(s.shapes[0].color, s.shapes[0].shape) for s in BENCHMARK["held-out pairs"]} == HELD_OUT
    assert all(len(s.shapes) == 2 and s.relation is None for s in BENCHMARK["counts"])
    assert {s.relation for s in BENCHMARK["relations"]} == {"above", "below", "left of", "right of"}


def test_perfect_pictures_pass_and_blank_ones_fail():
    torch.manual_seed(0)
    clip = CLIPModel.from_config(TINY_CLIP_CONFIG).eval()
    perfect = run_benchmark(Painter(True), clip, samples_per_prompt=2)
    blank = run_benchmark(Painter(False), clip, samples_per_prompt=2)
    assert [r["category"] for r in perfect] == list(BENCHMARK)
    # the reader reads drawn scenes (their layouts are the benchmark's own, objects apart)
    assert all(r["reader"] == 1.0 and r["all right"] == 1.0 for r in perfect)
    assert all(r["reader"] < 0.5 and r["all right"] == 0.0 for r in blank)
    assert all(np.isfinite(r["clip_score"]) and 0 <= r["clip_score"] <= 100 for r in perfect + blank)
    assert "held-out pairs" in format_benchmark(perfect)
