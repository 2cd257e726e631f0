"""parse_prompt_attention: the web UI's documented examples, its odd cases, and properties."""

import re
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minisd.pipelines.prompt_parser import BREAK_WEIGHT, parse_prompt_attention

# the examples the web UI documents for its parser, and the odd cases its rules decide
TABLE = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.1 * 1.1 * 1.3),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.1**4),
            (".", 1.1),
        ],
    ),
    ("((word))", [("word", 1.21)]),
    ("[word]", [("word", 1 / 1.1)]),
    ("[[word]]", [("word", 1 / 1.21)]),
    ("(several words:0.8)", [("several words", 0.8)]),
    ("((a:2) b)", [("a", 2.2), (" b", 1.1)]),
    ("[unclosed", [("unclosed", 1 / 1.1)]),
    ("stray) and] brackets", [("stray) and] brackets", 1.0)]),
    ("word:1.5)", [("word:1.5)", 1.0)]),  # no open round bracket: plain text
    ("(word: 1.5)", [("word: 1.5", 1.1)]),  # a space before the number: not a weight
    ("a \\\\ b", [("a \\ b", 1.0)]),
    ("x:y", [("x:y", 1.0)]),
    ("", [("", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", BREAK_WEIGHT), ("b", 1.0)]),
    ("BREAKFAST", [("BREAKFAST", 1.0)]),  # a word of its own, in capitals
    ("a break b", [("a break b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", BREAK_WEIGHT), ("b", 1.1)]),  # breaks inside brackets too
    ("BREAK a", [("BREAK", BREAK_WEIGHT), ("a", 1.0)]),
]


@pytest.mark.parametrize("text, want", TABLE)
def test_documented_examples(text, want):
    got = parse_prompt_attention(text)
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [w for _, w in got] == pytest.approx([w for _, w in want])


def test_malformed_weight_is_a_clear_error():
    with pytest.raises(ValueError, match="malformed weight '1.2.3'"):
        parse_prompt_attention("(red:1.2.3)")


WORDS = st.sampled_from(["a", "red", "circle", " ", ", ", "on", "blue background", "x"])


@st.composite
def prompts(draw, depth=0):
    """Prompts of words, (..), [..] and (..:w) groups, nested."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["word", "word", "round", "square", "weight"] if depth < 3 else ["word"]))
        if kind == "word":
            parts.append(draw(WORDS))
        else:
            inner = draw(prompts(depth + 1))
            w = draw(st.sampled_from(["0.5", "1.3", "2"]))
            parts.append({"round": f"({inner})", "square": f"[{inner}]", "weight": f"({inner}:{w})"}[kind])
    return "".join(parts)


@settings(max_examples=200, deadline=None)
@given(prompts())
def test_properties(text):
    got = parse_prompt_attention(text)
    # the text without syntax is kept, in order
    assert "".join(t for t, _ in got) == re.sub(r":[\d.]+\)|[()\[\]]", "", text)
    assert all(w > 0 for _, w in got)  # no negative weights without a negative number
    assert all(a[1] != b[1] for a, b in pairwise(got))  # neighbours with equal weights are merged
    assert all(t for t, _ in got) or got == [("", 1.0)]
