"""`python -m tlc_jax.live` end to end, and the live benchmark on a tiny fleet."""

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tlc_jax.live import db as DB
from tlc_jax.live.cli import main

CSV = ("name,kind,url,latitude,longitude,city,country,password,username\n"
       "north,http_snapshot,http://10.0.0.1/a.jpg,40.43,-86.92,Lafayette,US,pw1,admin\n"
       "bad-lat,http_snapshot,http://10.0.0.2/a.jpg,123,-86.9,Lafayette,US,,\n"
       "south,http_snapshot,http://10.0.0.3/a.jpg,40.30,-86.90,Lafayette,US,,\n"
       "odd,webcam,http://10.0.0.4/a.jpg,40.3,-86.9,Lafayette,US,,\n")


def test_devices_import_export_search(tmp_path, capsys):
    (tmp_path / "devices.csv").write_text(CSV)
    w = ["--workdir", str(tmp_path / "w")]
    assert main(["devices", "import", str(tmp_path / "devices.csv"), *w]) == 1
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


def test_simulate_then_run_stores_predictions(tmp_path, trained_run):
    workdir = tmp_path / "live"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sim = subprocess.Popen(
        [sys.executable, "-m", "tlc_jax.live", "simulate", "--cameras", "4",
         "--workdir", str(workdir), "--interval-s", "0.2", "--change-every-s", "0.2",
         "--behaviours", "dead=0.25", "--duration-s", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert "registered" in sim.stdout.readline()
        run = subprocess.run(
            [sys.executable, "-m", "tlc_jax.live", "run", "--workdir", str(workdir),
             "--checkpoint", str(trained_run), "--duration-s", "6", "--batch-sizes", "1,8",
             "--timeout-s", "1", "--report-every-s", "2", "--allow", "127.0.0.1"],
            capture_output=True, text=True, env=env, timeout=300)
    finally:
        sim.terminate()
        sim.wait(30)
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
                "params": {"url": "http://203.0.113.7/a.jpg"}}
        assert httpx.post(f"{base}/api/v1/devices", json=body).status_code == 401
        created = httpx.post(f"{base}/api/v1/devices", json=body,
                             headers={"Authorization": f"Bearer {token}"})
        assert created.status_code == 201, created.text
        database.dispose()
    finally:
        server.terminate()
        server.wait(30)
