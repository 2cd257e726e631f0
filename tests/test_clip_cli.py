"""The command line's chapter-12 commands: `train-clip OUT` and `evaluate --fid --clip-score`, their
outputs and the mistakes they refuse before any work (and the options `evaluate` reads only in one mode)."""

from __future__ import annotations

import functools
import importlib
import json
import re

import pytest
import torch
from conftest import cli_fails as fails
from safetensors import safe_open

import minisd.metrics
import minisd.training.clip
from minisd.__main__ import main
from minisd.loading.assets import find_clip_bpe
from minisd.metrics.zero_shot import ATTRIBUTES
from minisd.models.clip_vision import CLIPModel
from minisd.pipelines import StableDiffusionPipeline
from minisd.shapes import tiny_clip_path

SWEEP_MODULE = importlib.import_module("minisd.metrics.guidance_sweep")  # the package exports its function


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


SWEEP = ["evaluate", "--fid", "--clip-score"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--plot", "{tmp}/plot.xyz"], "cannot write pictures of type '.xyz'"),
        (["--plot", "{tmp}/no/plot.png"], "does not exist"),
        (["--json", "{tmp}/no/rows.json"], "does not exist"),
        (["--json", "{tmp}"], "is a folder: give a file name"),
        (["--prompts", "1"], "--prompts 1: FID compares two sets"),
        (["--samples", "4"], "--samples 4: the FID/CLIP-score sweep draws one picture per held-out caption; "
         "set the pictures per guidance scale with --prompts"),
        (["--scheduler", "bogus"], "unknown scheduler 'bogus'"),
        (["--clip", "{tmp}/nothing"], "--clip .*nothing: not a CLIP model folder"),
        (["--guidance", "nan"], "argument --guidance: must be a finite number"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("switch", [SWEEP, ["evaluate", "--fid"], ["evaluate", "--clip-score"]])
def test_evaluate_sweep_refuses_before_loading(tmp_path, capsys, monkeypatch, switch, args, words):
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    monkeypatch.setattr(CLIPModel, "from_pretrained", lambda *a, **k: pytest.fail("loaded the CLIP"))
    fails([*switch, *[a.format(tmp=tmp_path) for a in args]], capsys, words)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args", [["--clip", "c"], ["--json", "rows.json"], ["--scheduler", "ddim"], ["--batch-size", "8"]]
)
def test_evaluate_refuses_the_sweep_options_without_fid_or_clip_score(tmp_path, capsys, monkeypatch, args):
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    monkeypatch.chdir(tmp_path)
    err = fails(
        ["evaluate", *args],
        capsys,
        f"{args[0]} is read only by the FID/CLIP-score sweep: add --fid --clip-score",
    )
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_evaluate_has_no_separate_fid_command(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate-fid"])
    assert "invalid choice: 'evaluate-fid'" in capsys.readouterr().err


class Stop(Exception):
    """Raised by a stand-in for the measurement, once it has seen its arguments."""


def test_each_mode_fills_its_own_defaults_and_keeps_what_is_given(monkeypatch):
    seen = {}

    def stand_in(*names: str):
        """A measurement that records its arguments (the positional ones as `names`) and stops the command."""

        def measure(*args, **kwargs):
            seen.update(zip(names, args, strict=True), **kwargs)
            raise Stop

        return measure

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", lambda *a, **k: "pipe")
    monkeypatch.setattr(CLIPModel, "from_pretrained", lambda *a, **k: torch.nn.Identity())
    monkeypatch.setattr(minisd.metrics, "evaluate_adherence", stand_in("pipe", "guidance"))
    names = ("pipe", "clip", "guidance", "prompts", "steps", "scheduler", "batch_size", "seed")
    monkeypatch.setattr(SWEEP_MODULE, "guidance_sweep", stand_in(*names))
    cases = [
        (["evaluate"], {"guidance": [1, 2, 3, 5, 7.5], "num_prompts": 48, "samples_per_prompt": 4,
                        "num_inference_steps": 25}),
        (["evaluate", "--prompts", "5", "--steps", "3"], {"num_prompts": 5, "num_inference_steps": 3}),
        (SWEEP, {"guidance": list(SWEEP_MODULE.GUIDANCE_SCALES), "prompts": 1000, "steps": 20,
                 "scheduler": "ddim", "batch_size": 250}),
        (["evaluate", "--clip-score", "--prompts", "5", "--steps", "3", "--guidance", "2"],
         {"guidance": [2.0], "prompts": 5, "steps": 3}),
    ]  # fmt: skip
    for argv, expected in cases:
        seen.clear()
        with pytest.raises(Stop):
            main(argv)
        assert {k: seen[k] for k in expected} == expected, argv


def test_evaluate_sweep_prints_the_table_and_writes_plot_and_json(tmp_path, capsys):
    plot, rows = tmp_path / "sweep.png", tmp_path / "rows.json"
    argv = [*SWEEP, "--prompts", "6", "--steps", "2", "--guidance", "1", "3", "--batch-size", "4"]
    main([*argv, "--plot", str(plot), "--json", str(rows)])
    printed = capsys.readouterr().out
    assert str(tiny_clip_path()) in printed and re.search(r"^ +3 +\d+\.\d{3} +\d+\.\d{2}", printed, re.M)
    saved = json.loads(rows.read_text())
    assert [r["guidance_scale"] for r in saved["rows"]] == [1.0, 3.0]
    assert all(r["samples"] == 6 and r["fid"] >= 0 and 0 <= r["clip_score"] <= 100 for r in saved["rows"])
    assert set(saved["real"]) == {"fid", "clip_score"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
