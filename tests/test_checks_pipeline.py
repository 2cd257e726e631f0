"""Chapter 06's exercise checkers pass the reference and fail known-wrong versions."""

import pytest
import torch

from minisd.book import checks
from minisd.pipelines import classifier_free_guidance
from minisd.pipelines.sampling import step_kwargs


def test_input_block_index_checker():
    assert checks.input_block_index(lambda i, j, per: 1 + i * (per + 1) + j)
    assert not checks.input_block_index(lambda i, j, per: 1 + i * per + j)  # forgets the downsampler
    assert not checks.input_block_index(lambda i, j, per: i * (per + 1) + j)  # forgets conv_in


def loop(
    pipe,
    prompt,
    negative,
    scheduler,
    steps,
    scale,
    generator,
    *,
    sigma=True,
    scale_input=True,
    order=("u", "c"),
    use_negative=True,
    mask=True,
    factor=None,
    step_noise=True,
):
    """A hand-written sampling loop; the keywords switch in the mistakes a reader could make."""
    cfg = scale > 1
    texts = [negative if use_negative and negative is not None else "", prompt]
    texts = [texts[0 if part == "u" else 1] for part in order] if cfg else [prompt]
    ids = pipe.tokenizer(texts)
    context = pipe.text_encoder(ids)[0]  # [2 or 1, 77, 64]
    attention = pipe.tokenizer.attention_mask(ids) if pipe.mask_text_padding and mask else None
    scheduler.set_timesteps(steps)
    f = factor or pipe.vae_scale_factor
    x = torch.randn(1, 4, 32 // f, 32 // f, generator=generator)
    x = x * scheduler.init_noise_sigma if sigma else x
    for t in scheduler.timesteps:
        model_input = torch.cat([x] * len(texts))
        model_input = scheduler.scale_model_input(model_input, t) if scale_input else model_input
        eps = pipe.unet(
            model_input, t, encoder_hidden_states=context, encoder_attention_mask=attention
        ).sample
        eps = classifier_free_guidance(*eps.chunk(2), scale) if cfg else eps
        x = scheduler.step(eps, t, x, **(step_kwargs(scheduler, generator) if step_noise else {})).prev_sample
    return x


def test_sampling_loop_passes_the_pipeline_s_loop(capsys):
    assert checks.sampling_loop(loop)
    assert "all passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mistake",
    [
        {"sigma": False},
        {"scale_input": False},
        {"order": ("c", "u")},
        {"use_negative": False},
        {"mask": False},
        {"factor": 8},
        {"step_noise": False},
    ],
    ids=[
        "no init_noise_sigma",
        "no scale_model_input",
        "halves swapped",
        "negative ignored",
        "padding not masked",
        "SD's f = 8",
        "ancestral noise not from the generator",
    ],
)
def test_sampling_loop_rejects_wrong_loops(mistake, capsys):
    assert not checks.sampling_loop(lambda *a: loop(*a, **mistake))
    assert "FAIL sampling_loop" in capsys.readouterr().out


def evaluations(name, steps, scale, images, *, pndm_extra=True, cfg_from=1.0, per_image=True):
    passes = steps + (1 if name == "pndm" and pndm_extra else 0)
    return passes * (2 if scale > cfg_from else 1) * (images if per_image else 1)


def test_unet_evaluations_passes_the_count(capsys):
    assert checks.unet_evaluations(evaluations)
    assert "all passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        lambda *a: evaluations(*a, pndm_extra=False),
        lambda *a: evaluations(*a, cfg_from=0.99),  # guidance 1 still runs both halves
        lambda *a: evaluations(*a, per_image=False),
        lambda name, steps, scale, images: 2 * steps * images,
        lambda name, steps, scale, images: (steps + (name == "pndm")) * (1 + (scale > 1)),  # UNet calls
    ],
    ids=[
        "PNDM's repeated step forgotten",
        "CFG at guidance 1",
        "one image",
        "always 2 per step",
        "UNet calls",
    ],
)
def test_unet_evaluations_rejects_wrong_counts(wrong, capsys):
    assert not checks.unet_evaluations(wrong)
    assert "FAIL unet_evaluations" in capsys.readouterr().out


def latents(vae, images, *, factor=None, signed=True, divide=False, mean=True):
    x = images * 2 - 1 if signed else images
    dist = vae.encode(x).latent_dist
    z = dist.mean if mean else dist.sample()
    s = factor or vae.scaling_factor
    return z / s if divide else z * s


def test_image_latents_passes(capsys):
    assert checks.image_latents(latents)
    assert "all passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mistake",
    [{"factor": 0.18215}, {"signed": False}, {"divide": True}, {"mean": False}],
    ids=["SD's 0.18215 hard-coded", "pictures left in [0, 1]", "divided by the factor", "a random sample"],
)
def test_image_latents_rejects_wrong_answers(mistake, capsys):
    assert not checks.image_latents(lambda vae, images: latents(vae, images, **mistake))
    assert "FAIL image_latents" in capsys.readouterr().out
