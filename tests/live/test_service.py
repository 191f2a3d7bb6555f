"""The whole live service: simulated cameras on loopback -> database -> stored frames ->
predictions, on SQLite and on a real PostgreSQL server."""

import asyncio
import json
import time

import pytest
import sqlalchemy as sa

from tlc_jax.live import db as DB
from tlc_jax.live import registry as R
from tlc_jax.live.analyzer import Analyzer
from tlc_jax.live.service import LiveService, ServiceConfig
from tlc_jax.live.simulate import CameraServer
from tlc_jax.live.store import FrameStore

BEHAVIOURS = {3: "dead", 4: "slow", 5: "malformed", 6: "digest", 7: "flapping"}
FAST = dict(timeout_s=0.4, refresh_s=0.2, fail_after=2, retry_failing_s=0.5,
            max_wait_s=0.02, health_every_s=0.3, allow=("127.0.0.1",))


@pytest.fixture(scope="module")
def cameras():
    server = CameraServer(9, BEHAVIOURS, change_every_s=0.2, slow_s=2.0,
                          flap_s=0.4).start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def analyzer(trained_run):
    analyzer = Analyzer(trained_run, batch_sizes=(1, 8), top_k=3)
    analyzer.warm_up()
    return analyzer


def register(database, rows):
    with database.transaction() as session:
        R.upsert(session, R.rows_to_specs(rows))


DEADLINE_S = 60.0  # Generous: the machine may be busy with other work.


def run_until(service, condition, timeout_s=DEADLINE_S):
    """Runs the service until `condition()` (called in a worker thread every 0.1 s)
    holds, then stops it and waits for it to finish; fails, showing the service's
    health, if that takes longer than timeout_s. No fixed running time: a loaded
    machine only makes it slower."""

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        deadline = time.monotonic() + timeout_s
        try:
            while not await asyncio.to_thread(condition):
                if task.done():
                    task.result()  # Raises what stopped the service early.
                    raise AssertionError("The service stopped by itself.")
                if time.monotonic() > deadline:
                    raise AssertionError(f"Not reached within {timeout_s} s; health: "
                                         f"{service.health()}")
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

    asyncio.run(main())


def frame_counts(database):
    with database.session() as session:
        return dict(session.execute(
            sa.select(DB.DeviceRow.name, sa.func.count(DB.FrameRow.id))
            .join(DB.FrameRow, isouter=True).group_by(DB.DeviceRow.name)).all())


def test_frames_flow_from_cameras_to_stored_predictions(db_url, tmp_path, cameras,
                                                        analyzer):
    database = DB.open_database(db_url)
    rows = cameras.device_rows(center=(40.42, -86.91), interval_s=0.1, mjpeg=[8])
    register(database, rows[:8] + rows[8:])
    store = FrameStore(tmp_path / "frames")
    service = LiveService(database, store, analyzer, ServiceConfig(**FAST),
                          health_path=tmp_path / "health.json")
    healthy = ["cam-0000", "cam-0001", "cam-0002", "cam-0006", "cam-0008"]
    reasons = ("rejected:unreachable", "rejected:timeout", "rejected:undecodable",
               "rejected:http_status")

    def done():
        counts, health = frame_counts(database), service.health()
        return (all(counts[name] >= 5 for name in healthy)
                and all(health["counters"].get(r, 0) > 0 for r in reasons)
                and {"cam-0003", "cam-0005"} <= set(health["failing"]))

    # The pictures change every 0.2 s: five new frames per healthy camera take about
    # a second, though the dead, slow and malformed cameras fail all along.
    run_until(service, done)
    counts = frame_counts(database)
    for name in healthy:
        assert counts[name] >= 5, (name, counts)
    assert counts["cam-0003"] == counts["cam-0004"] == counts["cam-0005"] == 0
    # Flapping: fewer frames than a healthy camera (whether any arrive depends on the
    # phase of its 503 periods against the backoff; tests/live/test_simulate.py covers
    # both).
    assert counts["cam-0007"] < max(counts[n] for n in healthy)

    health = json.loads((tmp_path / "health.json").read_text())
    c = health["counters"]
    assert c["rejected:unreachable"] > 0 and c["rejected:timeout"] > 0
    assert c["rejected:undecodable"] > 0 and c["rejected:http_status"] > 0
    assert {"cam-0003", "cam-0005"} <= set(health["failing"])
    assert c["stored"] == sum(counts.values())
    assert health["latency_s"]["p50"] <= health["latency_s"]["p95"] < 5.0

    with database.session() as session:
        frames = session.scalars(sa.select(DB.FrameRow)).all()
        predictions = session.scalars(sa.select(DB.PredictionRow)).all()
        version = session.scalars(sa.select(DB.ModelVersionRow)).one()
    assert len({f.path for f in frames}) == len(frames)
    for f in frames:  # Every row points at a whole file with the hash it records.
        data = (store.root / f.path).read_bytes()
        assert len(data) == f.size and (f.width, f.height) == cameras.size
        import hashlib
        assert hashlib.sha256(data).hexdigest() == f.sha256
    assert c["predictions"] == len(predictions) == len(frames)  # Nothing dropped here.
    assert {p.frame_id for p in predictions} == {f.id for f in frames}
    assert version.class_names == list(analyzer.class_names)
    assert version.step == analyzer.step
    for p in predictions:
        assert p.model_version_id == version.id
        assert [k for k, _ in p.topk][0] == p.top_class
        assert p.topk[0][1] == pytest.approx(p.top_probability)
        assert set(k for k, _ in p.topk) <= set(analyzer.class_names)
    database.dispose()


