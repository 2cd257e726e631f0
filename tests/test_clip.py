"""minisd.models.clip.CLIPTextModel against transformers.CLIPTextModel with random weights."""

import json

import pytest
import torch
import transformers
from conftest import relative_max_diff
from safetensors.torch import load_file, save_file

from minisd.loading import CheckpointError, sd15_config
from minisd.models.clip import CLIPTextModel

SD15 = sd15_config("text_encoder")
SMALL = {
    **SD15,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "vocab_size": 1000,
}


def reference(config: dict) -> transformers.CLIPTextModel:
    ref_config = transformers.CLIPTextConfig(
        **{k: v for k, v in config.items() if k not in ("architectures", "bos_token_id", "eos_token_id")},
        attn_implementation="sdpa",
    )
    return transformers.CLIPTextModel(ref_config).eval()


def ours_from(ref: transformers.CLIPTextModel, config: dict) -> CLIPTextModel:
    model = CLIPTextModel.from_config(config)
    model.load_state_dict(CLIPTextModel.convert_state_dict(ref.state_dict()), strict=True)
    return model.eval()


def ref_output(ref, ids, clip_skip):
    with torch.no_grad():
        out = ref(ids, output_hidden_states=True)
        return ref.final_layer_norm(out.hidden_states[-(clip_skip + 1)])


def check_parity(config: dict, batch: int, tokens: int):
    ref = reference(config)
    ours = ours_from(ref, config)
    ids = torch.randint(0, config["vocab_size"], (batch, tokens))
    diffs = {}
    for clip_skip in (0, 1):
        with torch.no_grad():
            got = ours(ids, clip_skip=clip_skip).last_hidden_state
        want = ref_output(ref, ids, clip_skip)
        assert got.shape == (batch, tokens, config["hidden_size"])
        diffs[clip_skip] = (got - want).abs().max().item()
        assert diffs[clip_skip] < 1e-4, diffs
        assert relative_max_diff(got, want) < 1e-5
    # clip_skip=0 is transformers' own last_hidden_state
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], ref(ids).last_hidden_state, atol=1e-4, rtol=1e-5)
    return ours, ref, ids


def test_small_config_matches_transformers():
    ours, ref, ids = check_parity(SMALL, batch=2, tokens=77)
    with torch.no_grad():
        want = ref(ids, output_hidden_states=True).hidden_states
        got = ours(ids, output_hidden_states=True).hidden_states
        assert len(got) == len(want) == SMALL["num_hidden_layers"] + 1
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-5)
        got = ours(ids, clip_skip=2).last_hidden_state
        torch.testing.assert_close(got, ref_output(ref, ids, 2), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("eos_token_id", [2, 49407], ids=["v1.5-stale-eos", "eos-49407"])
def test_outputs_pooling_and_masks_match_transformers(eos_token_id):
    """transformers' conventions: [0] is last_hidden_state, [1] the pooled EOT state; hidden_states
    only when asked; return_dict=False a plain tuple; attention_mask and position_ids honoured."""
    config = {**SMALL, "vocab_size": 49408, "eos_token_id": eos_token_id}
    ref = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(**{k: v for k, v in config.items() if k != "architectures"})
    ).eval()
    ours = ours_from(ref, config)
    ids = torch.full((2, 12), 49407)
    ids[:, 0] = 49406
    ids[0, 1:4], ids[1, 1:7] = torch.tensor([320, 1929, 530]), torch.tensor([320, 1929, 530, 22, 23, 24])
    mask = (torch.arange(12) <= torch.tensor([[4], [7]])).long()  # [2, 12]: the prompt and its EOT
    positions = torch.arange(12).flip(0)[None].expand(2, -1)
    with torch.no_grad():
        out, want = ours(ids), ref(ids)
        assert len(out) == 2 and out.hidden_states is None
        assert out[0].shape == (2, 12, SMALL["hidden_size"]) and out[1].shape == (2, SMALL["hidden_size"])
        torch.testing.assert_close(out.pooler_output, want.pooler_output, atol=1e-4, rtol=1e-5)
        plain = ours(ids, return_dict=False)
        assert type(plain) is tuple and len(plain) == 2
        assert len(ours(ids, output_hidden_states=True)) == 3
        got = ours(ids, attention_mask=mask, position_ids=positions)
        want = ref(ids, attention_mask=mask, position_ids=positions)
        torch.testing.assert_close(got[0], want.last_hidden_state, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(got[1], want.pooler_output, atol=1e-4, rtol=1e-5)
        assert (got[0] - out[0]).abs().max() > 1e-3  # the mask and positions change the result
    with pytest.raises(NotImplementedError, match="output_attentions"):
        ours(ids, output_attentions=True)


def test_shorter_sequences_and_causality():
    ours, _, ids = check_parity(SMALL, batch=1, tokens=10)
    changed = ids.clone()
    changed[0, 6] = (ids[0, 6] + 1) % SMALL["vocab_size"]
    with torch.no_grad():
        a, b = ours(ids)[0], ours(changed)[0]
    assert torch.equal(a[:, :6], b[:, :6])  # earlier tokens cannot see a later change
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_attention_probs_are_causal_and_match_the_layer():
    model = CLIPTextModel.from_config(SMALL).eval()
    attn = model.text_model.encoder.layers[0].self_attn
    x = torch.randn(2, 9, SMALL["hidden_size"])
    probs = attn.attention_probs(x)  # [B, h, N, N]
    assert probs.shape == (2, SMALL["num_attention_heads"], 9, 9)
    assert torch.all(probs.triu(1) == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, SMALL["num_attention_heads"], 9))
    v = attn.v_proj(x).view(2, 9, SMALL["num_attention_heads"], -1).transpose(1, 2)
    by_hand = attn.out_proj((probs @ v).transpose(1, 2).reshape(2, 9, -1))
    torch.testing.assert_close(by_hand, attn(x), atol=1e-5, rtol=1e-5)


