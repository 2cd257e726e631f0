"""Files minisd fetches: CLIP's BPE vocabulary (chapter 01) into the user cache, and diffusers-layout
models from the Hugging Face hub when the optional `huggingface_hub` is installed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CLIP_BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
FETCH_COMMAND = "python -m minisd setup"


def cache_dir() -> Path:
    """`$MINISD_CACHE`, else `~/.cache/minisd`."""
    return Path(os.environ.get("MINISD_CACHE", Path.home() / ".cache" / "minisd"))


def clip_bpe_candidates() -> list[Path]:
    """The places searched for OpenAI's BPE file, in order."""
    places = [Path(p) for p in [os.environ.get("MINISD_CLIP_BPE")] if p]
    return places + [cache_dir() / CLIP_BPE_NAME]


def find_clip_bpe() -> Path:
    """Path of OpenAI's `bpe_simple_vocab_16e6.txt.gz`, or an error naming where we looked."""
    for path in clip_bpe_candidates():
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in clip_bpe_candidates())
    raise FileNotFoundError(
        f"CLIP's BPE vocabulary was not found (looked in: {looked}). "
        f"Fetch it with `{FETCH_COMMAND}`, or pass an SD model's tokenizer/ folder "
        "(vocab.json + merges.txt) to CLIPTokenizer.from_pretrained."
    )


def fetch_clip_bpe(force: bool = False) -> Path:
    """Copy OpenAI's BPE file out of the `open_clip_torch` wheel into the cache (no install).

    The wheel is only downloaded (`pip download --no-deps`), never installed: installing
    open_clip would replace a CPU build of torch with a CUDA one.
    """
    target = cache_dir() / CLIP_BPE_NAME
    if target.is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            tmp,
            "open_clip_torch",
        ]
        subprocess.run(cmd, check=True)
        wheel = next(Path(tmp).glob("open_clip_torch-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            data = z.read(f"open_clip/{CLIP_BPE_NAME}")
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def hub_download(repo_id: str, variant: str | None = None) -> Path:
    """Fetch a diffusers-layout pipeline ("owner/name") from the Hugging Face hub: the configs, the
    tokenizer and the safetensors weights only. Needs the optional `huggingface_hub` and a network."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ImportError(
            f"{repo_id!r} is not a local file or folder, and downloading it from the Hugging Face hub "
            'needs the optional huggingface_hub: python -m pip install "minisd[hub]" '
            '(from a clone of the book: python -m pip install -e ".[hub]")'
        ) from e
    suffix = f".{variant}.safetensors" if variant else ".safetensors"
    patterns = [
        "model_index.json",
        "*/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer/*",
        f"unet/diffusion_pytorch_model{suffix}",
        f"vae/diffusion_pytorch_model{suffix}",
        f"text_encoder/model{suffix}",
    ]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # offline, unknown repository, gated model: all say the same to a user
        raise FileNotFoundError(
            f"{repo_id!r} is not a local file or folder, and downloading it from the Hugging Face hub failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check the path or the name"
        ) from e
