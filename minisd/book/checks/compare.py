"""The harness the exercise checkers share: a reader's function and the package's on the same cases."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


def compare_cases(
    name: str,
    candidate: Callable,
    reference: Callable,
    cases: Iterable[tuple[str, tuple]],
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> bool:
    """Call both functions on each case's arguments and report max|diff| (tensors) or equality."""
    ok_all = True
    for label, args in cases:
        try:
            got = candidate(*args)
        except Exception as e:  # a reader's exercise may fail in any way; report it, do not crash
            print(f"FAIL {name} [{label}]: raised {type(e).__name__}: {e}")
            ok_all = False
            continue
        want = reference(*args)
        if isinstance(want, torch.Tensor):
            if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                print(f"FAIL {name} [{label}]: got {shape}, expected shape {tuple(want.shape)}")
                ok_all = False
                continue
            diff = (got.float() - want.float()).abs().max().item()
            ok = torch.allclose(got.float(), want.float(), atol=atol, rtol=rtol)
            print(f"{'pass' if ok else 'FAIL'} {name} [{label}]: max|diff| = {diff:.2e}")
        else:
            ok = got == want
            print(
                f"{'pass' if ok else 'FAIL'} {name} [{label}]: got {got!r}"
                + ("" if ok else f", expected {want!r}")
            )
        ok_all &= bool(ok)
    print(f"{name}: {'all passed' if ok_all else 'some cases failed'}")
    return ok_all
