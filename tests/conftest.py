"""Shared test setup: deterministic seeds, tiers, and no accidental skips in CI.

Tiers: plain tests are the fast tier; `@pytest.mark.slow` uses full-size v1.5 configurations;
`@pytest.mark.notebooks` executes the chapters; `@pytest.mark.sd15` needs the real weights.
In CI (CI=true) a skipped test fails the run, unless its reason names MINISD_SD15 (the real
weights, which no machine here has) or says it needs a GPU (CI machines have none).
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
import torch

ALLOWED_SKIPS = ("MINISD_SD15", "needs a GPU")

# Under pytest-xdist (`-n 2`, the README's command) each worker gets its share of the cores, and the
# chapters' kernels, started by a worker, inherit it through OMP_NUM_THREADS.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def sd15_folder(tmp_path_factory):
    """One random-weight v1.5 pipeline (float16 files, 2 GB) per test process, shared by its slow tests and
    removed at the end."""
    from tiny_sd import save_sd15_pipeline

    folder = save_sd15_pipeline(tmp_path_factory.mktemp("sd15") / "sd")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIPS):
            pytest.minisd_bad_skips.append(f"{report.nodeid}: {reason}")


pytest.minisd_bad_skips = []


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") and pytest.minisd_bad_skips:
        print("\nSkipped in CI without an allowed reason (an oracle that did not run):")
        for line in pytest.minisd_bad_skips:
            print("  " + line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def relative_max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max|b|: the parity measure the issues name."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def cli_fails(argv: list[str], capsys, *words: str) -> str:
    """Run the CLI expecting a user error: exit status 2, one message naming each of `words` (regular
    expressions), no traceback; returns the message."""
    from minisd.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and re.search(r"^minisd \S+: error: ", err, re.M), err
    for w in words:
        assert re.search(w, err), f"{w!r} not in {err!r}"
    return err
