"""`python -m tlc_jax.live` end to end, and the live benchmark on a tiny fleet."""

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tlc_jax.live import db as DB
from tlc_jax.live.cli import main

from helpers import wait_for

CSV = ("name,kind,url,latitude,longitude,city,country,password,username\n"
       "north,http_snapshot,http://10.0.0.1/a.jpg,40.43,-86.92,Lafayette,US,pw1,admin\n"
       "bad-lat,http_snapshot,http://10.0.0.2/a.jpg,123,-86.9,Lafayette,US,,\n"
       "south,http_snapshot,http://10.0.0.3/a.jpg,40.30,-86.90,Lafayette,US,,\n"
       "odd,webcam,http://10.0.0.4/a.jpg,40.3,-86.9,Lafayette,US,,\n")


def test_devices_import_export_search(tmp_path, capsys):
    (tmp_path / "devices.csv").write_text(CSV)
    w = ["--workdir", str(tmp_path / "w")]
    # The cameras are on a private network: refused unless allowed, as by `run`.
    assert main(["devices", "import", str(tmp_path / "devices.csv"), *w]) == 1
    out = capsys.readouterr().out
    assert "0 created, 0 updated, 4 rows refused." in out
    assert "line 2: Device 'north': Device URL host 10.0.0.1 is refused (private)" in out
    assert "--allow" in out
    assert main(["devices", "import", str(tmp_path / "devices.csv"), *w,
                 "--allow", "10.0.0.0/24"]) == 1
    out = capsys.readouterr().out
    assert "2 created, 0 updated, 2 rows refused." in out
    assert "line 3: Device 'bad-lat': latitude 123.0 is outside [-90, 90]" in out
    assert "line 5: Device 'odd': unknown kind 'webcam'" in out

    assert main(["devices", "search", "--near", "40.43,-86.92", "--km", "5", "--json",
                 *w]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in found] == ["north"] and found[0]["distance_km"] < 0.1
    assert main(["devices", "search", "--city", "LAFAYETTE", *w]) == 0
    out = capsys.readouterr().out
    assert "north" in out and "south" in out and "2 device(s)." in out
    assert "pw1" not in out

    assert main(["devices", "export", str(tmp_path / "out.csv"), *w]) == 0
    exported = (tmp_path / "out.csv").read_text()
    assert "north" in exported and "pw1" not in exported
    assert main(["devices", "export", str(tmp_path / "full.csv"), "--with-credentials",
                 *w]) == 0
    assert "pw1" in (tmp_path / "full.csv").read_text()


def test_clear_errors(tmp_path, capsys):
    assert main(["devices", "search", "--db", "postgresql://u:secret@127.0.0.1:9/x"]) == 2
    err = capsys.readouterr().err
    assert "Cannot connect to the database" in err and "secret" not in err
    (tmp_path / "h.csv").write_text("name,url\nx,http://y\n")
    assert main(["devices", "import", str(tmp_path / "h.csv"), "--workdir",
                 str(tmp_path)]) == 2
    assert "header lacks kind" in capsys.readouterr().err
    assert main(["devices", "search", "--near", "north", "--km", "3", "--workdir",
                 str(tmp_path)]) == 2
    assert "is not LAT,LON" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--workdir"):
        main(["devices", "search"])
    with pytest.raises(SystemExit):  # argparse: --km must be > 0.
        main(["devices", "search", "--near", "1,2", "--km", "-1", "--workdir", "w"])


DEADLINE_S = 300.0  # Generous: start-up compiles the model; the machine may be busy.



def table_count(workdir, table):
    database = DB.open_database(DB.default_url(workdir), migrate=False)
    try:
        with database.session() as session:
            return session.scalar(sa.select(sa.func.count()).select_from(table))
    except sa.exc.OperationalError:  # Not created yet.
        return 0
    finally:
        database.dispose()


