"""Textual inversion: the web UI's and diffusers' embedding files load into minisd as into diffusers
(same ids, same images), multi-vector names, bad files refused clearly; training one on the tiny model."""

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler
from diffusers import StableDiffusionPipeline as RefPipeline
from safetensors.torch import save_file
from tiny_sd import save_diffusers_pipeline

from minisd.pipelines import StableDiffusionPipeline

SIZE = 64
WIDTH = 32  # the test text encoder's


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_diffusers_pipeline(tmp_path_factory.mktemp("ti") / "sd")


def vectors(n, width=WIDTH, seed=0):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def write(path, layout, token, vecs):
    """An embedding file in one of the shared layouts."""
    if layout == "webui_pt":
        torch.save({"string_to_param": {"*": vecs}, "name": token, "step": 100}, path)
    elif layout == "webui_safetensors":
        save_file({"emb_params": vecs}, path)
    elif layout == "diffusers_safetensors":
        save_file({token: vecs}, path)
    else:  # diffusers' learned_embeds.bin
        torch.save({token: vecs}, path)
    return path


LAYOUTS = {
    "webui_pt": "emb.pt",
    "webui_safetensors": "emb.safetensors",
    "diffusers_safetensors": "learned_embeds.safetensors",
    "diffusers_bin": "learned_embeds.bin",
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("n", [1, 3])
def test_images_equal_diffusers(folder, tmp_path, layout, n):
    path = write(tmp_path / LAYOUTS[layout], layout, "<shiny>", vectors(n))
    ref = RefPipeline.from_pretrained(folder).to("cpu")
    ref.scheduler = PNDMScheduler.from_config(ref.scheduler.config)
    ref.load_textual_inversion(str(path), token="<shiny>")
    pipe = StableDiffusionPipeline.from_pretrained(folder, device="cpu")
    pipe.load_textual_inversion(path, token="<shiny>")
    prompt, negative = "a <shiny> cat on a sofa", "blurry, <shiny>"
    assert (
        pipe.tokenizer.encode(prompt)
        == ref.tokenizer(ref.maybe_convert_prompt(prompt, ref.tokenizer)).input_ids
    )
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(1))
    args = dict(num_inference_steps=2, height=SIZE, width=SIZE, output_type="np", latents=latents)
    want = ref(prompt, negative_prompt=negative, **args).images
    got = pipe(prompt, negative_prompt=negative, progress=False, **args).images
    plain = pipe("a cat on a sofa", negative_prompt="blurry", progress=False, **args).images
    assert np.abs(got - want).max() < 2e-3 and np.abs(got - plain).max() > 1e-2  # the word matters
    table = pipe.text_encoder.text_model.embeddings.token_embedding.weight
    names = ["<shiny>"] + [f"<shiny>_{i}" for i in range(1, n)]
    assert torch.equal(table[[pipe.tokenizer.vocab[t] for t in names]], vectors(n))
    assert len(pipe.tokenizer) == table.shape[0] == 49408 + n


def test_name_stored_in_the_file_is_used(folder, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(folder, device="cpu")
    pipe.load_textual_inversion(write(tmp_path / "a.pt", "webui_pt", "<stored>", vectors(2)))
    assert pipe.tokenizer.encode("<stored>")[1:-1] == [49408, 49409]


def test_bad_inputs(folder, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(folder, device="cpu")
    for width, model in [(1024, "SD 2.x"), (1280, "SDXL")]:
        with pytest.raises(ValueError, match=f"{width}-wide vectors .made for {model}"):
            pipe.load_textual_inversion(
                write(tmp_path / "w.safetensors", "webui_safetensors", "", vectors(1, width)), token="<w>"
            )
    with pytest.raises(ValueError, match="'cat' is already in the vocabulary.*token="):
        pipe.load_textual_inversion(write(tmp_path / "c.bin", "diffusers_bin", "cat", vectors(1)))
    pipe.load_textual_inversion(write(tmp_path / "d.bin", "diffusers_bin", "<d>", vectors(1)))
    with pytest.raises(ValueError, match="'<d>' is already in the vocabulary"):
        pipe.load_textual_inversion(tmp_path / "d.bin")
    save_file({"a": vectors(1), "b": vectors(1)}, tmp_path / "two.safetensors")
    with pytest.raises(ValueError, match="not a textual-inversion embedding"):
        pipe.load_textual_inversion(tmp_path / "two.safetensors", token="<t>")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not be read"):
        pipe.load_textual_inversion(tmp_path / "junk.pt", token="<j>")
    with pytest.raises(ValueError, match="pass token="):
        pipe.load_textual_inversion(write(tmp_path / "e.safetensors", "webui_safetensors", "", vectors(1)))
    with pytest.raises(FileNotFoundError):
        pipe.load_textual_inversion(tmp_path / "missing.pt", token="<m>")
    assert len(pipe.tokenizer) == 49409  # only <d> was added


def test_training_learns_one_row_and_resumes(tmp_path):
    """A few steps on the tiny model: only <cyan>'s row moves (train_embedding checks the rest bit for
    bit), a resumed run equals an uninterrupted one, and the saved file loads back."""
    from minisd.shapes import tiny_model_path
    from minisd.training.textual_inversion import save_embedding, train_embedding

    def fresh():
        return StableDiffusionPipeline.from_pretrained(tiny_model_path(), device="cpu")

    args = dict(batch_size=4, num_images=16, progress=False)
    whole = train_embedding(fresh(), steps=4, **args)
    train_embedding(fresh(), steps=2, checkpoint_dir=tmp_path / "ck", checkpoint_every=2, **args)
    resumed = train_embedding(fresh(), steps=4, checkpoint_dir=tmp_path / "ck", **args)
    assert whole["trained_parameters"] == 64 and len(whole["losses"]) == 4
    assert torch.equal(whole["vector"], resumed["vector"]) and whole["losses"] == resumed["losses"]
    pipe = fresh()
    blue = pipe.text_encoder.text_model.embeddings.token_embedding.weight[pipe.tokenizer.encode("blue")[1]]
    assert not torch.equal(whole["vector"][0], blue)  # it moved from where it started
    pipe.load_textual_inversion(
        save_embedding(tmp_path / "learned_embeds.safetensors", "<cyan>", whole["vector"])
    )
    assert pipe.tokenizer.encode("<cyan>")[1:-1] == [49408]
