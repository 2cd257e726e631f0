"""The chapter 02 checker passes a correct attention head and fails wrong ones."""

import math

from minisd.book import checks


def head(x, w_q, w_k, w_v, mask, causal=True, scale=True):
    q, k, v = x @ w_q, x @ w_k, x @ w_v  # [N, d]
    scores = q @ k.T / (math.sqrt(q.shape[-1]) if scale else 1.0)  # [N, N]
    if causal:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # [N, d]


def test_attention_head_passes_a_correct_version(capsys):
    assert checks.attention_head(head)
    assert "all passed" in capsys.readouterr().out


def test_attention_head_fails_without_the_causal_mask(capsys):
    assert not checks.attention_head(lambda *a: head(*a, causal=False))
    assert "FAIL attention_head" in capsys.readouterr().out


def test_attention_head_fails_without_the_scale(capsys):
    assert not checks.attention_head(lambda *a: head(*a, scale=False))
    assert "FAIL attention_head" in capsys.readouterr().out


def test_attention_head_reports_a_stub_without_raising(capsys):
    def stub(x, w_q, w_k, w_v, mask):
        raise NotImplementedError("fill me in")

    assert not checks.attention_head(stub)
    assert "raised NotImplementedError" in capsys.readouterr().out
