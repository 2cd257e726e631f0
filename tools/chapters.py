"""Keeping the chapters honest: marked cells equal the package, committed notebooks are clean.

A chapter cell that shows package code starts with a marker line such as
`# minisd: minisd/models/resnet.py`; every top-level `def`/`class` in it must equal (by `ast`) the
definition of the same name in that module. `python -m tools.chapters` rewrites the marked cells
from the package (`--check` only lists them); `tests/test_notebook_sync.py` fails on any difference.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^# minisd: (minisd/[\w/]+\.py)\s*$")


def chapter_paths(root: Path = ROOT) -> list[Path]:
    """The numbered chapters and their solutions, in order."""
    chapters = root / "chapters"
    return sorted(chapters.glob("[0-9][0-9]_*.ipynb")) + sorted(chapters.glob("solutions/*.ipynb"))


def _definitions(source: str) -> dict[str, ast.AST]:
    tree = ast.parse(source)
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def marked_cells(nb_path: Path) -> list[tuple[int, str, str]]:
    """(cell index, module path, cell source) for every marked code cell."""
    nb = json.loads(nb_path.read_text())
    out = []
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        m = MARKER.match(src.split("\n", 1)[0])
        if cell["cell_type"] == "code" and m:
            out.append((i, m.group(1), src))
    return out


def cell_differences(module: str, cell_source: str, root: Path = ROOT) -> list[str]:
    """Names defined in the cell that are missing from, or differ from, the package module."""
    package = _definitions((root / module).read_text())
    cell = _definitions(cell_source)
    if not cell:
        return ["<the marked cell defines nothing>"]
    return [
        name
        for name, node in cell.items()
        if name not in package or ast.dump(node) != ast.dump(package[name])
    ]


def _package_source(module: str, names: list[str], root: Path) -> str:
    """Source of the named definitions, decorators included (`ast` segments start after them)."""
    lines = (root / module).read_text().splitlines()
    defs = _definitions("\n".join(lines))

    def segment(node: ast.AST) -> str:
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        return "\n".join(lines[start - 1 : node.end_lineno])

    return "\n\n\n".join(segment(defs[n]) for n in names)


def _prelude(cell_source: str) -> str:
    """What a marked cell holds between its marker and its first definition (its imports): kept."""
    tree = ast.parse(cell_source)
    first = min(
        (
            min([n.lineno] + [d.lineno for d in n.decorator_list])
            for n in tree.body
            if n.lineno and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ),
        default=1,
    )
    return "".join(cell_source.splitlines(keepends=True)[1 : first - 1])


def sync_chapters(write: bool = True, root: Path = ROOT) -> dict[str, int]:
    """Rewrite (or with write=False only count) marked cells that differ from the package."""
    report = {}
    for path in chapter_paths(root):
        nb = json.loads(path.read_text())
        changed = 0
        for i, module, src in marked_cells(path):
            if not cell_differences(module, src, root):
                continue
            changed += 1
            names = [n for n in _definitions(src) if n in _definitions((root / module).read_text())]
            new = f"# minisd: {module}\n" + _prelude(src) + _package_source(module, names, root)
            nb["cells"][i]["source"] = new.splitlines(keepends=True)
        if changed:
            report[str(path.relative_to(root))] = changed
            if write:
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return report


def hygiene_problems(nb_path: Path, max_bytes: int = 3_000_000) -> list[str]:
    """What makes a committed notebook unfit: unrun cells, out-of-order runs, errors, FAST banner."""
    problems = []
    size = nb_path.stat().st_size
    if size > max_bytes:
        problems.append(f"{size:,} bytes (limit {max_bytes:,}): downscale its images")
    nb = json.loads(nb_path.read_text())
    counts = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        counts.append(cell.get("execution_count"))
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"cell {i} has an error output ({out.get('ename')})")
            text = "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            if "FAST MODE" in text:
                problems.append(f"cell {i} shows the FAST banner: commit the outputs of a full run")
    if None in counts:
        problems.append("some code cells were never run")
    elif counts != list(range(1, len(counts) + 1)):
        problems.append(f"execution counts are not 1..{len(counts)} in order: run it top to bottom")
    return problems


BEHAVIOUR = re.compile(r"^# behaviour: \S")
RANDOM_WEIGHTS = re.compile(r"random weights", re.IGNORECASE)
WARNING = re.compile(r"\b(Future|User|Deprecation|Runtime)Warning\b")
PROGRESS_BAR = re.compile(r"\d(it/s|s/it)\]|\d%\|")
WIDGET = "application/vnd.jupyter.widget-view+json"


def _text(out: dict) -> str:
    data = out.get("data", {})
    return (
        "".join(out.get("text", ""))
        + "".join(data.get("text/plain", ""))
        + "".join(data.get("text/html", ""))
    )


def output_problems(nb: dict) -> list[str]:
    """What a reader must not see in committed outputs.

    - tracebacks (error outputs, or a traceback printed as text);
    - warnings: anything on stderr (Python warnings, a library's logged warnings, progress bars)
      and a FutureWarning / UserWarning / DeprecationWarning / RuntimeWarning in any output;
    - progress widgets (ipywidgets, tqdm.notebook) and tqdm bars (`12.3it/s]`, ` 40%|`);
    - in a *behaviour cell*, output of random weights. A behaviour cell shows what a model does
      (what guidance changes, where attention looks) and must come from a trained model; its first
      line says so: `# behaviour: <what the figure shows>`. Code that runs on random weights says
      so in its output (the words "random weights", e.g. `minisd.book.env.RANDOM_WEIGHTS`), so those
      words in a behaviour cell's output mean a picture of noise presented as behaviour.
    """
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        behaviour = bool(BEHAVIOUR.match("".join(cell["source"])))
        for out in cell.get("outputs", []):
            text = _text(out)
            if out.get("output_type") == "error" or "Traceback (most recent call last)" in text:
                problems.append(f"cell {i}: a traceback ({out.get('ename', 'printed')})")
            if WIDGET in out.get("data", {}) or PROGRESS_BAR.search(text):
                problems.append(f"cell {i}: a progress bar or widget")
            if warning := WARNING.search(text):
                problems.append(f"cell {i}: a {warning.group(0)}")
            elif out.get("name") == "stderr" and not PROGRESS_BAR.search(text):
                problems.append(f"cell {i}: stderr output {text.strip()[:60]!r}")
            if behaviour and RANDOM_WEIGHTS.search(text):
                problems.append(f"cell {i}: a behaviour cell shows random weights")
    return problems


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.chapters", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list the marked cells that differ")
    args = parser.parse_args()
    for path, n in sync_chapters(write=not args.check).items():
        print(f"{path}: {n} marked cell(s) {'differ' if args.check else 'rewritten'}")


if __name__ == "__main__":
    main()
