"""The command line's side of the bad-input catalogue: every mistake ends in one line on stderr and
exit status 2 (a traceback only with --debug), output paths are checked before any work, and no
existing file is changed and no partial file remains, even on a full disk."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_fails as fails

import minisd.training
from minisd.__main__ import build_parser, main
from minisd.loading.assets import find_clip_bpe
from minisd.pipelines import StableDiffusionPipeline
from minisd.shapes import tiny_model_path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a red circle on a blue background"


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the command gets as far as loading a model."""

    def refuse(*args, **kwargs):
        pytest.fail("the model was loaded before the bad argument was refused")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", refuse)


def digest(path: Path) -> dict[str, str]:
    """Hash of every file under `path` (or of the file), to prove nothing changed."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# ---------------------------------------------------------------------------- 2. before any work
EARLY = [
    (["-o", "{tmp}/missing/out.png"], "the folder .*missing does not exist"),
    (["-o", "{tmp}/out.xyz"], "cannot write pictures of type '.xyz'; use .png"),
    (["-o", "{tmp}/out"], "type '\\(no extension\\)'"),
    (["-o", "{tmp}"], "is a folder: give a file name"),
    (["--steps", "0"], "argument --steps: must be at least 1"),
    (["--steps", "ten"], "argument --steps: expected a whole number, got 'ten'"),
    (["--height", "-5"], "argument --height: must be at least 1"),
    (["--seed", str(2**70)], r"argument --seed: must be between 0 and 2\*\*64 - 1"),
    (["--seed", "1.5"], "argument --seed: expected a whole number"),
    (["--guidance", "nan"], "argument --guidance: must be a finite number"),
    (["--guidance", "inf"], "argument --guidance: must be a finite number"),
    (["--dtype", "fp8"], "argument --dtype: invalid choice: 'fp8'"),
    (["--scheduler", "bogus"], "unknown scheduler 'bogus'; known: .*ddim"),
    (["--upscale", "0"], "argument --upscale: must be at least 1"),
    (["--strength", "1.5"], "argument --strength: must be between 0 and 1"),
    (["--strength", "0.5"], "--strength and --mask need --init-image"),
    (["--mask", "m.png"], "--strength and --mask need --init-image"),
    (["--init-image", "{tmp}/missing.png"], "--init-image .*missing.png: no such file"),
]


@pytest.mark.parametrize(("args", "words"), EARLY, ids=[" ".join(a) for a, _ in EARLY])
def test_generate_refuses_before_loading(tmp_path, capsys, no_loading, args, words):
    fails(["generate", PROMPT, *[a.format(tmp=tmp_path) for a in args]], capsys, words)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_picture_inputs_refused_before_loading(tmp_path, capsys, no_loading):
    from PIL import Image

    picture, text = tmp_path / "in.png", tmp_path / "notes.png"
    Image.new("RGB", (32, 32)).save(picture)
    text.write_text("not a picture")
    out = str(tmp_path / "o.png")
    fails(["generate", PROMPT, "-o", out, "--init-image", str(text)], capsys, "not a picture PIL can read")
    fails(["generate", PROMPT, "-o", out, "--init-image", str(picture), "--height", "32"], capsys,
          "resize it instead of --height/--width")  # fmt: skip
    fails(["generate", PROMPT, "-o", out, "--init-image", str(picture), "--mask", str(text)], capsys,
          "--mask .*notes.png: not a picture")  # fmt: skip
    assert not Path(out).exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--plot", "{tmp}/plot.xyz"], "cannot write pictures of type '.xyz'"),
        (["--plot", "{tmp}/no/plot.png"], "does not exist"),
        (["--samples", "0"], "argument --samples: must be at least 1"),
        (["--guidance", "1", "x"], "argument --guidance: expected a number, got 'x'"),
    ],
)
def test_evaluate_refuses_before_loading(tmp_path, capsys, no_loading, args, words):
    fails(["evaluate", *[a.format(tmp=tmp_path) for a in args]], capsys, words)


def test_generate_never_overwrites_without_asking(tmp_path, capsys, no_loading):
    picture = tmp_path / "out.png"
    picture.write_bytes(b"a picture someone liked")
    for extra in ([], ["--steps", "2", "--seed", "7"]):
        err = fails(
            ["generate", PROMPT, "-o", str(picture), *extra],
            capsys,
            "out.png already exists: pass --overwrite",
        )
        assert len(err.strip().splitlines()) == 1
    assert picture.read_bytes() == b"a picture someone liked"
    assert list(tmp_path.iterdir()) == [picture]  # nothing else written


def test_generate_overwrite_replaces_the_picture(tmp_path, capsys):
    picture = tmp_path / "out.png"
    picture.write_bytes(b"an old picture")
    main(["generate", PROMPT, "-o", str(picture), "--steps", "2", "--overwrite"])
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert list(tmp_path.iterdir()) == [picture]


def test_bad_weights(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "o.png")
    fails(["generate", PROMPT, "-o", out, "--weights", str(tmp_path / "nothing")], capsys, "no model at")
    (tmp_path / "junk.safetensors").write_bytes(np.random.bytes(4096))
    fails(["generate", PROMPT, "-o", out, "--weights", str(tmp_path / "junk.safetensors")], capsys,
          "junk.safetensors .*is not a readable safetensors file")  # fmt: skip
    (tmp_path / "folder").mkdir()
    fails(["generate", PROMPT, "-o", out, "--weights", str(tmp_path / "folder")], capsys,
          "has no model_index.json")  # fmt: skip
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)  # a mistyped local path is not taken for a hub id
    fails(["generate", PROMPT, "-o", out, "--weights", "models/sd15"], capsys, "no model at models/sd15")
    assert not Path(out).exists()


def test_sizes_the_model_cannot_draw_and_a_bogus_device(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o.png"
    fails(["generate", PROMPT, "-o", str(out), "--height", "30"], capsys,
          "height=30: .*multiples of 16 .*nearest are 16 and 32")  # fmt: skip
    monkeypatch.setenv("MINISD_DEVICE", "bogus")
    fails(["generate", PROMPT, "-o", str(out)], capsys, "MINISD_DEVICE='bogus' is not a device")
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path, no_loading):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["generate", PROMPT, "-o", str(tmp_path / "missing" / "o.png"), "--debug"])


# ---------------------------------------------------------------------------- 1. convert keeps files
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    main(["convert", str(tiny_model_path()), str(path)])
    return path


CONVERT = [
    (["{tmp}/notes.txt", "{tmp}/out"], "notes.txt: unknown checkpoint type '.txt'"),
    (["{tmp}/junk.ckpt", "{tmp}/out"], "junk.ckpt .*is not a readable checkpoint"),
    (["{tmp}/nothing.ckpt", "{tmp}/out"], "nothing.ckpt does not exist"),
    (["{model}", "{tmp}/out.txt"], "DST must end in .safetensors or .ckpt"),
    (["{ckpt}", "{tmp}/out.safetensors"], "out.safetensors looks like a file name"),
    (["{model}", "{tmp}/missing/out.ckpt"], "the folder .*missing does not exist"),
]


@pytest.mark.parametrize(("args", "words"), CONVERT, ids=[" ".join(a) for a, _ in CONVERT])
def test_convert_mistakes(tmp_path, capsys, tiny_ckpt, args, words):
    (tmp_path / "notes.txt").write_text("shopping list")
    (tmp_path / "junk.ckpt").write_bytes(np.random.bytes(4096))
    before = digest(tmp_path)
    names = {"tmp": tmp_path, "model": tiny_model_path(), "ckpt": tiny_ckpt}
    fails(["convert", *[a.format(**names) for a in args]], capsys, words)
    assert digest(tmp_path) == before  # nothing written, nothing left


def test_convert_never_overwrites_without_asking(tmp_path, capsys, tiny_ckpt):
    precious = tmp_path / "precious.ckpt"
    precious.write_bytes(b"a model someone trained for a week")
    fails(
        ["convert", str(tiny_model_path()), str(precious)],
        capsys,
        "precious.ckpt already exists: pass --overwrite",
    )
    assert precious.read_bytes() == b"a model someone trained for a week"
    other = shutil.copytree(tiny_model_path(), tmp_path / "other_model")
    before = digest(other)
    fails(["convert", str(tiny_ckpt), str(other)], capsys, "other_model already exists: pass --overwrite")
    assert digest(other) == before  # two models are never mixed
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"jpeg")
    fails(
        ["convert", str(tiny_ckpt), str(photos), "--overwrite"], capsys, "photos is a folder with other files"
    )
    assert digest(photos) == {"photos/cat.jpg": hashlib.sha256(b"jpeg").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other_model", "photos", "precious.ckpt"]


def test_convert_overwrite_replaces_a_model_folder_whole(tmp_path, capsys, tiny_ckpt):
    folder = shutil.copytree(tiny_model_path(), tmp_path / "model")
    (folder / "unet" / "stale.txt").write_text("from the old model")
    main(["convert", str(tiny_ckpt), str(folder), "--config", str(tiny_model_path()), "--overwrite"])
    assert not (folder / "unet" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left
    umask = os.umask(0)
    os.umask(umask)
    for written in ("config.json", "diffusion_pytorch_model.safetensors"):  # not private to the user
        assert (folder / "unet" / written).stat().st_mode & 0o777 == 0o666 & ~umask
    StableDiffusionPipeline.from_pretrained(folder, device="cpu")


# ---------------------------------------------------------------------------- setup and train-tiny
def test_setup_with_a_damaged_vocabulary_suggests_force(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MINISD_CLIP_BPE", raising=False)
    monkeypatch.setenv("MINISD_CACHE", str(tmp_path))
    (tmp_path / "bpe_simple_vocab_16e6.txt.gz").write_bytes(b"<html>a captive portal page</html>")
    fails(["setup"], capsys, "bpe_simple_vocab_16e6.txt.gz is not a gzip-compressed .*--force")


def test_train_tiny_checks_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(minisd.training, "train_tiny_model", lambda *a, **k: pytest.fail("trained"))
    (tmp_path / "afile").write_text("x")
    fails(["train-tiny", "--output", str(tmp_path / "afile")], capsys, "afile is a file, not a folder")
    fails(["train-tiny", "--output", str(tmp_path / "no" / "model")], capsys, "does not exist")
    fails(
        ["train-tiny", "--output", str(tmp_path / "m"), "--device", "gpu9"],
        capsys,
        "--device 'gpu9': not a device",
    )
    fails(
        ["train-tiny", "--caption-dropout", "1.5"],
        capsys,
        "argument --caption-dropout: must be between 0 and 1",
    )
    monkeypatch.delenv("MINISD_CLIP_BPE", raising=False)
    monkeypatch.setenv("MINISD_CACHE", str(tmp_path / "empty_cache"))
    fails(["train-tiny", "--output", str(tmp_path / "mine")], capsys, "CLIP's BPE vocabulary was not found")


# ---------------------------------------------------------------------------- 11. help and usage
def test_every_argument_has_help_and_usage_names_the_command():
    parser = build_parser()
    assert parser.prog == "minisd"  # the installed command (pyproject's [project.scripts])
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            assert action.help and not action.help.endswith("..."), f"{name} {action.dest}"


# ---------------------------------------------------------------------------- through a real process
def run_cli(*args: str, limit: int | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m minisd ...`, optionally with writes above `limit` bytes failing (a full disk)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MINISD_CLIP_BPE": str(find_clip_bpe()),
    }
    if limit is None:
        cmd = [sys.executable, "-m", "minisd", *args]
    else:  # SIGXFSZ ignored: a write over the limit fails with EFBIG, as on a full disk
        code = (
            "import resource, signal, sys, runpy; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "sys.argv = ['minisd', *sys.argv[1:]]; runpy.run_module('minisd', run_name='__main__')"
        )
        cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    result = run_cli("generate", PROMPT, "-o", str(tmp_path / "missing" / "o.png"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("python -m minisd generate: error: the folder")
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("generate", PROMPT, "-o", str(tmp_path / "missing" / "o.png"), "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr and "FileNotFoundError" in result.stderr


def test_a_full_disk_changes_no_file_and_leaves_no_fragment(tmp_path, tiny_ckpt):
    target = tmp_path / "sd.ckpt"
    target.write_bytes(b"the old checkpoint")
    result = run_cli("convert", str(tiny_model_path()), str(target), "--overwrite", limit=256 * 1024)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "sd.ckpt failed" in result.stderr and "is the disk full?" in result.stderr
    assert target.read_bytes() == b"the old checkpoint"
    picture = tmp_path / "out.png"
    picture.write_bytes(b"the old picture")
    result = run_cli("generate", PROMPT, "-o", str(picture), "--steps", "2", "--overwrite", limit=1000)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "out.png failed (File too large): is the disk full?" in result.stderr, result.stderr
    assert picture.read_bytes() == b"the old picture"
    folder = tmp_path / "unpacked"
    result = run_cli(
        "convert", str(tiny_ckpt), str(folder), "--config", str(tiny_model_path()), limit=256 * 1024
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "sd.ckpt"]  # no partial file or folder
