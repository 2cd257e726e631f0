"""The tiny-model recipe: exact resume from checkpoints, the official folder layout, the evaluator."""

import copy

import diffusers
import pytest
import torch

from minisd.device import get_device
from minisd.metrics import evaluate_adherence
from minisd.models.attention_maps import word_tokens
from minisd.models.clip import CLIPTextModel
from minisd.models.tokenizer import CLIPTokenizer
from minisd.models.unet import UNet2DConditionModel
from minisd.models.vae import AutoencoderKL
from minisd.pipelines import StableDiffusionPipeline
from minisd.shapes import TINY_CONFIGS, ShapesDataset
from minisd.training import (
    RenderedDataset,
    default_checkpoint_dir,
    grounding_loss,
    save_model,
    train_autoencoder,
    train_text_to_image,
    train_tiny_model,
)


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


@pytest.mark.skipif(
    get_device().type == "cpu",
    reason="needs a GPU or MPS device (none here); the other tests train on the CPU",
)
def test_training_on_the_accelerator_follows_the_cpu(parts):
    """device= moves models and batches; the random draws come from a CPU generator, so the first
    losses agree with a CPU run up to the accelerator's rounding."""
    vae, tok = parts
    data = ShapesDataset(100)
    kwargs = dict(batch_size=4, progress=False)
    cpu = train_text_to_image(*fresh_models(), copy.deepcopy(vae), tok, data, 2, **kwargs)
    accelerated = train_text_to_image(*fresh_models(), copy.deepcopy(vae), tok, data, 2, device=get_device(),
                                      **kwargs)  # fmt: skip
    assert accelerated["unet"].device.type == get_device().type
    torch.testing.assert_close(
        torch.tensor(accelerated["losses"]), torch.tensor(cpu["losses"]), rtol=1e-2, atol=1e-3
    )
    losses = train_autoencoder(
        copy.deepcopy(vae), data, steps=1, batch_size=4, progress=False, device=get_device()
    )
    assert all(torch.isfinite(torch.tensor(losses)))


def test_masked_training_hides_the_padding(parts):
    """With mask_text_padding the UNet never reads the padding: training on captions whose padding
    embeddings are scrambled gives the same losses; without the mask it does not."""
    vae, tok = parts
    data = ShapesDataset(100)

    class Scrambled(CLIPTextModel):  # a text encoder whose outputs after each caption's EOT are noise
        def forward(self, ids, *args, **kwargs):
            out = super().forward(ids, *args, **kwargs)
            hidden = torch.where(tok.attention_mask(ids)[..., None], out[0], torch.randn_like(out[0]))
            return type(out)(hidden, *out[1:])

    def losses(mask, scrambled):
        unet, text = fresh_models()
        if scrambled:
            text.__class__ = Scrambled
        kwargs = dict(batch_size=4, mask_text_padding=mask, progress=False)
        return train_text_to_image(unet, text, vae, tok, data, 2, **kwargs)["losses"]

    assert losses(True, False) == losses(True, True)
    assert losses(False, False) != losses(False, True)


def test_grounding_loss_by_hand():
    maps = torch.tensor([[[0.1, 0.5, 0.4], [0.2, 0.3, 0.5], [0.3, 0.1, 0.6], [0.4, 0.1, 0.5]]])  # [1, 4, 3]
    tokens = torch.tensor([[1, 2, 0]])  # token 1 and token 2; the third slot is empty
    masks = torch.tensor([[[1.0, 1, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1]]])
    # token 1 reads 0.5 + 0.3 of its 1.0 in its mask, token 2 reads 0.5 of its 2.0
    want = ((1 - 0.8) ** 2 + (1 - 0.25) ** 2) / 2
    assert abs(grounding_loss(maps, tokens, masks).item() - want) < 1e-6
    assert grounding_loss(maps, torch.zeros_like(tokens), masks).item() == 0


def test_word_tokens_point_at_each_words_last_token(parts):
    _, tok = parts
    for caption in ["two blue triangles on a yellow background", "a red square left of a white circle"]:
        ids = tok.encode(caption)
        positions = word_tokens(tok, caption)
        assert len(positions) == len(caption.split()) and positions[-1] == len(ids) - 2  # just before EOT
        for word, p in zip(caption.split(), positions, strict=True):
            assert word.endswith(tok.decode([ids[p]]))
    assert word_tokens(tok, "two blue triangles")[2] == 4  # "triangles" is two tokens


