"""minisd.schedulers against diffusers: 25-step trajectories, timesteps, add_noise, errors, checker."""

from __future__ import annotations

import logging
import warnings

import diffusers
import pytest
import torch
from conftest import relative_max_diff

import minisd.schedulers as ms
from minisd.book import checks
from minisd.loading import sd15_config

# The official SD v1.5 scheduler/scheduler_config.json, shipped in the package.
SD15 = sd15_config("scheduler")
NAMES = [
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "LMSDiscreteScheduler",
]
STOCHASTIC = {"DDPMScheduler", "EulerAncestralDiscreteScheduler"}
KARRAS = ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "LMSDiscreteScheduler"]


@pytest.fixture(autouse=True)
def _quiet_diffusers():
    # diffusers warns when step() comes without scale_model_input(); our loop calls both
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def fake_denoiser(x: torch.Tensor, t) -> torch.Tensor:
    """A fixed, deterministic, nonlinear stand-in for the UNet that depends on x and t."""
    return 0.8 * torch.tanh(x) + 0.1 * torch.sin(3 * x + float(t) / 100)


def trajectory(scheduler, steps: int = 25, seed: int | None = None, **step_kwargs):
    """Sample with the scheduler's own loop; returns (timesteps, final sample, UNet calls)."""
    scheduler.set_timesteps(steps)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    if seed is not None:
        step_kwargs["generator"] = torch.Generator().manual_seed(seed)
    calls = 0
    for t in scheduler.timesteps:
        model_output = fake_denoiser(scheduler.scale_model_input(x, t), t)
        calls += 1
        x = scheduler.step(model_output, t, x, **step_kwargs).prev_sample
    return scheduler.timesteps, x, calls


def assert_same_trajectory(name: str, config: dict, seed: int | None = None, **step_kwargs):
    ref = getattr(diffusers, name).from_config(config)
    mine = getattr(ms, name).from_config(config)
    if name in STOCHASTIC and seed is None:
        seed = 7
    t_ref, x_ref, _ = trajectory(ref, seed=seed, **step_kwargs)
    t_mine, x_mine, _ = trajectory(mine, seed=seed, **step_kwargs)
    assert t_mine.dtype == t_ref.dtype and torch.equal(t_mine, t_ref), (t_mine[:5], t_ref[:5])
    assert torch.isfinite(x_mine).all()
    assert relative_max_diff(x_mine, x_ref) < 1e-4


VARIANTS = {
    "sd15": {},
    "v_prediction": {"prediction_type": "v_prediction"},
    "leading": {"timestep_spacing": "leading"},
    "trailing": {"timestep_spacing": "trailing"},
    "linspace": {"timestep_spacing": "linspace"},
    "linear_betas": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    "cosine_betas": {"beta_schedule": "squaredcos_cap_v2"},
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", NAMES)
def test_trajectory_matches_diffusers(name, variant):
    assert_same_trajectory(name, {**SD15, **VARIANTS[variant]})


@pytest.mark.parametrize(
    "name, options",
    [
        ("DDIMScheduler", {"set_alpha_to_one": True}),
        ("PNDMScheduler", {"set_alpha_to_one": True}),
        ("DDIMScheduler", {"clip_sample": True}),
        ("DDPMScheduler", {"clip_sample": True, "variance_type": "fixed_large"}),
        ("DDPMScheduler", {"variance_type": "fixed_small_log"}),
        ("DDIMScheduler", {"prediction_type": "sample"}),
        ("DDPMScheduler", {"prediction_type": "sample"}),
        ("EulerDiscreteScheduler", {"prediction_type": "sample"}),
        ("LMSDiscreteScheduler", {"prediction_type": "sample"}),
        ("DPMSolverMultistepScheduler", {"prediction_type": "sample"}),
        ("DPMSolverMultistepScheduler", {"solver_type": "heun"}),
        ("DPMSolverMultistepScheduler", {"solver_order": 1}),
        ("DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min", "lower_order_final": False}),
        *[(name, {"use_karras_sigmas": True}) for name in KARRAS],
        *[(name, {"use_karras_sigmas": True, "prediction_type": "v_prediction"}) for name in KARRAS],
    ],
)
def test_config_variations_match_diffusers(name, options):
    assert_same_trajectory(name, {**SD15, **options})


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_eta_seeded_matches_diffusers(eta):
    assert_same_trajectory("DDIMScheduler", SD15, seed=3, eta=eta)


