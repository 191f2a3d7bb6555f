"""Several live processes over one database: devices leased, frames claimed; a killed
run-time process's devices move to the others within one lease period, and no frame
is lost or stored twice. On SQLite (one host) and on a real PostgreSQL server."""

import asyncio
import collections
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from tlc_jax.live import db as DB
from tlc_jax.live import leases as L
from tlc_jax.live import registry as R
from tlc_jax.live.service import LiveService, ServiceConfig
from tlc_jax.live.simulate import CameraServer
from tlc_jax.live.store import FrameStore

from helpers import wait_for

LEASE_S = 3.0
CHANGE_S = 0.5


@pytest.fixture(scope="module")
def cameras():
    server = CameraServer(9, change_every_s=CHANGE_S).start_in_thread()
    yield server
    server.stop()


def owners(database):
    with database.session() as session:
        return dict(session.execute(sa.select(DB.DeviceLeaseRow.device_id,
                                              DB.DeviceLeaseRow.owner)).all())



def after_take_over(frames, since):
    """`frames` once each of the nine devices has stored two frames after `since`."""
    if len(frames) == 9 and all(sum(t > since for t, _ in seq) >= 2
                                for seq in frames.values()):
        return frames
    return None


def frames_by_device(database):
    with database.session() as session:
        rows = session.execute(sa.select(DB.FrameRow.device_id, DB.FrameRow.captured_at,
                                         DB.FrameRow.sha256)
                               .order_by(DB.FrameRow.captured_at)).all()
    out = collections.defaultdict(list)
    for device, t, sha in rows:
        out[device].append((t, sha))
    return out