def test_grounded_training_runs_and_needs_scenes(parts):
    vae, tok = parts
    data = ShapesDataset(100)
    result = train_text_to_image(*fresh_models(), vae, tok, data, 2, batch_size=4, grounding_weight=0.5,
                                 progress=False)  # fmt: skip
    plain = train_text_to_image(*fresh_models(), vae, tok, data, 2, batch_size=4, progress=False)
    assert result["losses"][0] > plain["losses"][0]  # the same step, plus the grounding term
    images = torch.zeros(4, 3, 32, 32)
    unlabelled = torch.utils.data.TensorDataset(images, images)
    with pytest.raises(ValueError, match="needs a ShapesDataset"):
        train_text_to_image(*fresh_models(), vae, tok, RenderedDataset(unlabelled, progress=False), 1,
                            batch_size=2, grounding_weight=0.5, progress=False)  # fmt: skip


def test_train_tiny_model_writes_the_model_and_its_log(tmp_path, monkeypatch):
    import json

    from minisd.loading.assets import find_clip_bpe

    monkeypatch.setenv("MINISD_CLIP_BPE", str(find_clip_bpe()))  # the vocabulary stays where it is
    monkeypatch.setenv("MINISD_CACHE", str(tmp_path / "cache"))
    import minisd.training.tiny

    seen = []
    real = minisd.training.tiny.train_text_to_image
    spy = lambda *a, **kw: seen.append(kw["caption_dropout"]) or real(*a, **kw)  # noqa: E731
    monkeypatch.setattr(minisd.training.tiny, "train_text_to_image", spy)
    folder = tmp_path / "model"
    log = train_tiny_model(
        folder, vae_steps=2, steps=2, batch_size=4, num_scenes=40, caption_dropout=0.5, progress=False
    )
    assert json.loads((folder / "training_log.json").read_text()) == log
    assert len(log["vae_losses"]) == len(log["losses"]) == 2 and log["recipe"]["grounding_weight"] == 0.3
    assert seen == [0.5] and log["recipe"]["caption_dropout"] == 0.5
    assert (default_checkpoint_dir(folder) / "training_state.pt").is_file()
    assert not (folder / "checkpoints").exists()
    assert StableDiffusionPipeline.from_pretrained(folder, device="cpu").mask_text_padding


def test_run_resumed_after_the_autoencoder_equals_uninterrupted(tmp_path, monkeypatch):
    import shutil

    from safetensors.torch import load_file

    from minisd.loading.assets import find_clip_bpe

    monkeypatch.setenv("MINISD_CLIP_BPE", str(find_clip_bpe()))
    kw = dict(vae_steps=2, steps=2, batch_size=4, num_scenes=40, progress=False)
    train_tiny_model(tmp_path / "a", checkpoint_dir=tmp_path / "ckpt_a", **kw)
    shutil.copytree(tmp_path / "ckpt_a" / "vae", tmp_path / "ckpt_b" / "vae")  # stopped after the autoencoder
    train_tiny_model(tmp_path / "b", checkpoint_dir=tmp_path / "ckpt_b", **kw)
    for part in ("unet", "text_encoder"):
        a, b = (load_file(next((tmp_path / run / part).glob("*.safetensors"))) for run in "ab")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_checkpoints_stay_out_of_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MINISD_CACHE", str(tmp_path / "cache"))
    a, b = default_checkpoint_dir(tmp_path / "x" / "model"), default_checkpoint_dir(tmp_path / "y" / "model")
    assert a.parent == b.parent == tmp_path / "cache" / "checkpoints" and a != b
    assert a == default_checkpoint_dir(tmp_path / "x" / "model")  # the same folder resumes


def test_saved_model_is_the_official_layout(parts, tmp_path):
    vae, tok = parts
    unet, text_encoder = fresh_models()
    save_model(tmp_path, unet, text_encoder, vae, tok, dtype=torch.float32, mask_text_padding=True)
    reference = diffusers.UNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 77, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            unet.eval()(x, t, ctx).sample, reference(x, t, ctx).sample, rtol=1e-4, atol=1e-5
        )
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path, device="cpu")
    assert pipe.mask_text_padding
    images = pipe(
        "a red circle on a blue background", num_inference_steps=2, output_type="np"
    ).images  # 32x32: the UNet's sample_size 8 times the VAE's factor 4
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
