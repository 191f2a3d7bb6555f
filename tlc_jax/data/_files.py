"""Atomic writes and clear missing-file errors, shared by every loader.

Readers of a cache or a split file must never see half of one: everything is written
under a temporary name in the destination folder (same filesystem), flushed, and then
moved into place with `os.replace`, which is atomic on POSIX.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Sequence


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it replaces `path` atomically.

    On any exception the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty temporary folder beside `path`; on success it becomes `path`.

    An existing `path` is replaced as a whole (moved aside, then deleted), so a reader
    sees the old complete folder or the new complete one, never a mix. On any exception
    the temporary folder is deleted and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                _fsync_file(child)
        os.chmod(tmp, 0o755)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_first(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of `names` that exists as a file in `folder`, else None."""
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def missing_file_error(
    what: str, names: Sequence[str], folder: Path, hint: str = ""
) -> FileNotFoundError:
    """A FileNotFoundError that names the file(s) looked for and the folder looked in."""
    tried = " or ".join(repr(n) for n in names)
    message = f"{what}: no file {tried} in folder {str(folder)!r}"
    if not folder.exists():
        message += " (the folder does not exist)"
    if hint:
        message += f". {hint}"
    return FileNotFoundError(message)
