"""Code written for diffusers/transformers runs on minisd with only its imports changed.

The canonical inference loop and training step are written once below and run on reference objects
(diffusers, transformers) and on minisd objects holding the same random weights; then every shared
public signature is compared with the reference class's, so that they cannot drift apart.
"""

import inspect

import diffusers
import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import relative_max_diff
from tiny_sd import SD15, diffusers_components

import minisd
from minisd.models.tokenizer import CLIPTokenizer

PROMPTS = ["a photograph of an astronaut riding a horse", "a red cube on a table"]


def training_step(noise_scheduler, unet, vae, text_encoder, images, input_ids, generator):
    """One step of diffusers' train_text_to_image.py: the loss, written as readers write it."""
    latents = vae.encode(images).latent_dist.sample(generator) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=generator)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
    noisy_latents = noise_scheduler.add_noise(latents, noise, t)
    encoder_hidden_states = text_encoder(input_ids)[0]  # [B, 77, hidden]
    model_pred = unet(noisy_latents, t, encoder_hidden_states).sample
    return F.mse_loss(model_pred, noise)


def inference_loop(scheduler, unet, vae, text_encoder, input_ids, uncond_ids, latents, steps=3, guidance=7.5):
    """The hand-written sampling loop of diffusers' documentation, with classifier-free guidance."""
    text_embeddings = torch.cat([text_encoder(uncond_ids)[0], text_encoder(input_ids)[0]])
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise_pred = unet(model_input, t, encoder_hidden_states=text_embeddings).sample
        uncond, cond = noise_pred.chunk(2)
        latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
    return vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]


@pytest.fixture(scope="module")
def models():
    """(reference, minisd) dicts of unet, vae, text_encoder: small v1.5-structured, same weights."""
    torch.manual_seed(0)
    ref = dict(zip(("unet", "vae", "text_encoder"), diffusers_components(scale=0.05), strict=True))
    ours = {}
    for name, model in ref.items():
        cls = getattr(minisd, type(model).__name__)
        config = model.config.to_dict() if name == "text_encoder" else dict(model.config)
        ours[name] = cls.from_config(config).eval()
        ours[name].load_state_dict(cls.convert_state_dict(model.state_dict()), strict=True)
    return ref, ours


def token_ids(texts: list[str]) -> torch.Tensor:
    return CLIPTokenizer()(texts)  # [B, 77]


def test_text_encoder_index_zero_is_the_batch_of_hidden_states(models):
    ref, ours = models
    ids = token_ids(PROMPTS)
    hidden = ref["text_encoder"].config.hidden_size
    with torch.no_grad():
        for encoder in (ref["text_encoder"], ours["text_encoder"]):
            assert encoder(ids)[0].shape == (2, 77, hidden)
        torch.testing.assert_close(ours["text_encoder"](ids)[0], ref["text_encoder"](ids)[0])


def test_training_step_equal(models):
    ref, ours = models
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    ids = token_ids(PROMPTS)
    losses = []
    for scheduler, parts in [(diffusers.DDPMScheduler, ref), (minisd.DDPMScheduler, ours)]:
        noise_scheduler = scheduler.from_config(SD15["scheduler"])
        with torch.no_grad():
            loss = training_step(noise_scheduler, **parts, images=images, input_ids=ids,
                                 generator=torch.Generator().manual_seed(3))  # fmt: skip
        losses.append(loss)
    assert relative_max_diff(losses[1], losses[0]) < 1e-4


def test_inference_loop_equal(models):
    """Needs `scheduler.step(...).prev_sample` (diffusers' SchedulerOutput) from minisd's schedulers."""
    ref, ours = models
    ids, uncond = token_ids(PROMPTS), token_ids(["", ""])
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    images = []
    for scheduler, parts in [(diffusers.DDIMScheduler, ref), (minisd.DDIMScheduler, ours)]:
        with torch.no_grad():
            images.append(inference_loop(scheduler.from_config(SD15["scheduler"]), **parts,
                                         input_ids=ids, uncond_ids=uncond, latents=latents))  # fmt: skip
    assert images[1].shape == (2, 3, 64, 64)
    assert relative_max_diff(images[1], images[0]) < 1e-4


# ---------------------------------------------------------------------------- signatures


def parameters(fn) -> list[inspect.Parameter]:
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p for p in inspect.signature(fn).parameters.values() if p.kind not in variadic]


def same_default(a: object, b: object) -> bool:
    as_tuple = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
    return as_tuple(a) == as_tuple(b)


SHARED = [
    (minisd.UNet2DConditionModel.forward, diffusers.UNet2DConditionModel.forward),
    (minisd.UNet2DConditionModel.__init__, diffusers.UNet2DConditionModel.__init__),
    (minisd.AutoencoderKL.encode, diffusers.AutoencoderKL.encode),
    (minisd.AutoencoderKL.decode, diffusers.AutoencoderKL.decode),
    (minisd.AutoencoderKL.forward, diffusers.AutoencoderKL.forward),
    (minisd.AutoencoderKL.__init__, diffusers.AutoencoderKL.__init__),
    (minisd.CLIPTextModel.forward, transformers.CLIPTextModel.forward),
    (minisd.StableDiffusionPipeline.__call__, diffusers.StableDiffusionPipeline.__call__),
    (minisd.UNet2DConditionModel.from_config, diffusers.UNet2DConditionModel.from_config),
    (minisd.UNet2DConditionModel.from_pretrained, diffusers.UNet2DConditionModel.from_pretrained),
    (minisd.CLIPTextModel.from_pretrained, transformers.CLIPTextModel.from_pretrained),
    (minisd.StableDiffusionPipeline.from_pretrained, diffusers.StableDiffusionPipeline.from_pretrained),
    *[
        (getattr(minisd.StableDiffusionPipeline, name), getattr(diffusers.StableDiffusionPipeline, name))
        for name in ("load_lora_weights", "set_adapters", "fuse_lora", "unfuse_lora", "unload_lora_weights")
    ],
]


@pytest.mark.parametrize("ours,reference", SHARED, ids=[ref.__qualname__ for _, ref in SHARED])
def test_signature_starts_with_the_reference(ours, reference):
    """The reference's positional parameters come first, with the same names, order and defaults;
    minisd's own (e.g. `tiled`, `clip_skip`, `scheduler`) only after them."""
    positional = lambda fn: [p for p in parameters(fn) if p.kind is not p.KEYWORD_ONLY]  # noqa: E731
    want, got = positional(reference), positional(ours)
    assert [p.name for p in got[: len(want)]] == [p.name for p in want]
    for g, w in zip(got, want, strict=False):
        assert same_default(g.default, w.default), f"{w.name}: {g.default!r} vs {w.default!r}"
    ours_by_name = {p.name: p for p in parameters(ours)}
    for w in parameters(reference):  # the keyword-only ones minisd shares: same defaults
        if w.kind is w.KEYWORD_ONLY and w.name in ours_by_name:
            assert same_default(ours_by_name[w.name].default, w.default), w.name


def test_clip_constructor_takes_clip_text_config_keys_and_defaults():
    want = [p for p in parameters(transformers.CLIPTextConfig.__init__) if p.kind is p.KEYWORD_ONLY]
    got = parameters(minisd.CLIPTextModel.__init__)[1:]
    assert [(p.name, p.default) for p in got] == [(p.name, p.default) for p in want]


def test_pipeline_constructor_takes_diffusers_arguments_in_order():
    want = [p.name for p in parameters(diffusers.StableDiffusionPipeline.__init__)]
    assert [p.name for p in parameters(minisd.StableDiffusionPipeline.__init__)][: len(want)] == want
