"""The tiny CLIP's training loop (a few steps, resumable), its loss, and zero-shot classification."""

import dataclasses
import random

import pytest
import torch
import transformers

from minisd.metrics.clip_score import clip_preprocess
from minisd.metrics.zero_shot import candidate_scenes, zero_shot_accuracy
from minisd.models.clip_vision import CLIPModel
from minisd.models.tokenizer import CLIPTokenizer
from minisd.shapes import COLORS, RELATIONS, SHAPES, ShapesDataset, random_scene
from minisd.training.clip import TINY_CLIP_CONFIG, contrastive_loss_with_duplicates, train_clip


def test_loss_is_clips_when_captions_differ_and_counts_duplicates_as_matches():
    logits = torch.randn(4, 4)
    want = transformers.models.clip.modeling_clip.image_text_contrastive_loss(logits)
    torch.testing.assert_close(contrastive_loss_with_duplicates(logits, ["a", "b", "c", "d"]), want)
    # captions 0 and 1 are the same: a matrix that scores them alike loses less than one that does not
    alike = torch.eye(4) * 5
    alike[0, 1] = alike[1, 0] = 5
    assert contrastive_loss_with_duplicates(alike, ["a", "a", "c", "d"]) < contrastive_loss_with_duplicates(
        torch.eye(4) * 5, ["a", "a", "c", "d"]
    )
    # a negative competes for the pictures only; one equal to a caption is a match for that caption's picture
    base = torch.eye(2) * 5
    fits, misleads = (torch.cat([base, torch.tensor([row])]) for row in ([0.0, 5.0], [5.0, 0.0]))
    loss = lambda logits: contrastive_loss_with_duplicates(logits, ["a", "b"], ["b"])  # noqa: E731
    assert loss(fits) < loss(misleads)
    unrelated = contrastive_loss_with_duplicates(
        torch.cat([base, torch.tensor([[5.0, 5.0]])]), ["a", "b"], ["z"]
    )
    assert unrelated > contrastive_loss_with_duplicates(base, ["a", "b"])


