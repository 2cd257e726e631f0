"""Writing files without ever leaving a partial one (chapter 06): each write goes to a temporary
file in the destination's folder and is renamed into place (`os.replace`, atomic on one file
system) only once complete, so a full disk or an interrupted run keeps the old file intact."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from minisd.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp's 0600 (and safetensors', which writes a new file) would make the file private
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise OSError(f"writing {path} failed ({e.strerror}): is the disk full?") from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """`Path.write_text`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `folder`; on success it takes `folder`'s place.

    An existing `folder` is refused unless `overwrite`, and even then only an empty folder or a
    model folder (model_index.json) is replaced, whole, so two models are never mixed.
    """
    folder = Path(folder)
    check_destination(folder, overwrite, is_folder=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            try:
                os.replace(tmp, folder)
            except OSError:
                os.replace(old, folder)  # put the old model back
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_destination(path: str | os.PathLike, overwrite: bool = False, is_folder: bool = False) -> None:
    """Refuse a destination that cannot or should not be written, before any work is done."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"the folder {path.parent} does not exist: create it first, or write elsewhere"
        )
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write in {path.parent}: no permission")
    if not path.exists():
        return
    if is_folder and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder: choose another destination")
    if not is_folder and path.is_dir():
        raise UserError(f"{path} is a folder: give a file name")
    if is_folder and any(path.iterdir()) and not (path / "model_index.json").is_file():
        raise UserError(
            f"{path} is a folder with other files and no model_index.json: minisd writes a model only into "
            "a new or empty folder, or replaces a whole model folder (with --overwrite)"
        )
    if not overwrite and (not is_folder or any(path.iterdir())):
        raise FileExistsError(f"{path} already exists: pass --overwrite (overwrite=True) to replace it")
