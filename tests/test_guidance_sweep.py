"""FID and CLIP score against guidance (the sweep behind `evaluate --fid --clip-score`), and the packaged
tiny CLIP they are measured with: its zero-shot accuracy, and whether its two numbers tell real from wrong."""

import matplotlib
import numpy as np
import pytest
import torch

from minisd.metrics.clip_score import clip_preprocess, clip_score
from minisd.metrics.fid import fid
from minisd.metrics.guidance_sweep import (
    format_sweep,
    generate,
    guidance_sweep,
    heldout_scenes,
    plot_sweep,
    reference_scores,
    rendered,
)
from minisd.metrics.zero_shot import format_zero_shot, shapes_zero_shot
from minisd.models.clip_vision import CLIPModel
from minisd.models.tokenizer import CLIPTokenizer
from minisd.pipelines import StableDiffusionPipeline
from minisd.shapes import HELD_OUT, render_scene, tiny_clip_path, tiny_model_path

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def pipe():
    return StableDiffusionPipeline.from_pretrained(tiny_model_path(), device="cpu")


@pytest.fixture(scope="module")
def clip():
    return CLIPModel.from_pretrained(tiny_clip_path(), dtype=torch.float32).eval()


def encoder(clip_model):
    return lambda x: clip_model.get_image_features(clip_preprocess(x, 32)).pooler_output


def test_packaged_clip_reads_held_out_scenes_zero_shot(clip):
    """Well above chance (colour and background 1/6, relation 1/4, shape 1/3): colour, background and
    relation of held-out colour-shape pairs, and shapes of the pairs seen in training. (The shape of a
    held-out pair is near chance: the text tower has never composed "red" with "triangle".)"""
    result = shapes_zero_shot(clip, num_scenes=200)
    heldout, train = result["heldout"], result["train"]
    assert heldout["color"][1] == 200 and 0 < heldout["relation"][1] < 200
    table = format_zero_shot(result)
    assert heldout["color"][0] >= 0.8 and heldout["background"][0] >= 0.8, table
    assert heldout["relation"][0] >= 0.4 and train["relation"][0] >= 0.4, table
    assert train["shape"][0] >= 0.55, table
    assert all(
        s.is_held_out() and (s.shapes[0].color, s.shapes[0].shape) in HELD_OUT for s in heldout_scenes(20)
    )


def test_packaged_clip_scores_tell_real_from_wrong(clip):
    """Rendered scenes score higher with their own captions than with another scene's, and two real sets
    are closer in FID than a real set and the same scenes with red and blue swapped."""
    scenes = heldout_scenes(200)
    real, tokenizer = rendered(scenes), CLIPTokenizer()
    captions = [s.caption for s in scenes]
    preprocess = lambda x: clip_preprocess(x, 32)  # noqa: E731
    right = clip_score(real, captions, clip, tokenizer, preprocess)
    wrong = clip_score(real, captions[1:] + captions[:1], clip, tokenizer, preprocess)
    reference = reference_scores(clip, num_samples=200)
    assert reference["clip_score"] == pytest.approx(right, rel=1e-4) and right > wrong + 5
    others = rendered(heldout_scenes(200, seed=1))  # the sweep's real set
    with torch.inference_mode():
        assert reference["fid"] == pytest.approx(fid(real, others, encoder(clip)), rel=1e-4)
        assert reference["fid"] * 3 < fid(real[:, [2, 1, 0]], others, encoder(clip))  # red and blue swapped


def test_rendered_matches_render_scene():
    scenes = heldout_scenes(3, seed=4)
    pictures = rendered(scenes)  # [3, 3, 32, 32]
    assert pictures.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(
        (pictures[1].permute(1, 2, 0) * 255).round().byte().numpy(), render_scene(scenes[1])
    )


def test_generate_is_batched_and_seeded_per_batch(pipe):
    prompts = [s.caption for s in heldout_scenes(6)]
    images = generate(pipe, prompts, 3.0, num_inference_steps=3, batch_size=4, progress=False)
    assert images.shape == (6, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    first = generate(pipe, prompts[:4], 3.0, num_inference_steps=3, batch_size=4, progress=False)
    torch.testing.assert_close(images[:4], first)  # batch 0 starts from seed 0's noise whatever follows
    unguided = generate(pipe, prompts, 1.0, num_inference_steps=3, batch_size=4, progress=False)
    assert (images - unguided).abs().mean() > 0.01  # the same noise, another guidance: other pictures


def test_sweep_rows_are_fid_and_clip_score_of_the_generated_pictures(pipe, clip):
    rows = guidance_sweep(pipe, clip, [1.0, 4.0], num_samples=12, num_inference_steps=3, batch_size=8,
                          seed=2, progress=False)  # fmt: skip
    assert [r["guidance_scale"] for r in rows] == [1.0, 4.0] and all(r["samples"] == 12 for r in rows)
    scenes = heldout_scenes(12, seed=2)
    captions = [s.caption for s in scenes]
    images = generate(pipe, captions, 4.0, num_inference_steps=3, batch_size=8, seed=2, progress=False)
    with torch.inference_mode():
        expected_fid = fid(images, rendered(heldout_scenes(12, seed=3)), encoder(clip))
    expected_score = clip_score(images, captions, clip, CLIPTokenizer(), lambda x: clip_preprocess(x, 32))
    assert rows[1]["fid"] == pytest.approx(expected_fid, rel=1e-4)
    assert rows[1]["clip_score"] == pytest.approx(expected_score, rel=1e-4)
    assert rows[0]["fid"] != pytest.approx(rows[1]["fid"])
    with pytest.raises(ValueError, match="at least 2"):
        guidance_sweep(pipe, clip, [1.0], num_samples=1)


def test_table_and_plot():
    rows = [
        {"guidance_scale": g, "fid": f, "clip_score": c, "samples": 10, "seconds": 1.0}
        for g, f, c in [(1.0, 9.0, 20.0), (7.5, 4.0, 26.0)]
    ]
    table = format_sweep(rows, {"fid": 0.5, "clip_score": 30.0}).splitlines()
    assert (
        len(table) == 4
        and table[2].split()[:3] == ["7.5", "4.000", "26.00"]
        and table[3].startswith("    real")
    )
    fig = plot_sweep(rows, {"fid": 0.5, "clip_score": 30.0})
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["w=1", "w=7.5"]
    assert fig.axes[0].get_xlabel().startswith("CLIP score") and fig.axes[0].get_ylabel().startswith("FID")
    several = plot_sweep({"0% dropout": rows, "50% dropout": rows[:1]}).axes[0]
    assert [t.get_text() for t in several.get_legend().get_texts()] == ["0% dropout", "50% dropout"]
    assert [len(line.get_xdata()) for line in several.lines] == [2, 1]


def test_missing_packaged_clip_says_how_to_train_it(monkeypatch, tmp_path):
    import minisd.shapes.tiny

    monkeypatch.setattr(minisd.shapes.tiny, "TINY_CLIP", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="python -m minisd train-clip"):
        tiny_clip_path()
