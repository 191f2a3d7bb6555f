"""The live database and device registry, on SQLite and on a real PostgreSQL server."""

import math
import re

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.metrics.pairwise import haversine_distances

from tlc_jax.live import db as DB
from tlc_jax.live import registry as R

HEADER = "name,kind,url,latitude,longitude,city,country,sector,poll_interval_s,username,password\n"


@pytest.fixture
def database(db_url):
    database = DB.open_database(db_url)
    yield database
    database.dispose()


def test_migrations_reach_head_and_match_the_models(database):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert database.revision() == database.head() == "0003"
    with database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), DB.Base.metadata)
    assert diff == []
    database.downgrade("base")  # Down and up again: both directions work.
    assert database.revision() is None
    assert "devices" not in sa.inspect(database.engine).get_table_names()
    database.migrate()
    assert database.revision() == "0003"
    DB.open_database(str(database.url.render_as_string(hide_password=False))).dispose()


def test_sqlite_runs_in_wal_mode(tmp_path):
    database = DB.open_database(f"sqlite:///{tmp_path}/sub/live.db")
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    database.dispose()


def test_unreachable_database_is_a_clear_error_without_the_password():
    with socket_closed_port() as port:
        with pytest.raises(DB.DatabaseError, match="Cannot connect") as e:
            DB.Database(f"postgresql://tlc:hunter2@127.0.0.1:{port}/x", connect_timeout_s=2)
    assert "hunter2" not in str(e.value) and "***" in str(e.value)
    with pytest.raises(DB.DatabaseError, match="not a database URL"):
        DB.Database("no such thing")
    with pytest.raises(DB.DatabaseError, match="No driver"):
        DB.Database("mysql+nosuchdriver://u@h/d")


class socket_closed_port:
    def __enter__(self):
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()  # Nothing listens there now.
        return self.port

    def __exit__(self, *exc):
        return False


