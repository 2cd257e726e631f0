"""Training a ControlNet on the tiny model: only the ControlNet moves, a run resumes exactly, the packaged
ControlNet puts objects where the mask says (bars, not exact numbers), and the command line uses it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from minisd.__main__ import main
from minisd.metrics.control import control_adherence, heldout_layouts
from minisd.models.controlnet import ControlNetModel
from minisd.pipelines import StableDiffusionControlNetPipeline
from minisd.shapes import condition_image, tiny_controlnet_path, tiny_model_path
from minisd.training.controlnet import control_dataset, tiny_controlnet_pipeline, train_controlnet


@pytest.fixture(scope="module")
def data():
    return control_dataset(24, progress=False)


def _run(data, steps, checkpoint_dir=None):
    pipe = tiny_controlnet_pipeline()
    losses = train_controlnet(pipe, *data, steps, batch_size=4, checkpoint_dir=checkpoint_dir, progress=False)
    return pipe, losses


def test_only_the_controlnet_trains_and_a_run_resumes_exactly(data, tmp_path):
    pipe, losses = _run(data, 3)
    base = tiny_controlnet_pipeline()
    for name in ("unet", "text_encoder", "vae"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(base, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    moved = [
        k
        for k, v in pipe.controlnet.state_dict().items()
        if not torch.equal(v, base.controlnet.state_dict()[k])
    ]
    assert any(k.startswith("controlnet_down_blocks") for k in moved)
    _run(data, 2, tmp_path)  # stopped after two steps ...
    resumed, resumed_losses = _run(data, 3, tmp_path)  # ... and started again
    assert resumed_losses == losses
    state = resumed.controlnet.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in pipe.controlnet.state_dict().items())


@pytest.fixture(scope="module")
def trained():
    net = ControlNetModel.from_pretrained(tiny_controlnet_path())
    return StableDiffusionControlNetPipeline.from_pretrained(tiny_model_path(), controlnet=net, device="cpu")


def test_the_packaged_controlnet_puts_objects_where_the_mask_says(trained):
    report = control_adherence(trained, heldout_layouts(32, seed=3))
    with_it, base = report["controlnet"], report["base"]
    assert with_it["iou"] >= 0.7
    assert with_it["iou"] >= base["iou"] + 0.2
    assert with_it["color"] >= base["color"] - 0.1  # the text keeps its say over colour
    assert with_it["shape"] >= 0.7


def test_generate_with_control_from_the_command_line(tmp_path, capsys):
    scene = heldout_layouts(1, seed=4)[0]
    mask = tmp_path / "mask.png"
    Image.fromarray((condition_image(scene).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(mask)
    out = tmp_path / "out.png"
    main(
        [
            "generate",
            scene.caption,
            "-o",
            str(out),
            "--control",
            str(mask),
            "--controlnet",
            str(tiny_controlnet_path()),
        ]
    )
    assert Image.open(out).size == (256, 256)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, words",
    [
        (["--control", "{tmp}/mask.png"], "--control IMAGE .* and --controlnet PATH go together"),
        (["--controlnet", "{tmp}"], "go together"),
        (["--control", "{tmp}/mask.png", "--controlnet", "{tmp}/none"], "--controlnet .*none: no such file"),
        (
            ["--control", "{tmp}/missing.png", "--controlnet", "{tmp}"],
            "--control .*missing.png: no such file",
        ),
        (
            ["--control", "{tmp}/mask.png", "--controlnet", "{tmp}", "--init-image", "{tmp}/mask.png"],
            "cannot be combined",
        ),
    ],
)
def test_control_options_are_checked(tmp_path, capsys, args, words):
    Image.new("RGB", (32, 32)).save(tmp_path / "mask.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "a red circle on a blue background", "-o", str(tmp_path / "o.png")]
             + [a.format(tmp=tmp_path) for a in args])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert re.search(words, err), err
