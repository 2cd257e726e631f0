"""Chapter 11's exercise checkers pass correct answers written independently and fail plausible wrong ones."""

import numpy as np
import torch
import torch.nn.functional as F

from minisd.book import checks


def sobel(x, mode="reflect", swap=False, sign=1):
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype)
    padded = F.pad(x, (1, 1, 1, 1), mode=mode)
    gx = F.conv2d(padded, kx.view(1, 1, 3, 3)) * sign
    gy = F.conv2d(padded, kx.T.reshape(1, 1, 3, 3)) * sign
    return (gy, gx) if swap else (gx, gy)


def test_sobel_checker(capsys):
    assert checks.sobel_gradients(sobel)
    assert "all passed" in capsys.readouterr().out
    for wrong in [dict(mode="replicate"), dict(mode="constant"), dict(swap=True), dict(sign=-1)]:
        assert not checks.sobel_gradients(lambda x, w=wrong: sobel(x, **w)), wrong
        assert "FAIL sobel_gradients" in capsys.readouterr().out


def window(n, start, end, kind="right"):
    if kind == "right":  # kept when the step's whole span [i/n, (i+1)/n] is inside [start, end]
        return [start <= i / n and (i + 1) / n <= end for i in range(n)]
    if kind == "start only":  # the step's start inside the window
        return [start <= i / n < end for i in range(n)]
    return [start <= (i + 1) / n <= end for i in range(n)]  # the step's end inside


def test_guidance_window_checker(capsys):
    assert checks.guidance_window(window)
    for wrong in ["start only", "end only"]:
        assert not checks.guidance_window(lambda n, s, e, k=wrong: window(n, s, e, k)), wrong
        assert "FAIL guidance_window" in capsys.readouterr().out


def count(config, embedding, zero_convs=True, cond_embedding=True, mid_block=True):
    """A reader's count, written from the architecture: the UNet's encoder, then what ControlNet adds."""
    c, layers, d = config["block_out_channels"], config["layers_per_block"], config["cross_attention_dim"]
    temb = 4 * c[0]

    def res(cin, cout):
        n = 2 * cin + 2 * cout  # two GroupNorms
        n += cin * cout * 9 + cout + cout * cout * 9 + cout + temb * cout + cout
        return n + (cin * cout + cout if cin != cout else 0)

    def attn(ch):  # Transformer2DModel with conv proj_in / proj_out, one BasicTransformerBlock
        n = 2 * ch + 2 * (ch * ch + ch)  # norm, proj_in, proj_out
        n += 3 * 2 * ch  # three LayerNorms
        n += 3 * ch * ch + ch * ch + ch  # self-attention q, k, v, out
        n += ch * ch + 2 * d * ch + ch * ch + ch  # cross-attention
        return n + ch * 8 * ch + 8 * ch + 4 * ch * ch + ch  # GEGLU feed-forward

    total = 4 * 9 * c[0] + c[0] + (c[0] * temb + temb) + (temb * temb + temb)  # conv_in, time embedding
    skips, cin = [c[0]], c[0]
    for i, (kind, cout) in enumerate(zip(config["down_block_types"], c, strict=True)):
        for _ in range(layers):
            total += res(cin, cout) + (attn(cout) if kind.startswith("CrossAttn") else 0)
            cin = cout
            skips.append(cout)
        if i < len(c) - 1:
            total += cout * cout * 9 + cout
            skips.append(cout)
    if mid_block:
        total += 2 * res(c[-1], c[-1]) + attn(c[-1])
    if zero_convs:
        total += sum(s * s + s for s in skips) + c[-1] * c[-1] + c[-1]
    if cond_embedding:
        e = embedding
        total += 3 * e[0] * 9 + e[0]
        total += sum(a * a * 9 + a + a * b * 9 + b for a, b in zip(e[:-1], e[1:], strict=True))
        total += e[-1] * c[0] * 9 + c[0]
    return total


def test_controlnet_param_count_checker(capsys):
    assert checks.controlnet_param_count(count)
    assert "all passed" in capsys.readouterr().out
    for wrong in [dict(zero_convs=False), dict(cond_embedding=False), dict(mid_block=False)]:
        assert not checks.controlnet_param_count(lambda c, e, w=wrong: count(c, e, **w)), wrong
        assert "FAIL controlnet_param_count" in capsys.readouterr().out


def iou(a, b, kind="right"):
    inter, union = (a & b).sum(), (a | b).sum()
    if kind == "recall":
        return inter / b.sum() if b.sum() else 1.0
    if kind == "dice":
        return 2 * inter / (a.sum() + b.sum()) if union else 1.0
    if kind == "empty zero":
        return inter / union if union else 0.0
    return inter / union if union else 1.0


def test_mask_iou_checker(capsys):
    assert checks.mask_iou(iou)
    for wrong in ["recall", "dice", "empty zero"]:
        assert not checks.mask_iou(lambda a, b, k=wrong: iou(a, b, k)), wrong
        assert "FAIL mask_iou" in capsys.readouterr().out
    assert not checks.mask_iou(lambda a, b: np.nan)
