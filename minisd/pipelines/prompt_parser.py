"""The prompt syntax of the AUTOMATIC1111 web UI: attention weights and BREAK (chapter 08).

    (word)        weight x 1.1            ((word))   x 1.21, each pair multiplies again
    [word]        weight / 1.1            (word:1.5) weight x 1.5, (several words:0.8) too
    \\( \\) \\[ \\]   the literal bracket     \\\\         a literal backslash
    BREAK         (in capitals, a word of its own) ends the current 75-token chunk

Rules that decide the odd cases, all as the web UI does them: a bracket still open at the end of
the prompt applies to everything after it; a closing bracket with nothing to close is plain text,
so is `(word:1.5)`'s `:1.5)` with no open round bracket, and a `:` that is not followed by a number
and `)`; neighbouring pieces with equal weights are merged. One deliberate difference: the web UI
multiplies its BREAK marker by the weights of enclosing brackets (and then encodes "BREAK" as text);
here BREAK always breaks.
"""

from __future__ import annotations

import re

BREAK = "BREAK"
BREAK_WEIGHT = -1.0  # the marker's weight in parse_prompt_attention's result (never a real weight)
UP, DOWN = 1.1, 1 / 1.1

# one match per syntax element; the last alternative is a run of plain text
_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]          # escaped bracket or backslash
    | \\                  # a lone backslash
    | [(\[]               # opening bracket
    | :([+-]?[\d.]+)\)    # ":1.5)": an explicit weight closing a round bracket
    | [)\]]               # closing bracket
    | [^\\()\[\]:]+       # plain text
    | :                   # a colon that is just text
    """,
    re.VERBOSE,
)
BREAK_PATTERN = re.compile(r"\s*\bBREAK\b\s*")


def _weight(number: str, text: str) -> float:
    try:
        return float(number)
    except ValueError:
        raise ValueError(f"malformed weight {number!r} in prompt {text!r}: write e.g. (word:1.2)") from None


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into `(text, weight)` pieces; a BREAK is the piece `("BREAK", -1.0)`.

    >>> parse_prompt_attention("a (red:1.5) circle")
    [('a ', 1.0), ('red', 1.5), (' circle', 1.0)]
    """
    pieces: list[list] = []  # [text, weight, is_break]
    round_open: list[int] = []  # where each open bracket's span starts in `pieces`
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if not piece[2]:
                piece[1] *= factor

    for match in _TOKEN.finditer(text):
        token, number = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0, False])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif number is not None and round_open:
            scale(round_open.pop(), _weight(number, text))
        elif token == ")" and round_open:
            scale(round_open.pop(), UP)
        elif token == "]" and square_open:
            scale(square_open.pop(), DOWN)
        else:  # plain text, or a bracket with nothing to close
            for i, part in enumerate(BREAK_PATTERN.split(token)):
                if i:
                    pieces.append([BREAK, BREAK_WEIGHT, True])
                pieces.append([part, 1.0, False])
    for start in round_open:
        scale(start, UP)
    for start in square_open:
        scale(start, DOWN)

    merged: list[list] = []
    for piece in (p for p in pieces if p[2] or p[0]):
        if piece[2] or not merged or merged[-1][2] or merged[-1][1] != piece[1]:
            merged.append(piece)
        else:
            merged[-1][0] += piece[0]
    return [(t, w) for t, w, _ in merged] or [("", 1.0)]
