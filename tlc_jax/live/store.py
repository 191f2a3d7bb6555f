"""Frame storage on disk: atomic writes and retention by total size and by age.

`FrameStore` is the default store; anything with the same `put` / `read` / `delete` /
`files` methods (and a `root`, for `tlc_jax.live.fsck`) can replace it in the live
service (an object store, say). A frame is written under a temporary name and renamed
into place, so a path handed out always holds a whole file. Paths are relative to the
store's root: `<device>/<YYYYmmdd>/<time>-<hash>.<ext>`.

`expired` / `enforce_retention` look at the files alone: right for a store nothing else
indexes. The live service does not use them: a file is written before its frame's row
is committed, so the files on disk include frames not committed yet, and retention
there goes by the committed rows (`LiveService.enforce_retention`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

from tlc_jax.fileio import atomic_file
from tlc_jax.live.devices import Frame

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class StoredFile:
    path: str  # Relative to the store's root.
    size: int
    mtime: float


class FrameStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def folder_of(device: str) -> str:
        """The top folder of a device's frames: a safe name (no hidden or ".." names)."""
        return _SAFE.sub("_", device).lstrip(".") or "_"

    def put(self, frame: Frame) -> str:
        """Writes the frame's bytes; returns the path relative to the root."""
        device = self.folder_of(frame.device)
        stamp = time.strftime("%Y%m%d", time.gmtime(frame.captured_at))
        ext = ".png" if frame.data.startswith(b"\x89PNG") else ".jpg"
        name = f"{frame.captured_at:.6f}-{frame.sha256[:16]}{ext}"
        relative = Path(device) / stamp / name
        with atomic_file(self.root / relative) as tmp:
            tmp.write_bytes(frame.data)
        return relative.as_posix()

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def delete(self, path: str) -> None:
        (self.root / path).unlink(missing_ok=True)

    def files(self) -> list[StoredFile]:
        """Every stored frame, oldest first (temporary files excluded)."""
        out = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.startswith("."):
                st = p.stat()
                out.append(StoredFile(p.relative_to(self.root).as_posix(), st.st_size,
                                      st.st_mtime))
        return sorted(out, key=lambda f: (f.mtime, f.path))

    def expired(self, *, max_bytes: int | None = None, max_age_s: float | None = None,
                now: float | None = None) -> list[str]:
        """The frames retention would delete: older than max_age_s, then the oldest
        until the total fits max_bytes. Nothing is deleted (the live service first makes
        the database forget them, so no row ever points at a missing file)."""
        now = time.time() if now is None else now
        files, expired = self.files(), []
        total = sum(f.size for f in files)
        for f in files:
            too_old = max_age_s is not None and now - f.mtime > max_age_s
            too_big = max_bytes is not None and total > max_bytes
            if not (too_old or too_big):
                break  # Oldest first: every later file is newer, and the total fits.
            expired.append(f.path)
            total -= f.size
        return expired

    def enforce_retention(self, *, max_bytes: int | None = None,
                          max_age_s: float | None = None,
                          now: float | None = None) -> list[str]:
        """Deletes what `expired` lists; returns the deleted paths."""
        paths = self.expired(max_bytes=max_bytes, max_age_s=max_age_s, now=now)
        for path in paths:
            self.delete(path)
        return paths
