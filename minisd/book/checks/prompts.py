"""Checkers for the exercises of chapter 08 (long prompts and prompt weighting)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minisd.book.checks.compare import compare_cases

# Chapter 08: long prompts and weights ------------------------------------------------------------


def prompt_attention(candidate: Callable[[str], list[tuple[str, float]]]) -> bool:
    """Chapter 08: `candidate(text) -> [(text, weight)]`, the web UI's weighting syntax, against
    `minisd.pipelines.prompt_parser.parse_prompt_attention` (weights compared to 4 decimals)."""
    from minisd.pipelines.prompt_parser import parse_prompt_attention

    def rounded(parse: Callable) -> Callable:
        return lambda text: [(t, round(w, 4)) for t, w in parse(text)]

    prompts = ["a red circle", "a (red) circle", "a ((red)) circle", "a [red] circle", "a (red:1.5) circle",
               "(red circle:0.8) on a blue background", "((a (red:1.5) circle) on [a blue background])",
               "a \\(red\\) circle", "a (red circle", "a red) circle] [", "(a:b) c", "(red)(circle) [x][y]",
               "red BREAK (blue:2) square", ""]  # fmt: skip
    cases = [(repr(p), (p,)) for p in prompts]
    return compare_cases("prompt_attention", rounded(candidate), rounded(parse_prompt_attention), cases)


def mean_rescale(candidate: Callable) -> bool:
    """Chapter 08: `candidate(z [B, 77, D], weights [B, 77]) -> [B, 77, D]`: multiply each token's
    vector by its weight, then rescale each prompt's result to its unweighted mean (`apply_weights`)."""
    from minisd.pipelines.long_prompt import apply_weights

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 77, 16, generator=gen) + torch.tensor([[[0.3]], [[-0.2]]])  # [2, 77, 16]
    ones = torch.ones(2, 77)
    up, zero = ones.clone(), ones.clone()
    up[0, 3], up[1, 5:8], zero[:, 2] = 1.5, 0.5, 0.0
    cases = [("all weights 1", (z, ones)), ("one prompt up, one down", (z, up)), ("a weight of 0", (z, zero)),
             ("random weights", (z, torch.rand(2, 77, generator=gen) + 0.5))]  # fmt: skip
    return compare_cases("mean_rescale", candidate, apply_weights, cases)


def prompt_chunks(candidate: Callable[[list[int], int], list[list[int]]], tokenizer=None) -> bool:
    """Chapter 08: `candidate(ids, comma_id) -> chunks` splits a prompt's token ids (no SOT/EOT) into
    chunks of at most 75 with the last-comma rule (20 tokens back), as `chunk_prompt` does."""
    from minisd.models.tokenizer import CLIPTokenizer
    from minisd.pipelines.long_prompt import chunk_prompt

    tok = tokenizer or CLIPTokenizer()

    def reference(ids: list[int], comma: int) -> list[list[int]]:  # the ids of "red" and "," decode exactly
        chunks = chunk_prompt(tok, tok.decode(ids), weighting=False)
        return [[i for i in c[1:] if i != tok.eos_token_id] for c, _ in chunks]

    def words(*runs: int) -> str:  # runs of "red" separated by commas
        return ", ".join(" ".join(["red"] * n) for n in runs)

    texts = {"empty": "", "short": "a red circle on a blue background", "75 tokens": words(75),
             "76 tokens": words(76), "200 tokens": words(200), "comma 15 back": words(60, 30),
             "comma 25 back": words(50, 40), "comma 20 back": words(55, 40), "comma 19 back": words(56, 40),
             "comma first in chunk 2": words(75, 10), "two commas": words(40, 19, 30),
             "rule twice": words(60, 60, 60)}  # fmt: skip
    comma = tok.vocab[",</w>"]
    cases = [(label, (tok.encode(text)[1:-1], comma)) for label, text in texts.items()]
    return compare_cases("prompt_chunks", candidate, reference, cases)
