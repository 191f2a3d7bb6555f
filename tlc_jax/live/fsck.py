"""Frame files and frame rows agree: find (and, asked to, repair) where they do not.

Why they can disagree: the live service writes a frame's file before it commits the
frame's row, so no row ever names a missing or half-written file; a run-time killed
between the two (SIGKILL, a power cut) leaves files without rows, and a write killed
half-way leaves a temporary file. Rows without files should never happen (retention
deletes rows before files) but can after files were deleted by hand, a backup was
restored, or a disk lost data.

`check(db, store, grace_s=60, repair=False)` compares the two and reports:

- files without a row older than `grace_s`: removed on repair (younger ones may belong
  to a transaction in progress in another process sharing the store: left, counted);
- rows without a file: removed on repair, with their predictions;
- temporary files of interrupted writes (`.<name>.tmp-*`) older than `grace_s`: removed.

Each removal is checked again just before it is made (the row still missing, the file
still missing), so it is safe while run-time processes are writing.

The live service runs it (with repair) at start-up and every `reconcile_every_s`;
`python -m tlc_jax.live fsck` runs it by hand (a report; `--repair` to fix).

A guard: repair removes no file when the database has no frame rows at all and none
of the files lies in the folder of one of its devices - that is another database (a
wrong `--db`, a fresh SQLite file): `FsckRefused`, unless `force`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa

from tlc_jax.live.db import Database, DeviceRow, FrameRow
from tlc_jax.live.store import FrameStore

CHUNK = 500  # Rows per statement.
SHOWN = 20  # Paths listed per kind in the text report.


class FsckRefused(RuntimeError):
    """A repair that would remove files of what looks like another database."""


@dataclasses.dataclass
class FsckReport:
    root: str
    grace_s: float
    files: int = 0  # Frame files found (temporary files not counted).
    rows: int = 0  # Frame rows found.
    orphan_files: list[str] = dataclasses.field(default_factory=list)
    missing_files: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    temp_files: list[str] = dataclasses.field(default_factory=list)
    young_orphans: int = 0  # Files without a row, younger than grace_s: left alone.
    repaired: bool = False

    @property
    def clean(self) -> bool:
        return not (self.orphan_files or self.missing_files or self.temp_files)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["missing_files"] = [{"frame_id": i, "path": p} for i, p in self.missing_files]
        out["clean"] = self.clean
        return out

    def __str__(self) -> str:
        lines = [f"Frame store {self.root}: {self.files} file(s), {self.rows} row(s)."]

        def listed(paths: list[str]) -> str:
            more = f" ... and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
            return ", ".join(paths[:SHOWN]) + more

        verb = "removed" if self.repaired else "found"
        if self.orphan_files:
            lines.append(f"  {len(self.orphan_files)} file(s) without a row (older than "
                         f"{self.grace_s:g} s), {verb}: {listed(self.orphan_files)}")
        if self.missing_files:
            lines.append(f"  {len(self.missing_files)} row(s) without a file, {verb}: "
                         + listed([f"{p} (frame {i})" for i, p in self.missing_files]))
        if self.temp_files:
            lines.append(f"  {len(self.temp_files)} temporary file(s) of interrupted "
                         f"writes, {verb}: {listed(self.temp_files)}")
        if self.young_orphans:
            lines.append(f"  {self.young_orphans} file(s) without a row younger than "
                         f"{self.grace_s:g} s left alone (their rows may be about to be "
                         f"committed).")
        if self.clean:
            lines.append("  Rows and files agree: clean.")
        elif not self.repaired:
            lines.append("  Run again with --repair to remove them.")
        return "\n".join(lines)


def _scan(root: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(frame files, temporary files): relative path -> modification time. Links are
    not followed."""
    files, temps = {}, {}
    for folder, dirs, names in os.walk(root):
        base = Path(folder)
        for name in names:
            path = base / name
            try:
                st = path.lstat()
            except FileNotFoundError:  # Deleted meanwhile (retention, a rename).
                continue
            relative = path.relative_to(root).as_posix()
            (temps if name.startswith(".") else files)[relative] = st.st_mtime
    return files, temps


def _chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _another_database(db: Database, orphans: list[str]) -> bool:
    with db.session() as session:
        if session.scalar(sa.select(FrameRow.id).limit(1)) is not None:
            return False
        folders = {FrameStore.folder_of(n) for n in session.scalars(sa.select(DeviceRow.name))}
    return not any(p.split("/", 1)[0] in folders for p in orphans)


def check(db: Database, store: Any, *, grace_s: float = 60.0, repair: bool = False,
          force: bool = False, now: float | None = None) -> FsckReport:
    """Compares the store's files with the database's frame rows (see the module's
    docstring); with `repair`, removes what does not agree."""
    if grace_s < 0:
        raise ValueError(f"grace_s must be >= 0; got {grace_s}.")
    root = Path(store.root)
    now = time.time() if now is None else now
    cutoff = now - grace_s
    files, temps = _scan(root)
    with db.session() as session:  # After the scan: a file listed has its row by now.
        rows = dict(session.execute(sa.select(FrameRow.path, FrameRow.id)).all())
    without_row = [p for p in files if p not in rows]
    orphans = sorted(p for p in without_row if files[p] <= cutoff)
    report = FsckReport(
        root=str(root), grace_s=grace_s, files=len(files), rows=len(rows),
        orphan_files=orphans,
        # Not in the scan, and not there now either (a file written after the scan).
        missing_files=sorted((i, p) for p, i in rows.items()
                             if p not in files and not (root / p).exists()),
        temp_files=sorted(p for p, t in temps.items() if t <= cutoff),
        young_orphans=len(without_row) - len(orphans))
    if repair:
        if orphans and not force and _another_database(db, orphans):
            raise FsckRefused(
                f"The database has no frames at all, and none of the {len(orphans)} "
                f"file(s) in {root} lies in the folder of one of its devices: is it the "
                f"right database (--db / --workdir)? Nothing was removed; give --force "
                f"to remove them anyway.")
        _repair(db, store, report)
    return report


def _repair(db: Database, store: Any, report: FsckReport) -> None:
    root = Path(store.root)
    for chunk in _chunks(report.missing_files):
        gone = [i for i, p in chunk if not (root / p).exists()]
        if gone:
            with db.transaction() as session:  # Predictions and claims cascade.
                session.execute(sa.delete(FrameRow).where(FrameRow.id.in_(gone)))
    for chunk in _chunks(report.orphan_files):
        with db.session() as session:  # A row committed since the scan keeps its file.
            kept = set(session.scalars(sa.select(FrameRow.path).where(
                FrameRow.path.in_(chunk))))
        for path in chunk:
            if path not in kept:
                store.delete(path)
    for path in report.temp_files:
        (root / path).unlink(missing_ok=True)
    report.repaired = True
