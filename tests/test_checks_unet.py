"""Chapter 04's exercise checkers pass the reference and fail known-wrong versions."""

import math

import torch
import torch.nn.functional as F

from minisd.book import checks


def by_hand_attention(q, k, v):
    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    return weights @ v


def test_attention_checker_passes_the_reference_and_a_correct_version():
    assert checks.scaled_dot_product_attention(F.scaled_dot_product_attention)
    assert checks.scaled_dot_product_attention(by_hand_attention)


def test_attention_checker_fails_wrong_versions(capsys):
    def no_scaling(q, k, v):
        return (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v

    def naive_softmax(q, k, v):  # exp without subtracting the max overflows on large logits
        e = torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))
        return e / e.sum(-1, keepdim=True) @ v

    def crashes(q, k, v):
        raise NotImplementedError("write me")

    assert not checks.scaled_dot_product_attention(no_scaling)
    assert not checks.scaled_dot_product_attention(naive_softmax)
    assert "FAIL scaled_dot_product_attention [huge logits" in capsys.readouterr().out
    assert not checks.scaled_dot_product_attention(crashes)


def test_geglu_checker_passes_a_correct_version():
    def by_hand(x, weight, bias):
        hidden, gate = (x @ weight.T + bias).chunk(2, dim=-1)
        return hidden * 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))

    assert checks.geglu(by_hand)


def test_geglu_checker_fails_wrong_versions():
    def swapped(x, weight, bias):
        gate, hidden = F.linear(x, weight, bias).chunk(2, dim=-1)
        return hidden * F.gelu(gate)

    def tanh_gelu(x, weight, bias):
        hidden, gate = F.linear(x, weight, bias).chunk(2, dim=-1)
        return hidden * F.gelu(gate, approximate="tanh")

    assert not checks.geglu(swapped)
    assert not checks.geglu(tanh_gelu)
    assert not checks.geglu(lambda x, w, b: None)
