"""Frame files and rows agree after a crash (issue 14, item 6): `fsck` finds files
without rows and rows without files, the service reconciles at start-up, and a run-time
killed with SIGKILL at random points never leaves a row without its file."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from tlc_jax.live import db as DB
from tlc_jax.live import registry as R
from tlc_jax.live.cli import main
from tlc_jax.live.devices import make_frame
from tlc_jax.live.service import LiveService, ServiceConfig
from tlc_jax.live.store import FrameStore

from live_helpers import FRAMES, jpeg

DEADLINE_S = 120.0  # Generous: a busy machine only makes the loop slower.


def setup(database, tmp_path):
    with database.transaction() as session:
        R.upsert(session, [R.DeviceSpec("cam", "http_snapshot",
                                        {"url": "http://cam.example/x.jpg"})])
    store = FrameStore(tmp_path / "frames")
    service = LiveService(database, store, None, ServiceConfig(refresh_s=0.2))
    service._list_devices()  # Takes the device's lease.
    return store, service


def row_paths(database):
    with database.session() as session:
        return set(session.scalars(sa.select(DB.FrameRow.path)))


def age(store, path, seconds):
    when = time.time() - seconds
    os.utime(store.root / path, (when, when))


def test_fsck_finds_and_repairs_orphans_and_missing_files(db_url, tmp_path):
    from tlc_jax.live import fsck

    database = DB.open_database(db_url)
    store, service = setup(database, tmp_path)
    stored = service.store_frames([make_frame("cam", data, 10**6) for data in FRAMES])
    paths = sorted(row_paths(database))
    assert len(stored) == 3 and len(paths) == 3
    orphan = store.put(make_frame("cam", jpeg(7), 10**6))  # As after a SIGKILL.
    young = store.put(make_frame("cam", jpeg(9), 10**6))  # Maybe about to be committed.
    temp = store.root / "cam" / ".x.jpg.tmp-abc"  # A half-written temporary file.
    temp.write_bytes(b"half")
    for path in paths + [orphan]:
        age(store, path, 3600)
    os.utime(temp, (time.time() - 3600,) * 2)
    (store.root / paths[0]).unlink()  # A row without its file.

    report = fsck.check(database, store, grace_s=60)
    assert report.orphan_files == [orphan] and report.young_orphans == 1
    assert [p for _, p in report.missing_files] == [paths[0]]
    assert report.temp_files == ["cam/.x.jpg.tmp-abc"]
    assert not report.clean and not report.repaired
    assert "1 file(s) without a row" in str(report) and paths[0] in str(report)
    assert (store.root / orphan).exists() and row_paths(database) == set(paths)  # As is.

    report = fsck.check(database, store, grace_s=60, repair=True)
    assert report.repaired
    assert not (store.root / orphan).exists() and not temp.exists()
    assert (store.root / young).exists()  # Younger than the grace period: left.
    assert row_paths(database) == set(paths[1:])
    report = fsck.check(database, store, grace_s=60)
    assert report.clean and report.young_orphans == 1
    report = fsck.check(database, store, grace_s=0, repair=True)
    assert not (store.root / young).exists()
    assert fsck.check(database, store, grace_s=0).clean
    assert row_paths(database) == {f.path for f in store.files()}
    database.dispose()


def test_fsck_will_not_empty_a_store_against_an_empty_database(tmp_path):
    """The wrong --db (or a workdir's fresh SQLite) would make every file an orphan."""
    from tlc_jax.live import fsck

    database = DB.open_database(f"sqlite:///{tmp_path / 'live.db'}")
    store = FrameStore(tmp_path / "frames")
    path = store.put(make_frame("cam", FRAMES[0], 10**6))
    age(store, path, 3600)
    with pytest.raises(fsck.FsckRefused, match="no frames at all.*--force"):
        fsck.check(database, store, grace_s=0, repair=True)
    assert (store.root / path).exists()
    fsck.check(database, store, grace_s=0, repair=True, force=True)
    assert not (store.root / path).exists()
    database.dispose()


def test_fsck_command(tmp_path, capsys):
    workdir = tmp_path / "w"
    w = ["--workdir", str(workdir)]
    assert main(["fsck", *w]) == 2  # No database there: nothing is created.
    assert "no live database" in capsys.readouterr().err
    assert not (workdir / "live.db").exists()
    database = DB.open_database(DB.default_url(workdir))
    store, service = setup(database, workdir)
    service.store_frames([make_frame("cam", FRAMES[0], 10**6)])
    orphan = store.put(make_frame("cam", FRAMES[1], 10**6))
    assert main(["fsck", *w, "--grace-s", "0"]) == 1  # Found, not repaired.
    out = capsys.readouterr().out
    assert "1 file(s) without a row" in out and orphan in out and "--repair" in out
    assert main(["fsck", *w, "--grace-s", "0", "--repair", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["orphan_files"] == [orphan] and report["repaired"] is True
    assert main(["fsck", *w]) == 0 and "clean" in capsys.readouterr().out
    database.dispose()


# Runs the run-time, killing itself with SIGKILL right after its KILL_AT_PUT-th frame
# file is written (before that frame's row is committed), if the variable is set.
KILLER = """
import os, signal, sys
from tlc_jax.live import store
limit = int(os.environ.get("KILL_AT_PUT") or 0)
if limit:
    put, count = store.FrameStore.put, [0]
    def killing_put(self, frame):
        path = put(self, frame)
        count[0] += 1
        if count[0] >= limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return path
    store.FrameStore.put = killing_put
from tlc_jax.live.cli import main
sys.exit(main(sys.argv[1:]))
"""


def files_on_disk(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def test_sigkill_at_random_points_never_leaves_a_row_without_its_file(tmp_path):
    """A run-time process killed (SIGKILL) at random points, again and again: no row
    ever names a missing file; the files of uncommitted frames (aged past the grace
    period) are removed when the next process starts; after `fsck --repair` files and
    rows agree."""
    from tlc_jax.live.simulate import CameraServer

    seed = int(os.environ.get("TLC_TEST_SEED", "0")) or random.randrange(1, 10**6)
    rng = random.Random(seed)
    workdir = tmp_path / "live"
    database = DB.open_database(DB.default_url(workdir))
    cameras = CameraServer(4, {}, change_every_s=0.05).start_in_thread()
    try:
        with database.transaction() as session:
            R.upsert(session, R.rows_to_specs(cameras.device_rows(interval_s=0.05)))
        root = workdir / "frames"
        orphans: set[str] = set()
        modes = ["in_put", "external"] + [rng.choice(["in_put", "external"])
                                          for _ in range(3)]
        for round_, mode in enumerate(modes):
            before = row_paths(database)
            env = {**os.environ, "PYTHONUNBUFFERED": "1",
                   "KILL_AT_PUT": str(rng.randint(1, 40)) if mode == "in_put" else ""}
            with open(tmp_path / f"err-{round_}", "w") as err:
                process = subprocess.Popen(
                    [sys.executable, "-c", KILLER, "run", "--workdir", str(workdir),
                     "--role", "runtime", "--allow", "127.0.0.1", "--refresh-s", "0.2",
                     "--lease-s", "1"],
                    stdout=subprocess.DEVNULL, stderr=err, env=env)
            try:
                if mode == "external":  # Once it stores again, at a random moment.
                    target = len(before) + rng.randint(1, 40)
                    deadline = time.monotonic() + DEADLINE_S
                    while len(row_paths(database)) < target:
                        assert process.poll() is None, (tmp_path / f"err-{round_}").read_text()
                        assert time.monotonic() < deadline, "no frames stored"
                        time.sleep(0.02)
                    time.sleep(rng.uniform(0, 0.2))
                    process.send_signal(signal.SIGKILL)
                process.wait(DEADLINE_S)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(30)
            assert process.returncode == -signal.SIGKILL, (
                round_, mode, (tmp_path / f"err-{round_}").read_text()[-3000:])
            rows, files = row_paths(database), files_on_disk(root)
            assert rows <= files, (round_, mode, sorted(rows - files))  # The invariant.
            assert not (orphans & files), "the previous start-up left orphans"
            assert rows > before or mode == "in_put", (round_, mode)
            orphans = files - rows
            if mode == "in_put":
                assert orphans, "the file written just before the kill has no row"
            for path in orphans:  # Older than the grace period by the next start.
                age(FrameStore(root), path, 3600)
        from tlc_jax.live import fsck

        report = fsck.check(database, FrameStore(root), grace_s=0)
        assert report.missing_files == [] and sorted(report.orphan_files) == sorted(orphans)
        fsck.check(database, FrameStore(root), grace_s=0, repair=True)
        assert fsck.check(database, FrameStore(root), grace_s=0).clean
        assert row_paths(database) == files_on_disk(root), f"seed {seed}"
    finally:
        cameras.stop()
        database.dispose()