def test_training_runs_resumes_and_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    data = ShapesDataset(length=64)
    tokenizer = CLIPTokenizer()
    first = CLIPModel.from_config(TINY_CLIP_CONFIG)
    start = {k: v.clone() for k, v in first.state_dict().items()}
    whole = train_clip(first, tokenizer, data, steps=6, batch_size=16, lr=3e-3, progress=False)
    assert len(whole["losses"]) == 6 and whole["losses"][-1] < whole["losses"][0]

    # the same run, interrupted in its 4th step and started again, resumes from its step-3 checkpoint
    class Interrupted(Exception):
        pass

    calls = []

    def failing_tokenizer(captions, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise Interrupted
        return tokenizer(captions, **kwargs)

    again = CLIPModel.from_config(TINY_CLIP_CONFIG)
    again.load_state_dict(start)
    kw = dict(batch_size=16, lr=3e-3, checkpoint_dir=tmp_path, checkpoint_every=3, progress=False)
    with pytest.raises(Interrupted):
        train_clip(again, failing_tokenizer, data, steps=6, **kw)
    resumed = CLIPModel.from_config(TINY_CLIP_CONFIG)
    out = train_clip(resumed, tokenizer, data, steps=6, **kw)
    assert out["losses"] == pytest.approx(whole["losses"], rel=1e-4)
    for k, v in whole["model"].state_dict().items():
        torch.testing.assert_close(out["model"].state_dict()[k], v, atol=1e-5, rtol=1e-4)
    assert out["model"].logit_scale.item() <= 4.6052


def test_candidates_change_one_attribute_and_include_the_truth():
    rng = random.Random(0)
    scenes = [random_scene(rng, held_out=True) for _ in range(50)]
    for scene in scenes:
        for attribute, values in [("color", COLORS), ("shape", SHAPES), ("relation", RELATIONS)]:
            captions = [c.caption for c in candidate_scenes(scene, attribute)]
            if attribute == "relation" and scene.relation is None:
                assert captions == []
                continue
            assert scene.caption in captions and len(set(captions)) == len(captions)
            assert len(captions) == len(values) - (attribute == "color")  # not the background's colour
        backgrounds = candidate_scenes(scene, "background")
        assert scene.caption in [c.caption for c in backgrounds]
        assert all(b.background not in {s.color for s in scene.shapes} for b in backgrounds)


class Oracle(torch.nn.Module):
    """A 'CLIP' that knows each picture's caption: image features are one-hot over a caption list."""

    def __init__(self, captions):
        super().__init__()
        self.captions = sorted(captions)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.tokens = {c: i for i, c in enumerate(self.captions)}
        self.pictures: list[str] = []

    def get_image_features(self, pixel_values):
        hot = torch.eye(len(self.captions))
        return type("Out", (), {"pooler_output": hot[[self.tokens[c] for c in self.pictures]]})

    def get_text_features(self, input_ids):
        return type("Out", (), {"pooler_output": torch.eye(len(self.captions))[input_ids]})


def test_zero_shot_accuracy_of_a_perfect_and_a_random_model():
    rng = random.Random(1)
    scenes = [random_scene(rng, held_out=True) for _ in range(40)]
    attributes = ("color", "shape", "background", "relation")
    everything = {c.caption for s in scenes for a in attributes for c in candidate_scenes(s, a)}
    oracle = Oracle(everything)
    oracle.pictures = [s.caption for s in scenes]

    def tokenizer(captions):
        return torch.tensor([oracle.tokens[c] for c in captions])

    result = zero_shot_accuracy(oracle, tokenizer, scenes, lambda x: x)
    assert all(acc == 1.0 for acc, _ in result.values()), result
    assert result["color"][1] == 40 and 0 < result["relation"][1] < 40
    torch.manual_seed(0)
    untrained = CLIPModel.from_config(TINY_CLIP_CONFIG).eval()
    chance = zero_shot_accuracy(untrained, CLIPTokenizer(), scenes, lambda x: clip_preprocess(x, 32))
    assert chance["shape"][0] < 0.9  # an untrained model does not know the shapes


def test_hard_negatives_change_one_thing_and_never_name_a_held_out_pair():
    from minisd.shapes import HELD_OUT
    from minisd.training.clip import hard_negatives

    for i in range(60):
        scene = random_scene(random.Random(i))
        negatives = hard_negatives([scene], random.Random(i))
        assert len(negatives) == 1 + (scene.relation is not None) and scene.caption not in negatives
        assert not any(f"{c} {s}" in n for n in negatives for c, s in HELD_OUT)
        words, changed = scene.caption.split(), negatives[0].split()  # another shape for one object
        diff = [(a, b) for a, b in zip(words, changed, strict=True) if a != b]
        assert len(diff) == 1 and {w.rstrip("s") for w in diff[0]} <= set(SHAPES), diff
        if scene.relation:  # another relation word, the objects unchanged
            others = {
                dataclasses.replace(scene, relation=r).caption for r in RELATIONS if r != scene.relation
            }
            assert negatives[1] in others


def test_a_caption_reads_the_same_at_32_tokens_as_at_77():
    """Training tokenizes to TEXT_LENGTH: the causal mask keeps the pooled EOT state unchanged."""
    from minisd.training.clip import TEXT_LENGTH

    torch.manual_seed(0)
    model = CLIPModel.from_config(TINY_CLIP_CONFIG).eval()
    tokenizer = CLIPTokenizer()
    captions = [random_scene(random.Random(i)).caption for i in range(8)]
    with torch.no_grad():
        short = model.get_text_features(tokenizer(captions, max_length=TEXT_LENGTH)).pooler_output
        full = model.get_text_features(tokenizer(captions)).pooler_output
    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)