def test_quick_gelu_matches_transformers():
    from transformers.activations import ACT2FN

    from minisd.models.clip import quick_gelu

    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(quick_gelu(x), ACT2FN["quick_gelu"](x))


@pytest.mark.slow
def test_v15_config_matches_transformers():
    ours, ref, _ = check_parity(SD15, batch=1, tokens=77)
    assert ours.num_parameters() == sum(p.numel() for p in ref.parameters()) == 123_060_480


def test_v15_parameter_count_on_meta_device():
    with torch.device("meta"):
        model = CLIPTextModel.from_config(SD15)
    assert model.num_parameters() == 123_060_480


def test_from_pretrained_transformers_save_pretrained(tmp_path):
    ref = reference(SMALL)
    ref.save_pretrained(tmp_path)  # transformers 5: keys without `text_model.`
    assert not any(k.startswith("text_model.") for k in load_file(tmp_path / "model.safetensors"))
    ours = CLIPTextModel.from_pretrained(tmp_path)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 77))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], ref(ids).last_hidden_state, atol=1e-4, rtol=1e-5)


def test_from_pretrained_official_layout_with_position_ids(tmp_path):
    """SD v1.5's text_encoder/model.safetensors: `text_model.*` keys plus a `position_ids` buffer."""
    ref = reference(SMALL)
    ref.save_pretrained(tmp_path)
    state = {f"text_model.{k}": v for k, v in load_file(tmp_path / "model.safetensors").items()}
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    save_file(state, tmp_path / "model.safetensors")
    ours = CLIPTextModel.from_pretrained(tmp_path, dtype=torch.float64)
    assert ours.dtype == torch.float64
    ids = torch.randint(0, SMALL["vocab_size"], (1, 77))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0].float(), ref(ids).last_hidden_state, atol=1e-4, rtol=1e-5)


def test_save_pretrained_round_trip(tmp_path):
    model = CLIPTextModel.from_config(SMALL)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert all(k.startswith("text_model.") for k in load_file(tmp_path / "model.safetensors"))
    again = CLIPTextModel.from_pretrained(tmp_path)
    ids = torch.randint(0, SMALL["vocab_size"], (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(again(ids)[0], model.eval()(ids)[0])


def test_wrong_size_checkpoint_is_rejected(tmp_path):
    reference({**SMALL, "num_hidden_layers": 2}).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match=r"missing keys: text_model\.encoder\.layers\.2"):
        CLIPTextModel.from_pretrained(tmp_path)


def test_foreign_checkpoint_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SMALL))
    save_file({"conv_in.weight": torch.zeros(4, 4, 3, 3)}, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"(?s)does not fit CLIPTextModel.*unexpected keys: conv_in\.weight"
    ):
        CLIPTextModel.from_pretrained(tmp_path)


def test_bad_inputs_raise_clear_errors():
    model = CLIPTextModel.from_config(SMALL)
    with pytest.raises(ValueError, match="78 tokens.*only 77 positions"):
        model(torch.zeros(1, 78, dtype=torch.long))
    with pytest.raises(ValueError, match=r"clip_skip must be in 0\.\.2"):
        model(torch.zeros(1, 5, dtype=torch.long), clip_skip=3)
    with pytest.raises(ValueError, match="clip_skip must be in"):
        model(torch.zeros(1, 5, dtype=torch.long), clip_skip=-1)
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"\[0, 1000\).*different tokenizer"):
        model(torch.tensor([[49406, 1, 49407]]))
    with pytest.raises(ValueError, match="hidden_act 'relu' is not supported"):
        CLIPTextModel.from_config(SMALL, hidden_act="relu")
    with pytest.raises(NotImplementedError, match=r"attention_dropout=0\.1"):
        CLIPTextModel.from_config(SMALL, attention_dropout=0.1)
