"""The code is ruff clean (lint and format), like the project asks."""

import shutil
import subprocess

from tools.chapters import ROOT


def test_ruff_clean():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -e '.[dev]'"
    paths = [p for p in ("minisd", "tests", "benchmarks") if (ROOT / p).is_dir()]
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run([ruff, *args, *paths], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
