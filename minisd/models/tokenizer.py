"""CLIP's byte-level BPE tokenizer, as Stable Diffusion v1.5 uses it (built in chapter 01).

A prompt becomes 77 token ids in four steps:
1. clean: `ftfy.fix_text`, HTML entities unescaped twice, whitespace collapsed, lowercased;
2. pre-tokenise: CLIP's regex splits the text into words, numbers (one digit each) and runs of
   punctuation;
3. byte-encode: each word's UTF-8 bytes become printable characters (`bytes_to_unicode`);
4. merge: BPE applies the learned merges in rank order inside each word; the last symbol of a word
   carries the suffix `</w>`.
The ids are framed by `<|startoftext|>` (49406) and `<|endoftext|>` (49407) and padded with 49407.
"""

from __future__ import annotations

import gzip
import html
import json
import operator
import warnings
import zlib
from functools import cache
from itertools import pairwise
from pathlib import Path

import ftfy
import regex
import torch

from minisd.errors import UserError
from minisd.loading.assets import FETCH_COMMAND, find_clip_bpe
from minisd.loading.files import write_text
from minisd.loading.state_dict import read_json

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
NUM_MERGES = 48_894  # OpenAI's file holds more; CLIP uses the first 49152 - 256 - 2 of them
MODEL_MAX_LENGTH = 77
MAX_TOKEN_CHARS = 32  # the longest vocabulary entry, in bytes: a bound on the text one token covers

# Special tokens, contractions, letter runs, single digits, runs of other non-space characters.
PRETOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
WHITESPACE = regex.compile(r"\s+")


def clean_text(text: str) -> str:
    """OpenAI CLIP's cleaning: fix mojibake, unescape HTML twice, collapse whitespace, lowercase."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return WHITESPACE.sub(" ", text).strip().lower()


@cache
def bytes_to_unicode() -> dict[int, str]:
    """Map each of the 256 bytes to a printable character.

    Printable Latin-1 bytes map to themselves; the other 68 (controls, space, ...) are moved in
    order to chr(256), chr(257), ... so that every byte has a visible, non-space stand-in.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    moved = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + n) for n, b in enumerate(moved)})
    return mapping


@cache
def _byte_tables() -> tuple[dict[int, str], dict[int, int]]:
    """`str.translate` tables: Latin-1 char -> stand-in, and stand-in -> byte value."""
    to_unicode = bytes_to_unicode()
    return to_unicode, {ord(c): b for b, c in to_unicode.items()}


def byte_encode(word: str) -> str:
    """A word's UTF-8 bytes as their printable stand-ins (one character per byte)."""
    return word.encode("utf-8").decode("latin-1").translate(_byte_tables()[0])


def byte_decode(symbols: str) -> str:
    """Inverse of `byte_encode` over a whole string; invalid UTF-8 becomes U+FFFD."""
    raw = symbols.translate(_byte_tables()[1]).encode("latin-1")
    return raw.decode("utf-8", errors="replace")


def merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every occurrence of `pair` in `symbols`, scanning left to right."""
    first, second = pair
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Split one byte-encoded word into vocabulary symbols by applying merges in rank order.

    Start from single characters (the last one marked `</w>`); repeatedly merge the adjacent
    pair with the lowest rank (the merge learned earliest) until no adjacent pair is a merge.
    """
    symbols = [*word[:-1], word[-1] + END_OF_WORD]
    while len(symbols) > 1:
        pairs = set(pairwise(symbols))
        best = min(pairs, key=lambda p: ranks.get(p, len(ranks)))
        if best not in ranks:
            break
        symbols = merge_pair(symbols, best)
    return symbols


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary: 256 bytes, 256 bytes + `</w>`, one token per merge, SOT, EOT."""
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + END_OF_WORD for s in byte_symbols] + ["".join(m) for m in merges]
    return {t: i for i, t in enumerate([*tokens, SOT, EOT])}


def read_bpe_file(path: str | Path) -> list[tuple[str, str]]:
    """The first 48,894 merges of OpenAI's `bpe_simple_vocab_16e6.txt.gz` (line 1 is a header)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise UserError(
            f"{path} is not a gzip-compressed BPE merges file like OpenAI's bpe_simple_vocab_16e6.txt.gz "
            f"({e}); it may be damaged: fetch it again with `{FETCH_COMMAND} --force`"
        ) from e
    return parse_merges(lines[1 : NUM_MERGES + 1], path)


