"""minisd.CLIPTokenizer against two independent references.

- transformers' CLIPTokenizer (built from the vocab.json/merges.txt our save_pretrained writes) on
  ordinary prompts. transformers 5 normalises with NFC + whitespace + lowercase only (no ftfy, no
  HTML unescaping), so this comparison uses printable ASCII without HTML entities.
- OpenAI's own SimpleTokenizer (open_clip's copy, read from the open_clip_torch wheel, never
  installed) on unicode and markup text, where ftfy and html.unescape matter.
"""

import importlib.util
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import CLIPTokenizer as HFCLIPTokenizer

from minisd.book import checks
from minisd.models.tokenizer import (
    CLIPTokenizer,
    bpe,
    bytes_to_unicode,
    clean_text,
)

ASTRONAUT_IDS = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]  # DESIGN.md


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tok():
    return CLIPTokenizer()


@pytest.fixture(scope="session")
def saved_folder(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def hf_tok(saved_folder):
    return HFCLIPTokenizer.from_pretrained(saved_folder)


@pytest.fixture(scope="session")
def openai_tok(pytestconfig):
    """OpenAI's SimpleTokenizer from the open_clip_torch wheel: downloaded, unpacked, imported by path."""
    folder = Path(pytestconfig.cache.mkdir("open_clip_reference"))
    source, bpe_file = (
        folder / "open_clip" / "tokenizer.py",
        folder / "open_clip" / "bpe_simple_vocab_16e6.txt.gz",
    )
    if not (source.is_file() and bpe_file.is_file()):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
        subprocess.run([*cmd, "-d", str(folder), "open_clip_torch"], check=True)
        with zipfile.ZipFile(next(folder.glob("open_clip_torch-*.whl"))) as z:
            z.extractall(folder, members=["open_clip/tokenizer.py", "open_clip/bpe_simple_vocab_16e6.txt.gz"])
    spec = importlib.util.spec_from_file_location("openai_clip_tokenizer", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(str(bpe_file))


# ---------------------------------------------------------------------------- prompts


def sd_prompts() -> list[str]:
    """A few hundred prompts in the style people type into Stable Diffusion."""
    hand = [
        "a photograph of an astronaut riding a horse",
        "",
        "   ",
        "cat,",
        "8k",
        "a cat, 8k, uhd, hdr",
        "(masterpiece:1.2), best quality, ((ultra-detailed)), [blurry:0.5]",
        "portrait of a woman, by greg rutkowski and alphonse mucha, trending on artstation",
        "it's a dog's life, isn't it? we're here, you've seen it, i'm sure they'll say i'd",
        "IT'S LOUD, DON'T SHOUT",
        "a 3d render of a 1970s car, 35mm, f/1.8, 1/250s, iso 100",
        "width=512 height=768 steps: 50, cfg scale: 7.5, seed: 1234567890",
        "cyberpunk city at night -- neon lights!!! rain... reflections???",
        "a red apple; a green pear: a yellow banana / still life",
        "low-poly fox, isometric, #gamedev @artist $100 50% off ^_^ ~~~ `code` |pipe| \\slash",
        "salt & pepper, R&D lab, rock&roll",
        "email me at someone@example.com or visit https://example.com/a_b?c=d",
        "a photo of <|endoftext|> a cat",
        "a\tcat\non  a\r\nmat",
        "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
        "x" * 300,
        "1234567890 3.14159 2,000,000 -42 +7 1e10 0x1f",
        "a painting of a cat " * 30,
        ", ".join(["highly detailed", "sharp focus", "octane render", "unreal engine 5"] * 8),
    ]
    rng = random.Random(0)
    subjects = ["a cat", "an astronaut", "a castle", "two robots", "an old man", "the eiffel tower", "a fox"]
    places = ["on the moon", "in a forest", "under the sea", "at sunset", "in tokyo", "on mars"]
    styles = ["oil painting", "watercolor", "pixel art", "photorealistic", "anime style", "digital art"]
    extras = [
        "8k",
        "4k uhd",
        "hdr",
        "35mm",
        "f/2.8",
        "artstation",
        "trending",
        "bokeh",
        "volumetric lighting",
    ]
    generated = []
    for _ in range(320):
        parts = [f"{rng.choice(subjects)} {rng.choice(places)}", rng.choice(styles)]
        parts += rng.sample(extras, rng.randint(0, 4))
        if rng.random() < 0.3:
            parts = [
                f"({p}:{rng.choice(['1.1', '1.25', '0.8'])})" if rng.random() < 0.4 else p for p in parts
            ]
        if rng.random() < 0.2:
            parts.append(rng.choice(["isn't it", "he's", "we'll", "they're", "don't"]))
        text = ", ".join(parts)
        generated.append(text.upper() if rng.random() < 0.1 else text)
    return hand + generated


PROMPTS = sd_prompts()

UNICODE_PROMPTS = [
    "Café crème brûlée, naïve façade, Ångström, Dvořák",
    "e\u0301le\u0301phant (decomposed accents)",
    "東京の夜景, 桜, 富士山",
    "서울의 밤, 한복",
    "Москва зимой",
    "القاهرة ليلا",
    "🐱🚀 a cat astronaut 👩🏽‍🚀 🇯🇵",
    "fish &amp; chips",
    "fish &amp;amp; chips",
    "&lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;apos&#39; &copy; 2024",
    "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",
    "âœ” No problems",
    "“curly quotes” and ‘single’ ones",
    "ＬＯＵＤ　ＮＯＩＳＥＳ",
    "ﬁne ﬂowers",
    "non\u00a0breaking\u2003spaces\u200band zero width",
    "control\x00chars\x07here\x1b[31m red \x1b[0m",
    "İstanbul, STRASSE, straße, ΣΊΣΥΦΟΣ",
    "a\x85b",
]


# ---------------------------------------------------------------------------- vocabulary


def test_vocabulary_layout(tok):
    assert len(tok) == 49_408 and len(tok.merges) == 48_894
    symbols = list(bytes_to_unicode().values())
    assert len(set(symbols)) == 256 and all(s.isprintable() and not s.isspace() for s in symbols)
    assert [tok.vocab[s] for s in symbols[:3]] == [0, 1, 2] and tok.vocab[symbols[0] + "</w>"] == 256
    assert tok.vocab["".join(tok.merges[0])] == 512
    assert (tok.vocab["<|startoftext|>"], tok.vocab["<|endoftext|>"]) == (49406, 49407)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)


def test_astronaut_ids(tok):
    assert tok.encode("a photograph of an astronaut riding a horse") == ASTRONAUT_IDS
    assert tok("a photograph of an astronaut riding a horse")[0, :10].tolist() == ASTRONAUT_IDS


def test_loading_paths_agree(tok, saved_folder, tmp_path):
    from minisd.loading.assets import find_clip_bpe

    for other in [
        CLIPTokenizer.from_pretrained(saved_folder),
        CLIPTokenizer.from_pretrained(find_clip_bpe()),
        CLIPTokenizer.from_pretrained(),
    ]:
        assert other.vocab == tok.vocab and other.merges == tok.merges
    model_root = tmp_path / "sd15"
    tok.save_pretrained(model_root / "tokenizer")
    assert CLIPTokenizer.from_pretrained(model_root).encode("8k, cat") == tok.encode("8k, cat")


# ---------------------------------------------------------------------------- against transformers


def test_ids_match_transformers_on_sd_prompts(tok, hf_tok):
    assert len(PROMPTS) > 300
    for prompt in PROMPTS:
        assert tok.encode(prompt) == hf_tok(prompt).input_ids, prompt
    with pytest.warns(UserWarning):
        ours = tok(PROMPTS)
    ref = hf_tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    assert ours.shape == (len(PROMPTS), 77)
    assert ours.tolist() == ref.input_ids.tolist()
    assert tok.attention_mask(ours).long().tolist() == ref.attention_mask.tolist()  # 1 up to EOT


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="&"), max_size=80)
)
def test_ids_match_transformers_on_ascii(tok, hf_tok, text):
    assert tok.encode(text) == hf_tok(text).input_ids