def test_devices_edited_in_the_database_are_picked_up_while_running(db_url, tmp_path,
                                                                   cameras):
    database = DB.open_database(db_url)
    rows = cameras.device_rows(interval_s=0.1)
    register(database, rows[:2])
    service = LiveService(database, FrameStore(tmp_path / "frames"), None,
                          ServiceConfig(**FAST))
    marks = {}

    def edited_and_picked_up():
        counts = frame_counts(database)
        if "before" not in marks:  # First both cameras deliver, then the edit.
            if counts["cam-0000"] < 1 or counts["cam-0001"] < 1:
                return False
            marks["before"] = counts
            register(database, [rows[2]])  # Added.
            with database.transaction() as session:  # Deactivated.
                session.execute(sa.update(DB.DeviceRow).where(
                    DB.DeviceRow.name == "cam-0001").values(active=False))
            return False
        return (counts["cam-0002"] >= 3
                and counts["cam-0000"] >= marks["before"]["cam-0000"] + 3)

    run_until(service, edited_and_picked_up)
    after = frame_counts(database)
    assert marks["before"].get("cam-0002", 0) == 0 and after["cam-0002"] >= 3
    assert after["cam-0001"] <= marks["before"]["cam-0001"] + 2  # In flight at the edit.
    assert after["cam-0000"] >= marks["before"]["cam-0000"] + 3
    database.dispose()


def test_retention_forgets_rows_before_deleting_files(db_url, tmp_path, cameras):
    database = DB.open_database(db_url)
    register(database, cameras.device_rows(interval_s=0.1)[:3])
    store = FrameStore(tmp_path / "frames")
    frame_bytes = len(cameras._jpegs[0][0])
    config = ServiceConfig(**FAST, retention_max_bytes=12 * frame_bytes,
                           retention_every_s=0.2)
    service = LiveService(database, store, None, config)
    run_until(service, lambda: service.counters["retention_deleted"] > 0
              and service.counters["stored"] > 24)
    service.enforce_retention()
    with database.session() as session:
        paths = set(session.scalars(sa.select(DB.FrameRow.path)))
    on_disk = {f.path for f in store.files()}
    assert paths == on_disk  # No row without its file, no file without its row.
    assert sum(f.size for f in store.files()) <= 12 * frame_bytes + frame_bytes
    assert service.counters["retention_deleted"] > 0
    database.dispose()


def test_a_failed_or_refused_insert_leaves_no_orphan_file(db_url, tmp_path, cameras):
    import httpx

    from tlc_jax.live.devices import make_device

    database = DB.open_database(db_url)
    register(database, cameras.device_rows()[:1])
    store = FrameStore(tmp_path / "frames")
    service = LiveService(database, store, None, ServiceConfig(**FAST))
    service._list_devices()  # Caches name -> id.

    async def fetch():
        async with httpx.AsyncClient() as client:
            return await make_device("http_snapshot", "cam-0000",
                                     url=cameras.url(0)).fetch(client)

    frame = asyncio.run(fetch())

    def broken(*args):
        raise sa.exc.OperationalError("SELECT", {}, Exception("database went away"))

    service.leases.still_held, held = broken, service.leases.still_held
    with pytest.raises(sa.exc.OperationalError):
        service.store_frames([frame])
    assert store.files() == []
    service.leases.still_held = held
    with database.transaction() as session:  # Gone (and its lease) since the refresh.
        session.execute(sa.delete(DB.DeviceRow))
    assert service.store_frames([frame]) == []
    assert store.files() == [] and service.counters["dropped:lease_lost"] == 1
    database.dispose()


