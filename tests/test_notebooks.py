"""Every chapter (and its solutions) executes top to bottom in FAST mode (MINISD_FAST=1)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tools.chapters import ROOT, chapter_paths

CHAPTERS = chapter_paths()


@pytest.mark.notebooks
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_in_fast_mode(path, monkeypatch):
    monkeypatch.setenv("MINISD_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()


def test_there_are_chapters():
    assert CHAPTERS, "no chapters found in chapters/"
