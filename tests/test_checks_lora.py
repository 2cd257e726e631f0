"""Chapter 09's exercise checkers pass correct answers written independently and fail plausible wrong ones."""

import torch
import torch.nn.functional as F
from torch import nn

from minisd.book import checks


class LoRALinear(nn.Module):
    """A reader's layer; the keyword arguments make the wrong versions."""

    def __init__(self, base, rank, alpha, b_zero=True, a_zero=False, power=1, use_alpha=True, freeze=True):
        super().__init__()
        self.base = base.requires_grad_(not freeze)
        self.A = nn.Parameter(
            torch.zeros(rank, base.in_features) if a_zero else torch.randn(rank, base.in_features) / rank
        )
        self.B = nn.Parameter(
            torch.zeros(base.out_features, rank) if b_zero else torch.randn(base.out_features, rank)
        )
        self.scale = (alpha / rank if use_alpha else 1.0) ** power

    def forward(self, x):
        return self.base(x) + self.scale * (x @ self.A.T @ self.B.T)


def test_lora_linear_checker(capsys):
    assert checks.lora_linear(LoRALinear)
    assert "all passed" in capsys.readouterr().out
    for wrong in [
        dict(b_zero=False),  # B random: a new adapter already changes the model
        dict(a_zero=True),  # A and B both zero: no gradient ever reaches either
        dict(use_alpha=False),  # alpha / r forgotten
        dict(power=2),  # alpha / r applied twice
        dict(freeze=False),  # the base layer trains too
    ]:
        assert not checks.lora_linear(lambda base, r, a, w=wrong: LoRALinear(base, r, a, **w)), wrong
        assert "FAIL lora_linear" in capsys.readouterr().out


def test_lora_linear_checker_wants_the_named_parameters(capsys):
    class Renamed(LoRALinear):  # A and B under other names
        def __init__(self, base, rank, alpha):
            super().__init__(base, rank, alpha)
            self.down, self.up = self.A, self.B
            del self.A, self.B

        def forward(self, x):
            return self.base(x) + self.scale * (x @ self.down.T @ self.up.T)

    assert not checks.lora_linear(Renamed)
    assert "raised AttributeError" in capsys.readouterr().out


def conv_lora(x, base, A, B, alpha, same_stride=True, pad=True, use_alpha=True, power=1):
    rank = A.shape[0]
    h = F.conv2d(x, A, stride=base.stride if same_stride else 1, padding=base.padding if pad else 0)
    return base(x) + ((alpha / rank if use_alpha else 1.0) ** power) * F.conv2d(h, B)


def test_lora_conv_checker():
    assert checks.lora_conv(conv_lora)
    assert not checks.lora_conv(lambda *a: conv_lora(*a, use_alpha=False))  # alpha / r forgotten
    assert not checks.lora_conv(lambda *a: conv_lora(*a, power=2))  # scale twice
    assert not checks.lora_conv(lambda *a: conv_lora(*a, same_stride=False))  # A ignores the stride
    assert not checks.lora_conv(lambda *a: conv_lora(*a, pad=False))  # A ignores the padding


def param_count(model, rank, targets, kernel=True, full=False, bias=False):
    total = 0
    for name, m in model.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        if isinstance(m, nn.Linear):
            d_in, d_out = m.in_features, m.out_features
        elif isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] if kernel else 1
            d_in, d_out = m.in_channels * k, m.out_channels
        else:
            continue
        total += d_in * d_out if full else rank * (d_in + d_out) + (d_out if bias else 0)
    return total


def test_lora_param_count_checker():
    assert checks.lora_param_count(param_count)
    assert not checks.lora_param_count(lambda *a: param_count(*a, kernel=False))  # A as if 1x1
    assert not checks.lora_param_count(lambda *a: param_count(*a, full=True))  # the full ΔW
    assert not checks.lora_param_count(lambda *a: param_count(*a, bias=True))  # a bias on B
