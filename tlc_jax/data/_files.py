"""Clear missing-file errors, shared by every loader (atomic writes: tlc_jax.fileio)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


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
