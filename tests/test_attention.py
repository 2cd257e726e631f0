"""The transformer layers of the UNet (GEGLU, FeedForward, BasicTransformerBlock, Transformer2DModel)."""

import pytest
import torch
from conftest import relative_max_diff
from diffusers.models.activations import GEGLU as RefGEGLU
from diffusers.models.attention import BasicTransformerBlock as RefBasicTransformerBlock
from diffusers.models.attention import FeedForward as RefFeedForward
from diffusers.models.transformers.transformer_2d import Transformer2DModel as RefTransformer2DModel

from minisd.models.attention import GEGLU, BasicTransformerBlock, FeedForward, Transformer2DModel


def load_and_compare(ours, ref, *inputs, tol=1e-6):
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    ref_inputs = {"encoder_hidden_states": inputs[1]} if len(inputs) > 1 else {}
    with torch.no_grad():
        got, want = ours(*inputs), ref(inputs[0], **ref_inputs)
    want = want.sample if hasattr(want, "sample") else want
    assert got.shape == want.shape
    assert relative_max_diff(got, want) < tol


def test_geglu_matches_diffusers():
    load_and_compare(GEGLU(32, 128), RefGEGLU(32, 128), torch.randn(2, 10, 32))


def test_geglu_is_hidden_times_gelu_of_gate():
    layer = GEGLU(8, 16)
    x = torch.randn(3, 8)
    hidden, gate = layer.proj(x)[:, :16], layer.proj(x)[:, 16:]
    expected = hidden * 0.5 * gate * (1 + torch.erf(gate / 2**0.5))
    torch.testing.assert_close(layer(x), expected)


def test_feed_forward_matches_diffusers():
    load_and_compare(FeedForward(32), RefFeedForward(32, activation_fn="geglu"), torch.randn(2, 10, 32))


def test_basic_transformer_block_matches_diffusers():
    ref = RefBasicTransformerBlock(64, 4, 16, cross_attention_dim=24, activation_fn="geglu")
    ours = BasicTransformerBlock(64, 4, 16, cross_attention_dim=24)
    load_and_compare(ours, ref, torch.randn(2, 36, 64), torch.randn(2, 7, 24))


@pytest.mark.parametrize("linear", [False, True])
def test_transformer_2d_matches_diffusers(linear):
    kwargs = dict(in_channels=64, cross_attention_dim=24, norm_num_groups=16, use_linear_projection=linear)
    ref = RefTransformer2DModel(4, 16, **kwargs)
    ours = Transformer2DModel(4, 16, **kwargs)
    load_and_compare(ours, ref, torch.randn(2, 64, 6, 5), torch.randn(2, 7, 24))
    out = ours(torch.randn(2, 64, 6, 5), torch.randn(2, 7, 24))
    assert out.is_contiguous()
