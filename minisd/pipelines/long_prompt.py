"""Prompts longer than 77 tokens, with the web UI's (word:1.2) weights and BREAK (chapter 08).

CLIP's text encoder has 77 position embeddings, so it reads at most 75 tokens between its start
and end tokens. The UNet's cross-attention has no such limit: its keys and values are as many as
the text vectors it is given. So a long prompt is cut into chunks of 75 tokens, each chunk is
framed as a prompt of its own (SOT, 75 ids, EOT, padded to 77) and encoded separately, and the
encodings are concatenated along the sequence: k chunks give [B, 77k, D]. This is what the
AUTOMATIC1111 web UI does; the choices that decide the details, all the web UI's:
- `BREAK` ends the current chunk (the rest of it is padding); a BREAK with nothing before it, or two
  in a row, gives an all-padding chunk, as there.
- Last-comma rule: when a chunk is full and the next token is not a comma, the tokens after the
  chunk's last comma move to the next chunk if that comma is at most `COMMA_BACKTRACK` (20) tokens
  back, so a phrase is not split between two chunks.
- Prompt and negative prompt are padded with all-padding chunks to the same number of chunks.
- Weights: each token's output vector of the text encoder is multiplied by its weight, then the
  whole chunk [77, D] is rescaled so its mean equals the unweighted chunk's mean (the web UI's
  "Original" emphasis). Without the rescale, weights above 1 would also raise the average
  magnitude of every vector the UNet reads, a global change the UNet never saw in training; the
  rescale keeps the overall level and changes only how the tokens compare. The mean is taken per
  prompt and chunk (the web UI encodes one prompt at a time, so its batch mean is the same).
- `clip_skip` applies to every chunk of the prompt (the negative prompt uses the last layer, as in
  the pipeline's plain path and diffusers).
"""

from __future__ import annotations

import torch

from minisd.models.clip import CLIPTextModel
from minisd.models.tokenizer import CLIPTokenizer
from minisd.pipelines.prompt_parser import BREAK, BREAK_PATTERN, BREAK_WEIGHT, parse_prompt_attention

CHUNK = 75  # prompt tokens per chunk: 77 positions less SOT and EOT
COMMA_BACKTRACK = 20


Chunks = list[tuple[list[int], list[float]]]  # per chunk: 77 ids and their 77 weights


def split_breaks(text: str) -> list[tuple[str, float]]:
    """`text` as unweighted pieces with the BREAK markers of parse_prompt_attention."""
    pieces: list[tuple[str, float]] = []
    for i, part in enumerate(BREAK_PATTERN.split(text)):
        pieces += [(BREAK, BREAK_WEIGHT)] * (i > 0) + [(part, 1.0)] * bool(part)
    return pieces


def chunk_prompt(
    tokenizer: CLIPTokenizer, text: str, weighting: bool = True, comma_backtrack: int = COMMA_BACKTRACK
) -> Chunks:
    """Tokenize `text` into chunks of 75 tokens framed to 77 (SOT ... EOT, padded), with each token's
    weight (1.0 for SOT, EOT and padding). `weighting=False` reads brackets as text; BREAK still breaks."""
    pieces = parse_prompt_attention(text) if weighting else split_breaks(text)
    comma = tokenizer.vocab.get(",</w>")
    sot, eot = tokenizer.bos_token_id, tokenizer.eos_token_id
    chunks: Chunks = []
    ids: list[int] = []
    weights: list[float] = []

    def close(ids: list[int], weights: list[float]) -> None:
        pad = CHUNK - len(ids)
        chunks.append(([sot, *ids, *[eot] * pad, eot], [1.0, *weights, *[1.0] * pad, 1.0]))

    last_comma = -1  # position of the current chunk's last comma
    for piece, weight in pieces:
        if weight == BREAK_WEIGHT:
            close(ids, weights)
            ids, weights, last_comma = [], [], -1
            continue
        for token in tokenizer.encode(piece)[1:-1]:
            if token == comma:
                last_comma = len(ids)
            elif len(ids) == CHUNK and last_comma >= 0 and CHUNK - last_comma <= comma_backtrack:
                cut = last_comma + 1  # the chunk ends with its comma; the words after it move on
                close(ids[:cut], weights[:cut])
                ids, weights, last_comma = ids[cut:], weights[cut:], -1
            if len(ids) == CHUNK:
                close(ids, weights)
                ids, weights, last_comma = [], [], -1
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close(ids, weights)
    return chunks


def empty_chunk(tokenizer: CLIPTokenizer) -> tuple[list[int], list[float]]:
    """A chunk of padding only: SOT then 76 EOT, all weights 1 (what an empty prompt encodes to)."""
    return [tokenizer.bos_token_id] + [tokenizer.eos_token_id] * (CHUNK + 1), [1.0] * (CHUNK + 2)