def test_loopback_cameras_are_refused_unless_allowed(db_url, tmp_path, cameras):
    database = DB.open_database(db_url)
    rows = cameras.device_rows(interval_s=0.1)[:1]
    rows.append({**rows[0], "name": "by-name",
                 "url": cameras.url(1).replace("127.0.0.1", "localhost")})
    register(database, rows)
    config = dict(FAST, allow=())
    service = LiveService(database, FrameStore(tmp_path / "frames"), None,
                          ServiceConfig(**config))
    status = service.runtime.status
    run_until(service, lambda: (
        service.runtime.counters["rejected:forbidden_address"] >= 2
        and "by-name" in status and status["by-name"].last_reason == "forbidden_address"
        and "cam-0000" in status and status["cam-0000"].last_reason == "forbidden_address"))
    assert frame_counts(database) == {"cam-0000": 0, "by-name": 0}
    assert service.runtime.counters["rejected:forbidden_address"] >= 2
    assert service.runtime.status["by-name"].last_reason == "forbidden_address"
    database.dispose()


def test_retention_never_deletes_the_files_of_uncommitted_frames(db_url, tmp_path):
    """Issue 14, item 5: retention listed the files on disk, so it could delete the
    file of a frame whose row store_frames had not committed yet; the row then named a
    missing file. Reproduced deterministically: retention runs between the file
    writes and the transaction."""
    from tlc_jax.live.devices import make_frame

    from live_helpers import FRAMES

    database = DB.open_database(db_url)
    register(database, [{"name": "cam", "kind": "http_snapshot",
                         "url": "http://cam.example/x.jpg"}])
    store = FrameStore(tmp_path / "frames")
    service = LiveService(database, store, None,
                          ServiceConfig(**FAST, retention_max_bytes=1))
    service._list_devices()  # Takes the device's lease.
    frames = [make_frame("cam", data, 10**6) for data in FRAMES]
    assert len(service.store_frames(frames[:1])) == 1  # Committed, over the limit.
    put = store.put

    def put_then_retention(frame):  # As the retention thread may, at the worst time.
        path = put(frame)
        service.enforce_retention()
        return path

    store.put = put_then_retention
    try:
        assert len(service.store_frames(frames[1:])) == 2
    finally:
        store.put = put
    with database.session() as session:
        paths = set(session.scalars(sa.select(DB.FrameRow.path)))
    missing = [p for p in paths if not (store.root / p).is_file()]
    assert missing == [], "rows naming deleted files"
    assert len(paths) == 2 and paths == {f.path for f in store.files()}
    assert service.counters["retention_deleted"] == 1  # The committed first frame.
    import dataclasses  # Room for the newest frame only: the older committed one goes.

    service.config = dataclasses.replace(service.config,
                                         retention_max_bytes=len(FRAMES[2]))
    service.enforce_retention()
    with database.session() as session:
        paths = set(session.scalars(sa.select(DB.FrameRow.path)))
    assert len(paths) == 1 and paths == {f.path for f in store.files()}
    database.dispose()


def test_a_refresh_that_failed_after_taking_a_lease_still_starts_from_the_last_hash(
        db_url, tmp_path, monkeypatch):
    """Seen under load in the failover test: a refresh took a device's lease, then
    reading the previous holder's last frame hash failed (a locked database); the next
    refresh found the lease already held, not newly acquired, so polling began with no
    hash and stored the previous holder's last picture a second time."""
    from tlc_jax.live import leases as L
    from tlc_jax.live.devices import make_frame

    from live_helpers import FRAMES

    database = DB.open_database(db_url)
    register(database, [{"name": "cam", "kind": "http_snapshot",
                         "url": "http://cam.example/x.jpg"}])
    store = FrameStore(tmp_path / "frames")
    first = LiveService(database, store, None, ServiceConfig(**FAST))
    first._list_devices()
    (stored,) = first.store_frames([make_frame("cam", FRAMES[0], 10**6)])
    first.leases.release_all()

    second = LiveService(database, store, None, ServiceConfig(**FAST))
    real = L.last_hashes
    calls = []

    def locked_once(session, ids):
        calls.append(list(ids))
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return real(session, ids)

    monkeypatch.setattr(L, "last_hashes", locked_once)
    with pytest.raises(RuntimeError, match="locked"):
        second._list_devices()  # The lease is taken, the hash is not read.
    assert list(second._list_devices()) == ["cam"]
    assert second.runtime.initial_hash("cam") == stored[1].sha256
    database.dispose()


