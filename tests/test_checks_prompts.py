"""Chapter 08's exercise checkers pass correct answers written independently and fail plausible wrong ones."""

import re

from minisd.book import checks


def parse(text, up=1.1, merge=True, close_open=True):
    """A reader's parser: one pass over the characters with a stack of open brackets."""
    pieces, stack = [], []  # pieces: [text, weight]; stack: (bracket, index of its first piece)

    def scale(start, factor):
        for p in pieces[start:]:
            if p[0] != "BREAK" or p[1] != -1.0:
                p[1] *= factor

    i = 0
    while i < len(text):
        c = text[i]
        weight = re.match(r":([+-]?[\d.]+)\)", text[i:])
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "()[]\\":
            pieces.append([text[i + 1], 1.0])
            i += 2
            continue
        if c in "([":
            stack.append((c, len(pieces)))
        elif weight and any(b == "(" for b, _ in stack):
            start = [s for b, s in stack if b == "("][-1]
            stack.remove(("(", start))
            scale(start, float(weight.group(1)))
            i += len(weight.group(0))
            continue
        elif c in ")]" and any(b == {")": "(", "]": "["}[c] for b, _ in stack):
            b = {")": "(", "]": "["}[c]
            start = [s for o, s in stack if o == b][-1]
            stack.remove((b, start))
            scale(start, up if c == ")" else 1 / up)
        else:
            pieces.append([c, 1.0])
        i += 1
    if close_open:
        for b, start in stack:
            scale(start, up if b == "(" else 1 / up)
    out = []
    for t, w in pieces:  # merge characters of equal weight, then split out BREAK
        if merge and out and out[-1][1] == w:
            out[-1][0] += t
        else:
            out.append([t, w])
    result = []
    for t, w in out:
        for j, part in enumerate(re.split(r"\s*\bBREAK\b\s*", t)):
            if j:
                result.append(("BREAK", -1.0))
            if part:
                result.append((part, w))
    return result or [("", 1.0)]


def test_prompt_attention_checker():
    assert checks.prompt_attention(parse)
    assert not checks.prompt_attention(lambda t: parse(t, up=1.05))  # a different emphasis factor
    assert not checks.prompt_attention(lambda t: parse(t, merge=False))  # pieces left unmerged
    assert not checks.prompt_attention(lambda t: parse(t, close_open=False))  # open brackets ignored


def rescale(z, weights, batch_mean=False):
    dims = (0, 1, 2) if batch_mean else (1, 2)
    weighted = z * weights[..., None]
    return weighted * z.mean(dims, keepdim=True) / weighted.mean(dims, keepdim=True)


def test_mean_rescale_checker():
    assert checks.mean_rescale(rescale)
    assert not checks.mean_rescale(lambda z, w: z * w[..., None])  # no rescale
    assert not checks.mean_rescale(lambda z, w: rescale(z, w, batch_mean=True))  # one mean for the batch
    assert not checks.mean_rescale(lambda z, w: z * w[..., None] / w.mean(1)[:, None, None])  # mean weight


def chunks(ids, comma, backtrack=20, keep_comma=True, inclusive=True):
    out, current, last = [], [], -1
    for token in ids:
        if token == comma:
            last = len(current)
        elif len(current) == 75 and last >= 0 and (75 - last < backtrack + inclusive):
            cut = last + keep_comma
            out.append(current[:cut])
            current, last = current[cut:], -1
        if len(current) == 75:
            out.append(current)
            current, last = [], -1
        current.append(token)
    return out + [current] if current or not out else out


def test_prompt_chunks_checker():
    assert checks.prompt_chunks(chunks)
    assert not checks.prompt_chunks(lambda ids, c: [ids[i : i + 75] for i in range(0, max(len(ids), 1), 75)])
    assert not checks.prompt_chunks(lambda ids, c: chunks(ids, c, keep_comma=False))  # comma moves on
    assert not checks.prompt_chunks(lambda ids, c: chunks(ids, c, inclusive=False))  # 20 back excluded


def test_checkers_report_exceptions_as_failures():
    def broken(*args):
        raise NotImplementedError

    assert not checks.prompt_attention(broken)
    assert not checks.mean_rescale(broken)
    assert not checks.prompt_chunks(broken)