def test_a_killed_runtime_process_hands_its_devices_over(db_url, tmp_path, cameras):
    database = DB.open_database(db_url)
    with database.transaction() as session:
        R.upsert(session, R.rows_to_specs(cameras.device_rows(interval_s=CHANGE_S / 2)))
    url = database.url.render_as_string(hide_password=False)
    cmd = [sys.executable, "-m", "tlc_jax.live", "run", "--role", "runtime", "--workdir",
           str(tmp_path), "--db", url, "--lease-s", str(LEASE_S), "--refresh-s", "0.5",
           "--timeout-s", "1", "--allow", "127.0.0.1", "--duration-s", "120"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    try:
        # Fair shares: three devices each.
        wait_for(lambda: sorted(collections.Counter(owners(database).values()).values())
                 == [3, 3, 3], 60, "three processes holding three devices each")
        victim = procs[0]
        held = owners(database)
        lost = {d for d, o in held.items() if f":{victim.pid}:" in o}
        assert len(lost) == 3
        wait_for(lambda: all(len(frames_by_device(database).get(d, ())) >= 2 for d in lost),
                 60, "two frames from each of the victim's devices before the kill")
        victim.send_signal(signal.SIGKILL)
        killed_at = time.time()
        victim.wait(10)
        wait_for(lambda: len(owners(database)) == 9 and not any(
            f":{victim.pid}:" in o for o in owners(database).values()),
                 LEASE_S + 10, "the survivors taking the victim's devices over")
        taken_over_at = time.time()
        since = max(taken_over_at, killed_at + LEASE_S)
        frames = wait_for(lambda: after_take_over(frames_by_device(database), since), 60,
                          "two frames from every device after the take-over")
    finally:
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        errors = [p.communicate(timeout=60)[1] for p in procs[1:]]
    assert [p.returncode for p in procs[1:]] == [0, 0], errors
    assert taken_over_at - killed_at <= LEASE_S + 3
    assert owners(database) == {}  # A clean stop gives the leases back at once.
    for device, seq in frames.items():
        times = [t for t, _ in seq]
        hashes = [h for _, h in seq]
        # Stored twice = the same picture in two consecutive rows (the cameras change
        # picture every CHANGE_S and cycle through four).
        assert all(a != b for a, b in zip(hashes, hashes[1:])), (
            device, device in lost, round(killed_at, 2),
            [(round(t, 2), h[:8]) for t, h in seq])
        gaps = [b - a for a, b in zip(times, times[1:])]
        if device in lost:
            assert times[-1] > killed_at + LEASE_S, device  # Polled again after the kill.
            assert max(gaps) <= LEASE_S + 3, (device, max(gaps))
        else:  # Untouched by the kill: no gap beyond a picture change and a poll.
            assert max(gaps) <= 3 * CHANGE_S + 1.0, (device, max(gaps))
    database.dispose()


def test_analyzer_processes_classify_each_stored_frame_once(db_url, tmp_path, cameras,
                                                            trained_run):
    """One run-time process and two analyzer processes (in one event loop here): every
    stored frame gets exactly one prediction."""
    from tlc_jax.live.analyzer import Analyzer

    database = DB.open_database(db_url)
    with database.transaction() as session:
        R.upsert(session, R.rows_to_specs(cameras.device_rows(interval_s=0.2)[:4]))
    store = FrameStore(tmp_path / "frames")
    analyzer = Analyzer(trained_run, batch_sizes=(1, 8))
    fast = dict(refresh_s=0.2, lease_s=2.0, timeout_s=1.0, allow=("127.0.0.1",),
                max_wait_s=0.02)
    runtime = LiveService(database, store, None, ServiceConfig(role="runtime", **fast))
    analyzers = [LiveService(database, store, analyzer,
                             ServiceConfig(role="analyzer", claim_s=5.0, **fast))
                 for _ in range(2)]

    async def main():
        stop_runtime, stop_analyzers = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(runtime.run(stop_runtime))]
        tasks += [asyncio.create_task(a.run(stop_analyzers)) for a in analyzers]
        # Until the run-time has stored 8 frames (a deadline, not a fixed sleep: on a
        # loaded machine the analyzers' first compilation holds this event loop for
        # seconds, and a fixed 4 s once saw no frame stored at all).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            with database.session() as session:
                if session.scalar(sa.select(sa.func.count(DB.FrameRow.id))) >= 8:
                    break
        stop_runtime.set()
        await tasks[0]
        for _ in range(100):  # Until the analyzers have caught up.
            await asyncio.sleep(0.2)
            with database.session() as session:
                left = session.scalar(sa.select(sa.func.count(DB.FrameRow.id)).where(
                    ~sa.select(DB.PredictionRow.id).where(
                        DB.PredictionRow.frame_id == DB.FrameRow.id).exists()))
            if left == 0:
                break
        stop_analyzers.set()
        await asyncio.gather(*tasks[1:])

    asyncio.run(main())
    with database.session() as session:
        n_frames = session.scalar(sa.select(sa.func.count(DB.FrameRow.id)))
        per_frame = session.execute(sa.select(DB.PredictionRow.frame_id, sa.func.count())
                                    .group_by(DB.PredictionRow.frame_id)).all()
        claims = session.scalar(sa.select(sa.func.count()).select_from(DB.FrameClaimRow))
    assert n_frames >= 8
    assert len(per_frame) == n_frames and {c for _, c in per_frame} == {1}
    assert claims == 0
    assert sum(a.counters["predictions"] for a in analyzers) == n_frames
    database.dispose()


def test_leases_take_fair_shares_and_expire(db_url):
    database = DB.open_database(db_url)
    with database.transaction() as session:
        R.upsert(session, [R.DeviceSpec(f"d{i}", "folder", {"path": "/tmp"})
                           for i in range(7)])
    a = L.DeviceLeases(database, "a", lease_s=30)
    assert len(a.renew().held) == 7  # Alone: everything.
    b = L.DeviceLeases(database, "b", lease_s=30)
    assert b.renew().held == set()  # Nothing free yet...
    assert len(a.renew().held) == 4  # ...until a gives back what exceeds ceil(7 / 2).
    assert len(b.renew().held) == 3
    assert a.held.isdisjoint(b.held)
    with database.transaction() as session:  # a dies: its leases expire.
        session.execute(sa.update(DB.DeviceLeaseRow).where(DB.DeviceLeaseRow.owner == "a")
                        .values(expires_at=0.0))
        session.execute(sa.update(DB.WorkerRow).where(DB.WorkerRow.id == "a")
                        .values(heartbeat_at=0.0))
        assert a.still_held(session, a.held) == set()
    assert len(b.renew().held) == 7
    with database.transaction() as session:  # A deactivated device is given back.
        session.execute(sa.update(DB.DeviceRow).where(DB.DeviceRow.name == "d0")
                        .values(active=False))
    assert len(b.renew().held) == 6
    b.release_all()
    assert owners(database) == {}
    database.dispose()