def test_frames_queued_before_a_handover_never_break_the_stored_sequence(db_url, tmp_path):
    """Seen under load in the failover test: a process whose lease expired and was
    taken back later still had frames in hand from before; stored after the other
    holder's, one repeated its last picture. The store keeps each device's frames in
    capture order with no picture twice in a row, checked under the lease lock, and a
    device polled before and leased again restarts its polling from the stored hash."""
    import dataclasses

    from tlc_jax.live.devices import make_frame

    from live_helpers import FRAMES

    database = DB.open_database(db_url)
    register(database, [{"name": "cam", "kind": "http_snapshot",
                         "url": "http://cam.example/x.jpg"}])
    store = FrameStore(tmp_path / "frames")
    first = LiveService(database, store, None, ServiceConfig(**FAST, lease_s=30.0))
    second = LiveService(database, store, None, ServiceConfig(**FAST, lease_s=30.0))
    a, b, c = (make_frame("cam", data, 10**6) for data in FRAMES)

    def at(frame, t):
        return dataclasses.replace(frame, captured_at=t)

    assert list(first._list_devices()) == ["cam"]
    assert [f.sha256 for _, f in first.store_frames([at(a, 100.0)])] == [a.sha256]
    # The first holder's lease runs out (a stalled process); the second takes over.
    with database.transaction() as session:
        session.execute(sa.update(DB.DeviceLeaseRow).values(expires_at=0.0))
    assert list(second._list_devices()) == ["cam"]
    assert second.runtime.initial_hash("cam") == a.sha256
    assert len(second.store_frames([at(b, 102.0)])) == 1
    second.leases.release_all()
    # The first takes it back: its polling must restart, and what it had in hand from
    # before (older than the stored frames, or the second's last picture again) is
    # refused, while a new picture is stored.
    assert list(first._list_devices()) == ["cam"]
    assert first._take_restarts() == {"cam"} and first._take_restarts() == set()
    assert first.runtime.initial_hash("cam") == b.sha256
    stored = first.store_frames([at(c, 101.0), at(b, 103.0), at(c, 104.0),
                                 at(c, 105.0), at(a, 106.0)])
    assert [(f.captured_at, f.sha256) for _, f in stored] == [(104.0, c.sha256),
                                                              (106.0, a.sha256)]
    assert first.counters["dropped:older_than_stored"] == 1
    assert first.counters["dropped:unchanged_at_store"] == 2
    with database.session() as session:
        rows = session.execute(sa.select(DB.FrameRow.captured_at, DB.FrameRow.sha256,
                                         DB.FrameRow.path)
                               .order_by(DB.FrameRow.captured_at)).all()
    assert [(t, h) for t, h, _ in rows] == [(100.0, a.sha256), (102.0, b.sha256),
                                            (104.0, c.sha256), (106.0, a.sha256)]
    assert {p for _, _, p in rows} == {f.path for f in store.files()}  # No orphans.
    database.dispose()


def test_follows_last_keeps_capture_order_and_drops_repeats():
    from types import SimpleNamespace as F

    from tlc_jax.live.leases import follows_last

    frames = [F(captured_at=5.0, sha256="x", dev=1), F(captured_at=3.0, sha256="y", dev=1),
              F(captured_at=4.0, sha256="y", dev=1), F(captured_at=1.0, sha256="z", dev=2),
              F(captured_at=2.0, sha256="q", dev=1), F(captured_at=6.0, sha256="x", dev=1)]
    last = {1: (2.0, "x")}
    kept, older, unchanged = follows_last(frames, lambda f: f.dev, last)
    # Device 1 in capture order: 2.0 not newer, 3.0 y new, 4.0 y repeat, 5.0 x new,
    # 6.0 x repeat; device 2 has nothing stored: its frame is new.
    assert kept == [3, 1, 0] and (older, unchanged) == (1, 2)
    assert last == {1: (5.0, "x"), 2: (1.0, "z")}