@pytest.mark.parametrize("name", ["DDPMScheduler", "EulerAncestralDiscreteScheduler", "DDIMScheduler"])
def test_stochastic_samplers_depend_on_the_seed(name):
    kwargs = {"eta": 1.0} if name == "DDIMScheduler" else {}
    scheduler = getattr(ms, name).from_config(SD15)
    _, a, _ = trajectory(scheduler, seed=1, **kwargs)
    _, b, _ = trajectory(scheduler, seed=1, **kwargs)
    _, c, _ = trajectory(scheduler, seed=2, **kwargs)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7, 50])
@pytest.mark.parametrize("name", ["PNDMScheduler", "DPMSolverMultistepScheduler", "LMSDiscreteScheduler"])
def test_multistep_samplers_any_step_count(name, steps):
    # the warm-up of the multistep methods (fewer stored slopes than their order) at odd lengths
    ref = getattr(diffusers, name).from_config(SD15)
    mine = getattr(ms, name).from_config(SD15)
    t_ref, x_ref, _ = trajectory(ref, steps)
    t_mine, x_mine, _ = trajectory(mine, steps)
    assert torch.equal(t_mine, t_ref)
    assert relative_max_diff(x_mine, x_ref) < 1e-4


def test_sd15_schedule_facts():
    ddim = ms.DDIMScheduler.from_config(SD15)
    ddim.set_timesteps(50)
    assert ddim.timesteps[0] == 981 and ddim.timesteps[-1] == 1 and len(ddim.timesteps) == 50
    assert ddim.final_alpha_cumprod == ddim.alphas_cumprod[0]  # set_alpha_to_one = False
    pndm = ms.PNDMScheduler.from_config(SD15)
    _, _, calls = trajectory(pndm, 50)
    assert calls == 51 and pndm.timesteps[:3].tolist() == [981, 961, 961]
    euler = ms.EulerDiscreteScheduler.from_config(SD15)
    euler.set_timesteps(25)
    assert abs(float(euler.init_noise_sigma) - 14.6146) < 1e-3  # sigma_max of v1.5


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_betas_alphas_cumprod_and_snr(schedule):
    ref = diffusers.DDPMScheduler.from_config({**SD15, "beta_schedule": schedule})
    mine = ms.DDPMScheduler.from_config({**SD15, "beta_schedule": schedule})
    assert torch.allclose(mine.betas, ref.betas) and torch.allclose(mine.alphas_cumprod, ref.alphas_cumprod)
    snr = ms.SNR(mine.alphas_cumprod)
    assert torch.all(snr[1:] < snr[:-1])  # the signal fades monotonically
    assert torch.allclose(snr, ref.alphas_cumprod / (1 - ref.alphas_cumprod))


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler", "PNDMScheduler"])
def test_add_noise_matches_diffusers(name):
    x0, noise = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    t = torch.tensor([0, 250, 981, 999])
    ref = getattr(diffusers, name).from_config(SD15).add_noise(x0, noise, t)
    assert relative_max_diff(getattr(ms, name).from_config(SD15).add_noise(x0, noise, t), ref) < 1e-6


@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize("name", KARRAS + ["EulerAncestralDiscreteScheduler"])
def test_add_noise_sigma_schedulers_match_diffusers(name, karras):
    # img2img: noise the clean latents to the level of a timestep of the current schedule
    config = {**SD15, "use_karras_sigmas": karras} if name in KARRAS else SD15
    ref, mine = getattr(diffusers, name).from_config(config), getattr(ms, name).from_config(config)
    ref.set_timesteps(30)
    mine.set_timesteps(30)
    x0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = mine.timesteps[[0, 10, 29]]
    assert relative_max_diff(mine.add_noise(x0, noise, t), ref.add_noise(x0, noise, t)) < 1e-6


