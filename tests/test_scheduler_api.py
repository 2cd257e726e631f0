"""minisd.schedulers speak diffusers' API: signatures, outputs, configs, PRK, custom grids, seeds."""

from __future__ import annotations

import inspect
import logging
import warnings

import diffusers
import numpy as np
import pytest
import torch
from conftest import relative_max_diff

import minisd.schedulers as ms
from minisd.loading import sd15_config

SD15 = sd15_config("scheduler")
NAMES = list(ms.CLASSES)


@pytest.fixture(autouse=True)
def _quiet_diffusers():
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _params(fn) -> list[tuple]:
    """(name, kind, default) of each parameter: what a positional or keyword call depends on."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", NAMES)
def test_signatures_equal_diffusers(name):
    mine, ref = getattr(ms, name), getattr(diffusers, name)
    assert _params(mine.__init__) == _params(ref.__init__)
    shared = [
        m for m in dir(mine) if not m.startswith("_") and callable(getattr(mine, m)) and hasattr(ref, m)
    ]
    assert {
        "step",
        "set_timesteps",
        "scale_model_input",
        "add_noise",
        "from_config",
        "save_pretrained",
    } <= set(shared)
    for method in shared:
        assert _params(getattr(mine, method)) == _params(getattr(ref, method)), method


def _one_step(scheduler, *args, **kwargs):
    scheduler.set_timesteps(10)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = scheduler.timesteps[0]
    eps = 0.5 * scheduler.scale_model_input(x, t)
    if not args and "generator" in inspect.signature(scheduler.step).parameters:
        kwargs.setdefault("generator", torch.Generator().manual_seed(3))
    return scheduler.step(eps, t, x, *args, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_step_output_conventions(name):
    ref = _one_step(getattr(diffusers, name).from_config(SD15))
    out = _one_step(getattr(ms, name).from_config(SD15))
    assert out._fields == tuple(ref.keys())
    assert out.prev_sample is out[0] and torch.allclose(out.prev_sample, ref.prev_sample, atol=1e-5)
    plain = _one_step(getattr(ms, name).from_config(SD15), return_dict=False)
    assert type(plain) is tuple and len(plain) == len(
        _one_step(getattr(diffusers, name)(), return_dict=False)
    )


def test_positional_eta_and_order_mean_what_they_mean_in_diffusers():
    # DDIM's 4th positional argument is eta; with eta = 1 the step draws noise from the 6th, generator
    mine = _one_step(ms.DDIMScheduler.from_config(SD15), 1.0, False, torch.Generator().manual_seed(5))
    ref = _one_step(diffusers.DDIMScheduler.from_config(SD15), 1.0, False, torch.Generator().manual_seed(5))
    assert relative_max_diff(mine.prev_sample, ref.prev_sample) < 1e-5
    mine = _one_step(ms.LMSDiscreteScheduler.from_config(SD15), 2)  # LMS: order
    ref = _one_step(diffusers.LMSDiscreteScheduler.from_config(SD15), 2)
    assert relative_max_diff(mine.prev_sample, ref.prev_sample) < 1e-5


@pytest.mark.parametrize(
    "name, kwargs",
    [("DDPMScheduler", {}), ("EulerAncestralDiscreteScheduler", {}), ("DDIMScheduler", {"eta": 1.0})],
)
def test_seeded_stochastic_step_equals_diffusers(name, kwargs):
    mine = _one_step(
        getattr(ms, name).from_config(SD15), generator=torch.Generator().manual_seed(9), **kwargs
    )
    ref = _one_step(
        getattr(diffusers, name).from_config(SD15), generator=torch.Generator().manual_seed(9), **kwargs
    )
    assert relative_max_diff(mine.prev_sample, ref.prev_sample) < 1e-5
    assert relative_max_diff(mine.pred_original_sample, ref.pred_original_sample) < 1e-5


def test_ddpm_runs_before_set_timesteps_like_diffusers():
    mine, ref = ms.DDPMScheduler.from_config(SD15), diffusers.DDPMScheduler.from_config(SD15)
    assert torch.equal(mine.timesteps, ref.timesteps)  # all 1000 training steps
    x = torch.randn(1, 4, 8, 8)
    for t in mine.timesteps[:3]:
        a = mine.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(int(t))).prev_sample
        b = ref.step(0.1 * x, t, x, generator=torch.Generator().manual_seed(int(t))).prev_sample
        assert relative_max_diff(a, b) < 1e-5


def test_save_load_round_trip_and_numpy_trained_betas(tmp_path):
    betas = np.linspace(1e-4, 2e-2, 1000)
    mine = ms.DDIMScheduler(trained_betas=betas, timestep_spacing="trailing")
    mine.save_pretrained(tmp_path)
    again = ms.DDIMScheduler.from_pretrained(tmp_path)
    assert torch.equal(again.betas, mine.betas) and again.config.timestep_spacing == "trailing"
    ref = diffusers.DDIMScheduler.from_pretrained(tmp_path)  # diffusers reads our file
    assert torch.equal(ref.betas, mine.betas)
    diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear").save_config(tmp_path / "euler")
    assert (
        ms.EulerDiscreteScheduler.from_pretrained(tmp_path / "euler").config.beta_schedule == "scaled_linear"
    )


CHAIN = [
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "LMSDiscreteScheduler",
]


@pytest.mark.parametrize("start", [{}, {"timestep_spacing": "trailing", "steps_offset": 1}])
def test_swapping_schedulers_keeps_configs_like_diffusers(start):
    # pipe.scheduler = X.from_config(pipe.scheduler.config): defaults of the new class apply unless set
    mine, ref = ms.PNDMScheduler(**start), diffusers.PNDMScheduler(**start)
    for name in CHAIN[1:]:
        mine, ref = (
            getattr(ms, name).from_config(mine.config),
            getattr(diffusers, name).from_config(ref.config),
        )
        keys = set(inspect.signature(type(ref).__init__).parameters) - {"self"}
        assert {k: mine.config[k] for k in keys} == {k: ref.config[k] for k in keys}, name
    assert mine.compatibles and all(issubclass(c, ms.SchedulerMixin) for c in mine.compatibles)


def test_dpm_solver_takes_a_deis_config_like_diffusers():
    deis = diffusers.DEISMultistepScheduler.from_config(SD15)
    mine, ref = (
        ms.DPMSolverMultistepScheduler.from_config(deis.config),
        diffusers.DPMSolverMultistepScheduler.from_config(deis.config),
    )
    assert (mine.config.algorithm_type, mine.config.solver_type) == ("dpmsolver++", "midpoint")
    assert (ref.config.algorithm_type, ref.config.solver_type) == ("dpmsolver++", "midpoint")


@pytest.mark.parametrize("steps", [10, 50])
def test_full_pndm_with_runge_kutta_equals_diffusers_step_by_step(steps):
    config = {**SD15, "skip_prk_steps": False}
    mine, ref = ms.PNDMScheduler.from_config(config), diffusers.PNDMScheduler.from_config(config)
    assert ms.PNDMScheduler().config.skip_prk_steps is False  # diffusers' default
    mine.set_timesteps(steps)
    ref.set_timesteps(steps)
    assert torch.equal(mine.timesteps, ref.timesteps) and len(mine.timesteps) == steps - 3 + 12
    x = y = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in mine.timesteps:
        x = mine.step(torch.tanh(x) + float(t) / 1000, t, x).prev_sample
        y = ref.step(torch.tanh(y) + float(t) / 1000, t, y).prev_sample
        assert relative_max_diff(x, y) < 1e-5, int(t)


def _loop(scheduler, **set_kwargs):
    scheduler.set_timesteps(**set_kwargs)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    seeded = "generator" in inspect.signature(scheduler.step).parameters
    kwargs = {"generator": torch.Generator().manual_seed(1)} if seeded else {}
    for t in scheduler.timesteps:
        x = scheduler.step(torch.tanh(scheduler.scale_model_input(x, t)), t, x, **kwargs).prev_sample
    return scheduler.timesteps, x


@pytest.mark.parametrize(
    "name, set_kwargs",
    [
        ("DDPMScheduler", {"timesteps": [900, 700, 400, 120, 3]}),
        ("DPMSolverMultistepScheduler", {"timesteps": [950, 700, 420, 200, 50]}),
        ("EulerDiscreteScheduler", {"timesteps": [950.0, 700.0, 420.5, 200.0, 50.0]}),
        ("EulerDiscreteScheduler", {"sigmas": [14.0, 6.0, 2.5, 0.9, 0.3, 0.0]}),
    ],
)
def test_custom_timesteps_and_sigmas_equal_diffusers(name, set_kwargs):
    t_mine, x_mine = _loop(getattr(ms, name).from_config(SD15), **set_kwargs)
    t_ref, x_ref = _loop(getattr(diffusers, name).from_config(SD15), **set_kwargs)
    assert torch.allclose(t_mine.double(), t_ref.double(), atol=1e-4)
    assert relative_max_diff(x_mine, x_ref) < 1e-4


@pytest.mark.parametrize("steps", [61, 103])
@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "LMSDiscreteScheduler"])
def test_trailing_karras_at_step_counts_where_the_grid_rounds_long(name, steps):
    config = {**SD15, "timestep_spacing": "trailing", "use_karras_sigmas": True}
    t_mine, x_mine = _loop(getattr(ms, name).from_config(config), num_inference_steps=steps)
    t_ref, x_ref = _loop(getattr(diffusers, name).from_config(config), num_inference_steps=steps)
    assert len(t_mine) == len(t_ref) == steps
    assert torch.allclose(t_mine, t_ref, atol=1e-3) and relative_max_diff(x_mine, x_ref) < 1e-4


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
def test_thresholding_equals_diffusers(name):
    config = {**SD15, "thresholding": True, "sample_max_value": 1.5, "prediction_type": "sample"}
    mine = _one_step(getattr(ms, name).from_config(config), generator=torch.Generator().manual_seed(1))
    ref = _one_step(getattr(diffusers, name).from_config(config), generator=torch.Generator().manual_seed(1))
    assert relative_max_diff(mine.pred_original_sample, ref.pred_original_sample) < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_unimplemented_options_are_named(name):
    for key in ("use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas"):
        if key in inspect.signature(getattr(ms, name).__init__).parameters:
            with pytest.raises(NotImplementedError, match=key):
                getattr(ms, name)(**{key: True})
