"""LoRA: the layer, and LoRA files (diffusers/PEFT, older diffusers, kohya) loaded into minisd and into
diffusers' StableDiffusionPipeline.load_lora_weights on the same random-weight model."""

import pickle

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline as RefPipeline
from diffusers import UNet2DConditionModel as RefUNet
from tiny_sd import SD15, randomize, save_diffusers_pipeline
from torch import nn

from minisd.loading import CheckpointError
from minisd.models import UNet2DConditionModel
from minisd.models.lora import (
    UNET_ATTENTION,
    UNET_FEED_FORWARD,
    UNET_PROJECTIONS,
    UNET_RESNET_CONVS,
    LoRA,
    inject_lora,
    lora_layers,
    lora_parameters,
    remove_lora,
)
from minisd.pipelines import StableDiffusionPipeline
from minisd.pipelines.lora_formats import load_lora_into_models, lora_state_dict, save_lora_file

pytest.importorskip("peft", reason="diffusers loads LoRA files only with peft installed (pip install peft)")

PROMPT = "a photograph of an astronaut riding a horse"
SIZE = 64
UNET_TARGETS = UNET_ATTENTION + UNET_PROJECTIONS + UNET_FEED_FORWARD + UNET_RESNET_CONVS
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


# ---------------------------------------------------------------------------- the layer


@pytest.mark.parametrize(
    "base", [nn.Linear(12, 7), nn.Conv2d(6, 5, 3, padding=1), nn.Conv2d(6, 5, 3, stride=2)]
)
def test_layer_starts_as_the_base_and_fuses_to_its_own_output(base):
    x = torch.randn(2, 3, 12) if isinstance(base, nn.Linear) else torch.randn(2, 6, 9, 9)
    layer = LoRA(base)
    layer.add_adapter("a", rank=3, alpha=6)
    assert torch.equal(layer(x), base(x))  # B starts at zero
    nn.init.normal_(layer.lora_B["a"].weight)
    out = layer(x)
    assert (out - base(x)).abs().max() > 1e-2
    before = base.weight.detach().clone()
    layer.fuse()
    torch.testing.assert_close(layer(x), out, atol=1e-5, rtol=1e-5)  # the update is in the weight now
    layer.unfuse()
    assert torch.equal(base.weight, before)
    torch.testing.assert_close(layer(x), out)


def test_scaling_weights_and_disable():
    base = nn.Linear(8, 8)
    layer = LoRA(base)
    layer.add_adapter("a", rank=2, alpha=1)  # scaling 1/2
    nn.init.normal_(layer.lora_B["a"].weight)
    x = torch.randn(4, 8)
    a, b = layer.lora_A["a"].weight, layer.lora_B["a"].weight
    torch.testing.assert_close(layer(x), base(x) + 0.5 * x @ a.T @ b.T)
    layer.weights["a"], layer.call_scale = 0.4, 0.5
    torch.testing.assert_close(layer(x), base(x) + 0.1 * x @ a.T @ b.T)
    layer.enabled = False
    assert torch.equal(layer(x), base(x))


def test_inject_trains_only_adapters_and_removal_restores_the_model():
    unet = UNet2DConditionModel.from_config({**SD15["unet"], "block_out_channels": [32, 32, 64, 64],
                                             "cross_attention_dim": 32})  # fmt: skip
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    modules = dict(unet.named_modules())
    names = inject_lora(unet, "a", rank=4, target_modules=UNET_ATTENTION)
    inject_lora(unet, "b", rank=2, target_modules=("to_q",))
    assert len(names) == 16 * 2 * 4 and all(n.endswith(UNET_ATTENTION) for n in names)
    trainable = lora_parameters(unet, ["a"])
    assert sum(p.numel() for p in trainable) == sum(
        4 * (layer.base_layer.in_features + layer.base_layer.out_features)
        for layer in lora_layers(unet).values()
    )
    remove_lora(unet)
    assert not lora_layers(unet)
    assert all(dict(unet.named_modules())[n] is m for n, m in modules.items())  # the same objects
    after = unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


# ---------------------------------------------------------------------------- files vs diffusers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_diffusers_pipeline(tmp_path_factory.mktemp("tiny") / "sd")


@pytest.fixture(scope="module")
def ref(folder):
    return RefPipeline.from_pretrained(folder).to("cpu")


@pytest.fixture(scope="module")
def pipe(folder):
    return StableDiffusionPipeline.from_pretrained(folder, device="cpu")


@pytest.fixture(autouse=True)
def _unload(request):
    """Each test starts from the base weights: every adapter is removed afterwards."""
    yield
    for name in ("ref", "pipe"):
        if name in request.fixturenames:
            request.getfixturevalue(name).unload_lora_weights()


