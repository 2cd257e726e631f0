"""The shared layers (attention, ResNet, resampling, timestep embedding) against diffusers."""

import pytest
import torch
from diffusers.models.attention_processor import Attention as RefAttention
from diffusers.models.downsampling import Downsample2D as RefDownsample2D
from diffusers.models.embeddings import TimestepEmbedding as RefTimestepEmbedding
from diffusers.models.embeddings import get_timestep_embedding as ref_timestep_embedding
from diffusers.models.resnet import ResnetBlock2D as RefResnetBlock2D
from diffusers.models.upsampling import Upsample2D as RefUpsample2D

from minisd.models.attention import Attention
from minisd.models.embeddings import TimestepEmbedding, get_timestep_embedding
from minisd.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from minisd.models.vae import SpatialSelfAttention


def assert_same(ours, ref, *inputs, atol=1e-5):
    # diffusers registers Downsample2D's conv twice (`conv` and the alias `Conv2d_0`)
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("Conv2d_0")}
    ours.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(*inputs), ref(*inputs), atol=atol, rtol=1e-5)


def test_cross_attention_matches_diffusers():
    ref = RefAttention(64, cross_attention_dim=32, heads=4, dim_head=16)
    assert_same(Attention(64, 32, heads=4, dim_head=16), ref, torch.randn(2, 10, 64), torch.randn(2, 7, 32))


def test_self_attention_matches_diffusers():
    ref = RefAttention(64, heads=8, dim_head=8)
    assert_same(Attention(64, heads=8, dim_head=8), ref, torch.randn(2, 10, 64))


def test_spatial_attention_matches_diffusers_vae_block():
    ref = RefAttention(
        64,
        heads=1,
        dim_head=64,
        norm_num_groups=32,
        eps=1e-6,
        bias=True,
        upcast_softmax=True,
        residual_connection=True,
        _from_deprecated_attn_block=True,
    )
    ours = SpatialSelfAttention(64, groups=32)
    assert_same(ours, ref, torch.randn(2, 64, 8, 8))


@pytest.mark.parametrize("cin,cout,temb", [(64, 128, 256), (64, 64, 256), (64, 64, None)])
def test_resnet_block_matches_diffusers(cin, cout, temb):
    ref = RefResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=temb, eps=1e-5)
    ours = ResnetBlock2D(cin, cout, temb, eps=1e-5)
    t = torch.randn(2, temb) if temb else None
    assert_same(ours, ref, torch.randn(2, cin, 8, 8), t)


@pytest.mark.parametrize("padding", [0, 1])
def test_downsample_matches_diffusers(padding):
    ref = RefDownsample2D(64, use_conv=True, padding=padding, name="conv")
    assert_same(Downsample2D(64, padding=padding), ref, torch.randn(2, 64, 9, 8))


def test_upsample_matches_diffusers():
    assert_same(Upsample2D(64), RefUpsample2D(64, use_conv=True), torch.randn(2, 64, 5, 8))


@pytest.mark.parametrize("flip,shift", [(True, 0), (False, 1)])
def test_timestep_embedding_matches_diffusers(flip, shift):
    t = torch.tensor([0, 1, 250, 999])
    ours = get_timestep_embedding(t, 320, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    ref = ref_timestep_embedding(t, 320, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    torch.testing.assert_close(ours, ref)
    assert_same(TimestepEmbedding(320, 1280), RefTimestepEmbedding(320, 1280), torch.randn(2, 320))