def parse_merges(lines: list[str], path: str | Path) -> list[tuple[str, str]]:
    """Merge pairs from lines "a b" (blank lines and a "#version" header skipped); errors name the file."""
    merges = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#version"):
            continue
        pair = tuple(line.split())
        if len(pair) != 2:
            raise UserError(
                f"{path}, merge {n}: expected two symbols, got {line[:60]!r}: is it a BPE merges file?"
            )
        merges.append(pair)
    if not merges:
        raise UserError(f"{path} holds no merges: the vocabulary file is empty or damaged; replace it")
    return merges


def pad_or_truncate(ids: list[int], length: int = MODEL_MAX_LENGTH, pad_id: int = 49407) -> list[int]:
    """Fit `[SOT, ..., EOT]` to exactly `length` ids: pad with `pad_id`, or cut and keep EOT last."""
    if len(ids) > length:
        return ids[: length - 1] + ids[-1:]
    return ids + [pad_id] * (length - len(ids))


def _missing_vocabulary(folder: Path, missing: list[str]) -> FileNotFoundError:
    return FileNotFoundError(
        f"{folder} has no {' or '.join(missing)}: CLIPTokenizer.from_pretrained needs an SD "
        "tokenizer/ folder (vocab.json + merges.txt), a model folder that contains one, or OpenAI's "
        f"bpe_simple_vocab_16e6.txt.gz. For OpenAI's vocabulary run `{FETCH_COMMAND}` and call "
        "CLIPTokenizer() with no arguments."
    )


