"""The loading base: strict keys with readable errors, dtype/device, variants, bad files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from minisd.loading import CheckpointError, load_safetensors
from minisd.loading.state_dict import empty_weights
from minisd.models import ModelMixin


class Tiny(ModelMixin):
    def __init__(self, width: int = 4, depth: int = 2):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_round_trip_dtype_and_variant(tmp_path):
    model = Tiny.from_config({"width": 4, "depth": 2, "_class_name": "Tiny", "unused_key": 1})
    model.save_pretrained(tmp_path)
    loaded = Tiny.from_pretrained(tmp_path)
    assert loaded.config["width"] == 4 and not loaded.training
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())
    model.half().save_pretrained(tmp_path, variant="fp16")
    assert Tiny.from_pretrained(tmp_path, variant="fp16").dtype == torch.float16
    assert Tiny.from_pretrained(tmp_path, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_missing_unexpected_and_shape_errors_are_listed(tmp_path):
    Tiny.from_config({"width": 4, "depth": 3}).save_pretrained(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text('{"width": 5, "depth": 2}')
    with pytest.raises(CheckpointError) as e:
        Tiny.from_pretrained(tmp_path / "a")
    msg = str(e.value)
    assert "unexpected keys: layers.2.bias, layers.2.weight" in msg
    assert "layers.0.weight: checkpoint (4, 4) vs model (5, 5)" in msg


def test_missing_keys_are_listed(tmp_path):
    Tiny.from_config({"width": 4, "depth": 1}).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"width": 4, "depth": 2}')
    with pytest.raises(CheckpointError, match="2 missing keys: layers.1.bias, layers.1.weight"):
        Tiny.from_pretrained(tmp_path)


def test_wrong_path_and_missing_variant(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Tiny.from_pretrained(tmp_path / "nowhere")
    Tiny().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.fp16.safetensors"):
        Tiny.from_pretrained(tmp_path, variant="fp16")


def test_truncated_file_names_the_problem(tmp_path):
    Tiny(width=64).save_pretrained(tmp_path)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_safetensors(path)


def test_empty_weights_builds_on_meta_and_skips_only_meta_initialisers():
    with empty_weights():
        empty = nn.Embedding(49408, 768)
        real = nn.Embedding(4, 3, device="cpu")  # asked for on the CPU: initialised as usual
    assert empty.weight.is_meta and not real.weight.is_meta
    assert real.weight.std() > 0.1
    torch.manual_seed(0)
    assert torch.equal(real.weight, nn.Embedding(4, 3).weight)  # the same random draw as outside


def test_empty_weights_does_not_load_torch_compiler():
    """`normal_` on the meta device imports torch._dynamo (seconds); building a model must not."""
    code = (
        "import sys\n"
        "from minisd.loading.state_dict import empty_weights\n"
        "from minisd.models import CLIPTextModel\n"
        "with empty_weights():\n"
        "    CLIPTextModel.from_config({'num_hidden_layers': 1})\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"
