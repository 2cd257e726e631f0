"""The package's shape: imports run one way, no machine's paths, small modules.

The Stable Diffusion core (models, schedulers, loading, pipelines, convert.py, device.py, __init__.py) never
imports the book's parts (shapes, training, metrics, book); shapes never imports training or
metrics; the subpackages import each other without cycles. Every import counts, also one inside a
function, so a lazy import cannot hide a wrong direction.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = {"models", "schedulers", "loading", "pipelines", "convert", "device", "__init__"}
BOOK_PARTS = {"shapes", "training", "metrics", "book"}
FORBIDDEN = {unit: BOOK_PARTS for unit in CORE} | {"shapes": {"training", "metrics"}}
MAX_LINES = 400


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The top-level piece of the package a module belongs to: "minisd.models.unet" -> "models"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of the package in a file, nested ones and relative ones included."""
    package = root.name
    name = _module_name(path, root.parent)
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            # `from minisd import training` imports the subpackage, not only the package
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = root.parent.joinpath(*sub.split("."))
                found.append(
                    (node.lineno, sub if target.is_dir() or target.with_suffix(".py").is_file() else base)
                )
    return [(line, m) for line, m in found if m == package or m.startswith(package + ".")]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles between units, each as a path that returns to its start."""
    found, seen = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt) :] + [nxt]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            else:
                visit(nxt, path + [nxt])

    for start in sorted(edges):
        visit(start, [start])
    return found


def layout_problems(root: Path) -> list[str]:
    """Every wrong-way import and every cycle between the units of the package at `root`."""
    problems, edges = [], {}
    for path in sorted(root.rglob("*.py")):
        unit = _unit(_module_name(path, root.parent))
        for line, module in imports(path, root):
            target = _unit(module)
            where = f"{path.relative_to(root.parent)}:{line}"
            if target in FORBIDDEN.get(unit, ()):
                problems.append(f"{where} imports {module}: {unit} must not import {target}")
            if target != unit:
                edges.setdefault(unit, set()).add(target)
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(edges)]
    return problems


def test_imports_run_one_way():
    assert layout_problems(ROOT / "minisd") == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = tmp_path / "minisd" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return tmp_path / "minisd"


CLEAN = {
    "__init__.py": "from minisd.models import unet\n",
    "device.py": "import torch\n",
    "models/__init__.py": "",
    "models/unet.py": "from minisd.device import get_device\nfrom . import blocks\n",
    "models/blocks.py": "",
    "shapes/__init__.py": "from minisd.models.unet import UNet\n",
    "metrics/__init__.py": "",
    "book/__init__.py": "",
    "training/__init__.py": "from minisd import shapes\nfrom ..models import unet\n",
}


def test_the_checker_passes_a_clean_tree(tmp_path):
    assert layout_problems(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    "name, source, problem",
    [
        (
            "models/blocks.py",
            "def f():\n    from minisd.training import x\n",
            "models must not import training",
        ),
        ("models/blocks.py", "from ..book import checks\n", "models must not import book"),
        ("models/blocks.py", "from minisd import metrics\n", "models must not import metrics"),
        ("device.py", "import minisd.shapes.scenes\n", "device must not import shapes"),
        ("shapes/__init__.py", "from minisd.training import fit\n", "shapes must not import training"),
        ("models/unet.py", "import minisd.pipelines\n", "models -> pipelines"),
    ],
)
def test_the_checker_catches_a_planted_import(tmp_path, name, source, problem):
    files = CLEAN | {"pipelines/__init__.py": "from minisd.models import unet\n", name: source}
    problems = layout_problems(_tree(tmp_path, files))
    assert any(problem in p for p in problems), problems


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    paths = [ROOT / p for p in out.decode().split("\0") if p]
    return [p for p in paths if p.is_file() and b"\0" not in p.read_bytes()[:8192]]


def test_no_machine_paths_in_the_repository():
    """The repository stands alone: no file names a path of the machine it was written on."""
    machine = ("/" + "work/", "/" + "root/", "/" + "home/")  # split, so this file does not match itself
    hits = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _tracked_text_files()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if any(m in line for m in machine)
    ]
    assert hits == []


def test_modules_stay_small():
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in (ROOT / "minisd").rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}
