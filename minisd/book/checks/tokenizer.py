"""Checkers for chapter 01's exercises whose answers the chapter does not print: decoding ids to text,
and finding the word where the 77-token limit cuts a long prompt."""

from __future__ import annotations

from collections.abc import Callable

from minisd.book.checks.compare import compare_cases

LONG_PROMPT = ", ".join(["a highly detailed matte painting of a castle on a hill at sunset"] * 8)


def _tokenizer(tokenizer=None):
    from minisd.models.tokenizer import CLIPTokenizer

    return tokenizer or CLIPTokenizer()


def token_decoder(candidate: Callable[[list[int], dict[int, str]], str], tokenizer=None) -> bool:
    """Check `candidate(ids, id_to_token) -> text` against `CLIPTokenizer.decode`: SOT, EOT and padding
    dropped, the bytes of all tokens restored together (a character may span tokens), each `</w>` read
    as a space, no space at either end."""
    tok = _tokenizer(tokenizer)
    id_to_token = {i: t for t, i in tok.vocab.items()}
    prompts = [
        "a photograph of an astronaut riding a horse",
        "unbelievably masterpiece, best quality, 8k!!!",
        "Crème brûlée on a café table, 東京, 🐱🚀",
        "",
    ]
    cases = [(f"{p!r}", (tok.encode(p), id_to_token)) for p in prompts]
    cases.append(("a padded [77] row", (tok(["a cat, 8k"])[0].tolist(), id_to_token)))
    return compare_cases("token_decoder", candidate, lambda ids, table: tok.decode(ids), cases)


def first_cut_word(candidate: Callable, tokenizer=None) -> bool:
    """Check `candidate(prompt, tok) -> int | None`: the index in `prompt.split()` of the first word
    that loses a token when the prompt is cut to 77 ids (SOT + 75 tokens + EOT); None if all fits."""
    tok = _tokenizer(tokenizer)

    def reference(prompt: str, tok) -> int | None:
        used = 0
        for i, word in enumerate(prompt.split()):
            used += len(tok.encode(word)) - 2  # a word's tokens: its ids less SOT and EOT
            if used > 75:
                return i
        return None

    cases = [
        ("a short prompt", ("a photograph of an astronaut riding a horse", tok)),
        ("exactly 75 one-token words", (" ".join(["cat"] * 75), tok)),
        ("76 one-token words", (" ".join(["cat"] * 76), tok)),
        ("a two-token word across the limit", (" ".join(["cat"] * 74 + ["rutkowski", "dog"]), tok)),
        ("'8k,' is three tokens", (" ".join(["masterpiece, 8k, best quality,"] * 12), tok)),
        ("the long prompt of section 1.9", (LONG_PROMPT, tok)),
    ]
    return compare_cases("first_cut_word", candidate, reference, cases)
