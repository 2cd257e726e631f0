"""The chapter 01 checkers pass the intended answers and reject plausible wrong ones."""

import pytest

from minisd.book import checks
from minisd.models.tokenizer import CLIPTokenizer, bytes_to_unicode

BYTE_DECODER = {c: b for b, c in bytes_to_unicode().items()}
SPECIAL = {49406, 49407}


@pytest.fixture(scope="module")
def tok():
    return CLIPTokenizer()


def decode(ids, id_to_token, end_of_word=b" ", per_token=False, keep_special=False, strip=True):
    pieces = []  # the bytes of each token, and its end of word
    for t in (id_to_token[i] for i in ids if keep_special or i not in SPECIAL):
        pieces.append(
            bytes(BYTE_DECODER[c] for c in t.removesuffix("</w>")) + end_of_word * t.endswith("</w>")
        )
    if per_token:  # restores each token alone: breaks a character whose bytes span two tokens
        text = "".join(p.decode("utf-8", "replace") for p in pieces)
    else:
        text = b"".join(pieces).decode("utf-8", "replace")
    return text.strip() if strip else text


def test_token_decoder_passes_the_answer(tok, capsys):
    assert checks.token_decoder(decode, tok)
    assert "all passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong",
    [
        lambda ids, table: decode(ids, table, per_token=True),
        lambda ids, table: decode(ids, table, end_of_word=b""),
        lambda ids, table: decode(ids, table, keep_special=True),
        lambda ids, table: decode(ids, table, strip=False),
    ],
    ids=["token by token", "</w> dropped", "special tokens kept", "not stripped"],
)
def test_token_decoder_rejects_wrong_answers(tok, wrong, capsys):
    assert not checks.token_decoder(wrong, tok)
    assert "FAIL token_decoder" in capsys.readouterr().out


def cut_word(prompt, tok, budget=75, cost=lambda ids: len(ids) - 2, strict=True):
    used = 0
    for i, word in enumerate(prompt.split()):
        used += cost(tok.encode(word))
        if used > budget or (not strict and used >= budget):
            return i
    return None


def test_first_cut_word_passes_the_answer(tok, capsys):
    assert checks.first_cut_word(cut_word, tok)
    assert "all passed" in capsys.readouterr().out


def test_the_words_tokens_add_up_to_the_prompts(tok):
    prompt = " ".join(["masterpiece, 8k, best quality,"] * 12) + " Crème brûlée, 東京 🐱🚀"
    assert sum(len(tok.encode(w)) - 2 for w in prompt.split()) == len(tok.encode(prompt)) - 2


@pytest.mark.parametrize(
    "wrong",
    [
        lambda p, tok: cut_word(p, tok, budget=77),
        lambda p, tok: cut_word(p, tok, cost=len),
        lambda p, tok: cut_word(p, tok, strict=False),
        lambda p, tok: cut_word(p, tok, cost=lambda ids: 1),
    ],
    ids=["77 tokens for the prompt", "SOT and EOT counted per word", "cut at exactly 75", "one token a word"],
)
def test_first_cut_word_rejects_wrong_answers(tok, wrong, capsys):
    assert not checks.first_cut_word(wrong, tok)
    assert "FAIL first_cut_word" in capsys.readouterr().out