class CLIPTokenizer:
    """Prompt text -> `LongTensor[B, 77]` of CLIP token ids, matching OpenAI's CLIP tokenizer.

    `CLIPTokenizer()` reads OpenAI's BPE file from the minisd cache; `from_pretrained(path)` reads
    an SD `tokenizer/` folder or a BPE file.
    """

    model_max_length = MODEL_MAX_LENGTH

    def __init__(self, vocab: dict[str, int] | None = None, merges: list[tuple[str, str]] | None = None):
        if merges is None:
            merges = read_bpe_file(find_clip_bpe())
        self.vocab = build_vocab(merges) if vocab is None else dict(vocab)
        for special in (SOT, EOT):
            if special not in self.vocab:
                raise ValueError(f"the vocabulary has no {special!r}; is this a CLIP vocabulary?")
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.bos_token_id, self.eos_token_id = self.vocab[SOT], self.vocab[EOT]
        self.pad_token_id = self.eos_token_id  # SD v1.x pads with <|endoftext|>
        # word (byte-encoded) -> ids; prompts repeat words, so each word is merged only once
        self._cache: dict[str, list[int]] = {SOT: [self.bos_token_id], EOT: [self.eos_token_id]}
        # words added after training (textual inversion): text -> the ids it stands for (a multi-vector
        # embedding's first name stands for all its vectors), matched before BPE, case-insensitively
        self.added_tokens: dict[str, list[int]] = {}
        self._added_pattern: regex.Pattern | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None) -> CLIPTokenizer:
        """Load from an SD `tokenizer/` folder, a model folder holding one, or a BPE `.gz` file.

        With no path, OpenAI's BPE file is looked up in the cache (`python -m minisd setup`).
        """
        if path is None:
            return cls()
        path = Path(path)
        if path.is_file():
            return cls(merges=read_bpe_file(path))
        if not path.is_dir():
            raise FileNotFoundError(f"{path} does not exist. {_missing_vocabulary(path, ['vocab.json'])}")
        if not (path / "vocab.json").exists() and (path / "tokenizer").is_dir():
            path = path / "tokenizer"
        missing = [name for name in ("vocab.json", "merges.txt") if not (path / name).is_file()]
        if missing:
            raise _missing_vocabulary(path, missing)
        vocab = read_json(path / "vocab.json")
        if not isinstance(vocab, dict) or not vocab:
            raise UserError(f"{path / 'vocab.json'} holds no vocabulary (expected an object token -> id)")
        try:
            lines = (path / "merges.txt").read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as e:
            raise UserError(f"{path / 'merges.txt'} is not a text (UTF-8) file: replace it") from e
        return cls(vocab=vocab, merges=parse_merges(lines, path / "merges.txt"))

    def save_pretrained(self, folder: str | Path) -> None:
        """Write vocab.json, merges.txt and tokenizer_config.json in the SD `tokenizer/` layout."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "vocab.json", json.dumps(self.vocab, ensure_ascii=False))
        merges = "".join(f"{a} {b}\n" for a, b in self.merges)
        write_text(folder / "merges.txt", "#version: 0.2\n" + merges)
        config = {
            "model_max_length": self.model_max_length,
            "do_lower_case": True,
            "bos_token": SOT,
            "eos_token": EOT,
            "pad_token": EOT,
            "unk_token": EOT,
            "tokenizer_class": "CLIPTokenizer",
        }
        write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")

    def __len__(self) -> int:
        return len(self.vocab)

    def words(self, text: str) -> list[str]:
        """The cleaned, pre-tokenised words of `text` (before byte encoding and BPE)."""
        return PRETOKENIZE.findall(clean_text(text))

    def _word_ids(self, word: str) -> list[int]:
        key = byte_encode(word)
        if key in self._cache:
            return self._cache[key]
        ids = [self.vocab[s] for s in bpe(key, self.ranks)]
        if len(key) <= MAX_TOKEN_CHARS:  # ordinary words; a flood of long unique ones stays out of memory
            self._cache[key] = ids
        return ids

    def add_tokens(self, tokens: str | list[str]) -> int:
        """Add new words to the vocabulary (ids after the last), each read as one token; returns how
        many were new. As transformers' `add_tokens`, for textual inversion."""
        tokens = [tokens] if isinstance(tokens, str) else list(tokens)
        new = [t for t in dict.fromkeys(tokens) if t not in self.vocab]
        for token in new:
            self.vocab[token] = len(self.vocab)
            self.id_to_token[self.vocab[token]] = token
            self.added_tokens[token] = [self.vocab[token]]
        names = sorted(self.added_tokens, key=len, reverse=True)  # "<x>_1" before "<x>"
        self._added_pattern = regex.compile("(" + "|".join(map(regex.escape, names)) + ")", regex.IGNORECASE)
        return len(new)

    def encode(self, text: str) -> list[int]:
        """`[SOT, ..., EOT]` ids for one text, neither padded nor truncated."""
        text = _check_text(text)
        pieces = [text] if self._added_pattern is None else self._added_pattern.split(text)
        body = []
        for i, piece in enumerate(pieces):  # odd pieces are added tokens
            if i % 2:
                body += next(v for k, v in self.added_tokens.items() if k.lower() == piece.lower())
            else:
                body += [t for word in self.words(piece) for t in self._word_ids(word)]
        return [self.bos_token_id, *body, self.eos_token_id]

    def encode_truncated(self, text: str, length: int = MODEL_MAX_LENGTH) -> tuple[list[int], str]:
        """`[SOT, ..., EOT]` cut to at most `length` ids, and the dropped text ("" when all fits).

        Merging stops once the ids are full, and at most `length * MAX_TOKEN_CHARS` characters of a
        word are merged, so a huge text costs about as much as a full prompt.
        """
        budget = length - 2
        limit = 2 * length * MAX_TOKEN_CHARS  # more than `length` tokens can cover, whitespace included
        if self._added_pattern is not None and self._added_pattern.search(text[:limit]):
            ids = self.encode(text[:limit])  # added words (textual inversion) are read whole
            if len(ids) <= length:
                return ids, text[limit:]
            return [*ids[: length - 1], self.eos_token_id], self.decode(ids[length - 1 : -1]) + text[limit:]
        cleaned = clean_text(_check_text(text)[:limit])
        body: list[int] = []
        for match in PRETOKENIZE.finditer(cleaned):
            word = match.group()
            ids = self._word_ids(word[: (budget - len(body) + 1) * MAX_TOKEN_CHARS])
            if len(body) + len(ids) > budget:
                kept = ids[: budget - len(body)]
                dropped = word[len(self.decode(kept)) :] + cleaned[match.end() :]
                return [self.bos_token_id, *body, *kept, self.eos_token_id], dropped + text[limit:]
            body += ids
        return [self.bos_token_id, *body, self.eos_token_id], text[limit:]

    def tokenize(self, text: str) -> list[str]:
        """The vocabulary strings of `text`'s tokens (byte stand-ins, `</w>` ending each word)."""
        return [self.id_to_token[i] for i in self.encode(text)[1:-1]]

    def token_pieces(self, text: str) -> list[str]:
        """Readable text of each token (`</w>` shown as a trailing space), for showing boundaries."""
        return [self.decode([i], strip=False) for i in self.encode(text)[1:-1]]

    def decode(
        self, ids: list[int] | torch.Tensor, skip_special_tokens: bool = True, strip: bool = True
    ) -> str:
        """Text of `ids`: bytes restored, each `</w>` read as a space."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        for i in ids:
            if operator.index(i) not in self.id_to_token:
                raise UserError(f"token id {i} is not in the vocabulary (ids 0 to {len(self.vocab) - 1})")
        special = {self.bos_token_id, self.eos_token_id}
        tokens = [self.id_to_token[i] for i in ids if not (skip_special_tokens and i in special)]
        text = byte_decode("".join(tokens)).replace(END_OF_WORD, " ")
        return text.strip() if strip else text

    def attention_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """bool [B, L]: False on the padding after each prompt's EOT, True up to that EOT (as the
        attention_mask of transformers' tokenizer)."""
        pad = (ids == self.pad_token_id).long()
        padding = pad.flip(-1).cummin(-1).values.flip(-1).bool()  # the run of EOT ids ending each row
        padding[..., 1:] &= padding[..., :-1].clone()  # its first is the prompt's own EOT: keep it
        return ~padding

    def __call__(self, text: str | list[str], max_length: int | None = None) -> torch.Tensor:
        """`LongTensor[B, 77]`: SOT, ids, EOT, padded with EOT; too-long prompts are cut with a warning."""
        texts = [_check_text(text)] if isinstance(text, str) else [_check_text(t) for t in _text_list(text)]
        length = self.model_max_length if max_length is None else operator.index(max_length)
        if length < 2:
            raise UserError(f"max_length={length}: it must be at least 2 (room for SOT and EOT), usually 77")
        rows = []
        for t in texts:
            ids, dropped = self.encode_truncated(t, length)
            if dropped.strip():
                shown = dropped if len(dropped) <= 60 else f"{dropped[:30]} ... {dropped[-25:]}"
                warnings.warn(
                    f"prompt is over CLIP's limit of {length - 2} tokens; this part was dropped: {shown!r}; "
                    "to read all of it, pass long_prompt=True (or `generate --long-prompt`)",
                    stacklevel=2,
                )
            rows.append(pad_or_truncate(ids, length, self.pad_token_id))
        return torch.tensor(rows, dtype=torch.long).reshape(len(texts), length)  # [B, 77]


def _check_text(text: object) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, bytes | bytearray):
        raise TypeError(
            f"the prompt is bytes ({bytes(text[:20])!r}...): decode it first, e.g. text.decode('utf-8')"
        )
    raise TypeError(
        f"the prompt must be a string (or a list of strings), got {type(text).__name__}: {text!r:.60}"
    )


def _text_list(text: object) -> list:
    if isinstance(text, list | tuple):
        return list(text)
    return [_check_text(text)]  # raises the TypeError naming the type