def write(tmp_path, text, name="devices.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_import_reports_bad_rows_by_line_and_imports_the_rest(database, tmp_path):
    path = write(tmp_path, HEADER
                 + "cam-a,http_snapshot,http://a/x.jpg,40.42,-86.91,Lafayette,US,city,2,,\n"
                 + "cam-b,no_such_kind,http://b,40,-86,,,,,,\n"
                 + "cam-c,http_snapshot,http://c/x.jpg,95,-86,,,,,,\n"
                 + "\n"
                 + "cam-d,http_snapshot,http://d/x.jpg,40.5,,,,,,,\n"
                 + "cam-e,http_snapshot,http://e/x.jpg,40.1,-86.1,Lafayette,US,school,"
                   "fast,,\n"
                 + "cam-a,http_snapshot,http://a2/x.jpg,1,1,,,,,,\n"
                 + "cam-f,http_snapshot,http://f/x.jpg,40.2,-86.2,West Lafayette,US,"
                   "university,1,admin,s3cret,extra\n"
                 + '"cam-g",http_snapshot,"http://g/x.jpg",40.3,-86.3,"Lafayette, IN",US,'
                   'bank,0.5,admin,s3cret\n')
    with database.transaction() as session:
        report = R.import_csv(session, path)
    lines = dict(report.errors)
    assert (report.created, report.updated) == (2, 0)
    assert sorted(lines) == [3, 4, 6, 7, 8, 9]
    assert "unknown kind 'no_such_kind'" in lines[3] and "http_snapshot" in lines[3]
    assert "latitude 95.0 is outside [-90, 90]" in lines[4]
    assert "latitude and longitude must be given together" in lines[6]
    assert "poll_interval_s 'fast' is not a number" in lines[7]
    assert "already on line 2" in lines[8]
    assert "more cell(s) than the header" in lines[9]
    with database.session() as session:
        names = session.scalars(sa.select(DB.DeviceRow.name).order_by(
            DB.DeviceRow.name)).all()
        g = session.scalars(sa.select(DB.DeviceRow).where(
            DB.DeviceRow.name == "cam-g")).one()
    assert names == ["cam-a", "cam-g"]
    assert g.city == "Lafayette, IN" and g.credentials == {"username": "admin",
                                                           "password": "s3cret"}
    assert "s3cret" not in repr(g) and "s3cret" not in repr(R.DeviceSpec.from_row(g))


def test_csv_header_problems_refuse_the_whole_file(database, tmp_path):
    with database.transaction() as session:
        with pytest.raises(R.InvalidDevice, match="line 1: the header lacks kind"):
            R.import_csv(session, write(tmp_path, "name,url\ncam,http://x\n"))
        with pytest.raises(R.InvalidDevice, match="unknown column.*colour"):
            R.import_csv(session, write(tmp_path, "name,kind,colour\ncam,folder,red\n"))
        bad = tmp_path / "latin1.csv"
        bad.write_bytes("name,kind,path\ncam\xe9,folder,/tmp\n".encode("latin-1"))
        with pytest.raises(R.InvalidDevice, match="not UTF-8"):
            R.import_csv(session, bad)


def test_export_import_round_trip_keeps_credentials(database, tmp_path):
    path = write(tmp_path, "name,kind,url_template,device_id,api_key,latitude,longitude,"
                           "max_bytes\n"
                           "relay-1,relay,http://agency/{device_id}.jpg,7,key-123,1.5,2.5,"
                           "1000\n")
    with database.transaction() as session:
        assert R.import_csv(session, path).created == 1
    out = tmp_path / "export.csv"
    with database.session() as session:
        assert R.export_csv(session, out) == 1
        R.export_csv(session, tmp_path / "full.csv", include_credentials=True)
    assert "key-123" not in out.read_text()
    assert "key-123" in (tmp_path / "full.csv").read_text()
    with database.transaction() as session:  # Without credentials: the stored key stays.
        report = R.import_csv(session, out)
    assert (report.created, report.updated, report.errors) == (0, 1, [])
    with database.session() as session:
        spec = R.DeviceSpec.from_row(session.scalars(sa.select(DB.DeviceRow)).one())
    assert spec.credentials == {"api_key": "key-123"}
    assert spec.params == {"url_template": "http://agency/{device_id}.jpg",
                           "device_id": "7", "max_bytes": 1000}
    assert (spec.latitude, spec.longitude) == (1.5, 2.5)
    device = spec.device()
    assert device.api_key == "key-123" and device.max_bytes == 1000


def test_spec_validation_messages():
    with pytest.raises(R.InvalidDevice, match="unknown kind"):
        R.DeviceSpec("x", "webcam")
    with pytest.raises(R.InvalidDevice, match="colour not parameters of kind folder"):
        R.DeviceSpec("x", "folder", {"path": "/tmp", "colour": "red"})
    with pytest.raises(R.InvalidDevice, match="longitude 200.0 is outside"):
        R.DeviceSpec("x", "folder", {"path": "/tmp"}, latitude=0.0, longitude=200.0)
    with pytest.raises(R.InvalidDevice, match="latitude nan"):
        R.DeviceSpec("x", "folder", {"path": "/tmp"}, latitude=math.nan, longitude=0.0)
    with pytest.raises(R.InvalidDevice, match="poll_interval_s must be"):
        R.DeviceSpec("x", "folder", {"path": "/tmp"}, poll_interval_s=0.0)
    with pytest.raises(R.InvalidDevice, match="auth must be 'basic' or 'digest'"):
        R.DeviceSpec("x", "http_snapshot", {"url": "http://x", "auth": "ntlm"})
    with pytest.raises(R.InvalidDevice, match="name must be"):
        R.DeviceSpec("", "folder", {"path": "/tmp"})
    with pytest.raises(R.InvalidDevice, match="without '/'"):
        R.DeviceSpec("a/b", "folder", {"path": "/tmp"})


PLACES = {  # name: (lat, lon, city, country)
    "purdue": (40.4237, -86.9212, "West Lafayette", "US"),
    "lafayette": (40.4167, -86.8753, "Lafayette", "US"),
    "indy": (39.7684, -86.1581, "Indianapolis", "US"),
    "chicago": (41.8781, -87.6298, "Chicago", "US"),
    "fiji-east": (-17.7, 179.9, "Labasa", "FJ"),
    "fiji-west": (-17.7, -179.9, "Taveuni 100%_", "FJ"),
    "north-pole-a": (89.9, 10.0, "", ""),
    "north-pole-b": (89.9, -170.0, "", ""),
}


@pytest.fixture
def places(database):
    specs = [R.DeviceSpec(n, "folder", {"path": "/tmp"}, latitude=la, longitude=lo,
                          city=c, country=co, active=n != "chicago")
             for n, (la, lo, c, co) in PLACES.items()]
    with database.transaction() as session:
        assert R.upsert(session, specs) == (len(specs), 0)
    return database


def reference_km(a, b):
    """scikit-learn's haversine on the same mean Earth radius."""
    return float(haversine_distances(np.radians([a]), np.radians([b]))[0, 0]
                 * R.EARTH_RADIUS_KM)


@pytest.mark.parametrize("center,km", [((40.42, -86.9), 10), ((40.42, -86.9), 100),
                                       ((40.42, -86.9), 200), ((-17.7, 180.0), 50),
                                       ((90.0, 0.0), 30), ((0.0, 0.0), 20000)])
def test_radius_search_equals_a_brute_force_reference(places, center, km):
    with places.session() as session:
        found = R.search(session, near=center, km=km)
    expected = sorted((reference_km(center, (la, lo)), n)
                      for n, (la, lo, _, _) in PLACES.items()
                      if reference_km(center, (la, lo)) <= km)
    assert [m.device.name for m in found] == [n for _, n in expected]
    np.testing.assert_allclose([m.distance_km for m in found], [d for d, _ in expected],
                               rtol=1e-9)


def test_search_by_place_text_active_and_pages(places):
    with places.session() as session:
        names = lambda ms: [m.device.name for m in ms]  # noqa: E731
        assert names(R.search(session, city="lafayette")) == ["lafayette"]
        assert names(R.search(session, country="fj")) == ["fiji-east", "fiji-west"]
        assert names(R.search(session, text="LAFAY")) == ["lafayette", "purdue"]
        assert names(R.search(session, text="100%_")) == ["fiji-west"]  # Literal % and _.
        assert names(R.search(session, text="%")) == ["fiji-west"]
        assert names(R.search(session, country="US", active=False)) == ["chicago"]
        page = R.search(session, near=(40.42, -86.9), km=300, limit=2, offset=1)
        assert names(page) == ["lafayette", "indy"]  # Nearest first: purdue is 1st.
        assert names(R.search(session, city="x'; DROP TABLE devices; --")) == []
        assert len(R.search(session)) == len(PLACES)
        with pytest.raises(ValueError, match="near=.*is not a point"):
            R.search(session, near=(91, 0), km=1)
        with pytest.raises(ValueError, match="km must be"):
            R.search(session, near=(0, 0), km=-1)
        with pytest.raises(ValueError, match="together"):
            R.search(session, near=(0, 0))
    assert R.parse_point("40.4,-86.9") == (40.4, -86.9)
    with pytest.raises(ValueError, match="is not LAT,LON"):
        R.parse_point("Lafayette")
    with pytest.raises(ValueError, match="latitude must be"):
        R.parse_point("100,0")


def test_runtime_devices_skip_inactive_and_broken_rows(places):
    with places.transaction() as session:
        session.execute(sa.update(DB.DeviceRow).where(DB.DeviceRow.name == "indy")
                        .values(kind="gone_kind"))
    with places.session() as session:
        devices = R.runtime_devices(session)
    assert sorted(devices) == sorted(set(PLACES) - {"chicago", "indy"})
    device, interval = devices["purdue"]
    assert device.kind == "folder" and interval == 1.0


def test_database_rejects_out_of_range_rows_written_around_the_registry(database):
    with pytest.raises(sa.exc.IntegrityError):
        with database.transaction() as session:
            session.add(DB.DeviceRow(name="x", kind="folder", params={}, credentials={},
                                     latitude=100.0, longitude=0.0))


def test_csv_export_neutralises_formulas_and_import_restores_them(database, tmp_path):
    """Issue 14, item 3: a cell that a spreadsheet would run as a formula (= + - @, tab,
    CR first) is exported with a leading single quote (OWASP), and so is one that
    starts with a quote; plain numbers (negative coordinates) are exported as they are.
    Importing the export gives back every value exactly."""
    tricky = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+cmd|' /C calc'!A0",
              "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1", "'quoted", "''=x", "=", "-",
              "'", "-86.9 west", "plain", "1e5"]
    specs = [R.DeviceSpec(f"cam-{i}", "http_snapshot",
                          {"url": f"http://cam{i}.example/x.jpg", "auth": "basic"},
                          {"username": "admin", "password": value},
                          latitude=-33.8688 - i, longitude=-151.2093 + i, city=value,
                          region="-1", country="NZ", sector=value)
             for i, value in enumerate(tricky)]
    specs.append(R.DeviceSpec("=cmd|' -C calc'!A0", "http_snapshot",
                              {"url": "http://x.example/a.jpg"}, latitude=-0.5,
                              longitude=-0.25, poll_interval_s=0.5))
    with database.transaction() as session:
        R.upsert(session, specs)
    out = tmp_path / "out.csv"
    with database.session() as session:
        R.export_csv(session, out, include_credentials=True)
    import csv

    with open(out, newline="", encoding="utf-8") as f:
        cells = [c for row in csv.reader(f) for c in row]
    number = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
    for cell in cells:
        if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
            assert number.fullmatch(cell), cell  # Only plain numbers start so.
    assert "-33.8688" in cells and "-151.2093" in cells and "-0.25" in cells
    assert "'=HYPERLINK(\"http://evil.example\",\"x\")" in cells
    assert "'-2+3" in cells and "''quoted" in cells and "'''=x" in cells and "-1" in cells

    with database.transaction() as session:  # Everything gone, then imported back.
        session.execute(sa.delete(DB.DeviceRow))
    with database.transaction() as session:
        report = R.import_csv(session, out)
    assert (report.created, report.errors) == (len(specs), [])
    with database.session() as session:
        back = {r.name: R.DeviceSpec.from_row(r)
                for r in session.scalars(sa.select(DB.DeviceRow))}
    for spec in specs:
        got = back[spec.name]
        assert (got.city, got.sector, got.region, got.credentials, got.params,
                got.latitude, got.longitude, got.poll_interval_s) == (
            spec.city, spec.sector, spec.region, spec.credentials, spec.params,
            spec.latitude, spec.longitude, spec.poll_interval_s), spec.name