def apply_weights(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Multiply each token's vector by its weight, then restore each row's mean (see the module docstring).

    z [B, 77, D], weights [B, 77] -> [B, 77, D]
    """
    weights = weights.to(z.dtype)
    mean = z.mean(dim=(1, 2), keepdim=True)  # [B, 1, 1]
    z = z * weights[..., None]
    return z * (mean / z.mean(dim=(1, 2), keepdim=True))


def encode_chunks(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    chunked: list[Chunks],
    clip_skip: int = 0,
    num_chunks: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode each prompt's chunks, padded with empty chunks to `num_chunks` (default: the most any
    prompt has) -> (embeddings [B, 77k, D], attention mask [B, 77k]: True up to each chunk's EOT)."""
    k = max(len(c) for c in chunked) if num_chunks is None else num_chunks
    if any(len(c) > k for c in chunked):
        raise ValueError(f"a prompt needs {max(len(c) for c in chunked)} chunks, more than the {k} asked for")
    padded = [c + [empty_chunk(tokenizer)] * (k - len(c)) for c in chunked]
    device = text_encoder.device
    embeds, masks = [], []
    for i in range(k):
        ids = torch.tensor([p[i][0] for p in padded], device=device)  # [B, 77]
        weights = torch.tensor([p[i][1] for p in padded], device=device)  # [B, 77]
        z = text_encoder(ids, clip_skip=clip_skip)[0]  # [B, 77, D]
        embeds.append(z if bool((weights == 1).all()) else apply_weights(z, weights))
        masks.append(tokenizer.attention_mask(ids))
    return torch.cat(embeds, dim=1), torch.cat(masks, dim=1)  # [B, 77k, D], [B, 77k]


def encode_long_prompts(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompts: str | list[str],
    clip_skip: int = 0,
    num_chunks: int | None = None,
    weighting: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of any length -> (embeddings [B, 77k, D], mask [B, 77k]); see `encode_chunks`."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    chunked = [chunk_prompt(tokenizer, p, weighting) for p in prompts]
    return encode_chunks(tokenizer, text_encoder, chunked, clip_skip, num_chunks)


def _pad_embeds(embeds: torch.Tensor, k: int, empty: torch.Tensor) -> torch.Tensor:
    """Given embeddings [B, 77j, D] -> [B, 77k, D], appending the empty chunk's encoding [1, 77, D]."""
    missing = k - embeds.shape[1] // (CHUNK + 2)
    return torch.cat([embeds, empty.expand(embeds.shape[0], -1, -1).repeat(1, missing, 1)], dim=1)


def encode_long_prompt(
    pipe,
    prompt: str | list[str] | None,
    negative_prompt: str | list[str] | None = None,
    do_classifier_free_guidance: bool = True,
    clip_skip: int | None = None,
    prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The pipeline's `long_prompt=True` path -> (prompt embeddings [B, 77k, D], negative ones or None,
    the UNet's text mask [2B or B, 77k] ordered [negatives; prompts], or None without mask_text_padding).

    Both sides get the same number of chunks k; given embeddings (any multiple of 77 long) are
    padded with encoded empty chunks when the other side needs more.
    """
    from minisd.pipelines.stable_diffusion import _negative_prompts

    tok, enc = pipe.tokenizer, pipe.text_encoder
    given = [e for e in (prompt_embeds, negative_prompt_embeds if do_classifier_free_guidance else None)]
    if pipe.mask_text_padding and any(e is not None for e in given):
        raise ValueError(
            "this model hides the padding tokens from the UNet (mask_text_padding), which needs the "
            "token ids: give prompt and negative_prompt as text, not embeddings"
        )
    for e in given:
        if e is not None and e.shape[1] % (CHUNK + 2):
            raise ValueError(f"embeddings of {e.shape[1]} tokens: a long prompt's are a multiple of 77 long")
    b = prompt_embeds.shape[0] if prompt is None else (1 if isinstance(prompt, str) else len(prompt))
    chunked = [chunk_prompt(tok, p) for p in ([prompt] if isinstance(prompt, str) else prompt or [])]
    negative = []
    if do_classifier_free_guidance and negative_prompt_embeds is None:
        negative = [chunk_prompt(tok, n) for n in _negative_prompts(negative_prompt, b)]
    counts = [len(c) for c in chunked + negative] + [
        e.shape[1] // (CHUNK + 2) for e in given if e is not None
    ]
    k = max(counts)
    with torch.inference_mode():
        empty = None
        if any(e is not None and e.shape[1] < k * (CHUNK + 2) for e in given):
            empty = encode_chunks(tok, enc, [[empty_chunk(tok)]])[0]  # [1, 77, D]
        if prompt_embeds is None:
            cond, cond_mask = encode_chunks(tok, enc, chunked, clip_skip or 0, k)
        else:
            cond, cond_mask = prompt_embeds if empty is None else _pad_embeds(prompt_embeds, k, empty), None
        uncond = uncond_mask = None
        if negative:
            uncond, uncond_mask = encode_chunks(tok, enc, negative, 0, k)
        elif do_classifier_free_guidance:
            uncond = (
                negative_prompt_embeds if empty is None else _pad_embeds(negative_prompt_embeds, k, empty)
            )
    mask = None
    if pipe.mask_text_padding:
        mask = cond_mask if uncond_mask is None else torch.cat([uncond_mask, cond_mask])
    cond = cond.to(pipe.device, pipe.dtype)
    return cond, None if uncond is None else uncond.to(pipe.device, pipe.dtype), mask