def test_decode_matches_transformers(tok, hf_tok):
    for prompt in PROMPTS[:60]:
        ids = tok.encode(prompt)
        assert tok.decode(ids) == hf_tok.decode(ids, skip_special_tokens=True)


# ---------------------------------------------------------------------------- against OpenAI's cleaning


@pytest.mark.parametrize("prompt", UNICODE_PROMPTS)
def test_unicode_and_markup_match_openai(tok, openai_tok, prompt):
    assert tok.encode(prompt)[1:-1] == openai_tok.encode(prompt)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_matches_openai(tok, openai_tok, text):
    # open_clip renamed the special tokens to <start_of_text>/<end_of_text>; OpenAI's names are ours
    assume("<|startoftext|>" not in text.lower() and "<|endoftext|>" not in text.lower())
    assert tok.encode(text)[1:-1] == openai_tok.encode(text)


def test_cleaning(tok):
    assert clean_text("fish &amp;amp; chips") == "fish & chips"
    assert (
        clean_text("  The Mona Lisa doesnÃ¢â‚¬â„¢t\n\t HAVE eyebrows. ")
        == "the mona lisa doesn't have eyebrows."
    )
    assert clean_text("ＬＯＵＤ　ＮＯＩＳＥＳ") == "loud noises"
    assert tok.words("cat, 8k (masterpiece:1.2) it's") == [
        "cat", ",", "8", "k", "(", "masterpiece", ":", "1", ".", "2", ")", "it", "'s"
    ]  # fmt: skip


