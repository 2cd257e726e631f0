"""Textual inversion: new words whose input embeddings were learned, loaded into a pipeline (chapter 08).

An embedding file holds n vectors of the text encoder's input width (768 for SD v1.x) and a name.
Loading it adds the name to the tokenizer's vocabulary and one row per vector to the text
encoder's token-embedding table; a prompt that says the name then reads those vectors. A
multi-vector embedding is named `<tok>`, `<tok>_1`, ..., `<tok>_{n-1}` (diffusers' names), and
`<tok>` in a prompt stands for all n. The files people share come in three layouts:
    the web UI's .pt          {"string_to_param": {"*": [n, D]}, "name": ..., ...}
    the web UI's .safetensors {"emb_params": [n, D]}
    diffusers' learned_embeds.safetensors / .bin   {"<tok>": [D] or [n, D]}
A name already in the vocabulary is refused (as diffusers does), never silently renamed: pass
`token=` to load the file under another name. `.pt`/`.bin` files are read with
`torch.load(weights_only=True)`, which never runs code stored in the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from minisd.loading.state_dict import load_safetensors

# the tokenizer and text encoder are minisd's CLIPTokenizer and CLIPTextModel (not imported: the model
# modules import loading/, and the imports run one way)

DIFFUSERS_NAMES = ("learned_embeds.safetensors", "learned_embeds.bin")
WIDTHS = {768: "SD v1.x", 1024: "SD 2.x", 1280: "SDXL's second text encoder"}


def _embedding_from_dict(state: object, path: str) -> tuple[str | None, torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return None, state
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    if "string_to_param" in state:  # the web UI's .pt
        params = state["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise ValueError(f"{path}: string_to_param should hold one tensor, found {params!r:.100}")
        return state.get("name"), next(iter(params.values()))
    if "emb_params" in state:  # the web UI's .safetensors
        return None, state["emb_params"]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1 and len(state) == 1:  # diffusers: {token: vectors}
        return next(iter(tensors.items()))
    raise ValueError(
        f"{path} is not a textual-inversion embedding: expected 'string_to_param' (web UI .pt), "
        f"'emb_params' (web UI .safetensors) or one {{token: tensor}} entry (diffusers), found keys "
        f"{sorted(map(str, state))[:8]}"
    )


def read_embedding(path: str | os.PathLike) -> tuple[str | None, torch.Tensor]:
    """(the name the file stores or None, its vectors [n, D]) from any of the three layouts; a folder
    is searched for diffusers' learned_embeds files."""
    path = Path(path)
    if path.is_dir():
        found = [path / n for n in DIFFUSERS_NAMES if (path / n).is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds none of {DIFFUSERS_NAMES}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"no embedding file at {path}")
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a zip or pickle that is not plain tensors
            raise ValueError(f"{path} could not be read as tensors (torch.load, weights_only): {e}") from e
    name, vectors = _embedding_from_dict(state, str(path))
    if not isinstance(vectors, torch.Tensor) or vectors.ndim not in (1, 2) or not vectors.is_floating_point():
        raise ValueError(f"{path}: the embedding should be a float tensor [D] or [n, D]")
    return name, vectors.detach().reshape(-1, vectors.shape[-1])  # [n, D]


def vector_names(token: str, n: int) -> list[str]:
    """The vocabulary names of an n-vector embedding: `token`, `token_1`, ..., `token_{n-1}`."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]


def add_embedding(tokenizer, text_encoder: torch.nn.Module, token: str, vectors: torch.Tensor) -> list[int]:
    """Add `token` (and its `_i` names) with `vectors` [n, D] to the tokenizer and the text encoder's
    embedding table; returns the new ids."""
    table = text_encoder.text_model.embeddings.token_embedding
    width = table.embedding_dim
    if vectors.shape[-1] != width:
        made_for = WIDTHS.get(vectors.shape[-1], "another text encoder")
        raise ValueError(
            f"the embedding for {token!r} has {vectors.shape[-1]}-wide vectors (made for {made_for}); "
            f"this text encoder's are {width} wide ({WIDTHS.get(width, 'this model')})"
        )
    names = vector_names(token, len(vectors))
    taken = [n for n in names if n in tokenizer.vocab]
    if taken:
        raise ValueError(
            f"{taken[0]!r} is already in the vocabulary: an embedding never replaces a word; load it "
            f"under another name with token='<{token.strip('<>')}-2>' (or any new word)"
        )
    tokenizer.add_tokens(names)
    ids = [tokenizer.vocab[n] for n in names]
    tokenizer.added_tokens[token] = ids  # the first name stands for all the vectors
    table = text_encoder.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        table.weight[ids] = vectors.to(table.weight.device, table.weight.dtype)
    return ids


class TextualInversionLoaderMixin:
    """`pipe.load_textual_inversion(...)`, diffusers' method, for a pipeline with a tokenizer and a
    text encoder."""

    def load_textual_inversion(
        self,
        pretrained_model_name_or_path: str | os.PathLike | list | dict | torch.Tensor,
        token: str | list[str] | None = None,
        tokenizer=None,
        text_encoder: torch.nn.Module | None = None,
    ) -> None:
        """Load one embedding (a file, a folder with learned_embeds, a state dict or a tensor) or a
        list of them, under the name stored in the file or `token` (one per file in a list)."""
        tokenizer = tokenizer or self.tokenizer
        text_encoder = text_encoder or self.text_encoder
        sources = pretrained_model_name_or_path
        sources = sources if isinstance(sources, list) else [sources]
        tokens = token if isinstance(token, list) else [token] * len(sources)
        if len(tokens) != len(sources):
            raise ValueError(
                f"{len(sources)} embeddings but {len(tokens)} tokens: give one token per embedding"
            )
        for source, name in zip(sources, tokens, strict=True):
            if isinstance(source, dict | torch.Tensor):
                stored, vectors = _embedding_from_dict(source, "the state dict")
                vectors = vectors.reshape(-1, vectors.shape[-1])
            else:
                stored, vectors = read_embedding(source)
            name = name or stored
            if not name:
                raise ValueError(f"{source!r:.80} does not name its token: pass token='<my-token>'")
            add_embedding(tokenizer, text_encoder, name, vectors)
