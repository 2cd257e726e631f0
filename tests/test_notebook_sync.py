"""Marked chapter cells equal the package definitions, and committed notebooks are clean."""

import pytest

from tools.chapters import cell_differences, chapter_paths, hygiene_problems, marked_cells

CHAPTERS = chapter_paths()
MARKED = [(p, i, mod, src) for p in CHAPTERS for i, mod, src in marked_cells(p)]


@pytest.mark.parametrize("path,index,module,source", MARKED, ids=[f"{m[0].stem}-cell{m[1]}" for m in MARKED])
def test_marked_cell_equals_package(path, index, module, source):
    differing = cell_differences(module, source)
    assert not differing, (
        f"{path.name} cell {index} shows {differing} differently from {module}: "
        "run `python -m tools.chapters`"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_committed_notebook_is_clean(path):
    problems = hygiene_problems(path)
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_sync_checker_catches_a_difference(tmp_path):
    (tmp_path / "minisd").mkdir()
    (tmp_path / "minisd" / "m.py").write_text("def f(x):\n    return x + 1\n")
    assert (
        cell_differences("minisd/m.py", "# minisd: minisd/m.py\ndef f(x):\n    return x + 1\n", tmp_path)
        == []
    )
    assert cell_differences(
        "minisd/m.py", "# minisd: minisd/m.py\ndef f(x):\n    return x + 2\n", tmp_path
    ) == ["f"]
    assert cell_differences("minisd/m.py", "# minisd: minisd/m.py\ndef g(x):\n    return x\n", tmp_path) == [
        "g"
    ]


def test_sync_keeps_decorators(tmp_path):
    import json

    from tools.chapters import sync_chapters

    (tmp_path / "minisd").mkdir()
    (tmp_path / "chapters").mkdir()
    (tmp_path / "minisd" / "m.py").write_text(
        "from functools import cache\n\n\n@cache\ndef table():\n    return {1: 2}\n"
    )
    stale = "# minisd: minisd/m.py\ndef table():\n    return {1: 3}\n"
    cell = {"cell_type": "code", "metadata": {}, "source": stale, "outputs": [], "execution_count": None}
    nb_path = tmp_path / "chapters" / "01_x.ipynb"
    nb_path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert sync_chapters(root=tmp_path) == {"chapters/01_x.ipynb": 1}
    [(_, module, source)] = marked_cells(nb_path)
    assert source.splitlines()[1] == "@cache"
    assert cell_differences(module, source, tmp_path) == []


def test_sync_keeps_the_cells_imports(tmp_path):
    import json

    from tools.chapters import sync_chapters

    (tmp_path / "minisd").mkdir()
    (tmp_path / "chapters").mkdir()
    (tmp_path / "minisd" / "m.py").write_text("import math\n\n\ndef f(x):\n    return math.sqrt(x)\n")
    stale = "# minisd: minisd/m.py\nimport math\n\n\ndef f(x):\n    return math.sqrt(x + 1)\n"
    cell = {"cell_type": "code", "metadata": {}, "source": stale, "outputs": [], "execution_count": None}
    nb_path = tmp_path / "chapters" / "01_x.ipynb"
    nb_path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert sync_chapters(root=tmp_path) == {"chapters/01_x.ipynb": 1}
    [(_, module, source)] = marked_cells(nb_path)
    assert source.splitlines()[:3] == ["# minisd: minisd/m.py", "import math", ""]
    assert cell_differences(module, source, tmp_path) == []