def test_csv_escaping_is_lossless_for_any_text():
    import random

    rng = random.Random(0)
    alphabet = "=+-@'\t\r 01.eE-x\"," + "é"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        escaped = R.csv_escape(text)
        assert R.csv_unescape(escaped) == text, repr(text)
        assert escaped[:1] not in ("=", "+", "-", "@", "\t", "\r") or R.NUMBER.fullmatch(
            escaped), repr(text)


def test_dot_names_and_limits_are_refused():
    """Issue 14, item 4: '.' and '..' are names no API path can reach; limits below 1
    make no sense."""
    for name in (".", ".."):
        with pytest.raises(R.InvalidDevice, match="'.' or '..'"):
            R.DeviceSpec(name, "http_snapshot", {"url": "http://x.example/a.jpg"})
    R.DeviceSpec("...", "http_snapshot", {"url": "http://x.example/a.jpg"})
    with pytest.raises(R.InvalidDevice, match="password are credentials"):
        R.DeviceSpec("x", "http_snapshot", {"url": "http://x.example/", "password": "pw"})
    for key in ("max_bytes", "max_pixels"):
        with pytest.raises(R.InvalidDevice, match=f"{key} must be >= 1"):
            R.DeviceSpec("x", "http_snapshot", {"url": "http://x.example/a.jpg", key: 0})