def random_lora(model: nn.Module, targets, rank: int, seed: int, kohya: bool, component: str) -> dict:
    """A random LoRA for the layers of `model` matching `targets`, as a file's state dict (A and B
    both random, so it changes the output; kohya files carry alpha = rank / 2)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in model.named_modules():
        m = m.base_layer if isinstance(m, LoRA) else m  # a model that already has adapters
        if not any(name.endswith("." + t) for t in targets) or not isinstance(m, nn.Linear | nn.Conv2d):
            continue
        if isinstance(m, nn.Linear):
            down, up = (rank, m.in_features), (m.out_features, rank)
        else:
            down, up = (rank, m.in_channels, *m.kernel_size), (m.out_channels, rank, 1, 1)
        a = torch.randn(down, generator=g) / np.sqrt(np.prod(down[1:]))
        b = torch.randn(up, generator=g) * 0.3 / np.sqrt(rank)
        if kohya:
            flat = ("lora_unet_" if component == "unet" else "lora_te_") + name.replace(".", "_")
            out |= {
                f"{flat}.lora_down.weight": a,
                f"{flat}.lora_up.weight": b,
                f"{flat}.alpha": torch.tensor(rank / 2),
            }
        else:
            out |= {f"{component}.{name}.lora_A.weight": a, f"{component}.{name}.lora_B.weight": b}
    return out


def make_lora(pipe, kohya=False, text=True, seed=0, rank=4) -> dict:
    sd = random_lora(pipe.unet, UNET_TARGETS, rank, seed, kohya, "unet")
    if text:
        sd |= random_lora(pipe.text_encoder, TEXT_TARGETS, rank, seed + 1, kohya, "text_encoder")
    return sd


def images(p, scale=None, **kwargs):
    x = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(1))
    extra = {} if scale is None else {"cross_attention_kwargs": {"scale": scale}}
    extra |= {"progress": False} if isinstance(p, StableDiffusionPipeline) else {}
    args = dict(prompt=PROMPT, num_inference_steps=2, height=SIZE, width=SIZE, output_type="np", latents=x)
    return p(**args, **extra, **kwargs).images


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.mark.parametrize("kohya", [False, True], ids=["peft", "kohya"])
@pytest.mark.parametrize("text", [False, True], ids=["unet", "unet+text"])
def test_lora_images_equal_diffusers(pipe, ref, tmp_path, kohya, text):
    base = images(pipe)
    path = save_lora_file(make_lora(pipe, kohya, text), tmp_path / "lora.safetensors")
    ref.load_lora_weights(str(path))
    pipe.load_lora_weights(path)
    assert set(pipe.get_list_adapters()) == ({"unet", "text_encoder"} if text else {"unet"})
    for scale in (0.5, 1.0):
        want, got = images(ref, scale), images(pipe, scale)
        assert max_diff(want, base) > 0.02  # the LoRA changes the picture: the comparison means something
        assert max_diff(got, want) < 2e-3, scale


def test_two_adapters_weighted_equal_diffusers(pipe, ref, tmp_path):
    for i, name in enumerate(("one", "two")):
        path = save_lora_file(make_lora(pipe, kohya=bool(i), seed=10 * i), tmp_path / f"{name}.safetensors")
        ref.load_lora_weights(str(path), adapter_name=name)
        pipe.load_lora_weights(path, adapter_name=name)
    assert sorted(pipe.get_active_adapters()) == sorted(ref.get_active_adapters())
    for names, weights in [(["one", "two"], [0.7, 0.3]), (["two"], [1.2])]:
        ref.set_adapters(names, weights)
        pipe.set_adapters(names, weights)
        assert max_diff(images(pipe), images(ref)) < 2e-3


def test_fused_equals_unfused_and_unload_restores_the_weights(pipe, ref, tmp_path):
    before = {
        c: {k: v.clone() for k, v in getattr(pipe, c).state_dict().items()} for c in ("unet", "text_encoder")
    }
    base = images(pipe)
    pipe.load_lora_weights(make_lora(pipe), adapter_name="x")
    ref.load_lora_weights(make_lora(pipe), adapter_name="x")
    unfused = images(pipe, scale=0.8)
    pipe.fuse_lora(lora_scale=0.8)
    ref.fuse_lora(lora_scale=0.8)
    fused = images(pipe)
    assert max_diff(fused, unfused) < 1e-4 and max_diff(fused, images(ref)) < 2e-3
    pipe.unfuse_lora()
    for c in before:  # unfusing restores the exact base weights
        weights = {k.replace(".base_layer", ""): v for k, v in getattr(pipe, c).state_dict().items()}
        assert all(torch.equal(weights[k], v) for k, v in before[c].items())
    pipe.disable_lora()
    assert max_diff(images(pipe), base) == 0
    pipe.enable_lora()
    pipe.unload_lora_weights()
    for c in before:
        after = getattr(pipe, c).state_dict()
        assert after.keys() == before[c].keys() and all(
            torch.equal(after[k], v) for k, v in before[c].items()
        )
    assert max_diff(images(pipe), base) == 0


def test_older_diffusers_names_and_round_trips(pipe, tmp_path):
    peft = make_lora(pipe)
    pipe.load_lora_weights(peft, adapter_name="new")
    want = images(pipe)
    pipe.unload_lora_weights()
    old = {}
    for k, v in peft.items():
        k = k.replace("lora_A.weight", "lora.down.weight").replace("lora_B.weight", "lora.up.weight")
        for proj in ("to_q", "to_k", "to_v", "to_out.0"):
            k = k.replace(f".{proj}.lora.", f".processor.{proj.removesuffix('.0')}_lora.")
        old[k] = v
    assert any(".processor.to_out_lora.down.weight" in k for k in old)
    pipe.load_lora_weights(old)
    assert max_diff(images(pipe), want) < 1e-5
    for fmt in ("kohya", "peft"):  # write what was loaded, read it back
        models = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
        saved = save_lora_file(lora_state_dict(models, "default_0", fmt), tmp_path / f"{fmt}.safetensors")
        pipe.unload_lora_weights()
        pipe.load_lora_weights(saved)
        assert max_diff(images(pipe), want) < 1e-5


@pytest.mark.slow
def test_full_size_unet_lora_equals_diffusers():
    """The v1.5 UNet configuration: the same LoRA through diffusers/peft and through minisd."""
    ref = randomize(RefUNet.from_config(SD15["unet"]), scale=0.02).eval()
    ours = UNet2DConditionModel.from_config(SD15["unet"]).eval()
    ours.load_state_dict(ref.state_dict())
    sd = random_lora(ours, UNET_ATTENTION + UNET_PROJECTIONS, rank=8, seed=0, kohya=False, component="unet")
    ref.load_lora_adapter(sd, prefix="unet", adapter_name="x")
    load_lora_into_models(sd, {"unet": ours}, "x", "random LoRA")
    x, t = torch.randn(1, 4, 16, 16), torch.tensor(500)
    ctx = torch.randn(1, 77, 768)
    with torch.no_grad():
        want, got = ref(x, t, ctx).sample, ours(x, t, ctx).sample
        remove_lora(ours)
        base = ours(x, t, ctx).sample
    assert (want - base).abs().max() / want.abs().max() > 1e-3
    assert (got - want).abs().max() / want.abs().max() < 1e-4


# ---------------------------------------------------------------------------- bad input


def test_bad_files_are_refused_whole(pipe, tmp_path):
    lora = make_lora(pipe, kohya=True)
    sdxl_key = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"
    wide = lambda k, v: torch.zeros(4, 1024) if "lora_te_" in k and "q_proj.lora_down" in k else v  # noqa: E731
    low = lambda k, v: v[:2] if k.endswith("lora_down.weight") and "attn1_to_q" in k else v  # noqa: E731
    cases = {
        "sdxl": ({**lora, sdxl_key: torch.zeros(4, 8)}, "Stable Diffusion XL"),
        "unknown": ({**lora, "lora_unet_nowhere.lora_down.weight": torch.zeros(4, 8)}, "lora_unet_nowhere"),
        "width": ({k: wide(k, v) for k, v in lora.items()}, "(4, 1024)"),  # an SD 2.x text encoder
        "rank": ({k: low(k, v) for k, v in lora.items()}, "rank 2"),
        "half": ({k: v for k, v in lora.items() if "lora_up" not in k or "to_k" not in k}, "needs both down"),
    }
    for name, (sd, words) in cases.items():
        path = save_lora_file(sd, tmp_path / f"{name}.safetensors")
        with pytest.raises(CheckpointError) as err:
            pipe.load_lora_weights(path)
        assert str(path) in str(err.value) and words in str(err.value), name
        assert not lora_layers(pipe.unet) and not lora_layers(pipe.text_encoder), name  # nothing was loaded


def test_truncated_and_pickled_files(pipe, tmp_path, capsys):
    path = save_lora_file(make_lora(pipe), tmp_path / "lora.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated"):
        pipe.load_lora_weights(cut)
    torch.save(make_lora(pipe, kohya=True), tmp_path / "lora.pt")  # plain tensors: fine
    pipe.load_lora_weights(tmp_path / "lora.pt", adapter_name="pt")
    assert pipe.get_active_adapters() == ["pt"]
    with pytest.raises(ValueError, match="already loaded"):
        pipe.load_lora_weights(tmp_path / "lora.pt", adapter_name="pt")
    evil = tmp_path / "evil.ckpt"
    torch.save({"x": Exploit()}, evil)  # a real torch checkpoint carrying code
    with pytest.raises(CheckpointError, match="never runs pickled code"):
        pipe.load_lora_weights(evil)
    with open(evil, "wb") as f:  # a bare pickle, not torch's zip format
        pickle.dump({"x": Exploit()}, f)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        pipe.load_lora_weights(evil)
    assert "pickled code ran" not in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="SD 1.x"):  # a full model is not a LoRA
        pipe.load_lora_weights({"unet.conv_in.weight": torch.zeros(1)})


class Exploit:
    def __reduce__(self):
        return (print, ("pickled code ran",))
