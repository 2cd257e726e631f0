"""The command line's chapter-12 commands: `train-clip OUT` and `evaluate-fid`, their outputs and the
mistakes they refuse before any work."""

from __future__ import annotations

import functools
import json
import re

import pytest
import torch
from conftest import cli_fails as fails
from safetensors import safe_open

import minisd.training.clip
from minisd.__main__ import main
from minisd.loading.assets import find_clip_bpe
from minisd.metrics.zero_shot import ATTRIBUTES
from minisd.models.clip_vision import CLIPModel
from minisd.pipelines import StableDiffusionPipeline
from minisd.shapes import tiny_clip_path


def test_train_clip_writes_the_model_its_log_and_zero_shot_accuracy(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINISD_CLIP_BPE", str(find_clip_bpe()))  # the vocabulary stays where it is
    monkeypatch.setenv("MINISD_CACHE", str(tmp_path / "cache"))  # checkpoints go there
    few = functools.partial(minisd.training.clip.shapes_zero_shot, num_scenes=8)
    monkeypatch.setattr(minisd.training.clip, "shapes_zero_shot", lambda model, n: few(model))
    out = tmp_path / "clip"
    main(["train-clip", str(out), "--steps", "3", "--batch-size", "8", "--num-scenes", "24", "--seed", "1"])
    printed = capsys.readouterr().out
    assert "held-out pairs" in printed and "training pairs" in printed and f"wrote {out}" in printed
    log = json.loads((out / "training_log.json").read_text())
    assert log["recipe"] == {"steps": 3, "batch_size": 8, "num_scenes": 24, "seed": 1}
    assert len(log["losses"]) == 3 and set(log["zero_shot"]) == {"heldout", "train"}
    assert set(log["zero_shot"]["heldout"]) == set(ATTRIBUTES)
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    model = CLIPModel.from_pretrained(out, dtype=torch.float32)
    assert model.vision_model.embeddings.image_size == 32 and model.text_projection.out_features == 64
    assert (tmp_path / "cache" / "checkpoints").is_dir() and not (out / "clip_training_state.pt").exists()
    # the folder now holds a model: a second run refuses it rather than mixing two
    fails(["train-clip", str(out), "--steps", "1"], capsys, "is a folder with other files")


def test_train_clip_help_says_it_resumes(capsys):
    with pytest.raises(SystemExit):
        main(["train-clip", "--help"])
    assert "resum" in capsys.readouterr().out.lower()


def test_train_clip_refuses_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(minisd.training.clip, "train_tiny_clip", lambda *a, **k: pytest.fail("trained"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    fails(["train-clip", str(tmp_path / "afile")], capsys, "afile is a file, not a folder")
    fails(["train-clip", str(tmp_path / "no" / "clip")], capsys, "does not exist")
    fails(["train-clip", str(tmp_path / "full")], capsys, "full is a folder with other files")
    fails(["train-clip", str(tmp_path / "c"), "--device", "gpu9"], capsys, "--device 'gpu9': not a device")
    fails(["train-clip", str(tmp_path / "c"), "--steps", "0"], capsys, "argument --steps: must be at least 1")
    fails(["train-clip", str(tmp_path / "c"), "--batch-size", "x"], capsys, "--batch-size: expected a whole")
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine" and not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--plot", "{tmp}/plot.xyz"], "cannot write pictures of type '.xyz'"),
        (["--json", "{tmp}/no/rows.json"], "does not exist"),
        (["--json", "{tmp}"], "is a folder: give a file name"),
        (["--samples", "1"], "--samples 1: FID compares two sets"),
        (["--scheduler", "bogus"], "unknown scheduler 'bogus'"),
        (["--clip", "{tmp}/nothing"], "--clip .*nothing: not a CLIP model folder"),
        (["--guidance", "nan"], "argument --guidance: must be a finite number"),
    ],
)
def test_evaluate_fid_refuses_before_loading(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    fails(["evaluate-fid", *[a.format(tmp=tmp_path) for a in args]], capsys, words)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_fid_prints_the_table_and_writes_plot_and_json(tmp_path, capsys):
    plot, rows = tmp_path / "sweep.png", tmp_path / "rows.json"
    argv = ["evaluate-fid", "--samples", "6", "--steps", "2", "--guidance", "1", "3", "--batch-size", "4"]
    main([*argv, "--plot", str(plot), "--json", str(rows)])
    printed = capsys.readouterr().out
    assert str(tiny_clip_path()) in printed and re.search(r"^ +3 +\d+\.\d{3} +\d+\.\d{2}", printed, re.M)
    saved = json.loads(rows.read_text())
    assert [r["guidance_scale"] for r in saved["rows"]] == [1.0, 3.0]
    assert all(r["samples"] == 6 and r["fid"] >= 0 and 0 <= r["clip_score"] <= 100 for r in saved["rows"])
    assert set(saved["real"]) == {"fid", "clip_score"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
