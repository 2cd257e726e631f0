"""The chapter 02 checkers pass the intended answers and reject plausible wrong ones."""

import pytest
import torch

from minisd.book import checks


def params(config, biases=True, norms=True, final_norm=True, positions=True, projections=4):
    d, f = config["hidden_size"], config["intermediate_size"]
    attention = projections * (d * d + d * biases)
    mlp = d * f + f * biases + f * d + d * biases
    layer = attention + mlp + 2 * 2 * d * norms
    embeddings = config["vocab_size"] * d + config["max_position_embeddings"] * d * positions
    return embeddings + config["num_hidden_layers"] * layer + 2 * d * final_norm


def test_text_encoder_params_passes_the_answer(capsys):
    assert checks.text_encoder_params(params)
    assert "all passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        lambda c: params(c, biases=False),
        lambda c: params(c, norms=False),
        lambda c: params(c, final_norm=False),
        lambda c: params(c, positions=False),
        lambda c: params(c, projections=3),
        lambda c: params(dict(c, intermediate_size=4 * c["hidden_size"])),
    ],
    ids=[
        "no biases",
        "no layer norms",
        "no final norm",
        "no position table",
        "no out_proj",
        "MLP assumed 4x",
    ],
)
def test_text_encoder_params_rejects_wrong_answers(wrong, capsys):
    assert not checks.text_encoder_params(wrong)
    assert "FAIL text_encoder_params" in capsys.readouterr().out


def changed(ids_a, ids_b):
    return (ids_a != ids_b).int().cummax(dim=0).values.bool()  # from the first difference on


def test_changed_outputs_passes_the_answer(capsys):
    assert checks.changed_outputs(changed)
    assert "all passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        lambda a, b: a != b,
        lambda a, b: torch.full(a.shape, bool((a != b).any())),
        lambda a, b: changed(a, b).flip(0).cummax(dim=0).values.flip(0),
        lambda a, b: torch.cat([torch.zeros(1, dtype=torch.bool), changed(a, b)[:-1]]),
    ],
    ids=["only the changed tokens", "all or nothing", "up to the change (backwards)", "one place late"],
)
def test_changed_outputs_rejects_wrong_answers(wrong, capsys):
    assert not checks.changed_outputs(wrong)
    assert "FAIL changed_outputs" in capsys.readouterr().out


def skip(hidden_states, final_layer_norm, clip_skip, offset=1, norm=True):
    state = hidden_states[-(clip_skip + offset)]
    return final_layer_norm(state) if norm else state


def test_clip_skip_state_passes_the_answer(capsys):
    assert checks.clip_skip_state(skip)
    assert "all passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        lambda h, ln, k: skip(h, ln, k, norm=False),
        lambda h, ln, k: skip(h, ln, k, offset=0) if k else ln(h[-1]),
        lambda h, ln, k: skip(h, ln, k, offset=2),
        lambda h, ln, k: ln(h[k]),
    ],
    ids=[
        "no final LayerNorm",
        "clip_skip=1 is the last layer",
        "one layer too deep",
        "counted from the bottom",
    ],
)
def test_clip_skip_state_rejects_wrong_answers(wrong, capsys):
    assert not checks.clip_skip_state(wrong)
    assert "FAIL clip_skip_state" in capsys.readouterr().out