def health_counter(workdir, name):
    try:
        return json.loads((workdir / "health.json").read_text())["counters"].get(name, 0)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_simulate_then_run_stores_predictions(tmp_path, trained_run):
    import signal

    workdir = tmp_path / "live"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sim = subprocess.Popen(
        [sys.executable, "-m", "tlc_jax.live", "simulate", "--cameras", "4",
         "--workdir", str(workdir), "--interval-s", "0.2", "--change-every-s", "0.2",
         "--behaviours", "dead=0.25", "--duration-s", "900"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert "registered" in sim.stdout.readline()
        with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
            run = subprocess.Popen(
                [sys.executable, "-m", "tlc_jax.live", "run", "--workdir", str(workdir),
                 "--checkpoint", str(trained_run), "--batch-sizes", "1,8",
                 "--timeout-s", "1", "--report-every-s", "2", "--allow", "127.0.0.1"],
                stdout=out, stderr=err, text=True, env=env)
            try:  # Until 10 frames are stored and the dead camera was reported.
                wait_for(lambda: table_count(workdir, DB.FrameRow.__table__) >= 10
                         and health_counter(workdir, "rejected:unreachable") >= 1,
                         DEADLINE_S, "10 frames stored", run)
                run.send_signal(signal.SIGTERM)  # A clean stop (as Ctrl-C).
                run.wait(120)
            finally:
                if run.poll() is None:
                    run.kill()
                    run.wait(30)
    finally:
        sim.terminate()
        sim.wait(30)
    run.stdout, run.stderr = ((tmp_path / name).read_text() for name in ("out", "err"))
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["counters"]["stored"] >= 10
    assert summary["counters"]["predictions"] == summary["counters"]["stored"]
    assert summary["counters"]["rejected:unreachable"] >= 1  # The dead camera.
    assert "stored" in run.stderr and "p50" in run.stderr  # Progress lines.
    health = json.loads((workdir / "health.json").read_text())
    assert health["counters"]["stored"] == summary["counters"]["stored"]
    database = DB.open_database(DB.default_url(workdir))
    with database.session() as session:
        n_predictions = session.scalar(sa.select(sa.func.count(DB.PredictionRow.id)))
        n_devices = session.scalar(sa.select(sa.func.count(DB.DeviceRow.id)))
    assert n_predictions == summary["counters"]["predictions"] and n_devices == 4
    database.dispose()


def test_live_benchmark_on_a_tiny_fleet(tmp_path, trained_run, capsys):
    from tlc_jax.benchmarks import live

    live.main(["--checkpoint", str(trained_run), "--cameras", "6", "--seconds", "3",
               "--warmup_s", "2", "--batch_sizes", "1,8", "--behaviours", "dead=0.2",
               "--out", str(tmp_path)])
    result = json.loads((tmp_path / "live.json").read_text())
    for key in ("fetch_attempts_per_s", "frames_stored_per_s", "analyzer_images_per_s",
                "latency_s", "counters_in_window", "machine"):
        assert key in result
    assert result["cameras"] == 6 and result["frames_stored_per_s"] > 0
    assert 0 < result["latency_s"]["p50"] <= result["latency_s"]["p95"]
    table = (tmp_path / "live.md").read_text()
    assert table.startswith("| cameras |") and "| 6 at 1 per 1 s |" in table
    assert table.strip() in capsys.readouterr().out
    with pytest.raises(SystemExit):
        live.main(["--checkpoint", "x", "--cameras", "0"])


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keys_and_serve(tmp_path, capsys):
    import time

    import httpx

    from tlc_jax.live import leases

    w = ["--workdir", str(tmp_path)]
    assert main(["keys", "create", "ops", "--scope", "write", *w]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("tlc_")
    assert main(["keys", "create", "ops", *w]) == 2  # Names are never reused.
    assert "ops" in capsys.readouterr().err
    assert main(["keys", "create", "gone", *w]) == 0
    assert main(["keys", "revoke", "gone", *w]) == 0
    assert main(["keys", "list", *w]) == 0
    listing = capsys.readouterr().out
    assert "ops" in listing and "write" in listing and "revoked" in listing
    assert token not in listing and token[12:] not in listing

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tlc_jax.live", "serve", *w,
                               "--port", str(port)], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                health = httpx.get(f"{base}/api/v1/health").json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError(server.stderr.read() if server.poll() is not None
                                 else "serve did not answer")
        assert health["status"] == "ok" and health["service"] is None
        database = DB.open_database(DB.default_url(tmp_path))
        for i, stored in enumerate((5, 7)):  # Two live processes report.
            leases.publish_health(database, f"w{i}", "runtime", {
                "counters": {"stored": stored, "dropped:ingest": i},
                "failing": {f"cam-{i}": "timeout"}, "queues": {"ingest": 1},
                "latency_s": None, "uptime_s": 10.0 + i, "devices_polled": 3})
        service = httpx.get(f"{base}/api/v1/health").json()["service"]
        assert service["counters"] == {"dropped:ingest": 1, "stored": 12}
        assert service["failing"] == {"cam-0": "timeout", "cam-1": "timeout"}
        assert service["devices_polled"] == 6 and len(service["workers"]) == 2
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert "default-src 'self'" in page.headers["content-security-policy"]
        body = {"name": "cam-x", "kind": "http_snapshot",
                "params": {"url": "http://cam.example.net/a.jpg"}}
        assert httpx.post(f"{base}/api/v1/devices", json=body).status_code == 401
        created = httpx.post(f"{base}/api/v1/devices", json=body,
                             headers={"Authorization": f"Bearer {token}"})
        assert created.status_code == 201, created.text
        database.dispose()
    finally:
        server.terminate()
        server.wait(30)


def test_run_on_refused_local_cameras_says_to_allow_them(tmp_path):
    """Issue 14, item 15: with only loopback cameras and no --allow, every device
    failed with forbidden_address and the progress line said `p50 nan s`. Now a hint
    names --allow, no `nan` is printed, and a run without retention says so."""
    from tlc_jax.live import registry as R

    workdir = tmp_path / "live"
    database = DB.open_database(DB.default_url(workdir))
    with database.transaction() as session:
        R.upsert(session, [R.DeviceSpec(f"cam-{i}", "http_snapshot",
                                        {"url": f"http://127.0.0.1:9/{i}.jpg"})
                           for i in range(2)])
    database.dispose()
    run = subprocess.run(
        [sys.executable, "-m", "tlc_jax.live", "run", "--workdir", str(workdir),
         "--role", "runtime", "--duration-s", "1", "--report-every-s", "0.3"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 of 2 active devices" in run.stderr and "loopback" in run.stderr
    assert "--allow 127.0.0.1" in run.stderr
    assert "No retention limit" in run.stderr and "--max-store-gb" in run.stderr
    assert "p50" in run.stderr  # The progress line is there...
    assert "nan" not in run.stderr.lower() and "nan" not in run.stdout.lower()  # ...clean.
    json.loads(run.stdout)
