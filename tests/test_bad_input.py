"""A catalogue of bad inputs to the library: each must end in an exception of a stated type whose
message names the argument or file and a fix, before any work (or at the step where it goes wrong).

The CLI's side (one-line errors, exit status 2, files never lost) is in test_bad_input_cli.py.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
import warnings

import numpy as np
import pytest
import torch

from minisd.errors import NonFiniteError, UserError
from minisd.loading import CheckpointError, load_checkpoint, load_safetensors, save_checkpoint
from minisd.loading.state_dict import check_finite
from minisd.models import AutoencoderKL, CLIPTokenizer, UNet2DConditionModel
from minisd.pipelines import StableDiffusionPipeline
from minisd.pipelines.validation import size_multiple
from minisd.schedulers import DDIMScheduler
from minisd.shapes import tiny_model_path

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def pipe():
    return StableDiffusionPipeline.from_pretrained(tiny_model_path(), device="cpu")


@pytest.fixture
def model_copy(tmp_path):
    """A copy of the packaged tiny model (11 MB) to damage."""
    return shutil.copytree(tiny_model_path(), tmp_path / "model")


def call(pipe, **kwargs):
    kwargs = {
        "prompt": PROMPT,
        "num_inference_steps": 1,
        "progress": False,
        "output_type": "latent",
        **kwargs,
    }
    return pipe(**kwargs)


# ---------------------------------------------------------------------------- 7. argument types
WRONG_CALLS = [
    ({"guidance_scale": "7.5"}, TypeError, "guidance_scale must be a number"),
    ({"guidance_scale": float("nan")}, UserError, "guidance_scale=nan.*finite"),
    ({"guidance_scale": float("inf")}, UserError, "guidance_scale=inf.*finite"),
    ({"guidance_scale": True}, TypeError, "guidance_scale must be a number"),
    ({"prompt": 5}, TypeError, "prompt must be a string or a list of strings, got int"),
    ({"prompt": []}, UserError, "prompt is an empty list"),
    ({"prompt": ["a", 3, None]}, TypeError, r"prompt\[1\] must be a string, got int"),
    ({"prompt": b"a cat"}, TypeError, "got bytes"),
    ({"prompt": None}, UserError, "give either prompt"),
    ({"negative_prompt": 3}, TypeError, "negative_prompt must be a string"),
    ({"negative_prompt": ["a", "b"]}, UserError, "2 negative prompts for 1 prompts"),
    ({"generator": 42}, TypeError, r"generator must be a torch.Generator"),
    ({"generator": [torch.Generator(), torch.Generator()]}, UserError, "2 generators for 1 images"),
    ({"num_images_per_prompt": 0}, UserError, "num_images_per_prompt=0: it must be at least 1"),
    ({"num_images_per_prompt": -1}, UserError, "num_images_per_prompt=-1"),
    ({"num_images_per_prompt": 1.5}, TypeError, "num_images_per_prompt must be an integer"),
    ({"height": "32"}, TypeError, "height must be an integer, got str"),
    ({"height": 32.0}, TypeError, r"height must be an integer, got float 32.0 \(write 32\)"),
    ({"width": True}, TypeError, "width must be an integer"),
    ({"num_inference_steps": 0}, UserError, "num_inference_steps=0: it must be at least 1"),
    ({"num_inference_steps": 2.5}, TypeError, "num_inference_steps must be an integer"),
    ({"num_inference_steps": 10**6}, UserError, "num_inference_steps=1000000: it must be at most 1000"),
    ({"output_type": "jpeg"}, UserError, "unknown output_type 'jpeg'"),
    ({"latents": [[0.0]]}, TypeError, "latents must be a torch.Tensor"),
    ({"prompt": None, "prompt_embeds": [[1.0]]}, TypeError, "prompt_embeds must be a torch.Tensor"),
    (
        {"prompt": None, "prompt_embeds": torch.full((1, 77, 64), float("inf"))},
        NonFiniteError,
        "prompt_embeds",
    ),
    ({"eta": 0.5}, NotImplementedError, "eta=0.5"),
    ({"scheduler": "bogus"}, ValueError, "unknown scheduler 'bogus'; known: "),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"), WRONG_CALLS, ids=[repr(c[0])[:40] for c in WRONG_CALLS]
)
def test_wrong_call_arguments_are_named(pipe, kwargs, error, words):
    with pytest.raises(error, match=words):
        call(pipe, **kwargs)


def test_numpy_integers_and_a_list_of_one_generator_are_accepted(pipe):
    out = call(pipe, num_inference_steps=np.int64(2), height=np.int32(32), generator=[torch.Generator()])
    assert out.images.shape == (1, 4, 8, 8)


# ---------------------------------------------------------------------------- 5, 6. sizes and work
SIZES = [
    ((28, 32), "height=28: .*multiples of 16 .*nearest are 16 and 32"),
    ((32, 36), "width=36: .*nearest are 32 and 48"),
    ((4, 32), "height=4: .*nearest are 16 and 32"),
    ((0, 32), "height=0: it must be at least 1"),
    ((-8, 32), "height=-8: it must be at least 1"),
    ((100_000, 100_000), "height=100000: at most 4096 pixels a side"),
    ((100_000, 32), "height=100000: at most 4096"),
    ((4096, 4096), "16,777,216 pixels, more than this pipeline's bound"),
]


@pytest.mark.parametrize(("size", "words"), SIZES, ids=[str(s[0]) for s in SIZES])
def test_sizes_the_models_cannot_draw(pipe, size, words):
    t = time.perf_counter()
    with pytest.raises(UserError, match=words):
        call(pipe, height=size[0], width=size[1])
    assert time.perf_counter() - t < 5  # refused before any allocation or work


def test_the_suggested_size_works_and_bounds_are_configurable(pipe, monkeypatch):
    assert call(pipe, height=16, width=48).images.shape == (1, 4, 4, 12)  # what the message suggests
    monkeypatch.setattr(pipe, "max_steps", 2)
    with pytest.raises(UserError, match="at most 2"):
        call(pipe, num_inference_steps=3)


def test_size_multiple_counts_the_unet_downsamplers():
    from minisd.loading import sd15_config

    assert size_multiple(8, sd15_config("unet")) == 64  # v1.5: 520 is refused, 512 and 576 are not
    assert size_multiple(4, {"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"]}) == 8


# ---------------------------------------------------------------------------- 3. NaN and inf
def test_nan_latents_given_are_refused(pipe):
    with pytest.raises(NonFiniteError, match="the given latents hold NaN"):
        call(pipe, latents=torch.full((1, 4, 8, 8), float("nan")))


def test_nan_appearing_during_sampling_names_the_step(pipe, monkeypatch):
    real = pipe.unet.forward
    calls = []

    def unet_that_overflows(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return type(out)(out.sample * (float("inf") if len(calls) == 3 else 1))

    monkeypatch.setattr(pipe.unet, "forward", unet_that_overflows)
    with pytest.raises(NonFiniteError, match="NaN/inf at step 3 of 5 .*guidance_scale"):
        call(pipe, num_inference_steps=5)
    assert len(calls) == 3  # stopped at once, not after the whole loop


@pytest.mark.parametrize("eta", [5.0, -1.0, float("nan")])
def test_ddim_eta_out_of_range(eta):
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(10)
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"DDIM eta=.*between 0 \(deterministic\) and 1"):
        scheduler.step(torch.randn_like(x), scheduler.timesteps[0], x, eta=eta)


def test_nan_pictures_are_refused(pipe):
    with pytest.raises(NonFiniteError, match="decoded pictures hold NaN"):
        pipe.decode_latents(torch.full((1, 4, 8, 8), float("nan")))


def test_fp16_vae_repair_never_returns_inf():
    vae = AutoencoderKL.from_pretrained(tiny_model_path() / "vae", dtype=torch.float16)
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(1e4)  # outputs beyond fp16's 65504
        image = vae.decode(torch.randn(1, 4, 8, 8, dtype=torch.float16) * 50).sample
    assert image.dtype == torch.float16 and torch.isfinite(image).all()


# ---------------------------------------------------------------------------- 4. corrupt weights
def test_a_tensor_overwritten_with_ff_bytes_is_named(model_copy):
    path = model_copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    offsets = json.loads(data[8:header])["conv_in.weight"]["data_offsets"]
    data[header + offsets[0] : header + offsets[1]] = b"\xff" * (offsets[1] - offsets[0])
    path.write_bytes(bytes(data))
    with pytest.raises(
        NonFiniteError, match=r"diffusion_pytorch_model.safetensors: tensor conv_in.weight .*NaN"
    ):
        load_safetensors(path)
    with pytest.raises(NonFiniteError, match="conv_in.weight"):
        StableDiffusionPipeline.from_pretrained(model_copy, device="cpu")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_non_finite_value_is_found_in_any_float_type(dtype, bad):
    big = torch.full((1000, 70), 60000.0, dtype=dtype)  # finite, although its sum overflows fp16
    check_finite({"big": big, "ids": torch.arange(3), "empty": torch.empty(0, dtype=dtype)}, "f")
    big[-1, -1] = bad
    with pytest.raises(NonFiniteError, match=r"f: tensor big \(1000, 70\) holds 1 NaN/inf"):
        check_finite({"ids": torch.arange(3), "big": big}, "f")


def test_a_ckpt_with_corrupt_tensor_data_fails_its_crc(tmp_path):
    path = tmp_path / "sd.ckpt"
    save_checkpoint({"w": torch.arange(4096, dtype=torch.float32)}, path)
    data = bytearray(path.read_bytes())
    at = data.index(np.arange(4096, dtype=np.float32).tobytes()[4000:4016])
    data[at : at + 16] = b"\x00" * 16  # finite values: only the checksum can tell
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sd.ckpt: the data of .* fails its checksum"):
        load_checkpoint(path)


def test_random_bytes_and_empty_files(tmp_path):
    for name in ("a.safetensors", "a.ckpt", "empty.safetensors", "empty.ckpt"):
        (tmp_path / name).write_bytes(b"" if name.startswith("empty") else np.random.bytes(5000))
        with pytest.raises(CheckpointError, match=f"{name}.*(not a readable|damaged)"):
            load_checkpoint(tmp_path / name)


# ---------------------------------------------------------------------------- 8. config files
def test_invalid_json_names_the_file(model_copy):
    (model_copy / "unet" / "config.json").write_text('{"sample_size": 8,')
    with pytest.raises(UserError, match=r"unet/config.json is not valid JSON .*line 1"):
        StableDiffusionPipeline.from_pretrained(model_copy, device="cpu")


@pytest.mark.parametrize("name", ["model_index.json", "scheduler/scheduler_config.json", "vae/config.json"])
def test_a_config_that_is_a_list_is_named(model_copy, name):
    (model_copy / name).write_text("[1, 2]")
    with pytest.raises(UserError, match=f"{name} holds a JSON list"):
        StableDiffusionPipeline.from_pretrained(model_copy, device="cpu")


@pytest.mark.parametrize(
    ("part", "key", "value", "words"),
    [
        ("unet", "layers_per_block", "1", "layers_per_block='1' .expected int | tuple"),
        ("unet", "block_out_channels", 64, "block_out_channels=64 .expected tuple"),
        ("vae", "scaling_factor", "0.5", "scaling_factor='0.5' .expected float"),
        ("text_encoder", "num_hidden_layers", 2.5, "num_hidden_layers=2.5"),
        ("scheduler", "num_train_timesteps", "1000", "DDIMScheduler config: .*num_train_timesteps='1000'"),
    ],
)
def test_wrong_typed_config_values_are_named_at_load(model_copy, part, key, value, words):
    path = next((model_copy / part).glob("*config.json"))
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(UserError, match=words):  # at load, not after the denoising loop
        StableDiffusionPipeline.from_pretrained(model_copy, device="cpu")


def test_from_config_of_a_non_dict():
    with pytest.raises(TypeError, match="takes a dict of settings, got list"):
        UNet2DConditionModel.from_config([1, 2])


def test_dtype_as_a_string(model_copy):
    with pytest.raises(TypeError, match="dtype must be a torch.dtype such as torch.float16, got 'fp16'"):
        StableDiffusionPipeline.from_pretrained(model_copy, dtype="fp16", device="cpu")


def test_bogus_device_variable_is_named(monkeypatch):
    from minisd.device import get_device

    monkeypatch.setenv("MINISD_DEVICE", "bogus")
    with pytest.raises(UserError, match="MINISD_DEVICE='bogus' is not a device"):
        get_device()


def test_a_mistyped_local_path_is_not_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no model at models/sd15"):
        StableDiffusionPipeline.from_pretrained("models/sd15")


# ---------------------------------------------------------------------------- 9, 4. tokenizer
@pytest.fixture(scope="module")
def tok():
    return CLIPTokenizer.from_pretrained(tiny_model_path() / "tokenizer")


@pytest.mark.parametrize(
    ("make_call", "error", "words"),
    [
        (lambda t: t(None), TypeError, "must be a string .*got NoneType"),
        (lambda t: t(b"a cat"), TypeError, r"bytes .*decode it first"),
        (lambda t: t(["a", 5]), TypeError, "got int"),
        (lambda t: t("a cat", max_length=-5), UserError, "max_length=-5: it must be at least 2"),
        (lambda t: t("a cat", max_length=7.5), TypeError, "float"),
        (lambda t: t.decode([10**6]), UserError, "token id 1000000 is not in the vocabulary"),
        (lambda t: t.decode([-1]), UserError, "token id -1"),
        (lambda t: t.decode(["a"]), TypeError, "str"),
    ],
    ids=[
        "None",
        "bytes",
        "list-with-int",
        "max_length-5",
        "max_length-float",
        "decode-big",
        "decode-neg",
        "decode-str",
    ],
)
def test_tokenizer_misuse(tok, make_call, error, words):
    with pytest.raises(error, match=words):
        make_call(tok)


def test_a_huge_word_is_fast_and_warned_about(tok):
    rng = np.random.default_rng(0)
    word = "".join(rng.choice(list("etaoinshrdlu"), 100_000))
    t = time.perf_counter()
    with pytest.warns(UserWarning, match="over CLIP's limit of 75 tokens; this part was dropped") as record:
        ids = tok(word)
    assert time.perf_counter() - t < 10  # was ~160 s: the whole word was merged before the cut
    assert len(record) == 1 and ids.shape == (1, 77) and ids[0, -1] == tok.eos_token_id
    with pytest.warns(UserWarning, match="dropped"):  # the first 300 letters are over the limit too
        short = tok(word[:300])
    assert ids[0, :20].tolist() == short[0, :20].tolist()


def test_the_pipeline_warns_once_about_a_long_prompt(pipe):
    prompt = "a red circle on a blue background " * 12 + "and a green triangle"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call(pipe, prompt=prompt)
    messages = [str(w.message) for w in record if "dropped" in str(w.message)]
    assert len(messages) == 1 and "green triangle" in messages[0]


def test_damaged_vocabulary_files_are_named(tmp_path):
    folder = shutil.copytree(tiny_model_path() / "tokenizer", tmp_path / "tokenizer")
    (folder / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(UserError, match="merges.txt holds no merges"):
        CLIPTokenizer.from_pretrained(folder)
    (folder / "merges.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(UserError, match="merges.txt, merge 2: expected two symbols"):
        CLIPTokenizer.from_pretrained(folder)
    (folder / "vocab.json").write_text("{not json")
    with pytest.raises(UserError, match="vocab.json is not valid JSON"):
        CLIPTokenizer.from_pretrained(folder)
    (tmp_path / "bpe.txt.gz").write_bytes(b"this is not gzip")
    with pytest.raises(UserError, match=r"bpe.txt.gz is not a gzip-compressed BPE .*setup --force"):
        CLIPTokenizer.from_pretrained(tmp_path / "bpe.txt.gz")
    packed = gzip.compress(b"#header\n" + b"".join(f"{i} {i + 1}\n".encode() for i in range(5000)))
    (tmp_path / "cut.txt.gz").write_bytes(packed[: len(packed) // 2])  # an interrupted download
    with pytest.raises(UserError, match="cut.txt.gz is not a gzip-compressed"):
        CLIPTokenizer.from_pretrained(tmp_path / "cut.txt.gz")
