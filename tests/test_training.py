"""The tiny-model recipe: exact resume from checkpoints, the official folder layout, the evaluator."""

import diffusers
import pytest
import torch

from minisd.clip import CLIPTextModel
from minisd.data.shapes import ShapesDataset
from minisd.evaluate import evaluate_adherence
from minisd.pipeline import StableDiffusionPipeline
from minisd.tokenizer import CLIPTokenizer
from minisd.training import TINY_CONFIGS, save_model, train_autoencoder, train_text_to_image
from minisd.unet import UNet2DConditionModel
from minisd.vae import AutoencoderKL


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(TINY_CONFIGS["vae"])
    losses = train_autoencoder(vae, ShapesDataset(100), steps=2, batch_size=4, progress=False)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    return vae.eval(), CLIPTokenizer()


def fresh_models():
    torch.manual_seed(1)
    return UNet2DConditionModel.from_config(TINY_CONFIGS["unet"]), CLIPTextModel.from_config(
        TINY_CONFIGS["text_encoder"]
    )


def test_resumed_training_equals_uninterrupted(parts, tmp_path):
    vae, tok = parts
    data = ShapesDataset(100)
    kwargs = dict(batch_size=4, checkpoint_every=2, progress=False)
    straight = train_text_to_image(*fresh_models(), vae, tok, data, 4, **kwargs)
    first = train_text_to_image(*fresh_models(), vae, tok, data, 2, checkpoint_dir=tmp_path, **kwargs)
    resumed = train_text_to_image(*fresh_models(), vae, tok, data, 4, checkpoint_dir=tmp_path, **kwargs)
    assert len(first["losses"]) == 2 and resumed["losses"][:2] == first["losses"]
    assert resumed["losses"] == straight["losses"]
    for a, b in zip(
        resumed["unet"].state_dict().values(), straight["unet"].state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_saved_model_is_the_official_layout(parts, tmp_path):
    vae, tok = parts
    unet, text_encoder = fresh_models()
    save_model(tmp_path, unet, text_encoder, vae, tok, dtype=torch.float32)
    reference = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 64)
    with torch.no_grad():
        torch.testing.assert_close(unet.eval()(x, t, ctx), reference(x, t, ctx).sample, rtol=1e-4, atol=1e-5)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path, device="cpu")
    images = pipe(
        "a red circle on a blue background", num_inference_steps=2, height=32, width=32, output_type="np"
    )
    assert images.shape == (1, 32, 32, 3)


def test_evaluator_reports_rates(parts, tmp_path):
    vae, tok = parts
    save_model(tmp_path, *fresh_models(), vae, tok)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path, device="cpu")
    rows = evaluate_adherence(pipe, guidance_scales=(1.0, 3.0), num_prompts=2, samples_per_prompt=2,
                              num_inference_steps=2, progress=False)  # fmt: skip
    assert [r["guidance_scale"] for r in rows] == [1.0, 3.0]
    for r in rows:
        assert all(0.0 <= r[k] <= 1.0 for k in ("color", "shape", "background", "diversity"))