def test_registry_builds_every_sampler_from_the_sd15_config():
    for name, (cls, preset) in ms.SCHEDULERS.items():
        scheduler = ms.get_scheduler(name, SD15)
        assert type(scheduler) is cls and scheduler.config.beta_schedule == "scaled_linear"
        assert all(scheduler.config[k] == v for k, v in preset.items())
    assert isinstance(ms.get_scheduler("PNDMScheduler", SD15), ms.PNDMScheduler)
    assert ms.get_scheduler("dpm++2m_karras", SD15).config.use_karras_sigmas is True
    with pytest.raises(ValueError, match="unknown scheduler 'heun'.*ddim.*euler_a.*dpm\\+\\+2m"):
        ms.get_scheduler("heun", SD15)


def test_save_and_load_config(tmp_path):
    mine = ms.DDIMScheduler.from_config(SD15, timestep_spacing="trailing")
    mine.save_pretrained(tmp_path)
    again = ms.DDIMScheduler.from_pretrained(tmp_path)
    assert dict(again.config) == {k: v for k, v in mine.config.items() if k != "_use_default_values"}
    ref = diffusers.DDIMScheduler.from_pretrained(tmp_path)  # the file is diffusers-readable
    assert ref.config.timestep_spacing == "trailing" and ref.config.steps_offset == 1


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_gives_clear_errors(name):
    cls = getattr(ms, name)
    scheduler = cls.from_config(SD15)
    x = torch.randn(1, 4, 8, 8)
    if name in ("DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler"):  # as in diffusers
        with pytest.raises(ValueError, match="call scheduler.set_timesteps"):
            scheduler.step(x, 981, x)
    for n in (0, 1001, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps must be an integer from 1 to"):
            scheduler.set_timesteps(n)
    with pytest.raises(ValueError, match="unknown beta_schedule 'cosine'.*scaled_linear"):
        cls.from_config({**SD15, "beta_schedule": "cosine"})
    with pytest.raises(ValueError, match="unknown timestep_spacing"):
        cls.from_config({**SD15, "timestep_spacing": "middle"}).set_timesteps(10)


def test_unsupported_options_are_refused():
    with pytest.raises(NotImplementedError, match="use_beta_sigmas=True"):
        ms.EulerDiscreteScheduler.from_config({**SD15, "use_beta_sigmas": True})
    with pytest.raises(NotImplementedError, match="use_lu_lambdas=True"):
        ms.DPMSolverMultistepScheduler.from_config({**SD15, "use_lu_lambdas": True})
    with pytest.raises(NotImplementedError, match="interpolation_type='log_linear'"):
        ms.EulerDiscreteScheduler.from_config({**SD15, "interpolation_type": "log_linear"})
    with pytest.raises(NotImplementedError, match="dpmsolver\\+\\+"):
        ms.DPMSolverMultistepScheduler.from_config({**SD15, "algorithm_type": "sde-dpmsolver++"})
    with pytest.raises(ValueError, match="prediction_type"):
        ms.DDIMScheduler.from_config({**SD15, "prediction_type": "flow"})


def _ddim_step_reference(eps, x, alpha_bar_t, alpha_bar_prev):
    x0 = (x - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5
    return alpha_bar_prev**0.5 * x0 + (1 - alpha_bar_prev) ** 0.5 * eps


def _ddim_step_wrong(eps, x, alpha_bar_t, alpha_bar_prev):  # forgets the square root on alpha_bar_prev
    x0 = (x - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t**0.5
    return alpha_bar_prev * x0 + (1 - alpha_bar_prev) ** 0.5 * eps


def test_ddim_step_checker():
    assert checks.ddim_step(_ddim_step_reference)
    assert not checks.ddim_step(_ddim_step_wrong)
    assert not checks.ddim_step(lambda eps, x, a, ap: x)