def test_transformers_skips_ftfy_where_openai_does_not(tok, hf_tok, openai_tok):
    """Why unicode text is checked against OpenAI: transformers 5 does not unescape or fix text."""
    for text in ["fish &amp; chips", "“curly quotes”"]:
        assert tok.encode(text)[1:-1] == openai_tok.encode(text)
        assert tok.encode(text) != hf_tok(text).input_ids


# ---------------------------------------------------------------------------- decode, padding, truncation


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
def test_decode_gives_back_the_cleaned_text(tok, text):
    assume("<|startoftext|>" not in text.lower() and "<|endoftext|>" not in text.lower())
    decoded = tok.decode(tok.encode(text))
    assert decoded == " ".join(tok.words(text))  # the cleaned text, one space between pre-tokens
    assert decoded.replace(" ", "") == clean_text(text).replace(" ", "")


def test_decode_options(tok):
    ids = tok("a cat")[0]
    assert tok.decode(ids) == "a cat"
    assert tok.decode(ids[:4], skip_special_tokens=False) == "<|startoftext|>a cat <|endoftext|>"
    assert tok.token_pieces("a cat, 8k 🐱") == ["a ", "cat ", ", ", "8 ", "k ", "🐱 "]
    assert tok.tokenize("astronaut riding") == ["astronaut</w>", "riding</w>"]


def test_padding(tok):
    batch = tok(["a cat", ""])
    assert batch.shape == (2, 77) and batch.dtype.is_floating_point is False
    assert batch[0, :4].tolist() == [49406, 320, 2368, 49407] and (batch[0, 4:] == 49407).all()
    assert batch[1, 0] == 49406 and (batch[1, 1:] == 49407).all()
    assert tok("a cat").shape == (1, 77)


def test_truncation_warning_quotes_the_dropped_part(tok):
    prompt = "cat " * 75 + "on a red sofa"  # 79 tokens + SOT + EOT: "on a red sofa" is dropped
    with pytest.warns(UserWarning, match="dropped: 'on a red sofa'") as record:
        row = tok(prompt)[0].tolist()
    assert len(record) == 1
    assert row == tok.encode(prompt)[:76] + [49407]
    with pytest.warns(UserWarning, match="dropped: 'cat'"):
        tok("cat " * 76)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok("cat " * 75)  # exactly 77 ids: no warning


# ---------------------------------------------------------------------------- bad input


def test_missing_vocabulary_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"vocab.json or merges.txt.*python -m minisd setup"):
        CLIPTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has no merges.txt"):
        CLIPTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CLIPTokenizer.from_pretrained(tmp_path / "nowhere")
    monkeypatch.delenv("MINISD_CLIP_BPE", raising=False)
    monkeypatch.setenv("MINISD_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(FileNotFoundError, match=r"empty-cache.*python -m minisd setup"):
        CLIPTokenizer()


def test_not_a_clip_vocabulary(tmp_path):
    (tmp_path / "vocab.json").write_text('{"a": 0}')
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match="no '<|startoftext|>'"):
        CLIPTokenizer.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------- exercise checkers


def test_bpe_merge_checker(tok):
    def first_pair_found(word, ranks):  # merges in reading order instead of rank order
        symbols = [*word[:-1], word[-1] + "</w>"]
        merged = True
        while merged:
            merged = False
            for i in range(len(symbols) - 1):
                if (symbols[i], symbols[i + 1]) in ranks:
                    symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
                    merged = True
                    break
        return symbols

    def no_end_of_word(word, ranks):
        return bpe(word + " ", ranks)[:-1] if len(word) > 1 else [word]

    assert checks.bpe_merge(bpe, tok)
    assert not checks.bpe_merge(first_pair_found, tok)
    assert not checks.bpe_merge(no_end_of_word, tok)
