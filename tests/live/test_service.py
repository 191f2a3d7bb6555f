"""The whole live service: simulated cameras on loopback -> database -> stored frames ->
predictions, on SQLite and on a real PostgreSQL server."""

import asyncio
import json

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


def run_for(service, seconds, during=None):
    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        if during is not None:
            await asyncio.sleep(seconds / 2)
            await asyncio.to_thread(during)
            await asyncio.sleep(seconds / 2)
        else:
            await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(task, 30)

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
    run_for(service, 3.0)
    counts = frame_counts(database)
    healthy = ["cam-0000", "cam-0001", "cam-0002", "cam-0006", "cam-0008"]
    # The pictures change every 0.2 s: about 15 new frames per healthy camera in 3 s,
    # though the dead, slow and malformed cameras fail all along.
    for name in healthy:
        assert counts[name] >= 5, (name, counts)  # 2 cores shared: margin.
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

    def edit():
        marks["before"] = frame_counts(database)
        register(database, [rows[2]])  # Added.
        with database.transaction() as session:  # Deactivated.
            session.execute(sa.update(DB.DeviceRow).where(DB.DeviceRow.name == "cam-0001")
                            .values(active=False))

    run_for(service, 3.0, during=edit)
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
    run_for(service, 2.5)
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
    run_for(service, 1.0)
    assert frame_counts(database) == {"cam-0000": 0, "by-name": 0}
    assert service.runtime.counters["rejected:forbidden_address"] >= 2
    assert service.runtime.status["by-name"].last_reason == "forbidden_address"
    database.dispose()
