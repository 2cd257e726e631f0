"""Long prompts: 75-token chunks, BREAK, the last-comma rule, weights; parity with diffusers fed the
concatenated embeddings that transformers' text encoder gives for each chunk."""

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler
from diffusers import StableDiffusionPipeline as RefPipeline
from tiny_sd import save_diffusers_pipeline

from minisd.__main__ import main
from minisd.models.tokenizer import CLIPTokenizer
from minisd.pipelines import StableDiffusionPipeline
from minisd.pipelines.long_prompt import CHUNK, apply_weights, chunk_prompt, encode_long_prompts
from minisd.shapes import tiny_model_path

SIZE = 64
SOT, EOT = 49406, 49407
LONG = " ".join(["a photograph of an astronaut riding a horse on the moon"] * 12)  # 132 tokens


@pytest.fixture(scope="module")
def tok():
    return CLIPTokenizer()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_diffusers_pipeline(tmp_path_factory.mktemp("long") / "sd")


@pytest.fixture(scope="module")
def tiny():
    return StableDiffusionPipeline.from_pretrained(tiny_model_path(), device="cpu")


def test_chunks_are_framed_and_padded(tok):
    body = tok.encode(LONG)[1:-1]
    chunks = chunk_prompt(tok, LONG)
    assert len(body) > CHUNK and len(chunks) == 2
    assert all(len(ids) == len(w) == 77 and ids[0] == SOT and ids[-1] == EOT for ids, w in chunks)
    assert chunks[0][0][1:76] == body[:75] and chunks[1][0][1 : 1 + len(body) - 75] == body[75:]
    assert chunks[1][0][1 + len(body) - 75 :] == [EOT] * (76 - len(body) + 75)


def test_break_starts_a_new_chunk(tok):
    chunks = chunk_prompt(tok, "a red circle BREAK on a blue background")
    assert [ids[: ids.index(EOT)] for ids, _ in chunks] == [
        tok.encode("a red circle")[:-1],
        tok.encode("on a blue background")[:-1],
    ]
    assert len(chunk_prompt(tok, "BREAK a")) == 2  # an all-padding first chunk, as the web UI
    assert len(chunk_prompt(tok, "a BREAK")) == 1


def test_last_comma_rule(tok):
    near = "x " * 70 + ", a b c d e f g"  # the comma is token 71: 4 tokens after it move on
    first, second = (ids for ids, _ in chunk_prompt(tok, near))
    assert first[71] == tok.vocab[",</w>"] and first[72:] == [EOT] * 5
    assert second[1:8] == tok.encode("a b c d e f g")[1:-1]
    far = "x " * 50 + ", " + "y " * 30  # the comma is 25 tokens back: the chunk is simply cut
    first, second = (ids for ids, _ in chunk_prompt(tok, far))
    assert first[1:76] == tok.encode(far)[1:76]
    assert chunk_prompt(tok, near, comma_backtrack=0)[0][0][1:76] == tok.encode(near)[1:76]


def test_weights_follow_the_tokens(tok):
    ((ids, weights),) = chunk_prompt(tok, "a (red:1.5) [circle]")
    assert ids[:5] == tok.encode("a red circle")[:4] + [EOT]
    assert weights[:5] == pytest.approx([1.0, 1.0, 1.5, 1 / 1.1, 1.0])


def test_weighting_scales_tokens_and_keeps_the_mean():
    z = torch.randn(2, 77, 16) + 0.3
    w = torch.ones(2, 77)
    w[0, 3], w[1, 5] = 1.5, 0.5
    out = apply_weights(z, w)
    assert torch.allclose(out.mean(dim=(1, 2)), z.mean(dim=(1, 2)), atol=1e-6)
    ratio = out / z  # one scale per row, times the weight of each token
    assert torch.allclose(ratio[0, 3] / ratio[0, 0], torch.tensor(1.5), atol=1e-5)
    assert torch.allclose(ratio[1, 5] / ratio[1, 0], torch.tensor(0.5), atol=1e-5)


def test_short_prompt_equals_the_plain_path(tiny):
    """One chunk, no weights: the same ids and the same image (with the tiny model's text mask)."""
    kwargs = dict(num_inference_steps=3, output_type="np", progress=False, negative_prompt="a blue square")
    plain = tiny("a red circle on a green background", generator=torch.Generator().manual_seed(0), **kwargs)
    long = tiny(
        "a red circle on a green background",
        generator=torch.Generator().manual_seed(0),
        long_prompt=True,
        **kwargs,
    )
    assert np.array_equal(plain.images, long.images)


def test_truncation_warning_says_how_to_opt_in(tok):
    with pytest.warns(UserWarning, match="long_prompt=True"):
        tok(LONG)


def reference_embeds(ref, text: str, chunks: int) -> torch.Tensor:
    """transformers' tokenizer and text encoder, chunk by chunk: [1, 77 * chunks, D]."""
    body = ref.tokenizer(text, add_special_tokens=False).input_ids
    out = []
    for i in range(chunks):
        part = body[75 * i : 75 * (i + 1)]
        ids = torch.tensor([[SOT, *part, EOT] + [EOT] * (75 - len(part))])
        with torch.no_grad():
            out.append(ref.text_encoder(ids)[0])
    return torch.cat(out, dim=1)


def test_long_prompt_image_equals_diffusers_fed_the_embeddings(folder):
    ref = RefPipeline.from_pretrained(folder).to("cpu")
    ref.scheduler = PNDMScheduler.from_config(ref.scheduler.config)
    pipe = StableDiffusionPipeline.from_pretrained(folder, device="cpu")
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(1))
    args = dict(num_inference_steps=3, height=SIZE, width=SIZE, output_type="np", latents=latents)
    cond, uncond = reference_embeds(ref, LONG, 2), reference_embeds(ref, "", 2)
    assert cond.shape == (1, 154, 32)
    want = ref(prompt_embeds=cond, negative_prompt_embeds=uncond, **args).images
    got = pipe(LONG, long_prompt=True, progress=False, **args).images
    assert want.std() > 0.01 and np.abs(got - want).max() < 2e-3
    # and our own embeddings equal the reference's, and any chunk count is accepted as prompt_embeds
    ours, _ = encode_long_prompts(pipe.tokenizer, pipe.text_encoder, LONG)
    assert torch.allclose(ours, cond, atol=1e-4)
    again = pipe(prompt_embeds=cond, long_prompt=True, progress=False, **args).images
    assert np.abs(again - want).max() < 2e-3
    with pytest.raises(ValueError, match="long_prompt=True"):
        pipe(prompt_embeds=cond, progress=False, **args)  # the plain path cannot match a 77-token negative


def test_embeddings_not_a_multiple_of_77_are_refused(folder):
    pipe = StableDiffusionPipeline.from_pretrained(folder, device="cpu")
    with pytest.raises(ValueError, match="multiple of 77"):
        pipe(prompt_embeds=torch.zeros(1, 100, 32), long_prompt=True, num_inference_steps=1, progress=False)


def test_cli_long_prompt(tmp_path, capsys):
    out = tmp_path / "long.png"
    main(
        [
            "generate",
            "a red circle, " * 30 + "on a blue background",
            "--long-prompt",
            "--steps",
            "2",
            "-o",
            str(out),
        ]
    )
    assert out.is_file()
