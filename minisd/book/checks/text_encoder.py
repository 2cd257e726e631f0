"""Checkers for chapter 02's exercises: the text encoder's parameter count from its config, which
output vectors a changed prompt moves (causality), and `clip_skip` from the hidden states."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minisd.book.checks.compare import compare_cases

# text towers that Stable Diffusion models use: SD v1.x (CLIP ViT-L/14), SD 2.x (OpenCLIP ViT-H/14),
# CLIP ViT-B/32 (transformers' defaults) and the book's tiny model
CONFIGS = {
    "SD v1.5 (768 wide, 12 layers)": dict(
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12
    ),
    "SD 2.x (1024 wide, 23 layers)": dict(
        hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23
    ),
    "CLIP ViT-B/32 (512 wide)": dict(
        hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12
    ),
    "tiny (64 wide, 2 layers)": dict(
        hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2
    ),
    "MLP not 4x, 10 positions": dict(
        hidden_size=96,
        intermediate_size=160,
        num_attention_heads=2,
        num_hidden_layers=3,
        max_position_embeddings=10,
        vocab_size=1000,
    ),
}
CAPTIONS = [
    ("one colour word differs", "a red square on a blue background", "a green square on a blue background"),
    ("the same caption", "a red square on a blue background", "a red square on a blue background"),
    (
        "the last word differs",
        "two yellow circles on a black background",
        "two yellow circles on a black square",
    ),
    ("one caption is longer", "a red square", "a red square above a blue circle on a white background"),
    ("the first word differs", "two red squares on a white background", "a red square on a white background"),
]


def text_encoder_params(candidate: Callable[[dict], int]) -> bool:
    """Check `candidate(config) -> int`, the parameter count of a CLIPTextModel built from `config`
    (transformers' CLIPTextConfig keys; `vocab_size` and `max_position_embeddings` default to 49408
    and 77), against the package's model built on the meta device."""
    from minisd.models.clip import CLIPTextModel

    def reference(config: dict) -> int:
        with torch.device("meta"):
            return CLIPTextModel.from_config(config).num_parameters()

    full = {k: {"vocab_size": 49408, "max_position_embeddings": 77, **c} for k, c in CONFIGS.items()}
    return compare_cases("text_encoder_params", candidate, reference, [(k, (c,)) for k, c in full.items()])


def _trained_encoder():
    from minisd.models.clip import CLIPTextModel
    from minisd.models.tokenizer import CLIPTokenizer
    from minisd.shapes import tiny_model_path

    folder = tiny_model_path()
    return CLIPTextModel.from_pretrained(folder / "text_encoder").eval(), CLIPTokenizer.from_pretrained(
        folder / "tokenizer"
    )


def _moved(mask: torch.Tensor) -> str:
    """A [77] bool tensor as the positions it marks, e.g. "2..76" or "none"."""
    if not isinstance(mask, torch.Tensor) or mask.shape != (77,):
        raise ValueError(f"expected a [77] bool tensor, got {getattr(mask, 'shape', type(mask).__name__)}")
    where = mask.bool().nonzero().flatten().tolist()
    if not where:
        return "none"
    runs, start = [], where[0]
    for prev, cur in zip(where, where[1:] + [None], strict=True):
        if cur != prev + 1:
            runs.append(f"{start}..{prev}" if prev > start else f"{start}")
            start = cur
    return ", ".join(runs)


def changed_outputs(candidate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Check `candidate(ids_a, ids_b) -> bool [77]`: True at each position whose output vector differs
    between the two prompts, predicted from the ids alone; the reference runs the tiny model's trained
    text encoder on both and compares its 77 output vectors. Reports the positions that move."""
    encoder, tok = _trained_encoder()

    def reference(ids_a: torch.Tensor, ids_b: torch.Tensor) -> str:
        with torch.no_grad():
            out = encoder(torch.stack([ids_a, ids_b]))[0]  # [2, 77, 64]
        return _moved((out[0] - out[1]).abs().amax(dim=-1) > 1e-5)  # [77] -> "2..76"

    cases = [(label, (tok(a)[0], tok(b)[0])) for label, a, b in CAPTIONS]
    return compare_cases("changed_outputs", lambda a, b: _moved(candidate(a, b)), reference, cases)


def clip_skip_state(candidate: Callable) -> bool:
    """Check `candidate(hidden_states, final_layer_norm, clip_skip) -> [B, N, D]` against the model's
    own `text_encoder(ids, clip_skip=k)[0]`, on a 4-layer encoder for every k it allows."""
    from minisd.models.clip import CLIPTextModel

    torch.manual_seed(0)
    config = dict(CONFIGS["tiny (64 wide, 2 layers)"], num_hidden_layers=4, vocab_size=1000)
    encoder = CLIPTextModel.from_config(config).eval()
    ids = torch.randint(0, 1000, (2, 12))  # [2, 12]
    with torch.no_grad():
        states = encoder(ids, output_hidden_states=True).hidden_states  # 5 x [2, 12, 64]
    norm = encoder.text_model.final_layer_norm

    def reference(hidden_states, final_layer_norm, clip_skip: int) -> torch.Tensor:
        with torch.no_grad():
            return encoder(ids, clip_skip=clip_skip)[0]

    cases = [(f"clip_skip={k} of 4 layers", (states, norm, k)) for k in range(4)]
    with torch.no_grad():
        return compare_cases("clip_skip_state", candidate, reference, cases)
