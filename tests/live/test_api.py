"""The live HTTP API and its keys, on SQLite and on a real PostgreSQL server."""

import asyncio
import json
import math
import os

import httpx
import pytest
import sqlalchemy as sa

from tlc_jax.live import api as API
from tlc_jax.live import apikeys as K
from tlc_jax.live import db as DB
from tlc_jax.live import registry as R

V1 = "/api/v1"
PASSWORD = "hunter2-very-secret"
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-bytes" * 10
PNG = b"\x89PNG\r\n\x1a\n" + b"png-bytes" * 10
T0 = 1_800_000_000.0  # A whole number of hours.


class Client:
    """Synchronous requests through httpx's ASGI transport (one event loop for the
    test); every response's text is kept, to search it for secrets."""

    def __init__(self, app, headers=None):
        self.runner = asyncio.Runner()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                      base_url="http://api.test", headers=headers)
        self.texts = []

    def request(self, method, url, **kwargs):
        response = self.runner.run(self.http.request(method, V1 + url, **kwargs))
        self.texts.append(response.text)
        return response

    def get(self, url, **kwargs):
        return self.request("GET", url, **kwargs)

    def post(self, url, **kwargs):
        return self.request("POST", url, **kwargs)

    def patch(self, url, **kwargs):
        return self.request("PATCH", url, **kwargs)

    def delete(self, url, **kwargs):
        return self.request("DELETE", url, **kwargs)

    def close(self):
        self.runner.run(self.http.aclose())
        self.runner.close()


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def database(db_url):
    database = DB.open_database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def keys(database):
    with database.transaction() as session:
        out = {scope: K.create_key(session, scope, (scope,))
               for scope in ("read", "write", "admin")}
        out["revoked"] = K.create_key(session, "revoked", ("write",))
        K.revoke(session, "revoked")
    return out


@pytest.fixture
def make_client(database, tmp_path):
    clients = []

    def make(**options):
        options.setdefault("frames_root", tmp_path / "frames")
        client = Client(API.create_app(database, **options))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client):
    return make_client()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def camera(name, **fields):
    """A device any write key may create (a public camera)."""
    return {"name": name, "kind": "http_snapshot",
            "params": {"url": "http://cam.example/x.jpg"}, **fields}


def detail(response):
    """An error's words: `Error`'s sentence, or each `InputError`'s msg (a 422)."""
    body = response.json()["detail"]
    return body if isinstance(body, str) else " ".join(e["msg"] for e in body)


def names(response):
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


# ---------------------------------------------------------------------------- keys


def test_keys_store_only_a_hash_and_verify_revoke_and_list(database):
    with database.transaction() as session:
        token = K.create_key(session, "ops", ["write", "read"], rate_per_min=5)
        with pytest.raises(K.ApiKeyError, match="exists already"):
            K.create_key(session, "ops")
        with pytest.raises(K.ApiKeyError, match="non-empty subset"):
            K.create_key(session, "bad", ["root"])
        with pytest.raises(K.ApiKeyError, match="rate_per_min"):
            K.create_key(session, "bad", rate_per_min=0)
        with pytest.raises(K.ApiKeyError, match="printable"):
            K.create_key(session, "bad\nname")
    assert token.startswith("tlc_") and len(token) > 40
    with database.session() as session:
        row = session.scalars(sa.select(DB.ApiKeyRow)).one()
        stored = " ".join(str(v) for v in session.execute(
            sa.select(DB.ApiKeyRow.__table__)).one())
    assert token not in stored and token[12:] not in stored and row.prefix == token[:12]
    assert row.scopes == ["read", "write"] and row.last_used_at is None
    with database.transaction() as session:
        assert K.verify(session, token).name == "ops"
        for wrong in (None, "", token[:-1] + ("A" if token[-1] != "A" else "B"),
                      "x" + token, token + "x", "tlc_" + "a" * 500):
            assert K.verify(session, wrong) is None
    with database.session() as session:
        (info,) = K.list_keys(session)
    assert info.last_used_at is not None and info.active and info.scopes == ("read", "write")
    assert "sha256" not in {f for f in vars(info)} and token not in repr(info)
    with database.transaction() as session:
        assert K.revoke(session, "ops") is True
        assert K.revoke(session, "ops") is False
        assert K.verify(session, token) is None
        with pytest.raises(K.ApiKeyError, match="No key named"):
            K.revoke(session, "nobody")
    with database.session() as session:
        assert not K.list_keys(session)[0].active
    assert K.allows(["admin"], "write") and K.allows(["write"], "read")
    assert not K.allows(["read"], "write") and not K.allows(["write"], "admin")


# ---------------------------------------------------------------------------- auth


def test_writes_need_a_write_key_and_reads_may(make_client, keys):
    client = make_client()
    body = camera("cam")
    assert client.post("/devices", json=body).status_code == 401
    assert client.post("/devices", json=body).headers["www-authenticate"] == "Bearer"
    assert client.post("/devices", json=body, headers=bearer("tlc_nonsense")).status_code == 401
    assert client.post("/devices", json=body, headers={"X-API-Key": "garbage"}).status_code == 401
    assert client.post("/devices", json=body,
                       headers={"Authorization": f"Basic {keys['write']}"}).status_code == 401
    response = client.post("/devices", json=body, headers=bearer(keys["revoked"]))
    assert response.status_code == 401 and "revoked" in detail(response)
    response = client.post("/devices", json=body, headers=bearer(keys["read"]))
    assert response.status_code == 403 and "'write' scope" in detail(response)
    assert client.post("/devices", json=body, headers=bearer(keys["write"])).status_code == 201
    assert client.post("/devices", json=camera("cam2"),
                       headers={"X-API-Key": keys["admin"]}).status_code == 201
    for method, url in (("PATCH", "/devices/cam"), ("DELETE", "/devices/cam"),
                        ("POST", "/devices/import")):
        assert client.request(method, url, headers=bearer(keys["read"]),
                              json={}).status_code == 403
        assert client.request(method, url, json={}).status_code == 401
    assert names(client.get("/devices")) == ["cam", "cam2"]  # Anonymous reads allowed.
    # A key given to a read is checked even when none is needed.
    assert client.get("/devices", headers=bearer("tlc_wrong")).status_code == 401

    private = make_client(read_requires_key=True)
    for url in ("/devices", "/devices/cam", "/devices/cam/frames", "/model-versions",
                "/areas/class-counts?city=x", "/frames/1/image", "/devices/cam/latest"):
        assert private.get(url).status_code == 401, url
        assert private.get(url, headers=bearer(keys["revoked"])).status_code == 401, url
    assert names(private.get("/devices", headers=bearer(keys["read"]))) == ["cam", "cam2"]
    assert names(private.get("/devices", headers={"X-API-Key": keys["write"]})) == [
        "cam", "cam2"]  # Write implies read.
    assert private.get("/health").status_code == 200  # Health needs no key.


def test_rate_limits_per_key_and_per_ip(database, make_client):
    with database.transaction() as session:
        slow = K.create_key(session, "slow", ["read"], rate_per_min=3)
        other = K.create_key(session, "other", ["read"], rate_per_min=3)
    clock = Clock()
    client = make_client(clock=clock, anonymous_rate_per_min=2)
    for _ in range(3):
        assert client.get("/devices", headers=bearer(slow)).status_code == 200
    response = client.get("/devices", headers=bearer(slow))
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) == 20  # One token per 60 / 3 s.
    assert client.get("/devices", headers=bearer(other)).status_code == 200  # Own bucket.
    assert client.get("/devices").status_code == 200  # Anonymous: the IP's bucket.
    assert client.get("/health").status_code == 200
    assert client.get("/devices").status_code == 429
    assert client.post("/devices", json={}, headers=bearer("tlc_guess")).status_code == 429
    clock.t += 19.0
    assert client.get("/devices", headers=bearer(slow)).status_code == 429
    clock.t += 1.0
    assert client.get("/devices", headers=bearer(slow)).status_code == 200
    assert client.get("/devices", headers=bearer(slow)).status_code == 429
    clock.t += 3600  # Refills to a minute's allowance, no more.
    assert [client.get("/devices", headers=bearer(slow)).status_code
            for _ in range(4)] == [200, 200, 200, 429]
    assert client.get("/devices").status_code == 200


# ---------------------------------------------------------------------------- devices


def test_device_create_read_edit_delete_never_shows_credentials(client, keys):
    w = bearer(keys["write"])
    body = {"name": "gate", "kind": "http_snapshot",
            "params": {"url": "http://cam.example/x.jpg", "max_bytes": "5000"},
            "credentials": {"username": "admin", "password": PASSWORD},
            "latitude": 40.42, "longitude": -86.91, "city": "Lafayette", "country": "US",
            "sector": "city", "poll_interval_s": 2.5}
    response = client.post("/devices", json=body, headers=w)
    assert response.status_code == 201, response.text
    device = response.json()
    assert device["has_credentials"] is True and "credentials" not in device
    assert device["params"] == {"url": "http://cam.example/x.jpg", "max_bytes": 5000}
    assert (device["latitude"], device["poll_interval_s"]) == (40.42, 2.5)
    assert client.post("/devices", json=body, headers=w).status_code == 409
    assert client.get("/devices/gate").json() == device

    response = client.patch("/devices/gate", json={"city": "West Lafayette",
                                                   "credentials": {"password": "new-pw"}},
                            headers=w)
    assert response.status_code == 200, response.text
    assert response.json()["city"] == "West Lafayette"
    assert response.json()["params"] == device["params"]  # Untouched fields stay.
    with client_session(client) as session:
        row = session.scalars(sa.select(DB.DeviceRow)).one()
        assert row.credentials == {"username": "admin", "password": "new-pw"}
    response = client.patch("/devices/gate", json={"credentials": {"username": None,
                                                                   "password": ""}},
                            headers=w)
    assert response.json()["has_credentials"] is False
    response = client.patch("/devices/gate", json={"name": "gate-2", "active": False},
                            headers=w)
    assert response.json()["name"] == "gate-2" and response.json()["active"] is False
    assert client.get("/devices/gate").status_code == 404
    assert client.post("/devices", json=camera("other"), headers=w).status_code == 201
    assert client.patch("/devices/gate-2", json={"name": "other"},
                        headers=w).status_code == 409
    assert client.patch("/devices/nope", json={"city": "x"}, headers=w).status_code == 404
    assert client.delete("/devices/gate-2", headers=w).status_code == 204
    assert client.delete("/devices/gate-2", headers=w).status_code == 404
    assert client.get("/devices/gate-2").status_code == 404
    assert names(client.get("/devices")) == ["other"]
    assert not any(PASSWORD in t or "new-pw" in t for t in client.texts)


class client_session:
    """A session on the client's app's database."""

    def __init__(self, client):
        self.db = client.http._transport.app.state.live.db

    def __enter__(self):
        self.session = self.db.session()
        return self.session

    def __exit__(self, *exc):
        self.session.close()


def test_bad_input_is_refused_with_clear_reasons(make_client, keys):
    client = make_client(max_body_bytes=4000)
    w = bearer(keys["write"])
    assert client.post("/devices", json=camera("ok", latitude=1.0, longitude=2.0),
                       headers=w).status_code == 201

    def refused(body, status=422, method="POST", url="/devices"):
        response = client.request(method, url, json=body, headers=w)
        assert response.status_code == status, (body, response.text)
        return json.dumps(response.json()["detail"])

    assert "latitude" in refused(camera("x", latitude=91.0, longitude=0.0))
    assert "longitude" in refused(camera("x", latitude=0.0, longitude=-180.5))
    assert "given together" in refused(camera("x", latitude=10.0))
    assert "colour" in refused(camera("x", colour="red"))  # Unknown field.
    assert "token" in refused(camera("x", credentials={"token": "t"}))
    assert "colour not parameters of kind http_snapshot" in refused(
        {"name": "x", "kind": "http_snapshot",
         "params": {"url": "http://cam.example/x.jpg", "colour": "red"}})
    assert "unknown kind 'webcam'" in refused({"name": "x", "kind": "webcam"})
    assert "poll_interval_s" in refused(camera("x", poll_interval_s=0.01))
    assert "name" in refused(camera("a\nb"))
    assert "name" in refused(camera("n" * 201))
    assert "name" in refused(camera(""))
    assert "max_bytes 'many'" in refused({"name": "x", "kind": "http_snapshot",
                                          "params": {"url": "http://x", "max_bytes": "many"}})
    assert "max_bytes 1.5" in refused({"name": "x", "kind": "http_snapshot",
                                       "params": {"url": "http://x", "max_bytes": 1.5}})
    assert "params" in refused(camera("x", params={"url": ["http://cam.example/"]}))
    response = client.post("/devices", content=b'{"name": "x", "kind": "http_snapshot", '
                           b'"params": {"url": "http://cam.example/"}, "latitude": NaN, '
                           b'"longitude": 0}',
                           headers={**w, "Content-Type": "application/json"})
    assert response.status_code == 422
    long_secret = PASSWORD * 100  # Refused without being echoed.
    assert "password" in refused(camera("x", credentials={"password": long_secret}))
    assert not any(PASSWORD in t for t in client.texts)
    assert "colour" in refused({"colour": "red"}, method="PATCH", url="/devices/ok")
    assert "city" in refused({"city": None}, method="PATCH", url="/devices/ok")
    assert "latitude" in refused({"latitude": -90.5}, method="PATCH", url="/devices/ok")
    assert "given together" in refused({"latitude": None}, method="PATCH", url="/devices/ok")

    big = camera("x", city="c" * 200, sector="s" * 200, region="r" * 5000)
    assert "larger than 4000" in refused(big, status=413)

    async def chunks():  # No Content-Length: counted as it streams.
        for _ in range(10):
            yield b" " * 1000

    response = client.post("/devices", content=chunks(),
                           headers={**w, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert client.post("/devices/import", content=b"name,kind\n" + b"x,folder\n" * 500,
                       headers={**w, "Content-Type": "text/csv"}).status_code == 413

    for query in ("near=Lafayette&km=5", "near=91,0&km=5", "near=1,2,3&km=5",
                  "near=1,2&km=0", "near=1,2&km=-1", "near=1,2&km=nan", "near=1,2&km=30000",
                  "near=1,2", "km=5", "limit=0", "limit=1001", "offset=-1",
                  "limit=x", "active=maybe", "city=" + "c" * 201):
        response = client.get(f"/devices?{query}")
        assert response.status_code == 422, (query, response.text)
    assert client.get("/devices/ok/frames?since=nan").status_code == 422
    assert client.get("/devices/ok/frames?limit=1001").status_code == 422
    assert client.get("/areas/class-counts").status_code == 422  # No area.
    assert client.get("/areas/class-counts?city=x&bucket_s=0").status_code == 422
    assert client.get("/frames/0/image").status_code == 422
    assert client.get(f"/frames/{2**70}/image").status_code == 422
    assert names(client.get("/devices")) == ["ok"]  # Nothing else got in.


def test_search_filters_distance_and_injection_strings(client, keys):
    w = bearer(keys["write"])
    places = {"purdue": (40.4237, -86.9212, "West Lafayette", "US", "university"),
              "lafayette": (40.4167, -86.8753, "Lafayette", "US", "city"),
              "indy": (39.7684, -86.1581, "Indianapolis", "US", "city"),
              "paris": (48.8566, 2.3522, "Paris", "FR", "city")}
    for name, (lat, lon, city, country, sector) in places.items():
        assert client.post("/devices", json=camera(
            name, kind="http_snapshot", params={"url": f"http://{name}/x.jpg"}, latitude=lat, longitude=lon, city=city, country=country, sector=sector,
            active=name != "indy", credentials={"password": PASSWORD}),
            headers=w).status_code == 201
    response = client.get("/devices?near=40.42,-86.9&km=150")
    items = response.json()["items"]
    assert [i["name"] for i in items] == ["purdue", "lafayette", "indy"]
    expected = [R.haversine_km(40.42, -86.9, *places[i["name"]][:2]) for i in items]
    assert [i["distance_km"] for i in items] == pytest.approx(expected, rel=1e-9)
    assert items == sorted(items, key=lambda i: i["distance_km"])
    assert names(client.get("/devices?city=LAFAYETTE")) == ["lafayette"]
    assert names(client.get("/devices?country=us&sector=city")) == ["indy", "lafayette"]
    assert names(client.get("/devices?country=us&active=false")) == ["indy"]
    assert names(client.get("/devices?text=lafay")) == ["lafayette", "purdue"]
    assert names(client.get("/devices?region=nowhere")) == []
    for evil in ("x'; DROP TABLE devices; --", "' OR '1'='1", "%' OR 1=1 --", "\" OR 1=1",
                 "'; DELETE FROM api_keys; --", "lafayette' --", "%", "_"):
        for field in ("text", "city", "country", "sector"):
            assert names(client.get("/devices", params={field: evil})) == [], (field, evil)
    assert names(client.get("/devices")) == sorted(places)  # Nothing dropped.
    assert client.get("/devices", headers=w).status_code == 200  # Keys still there.
    assert not any(PASSWORD in t for t in client.texts)


@pytest.mark.parametrize("near", [None, "40,-86"])
def test_pages_walk_every_device_exactly_once(client, keys, near):
    w = bearer(keys["write"])
    for i in range(23):
        assert client.post("/devices", json=camera(f"cam-{i:02d}", latitude=40 + i / 100,
                                                   longitude=-86.0),
                           headers=w).status_code == 201
    seen, offset, pages = [], 0, 0
    while offset is not None:
        query = {"limit": 5, "offset": offset, **({"near": near, "km": 500} if near else {})}
        page = client.get("/devices", params=query).json()
        assert page["limit"] == 5 and page["offset"] == offset
        seen += [item["name"] for item in page["items"]]
        offset, pages = page["next_offset"], pages + 1
    assert pages == 5 and len(seen) == 23 and sorted(seen) == [f"cam-{i:02d}"
                                                              for i in range(23)]
    exact = client.get("/devices", params={"limit": 23}).json()
    assert len(exact["items"]) == 23 and exact["next_offset"] is None
    assert client.get("/devices", params={"offset": 100}).json() == {
        "items": [], "limit": 100, "offset": 100, "next_offset": None}


def test_csv_import(client, keys):
    w = {**bearer(keys["write"]), "Content-Type": "text/csv; charset=utf-8"}
    client.post("/devices", json=camera("cam-b"), headers=bearer(keys["write"]))
    csv = ("name,kind,url,latitude,longitude,city,username,password\n"
           f"cam-a,http_snapshot,http://a/x.jpg,40.4,-86.9,Lafayette,admin,{PASSWORD}\n"
           "cam-x,no_such_kind,http://x,,,,,\n"
           "cam-b,http_snapshot,http://b/x.jpg,95,-86,,,\n"
           "\n"
           "cam-c,http_snapshot,http://c/x.jpg,1,2,,,\n"
           "cam-b,http_snapshot,http://b/x.jpg,,,Paris,,\n")
    response = client.post("/devices/import", content=csv.encode(), headers=w)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["updated"]) == (2, 1)
    errors = {e["line"]: e["error"] for e in report["errors"]}
    assert sorted(errors) == [3, 4]
    assert "unknown kind 'no_such_kind'" in errors[3]
    assert "latitude 95.0 is outside" in errors[4]
    assert names(client.get("/devices")) == ["cam-a", "cam-b", "cam-c"]
    cam_a = client.get("/devices/cam-a").json()
    assert cam_a["has_credentials"] is True and cam_a["params"] == {"url": "http://a/x.jpg"}
    assert client.get("/devices/cam-b").json()["city"] == "Paris"

    response = client.post("/devices/import", content=b"name,url\ncam,http://x\n", headers=w)
    assert response.status_code == 422
    text = detail(response)
    assert "the CSV body, line 1: the header lacks kind" in text and "tlc-import" not in text
    response = client.post("/devices/import", content="name,kind,path\ncam\xe9,folder,/t\n"
                           .encode("latin-1"), headers=w)
    assert response.status_code == 422 and "not UTF-8" in detail(response)
    response = client.post("/devices/import", json={"name": "x"}, headers=bearer(keys["write"]))
    assert response.status_code == 415
    assert not any(PASSWORD in t for t in client.texts)


def csv_headers(key):
    return {**bearer(key), "Content-Type": "text/csv"}


def test_folder_devices_need_the_admin_scope_and_an_allowed_root(make_client, keys,
                                                                 tmp_path):
    """Issue 14, item 1: a write key could create a folder device on any path ('/'
    included) and read the server's files through /frames/{id}/image."""
    cams = tmp_path / "cams"
    (cams / "north").mkdir(parents=True)
    (cams / "out").symlink_to(tmp_path)  # Inside by name, outside once resolved.
    w, a = bearer(keys["write"]), bearer(keys["admin"])

    def body(name, path):
        return {"name": name, "kind": "folder", "params": {"path": str(path)}}

    plain = make_client()  # The default: no --folder-root, no folder device at all.
    response = plain.post("/devices", json=body("root", "/"), headers=w)
    assert response.status_code == 403 and "'admin' scope" in detail(response)
    response = plain.post("/devices", json=body("north", cams / "north"), headers=a)
    assert response.status_code == 422 and "--folder-root" in detail(response)

    from tlc_jax.live.policy import DevicePolicy

    client = make_client(policy=DevicePolicy.from_options(folder_roots=[str(cams)]))
    for path in ("/", "/etc", tmp_path, cams / "..", cams / "out", "relative/north"):
        response = client.post("/devices", json=body("x", path), headers=a)
        assert response.status_code == 422, (path, response.text)
        assert "folder" in detail(response), response.text
    response = client.post("/devices", json=body("north", cams / "north"), headers=a)
    assert response.status_code == 201, response.text
    # A write key can neither create one, edit one, nor turn a device into one.
    assert client.post("/devices", json=body("north-2", cams / "north"),
                       headers=w).status_code == 403
    assert client.patch("/devices/north", json={"city": "x"}, headers=w).status_code == 403
    assert client.patch("/devices/north", json={"params": {"path": "/"}},
                        headers=a).status_code == 422
    assert client.patch("/devices/north", json={"city": "Lafayette"},
                        headers=a).status_code == 200
    assert client.post("/devices", json=camera("cam"), headers=w).status_code == 201
    response = client.patch("/devices/cam", json={"kind": "folder", "params": {
        "path": str(cams / "north")}}, headers=w)
    assert response.status_code == 403
    assert client.get("/devices/cam").json()["kind"] == "http_snapshot"
    # CSV import: folder rows are refused line by line, unless the key is an admin's.
    csv = f"name,kind,path\nf-1,folder,{cams / 'north'}\nf-2,folder,/etc\n"
    report = client.post("/devices/import", content=csv, headers=csv_headers(
        keys["write"])).json()
    assert report["created"] == 0 and [e["line"] for e in report["errors"]] == [2, 3]
    assert all("'admin' scope" in e["error"] for e in report["errors"])
    report = client.post("/devices/import", content=csv, headers=csv_headers(
        keys["admin"])).json()
    assert report["created"] == 1 and [e["line"] for e in report["errors"]] == [3]
    assert "outside the folders" in report["errors"][0]["error"]
    assert names(client.get("/devices")) == ["cam", "f-1", "north"]
    assert client.delete("/devices/north", headers=w).status_code == 204


FORBIDDEN_URLS = ["file:///etc/passwd", "gopher://cam.example/x",
                  "http://169.254.169.254/latest/meta-data/", "http://[::1]/x.jpg",
                  "http://127.0.0.1:8080/x.jpg", "http://localhost/x.jpg",
                  "http://10.0.0.7/x.jpg", "http://2130706433/x.jpg",
                  "http://[::ffff:127.0.0.1]/x.jpg", "http://metadata.google.internal/x"]


def test_device_urls_are_checked_when_created_edited_or_imported(make_client, keys):
    """Issue 14, item 2: file://, the metadata address and loopback were accepted with
    201 (checked only when the run-time connects). Now refused at create, edit and CSV
    import with the run-time's allow-list (which the server is given: --allow)."""
    client = make_client()
    w = bearer(keys["admin"])  # Not even an admin key.
    assert client.post("/devices", json=camera("ok"), headers=w).status_code == 201
    for i, url in enumerate(FORBIDDEN_URLS):
        response = client.post("/devices", json=camera(f"x{i}", params={"url": url}),
                               headers=w)
        assert response.status_code == 422, (url, response.text)
        text = detail(response)
        assert "refused" in text or "scheme" in text, text
        if url.startswith("http://127.0.0.1"):
            assert "--allow 127.0.0.1" in text, text
        response = client.post("/devices", json={
            "name": f"r{i}", "kind": "relay", "params": {
                "url_template": url.rstrip("/") + "/{device_id}", "device_id": "7"}},
            headers=w)
        assert response.status_code == 422, (url, response.text)
        response = client.patch("/devices/ok", json={"params": {"url": url}}, headers=w)
        assert response.status_code == 422, (url, response.text)
    assert client.get("/devices/ok").json()["params"]["url"] == "http://cam.example/x.jpg"
    csv = "name,kind,url\n" + "".join(f"c{i},mjpeg,{url}\n"
                                      for i, url in enumerate(FORBIDDEN_URLS))
    report = client.post("/devices/import", content=csv, headers=csv_headers(
        keys["write"])).json()
    assert report["created"] == 0 and len(report["errors"]) == len(FORBIDDEN_URLS)
    assert names(client.get("/devices")) == ["ok"]

    from tlc_jax.live.policy import DevicePolicy

    allowed = make_client(policy=DevicePolicy.from_options(allow=["127.0.0.1"]))
    response = allowed.post("/devices", json=camera("local", params={
        "url": "http://127.0.0.1:8080/x.jpg"}), headers=w)
    assert response.status_code == 201, response.text
    assert allowed.post("/devices", json=camera("v6", params={"url": "http://[::1]/"}),
                        headers=w).status_code == 422  # Only what was allowed.


def test_frame_size_bound_dot_names_and_passwords_in_urls(make_client, keys):
    """Issue 14, item 4: a write key lifted max_bytes to 1e11; '.' and '..' were
    accepted and then unreachable; a password written into the URL came back in
    params."""
    client = make_client()  # The default bound: 32 MiB.
    w = bearer(keys["write"])

    def create(body, client=client):
        return client.post("/devices", json=body, headers=w)

    def url_params(**extra):
        return {"url": "http://cam.example/x.jpg", **extra}

    response = create(camera("big", params=url_params(max_bytes=10**11)))
    assert response.status_code == 422 and "--max-frame-bytes" in response.text
    assert create(camera("big", params=url_params(max_bytes=0))).status_code == 422
    for name in (".", ".."):
        response = create(camera(name))
        assert response.status_code == 422 and "'.' or '..'" in response.text
    assert create(camera("...")).status_code == 201  # Reachable: not a dot segment.
    for kind, url in (("http_snapshot", f"http://admin:{PASSWORD}@cam.example/x.jpg"),
                      ("mjpeg", f"https://admin:{PASSWORD}@cam.example/stream")):
        response = create({"name": "pw", "kind": kind, "params": {"url": url}})
        assert response.status_code == 422, response.text
        assert "credentials" in detail(response)
        response = client.patch("/devices/...", json={"params": {"url": url}}, headers=w)
        assert response.status_code == 422
    csv = f"name,kind,url\npw,http_snapshot,http://admin:{PASSWORD}@cam.example/\n"
    report = client.post("/devices/import", content=csv, headers=csv_headers(
        keys["write"])).json()
    assert report["created"] == 0 and "credentials" in report["errors"][0]["error"]

    from tlc_jax.live.policy import DevicePolicy  # An operator's own bound.

    bounded = make_client(policy=DevicePolicy.from_options(max_frame_bytes=1_000_000))
    response = create(camera("big", params=url_params(max_bytes=1_000_001)), bounded)
    assert response.status_code == 422 and "limit of 1000000" in response.text
    assert create(camera("big", params=url_params(max_bytes=1_000_000)),
                  bounded).status_code == 201
    for changes in ({"params": url_params(max_bytes=10**11)}, {"name": "."},
                    {"name": ".."}):
        assert bounded.patch("/devices/big", json=changes, headers=w).status_code == 422
    assert names(client.get("/devices")) == ["...", "big"]
    with client_session(client) as session:  # A row written before, around the API.
        session.add(DB.DeviceRow(name="old", kind="http_snapshot", credentials={},
                                 params={"url": f"http://u:{PASSWORD}@cam.example/x"}))
        session.commit()
    assert client.get("/devices/old").json()["params"] == {"url": "http://cam.example/x"}
    assert not any(PASSWORD in t for t in client.texts + bounded.texts)


# ---------------------------------------------------------------------------- frames


def _frame(device_id, t, path, data=JPEG):
    return DB.FrameRow(device_id=device_id, captured_at=t, path=path, sha256="0" * 64,
                       size=len(data), width=4, height=3)


@pytest.fixture
def scene(database, tmp_path):
    """Devices a, b (Lafayette), far (Paris), idle (no frames); two model versions;
    frames of a and b classified by both, files under tmp_path/frames."""
    root = tmp_path / "frames"
    specs = [R.DeviceSpec("a", "folder", {"path": "/tmp"}, latitude=40.42, longitude=-86.90,
                          city="Lafayette", country="US"),
             R.DeviceSpec("b", "folder", {"path": "/tmp"}, latitude=40.43, longitude=-86.88,
                          city="Lafayette", country="US"),
             R.DeviceSpec("far", "folder", {"path": "/tmp"}, latitude=48.85, longitude=2.35,
                          city="Paris", country="FR"),
             R.DeviceSpec("idle", "folder", {"path": "/tmp"}, city="Lafayette")]
    events = [("a", T0 + 10, "cat"), ("a", T0 + 3599.5, "cat"), ("a", T0 + 3600, "dog"),
              ("a", T0 + 7300, "cat"), ("b", T0 + 20, "dog"), ("b", T0 + 4000, "dog"),
              ("far", T0 + 30, "cat")]
    with database.transaction() as session:
        R.upsert(session, specs)
        old = DB.ModelVersionRow(name="old", run_dir="/runs/x", step=1,
                                 class_names=["bird", "cat", "dog"])
        new = DB.ModelVersionRow(name="new", run_dir="/runs/x", step=2,
                                 class_names=["bird", "cat", "dog"])
        session.add_all([old, new])
        session.flush()
        ids = dict(session.execute(sa.select(DB.DeviceRow.name, DB.DeviceRow.id)).all())
        frames = {}
        for i, (device, t, top) in enumerate(events):
            data = PNG if i % 2 else JPEG
            path = f"{device}/{i}.{'png' if i % 2 else 'jpg'}"
            (root / device).mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
            frame = _frame(ids[device], t, path, data)
            session.add(frame)
            session.flush()
            frames[(device, t)] = frame.id
            session.add(DB.PredictionRow(frame_id=frame.id, model_version_id=new.id,
                                         top_class=top, top_probability=0.75,
                                         topk=[[top, 0.75], ["bird", 0.25]]))
            session.add(DB.PredictionRow(frame_id=frame.id, model_version_id=old.id,
                                         top_class="bird", top_probability=0.5,
                                         topk=[["bird", 0.5], [top, 0.5]]))
    return {"root": root, "frames": frames, "old": old.id, "new": new.id, "ids": ids}


def test_frames_newest_first_with_predictions(client, scene):
    page = client.get("/devices/a/frames").json()
    assert [f["captured_at"] for f in page["items"]] == [T0 + 7300, T0 + 3600, T0 + 3599.5,
                                                         T0 + 10]
    assert page["next_offset"] is None
    first = page["items"][0]
    assert first["id"] == scene["frames"][("a", T0 + 7300)] and first["device"] == "a"
    assert first["image_url"] == f"{V1}/frames/{first['id']}/image"
    assert [(p["model_version_id"], p["top_class"]) for p in first["predictions"]] == [
        (scene["old"], "bird"), (scene["new"], "cat")]
    assert first["predictions"][1]["topk"] == [{"class_name": "cat", "probability": 0.75},
                                               {"class_name": "bird", "probability": 0.25}]
    assert "path" not in first
    page = client.get("/devices/a/frames?limit=3&offset=0").json()
    assert len(page["items"]) == 3 and page["next_offset"] == 3
    page = client.get("/devices/a/frames?limit=3&offset=3").json()
    assert [f["captured_at"] for f in page["items"]] == [T0 + 10]
    assert page["next_offset"] is None
    window = client.get(f"/devices/a/frames?since={T0 + 10}&until={T0 + 3600}").json()
    assert [f["captured_at"] for f in window["items"]] == [T0 + 3599.5, T0 + 10]
    assert client.get("/devices/idle/frames").json()["items"] == []
    assert client.get("/devices/nope/frames").status_code == 404

    latest = client.get("/devices/b/latest").json()
    assert latest["captured_at"] == T0 + 4000
    assert {p["top_class"] for p in latest["predictions"]} == {"dog", "bird"}
    assert client.get("/devices/idle/latest").status_code == 404
    assert client.get("/devices/nope/latest").status_code == 404


def test_images_are_served_from_the_store_and_never_from_outside(make_client, database,
                                                                 scene, tmp_path):
    client = make_client(frames_root=scene["root"])
    jpeg = client.get(f"/frames/{scene['frames'][('a', T0 + 10)]}/image")
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert jpeg.content == JPEG and jpeg.headers["x-content-type-options"] == "nosniff"
    png = client.get(f"/frames/{scene['frames'][('a', T0 + 3599.5)]}/image")
    assert png.headers["content-type"] == "image/png" and png.content == PNG

    secret = tmp_path / "secret.jpg"
    secret.write_bytes(JPEG + b"SECRET")
    os.symlink(secret, scene["root"] / "a" / "link.jpg")
    (scene["root"] / "a" / "text.jpg").write_bytes(b"not an image")
    bad = {}
    with database.transaction() as session:
        for i, path in enumerate(["../secret.jpg", str(secret), "a/../../secret.jpg",
                                  "a/link.jpg", "a/missing.jpg", "a/text.jpg"]):
            frame = _frame(scene["ids"]["a"], T0 - i, path)
            session.add(frame)
            session.flush()
            bad[path] = frame.id
    for path in ("../secret.jpg", str(secret), "a/../../secret.jpg", "a/link.jpg"):
        response = client.get(f"/frames/{bad[path]}/image")
        assert response.status_code == 403 and b"SECRET" not in response.content, path
    assert client.get(f"/frames/{bad['a/missing.jpg']}/image").status_code == 404
    assert client.get(f"/frames/{bad['a/text.jpg']}/image").status_code == 415
    assert client.get("/frames/999999/image").status_code == 404
    no_store = make_client(frames_root=None)
    assert no_store.get(f"/frames/{scene['frames'][('a', T0 + 10)]}/image").status_code == 404


def test_class_counts_per_bucket_match_a_hand_count(client, scene):
    lafayette = {"buckets": [{"start": T0, "counts": {"cat": 2, "dog": 1}},
                             {"start": T0 + 3600, "counts": {"dog": 2}},
                             {"start": T0 + 7200, "counts": {"cat": 1}}],
                 "bucket_s": 3600, "model_version_id": scene["new"], "devices": 3}
    assert client.get("/areas/class-counts?city=lafayette").json() == lafayette
    near = client.get("/areas/class-counts?near=40.42,-86.9&km=20").json()
    assert near == {**lafayette, "devices": 2}  # "idle" has no coordinates.
    assert client.get("/areas/class-counts?country=US").json() == {**lafayette, "devices": 2}
    response = client.get(f"/areas/class-counts?city=lafayette&since={T0 + 3600}"
                          f"&until={T0 + 7300}").json()
    assert response["buckets"] == [{"start": T0 + 3600, "counts": {"dog": 2}}]
    day = client.get("/areas/class-counts?country=fr&bucket_s=86400").json()
    start = math.floor((T0 + 30) / 86400) * 86400
    assert day["buckets"] == [{"start": start, "counts": {"cat": 1}}]
    seven = client.get("/areas/class-counts?city=lafayette&bucket_s=7").json()
    hand = {}
    for t, top in [(T0 + 10, "cat"), (T0 + 3599.5, "cat"), (T0 + 3600, "dog"),
                   (T0 + 7300, "cat"), (T0 + 20, "dog"), (T0 + 4000, "dog")]:
        bucket = hand.setdefault(math.floor(t / 7) * 7, {})
        bucket[top] = bucket.get(top, 0) + 1
    assert seven["buckets"] == [{"start": s, "counts": c} for s, c in sorted(hand.items())]
    old = client.get(f"/areas/class-counts?city=lafayette&model_version_id={scene['old']}")
    assert [b["counts"] for b in old.json()["buckets"]] == [{"bird": 3}, {"bird": 2},
                                                            {"bird": 1}]
    assert client.get("/areas/class-counts?city=nowhere").json()["buckets"] == []
    assert client.get("/areas/class-counts?city=x' OR '1'='1").json()["buckets"] == []


def test_model_versions_newest_first(client, scene):
    page = client.get("/model-versions").json()
    assert [(v["id"], v["name"], v["step"]) for v in page["items"]] == [
        (scene["new"], "new", 2), (scene["old"], "old", 1)]
    assert page["items"][0]["class_names"] == ["bird", "cat", "dog"]
    page = client.get("/model-versions?limit=1").json()
    assert len(page["items"]) == 1 and page["next_offset"] == 1


# ---------------------------------------------------------------------------- the rest


def test_health_reports_the_service_and_the_database(make_client, database, monkeypatch):
    status = {"uptime_s": 5.0, "failing": {"cam-3": "timeout"}, "counters": {"stored": 7}}
    client = make_client(health=lambda: status)
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["service"] == status
    odd = make_client(health=lambda: {"latency_s": {"p50": math.nan, "n": (1, 2)}})
    assert odd.get("/health").json()["service"] == {"latency_s": {"p50": None, "n": [1, 2]}}
    assert body["database"] == {"ok": True, "backend": database.engine.dialect.name,
                                "revision": "0003"}
    assert make_client().get("/health").json()["service"] is None

    def broken():
        raise RuntimeError("analyzer died")

    body = make_client(health=broken).get("/health").json()
    assert body["status"] == "degraded" and "analyzer died" in body["service"]["error"]

    def down(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(database, "revision", down)
    monkeypatch.setattr(database, "session", down)
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["database"]["ok"] is False
    assert response.json()["service"] == status
    response = client.get("/devices")
    assert response.status_code == 503 and "unavailable" in detail(response)


def test_openapi_lists_every_endpoint(client):
    response = client.http._transport.app.openapi()
    expected = {("GET", "/health"), ("GET", "/devices"), ("POST", "/devices"),
                ("POST", "/devices/import"), ("GET", "/devices/{name}"),
                ("PATCH", "/devices/{name}"), ("DELETE", "/devices/{name}"),
                ("GET", "/devices/{name}/frames"), ("GET", "/devices/{name}/latest"),
                ("GET", "/frames/{frame_id}/image"), ("GET", "/areas/class-counts"),
                ("GET", "/model-versions")}
    listed = {(m.upper(), p[len(V1):]) for p, ops in response["paths"].items() for m in ops}
    assert listed == expected
    assert {(m, p[len(V1):]) for m, p in API.routes()} == expected
    schemes = response["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    assert "text/csv" in response["paths"][V1 + "/devices/import"]["post"]["requestBody"][
        "content"]
    served = client.runner.run(client.http.get("/openapi.json")).json()
    assert served["paths"].keys() == response["paths"].keys()
    assert client.runner.run(client.http.get("/docs")).status_code == 200


# ---------------------------------------------------------------------------- contract
# Issue 14, item 17 (found by fuzzing with schemathesis; the fuzzing itself runs in
# test_api_contract.py): the OpenAPI document must be the truth.

from tlc_jax.live import schemas as S  # noqa: E402


def declared(spec, method, template, response):
    """Asserts the response's status is declared for the operation and its body is the
    declared schema's; returns the body."""
    responses = spec["paths"][V1 + template][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in responses, (method, template, status, sorted(responses))
    schema = responses[status]["content"]["application/json"]["schema"]
    model = getattr(S, schema["$ref"].rsplit("/", 1)[1])  # Error, InputErrors, ...
    model.model_validate_json(response.content, strict=True)
    for name, header in responses[status].get("headers", {}).items():
        assert not header.get("required") or name.lower() in response.headers, name
    return response.json()


def loc(response):
    return [e["loc"] for e in response.json()["detail"]]


def asgi(app, method, path, headers=(), body=b""):
    """One raw ASGI request (headers httpx would not send): (status, headers, body)."""
    sent, requested = [], []

    async def receive():
        if not requested:
            requested.append(True)
            return {"type": "http.request", "body": body, "more_body": False}
        while not any(m["type"] == "http.response.body" and not m.get("more_body")
                      for m in sent):
            await asyncio.sleep(0.001)
        return {"type": "http.disconnect"}  # Once the response is complete.

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("api.test", 80), "client": ("127.0.0.1", 1234),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return (start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def test_every_error_is_declared_with_the_body_it_has(make_client, keys, tmp_path):
    """Hand-raised 422s had `detail` as a string where the document declares a list;
    404, 409, 401, 403, 415, 429, 400, 413 and the import's 422 were undeclared."""
    from tlc_jax.live.policy import DevicePolicy

    client = make_client(max_body_bytes=4000, policy=DevicePolicy.from_options(
        folder_roots=[str(tmp_path)]))
    spec = client.http._transport.app.openapi()
    w, r = bearer(keys["write"]), bearer(keys["read"])

    def check(method, url, template, status, **kwargs):
        response = client.request(method, url, **kwargs)
        assert response.status_code == status, (method, url, response.text)
        declared(spec, method, template, response)
        return response

    assert check("POST", "/devices", "/devices", 201, json=camera("cam"), headers=w)
    # 422s of the API's own checks: a list naming the field, as FastAPI's own.
    assert loc(check("GET", "/devices?near=40.4,-86.9", "/devices", 422)) == [
        ["query", "km"]]
    assert loc(check("GET", "/devices?km=5", "/devices", 422)) == [["query", "near"]]
    assert loc(check("GET", "/devices?near=north&km=5", "/devices", 422)) == [
        ["query", "near"]]
    assert loc(check("GET", "/devices?near=1,2&km=30000", "/devices", 422)) == [
        ["query", "km"]]
    assert loc(check("GET", "/areas/class-counts", "/areas/class-counts", 422)) == [
        ["query"]]
    assert loc(check("POST", "/devices", "/devices", 422, headers=w,
                     json={"name": "x", "kind": ""})) == [["body", "kind"]]
    assert loc(check("POST", "/devices", "/devices", 422, headers=w, json=camera(
        "x", params={"url": "http://cam.example/", "max_bytes": "many"}))) == [
        ["body", "params", "max_bytes"]]
    assert loc(check("PATCH", "/devices/cam", "/devices/{name}", 422, headers=w,
                     json={"params": {"url": "http://127.0.0.1/x.jpg"}})) == [
        ["body", "params", "url"]]
    assert loc(check("POST", "/devices/import", "/devices/import", 422,
                     content=b"name,url\nx,http://x\n", headers=csv_headers(
                         keys["write"]))) == [["body"]]
    check("POST", "/devices", "/devices", 422, headers=w, json={"name": 5})  # FastAPI's.
    # The other errors: one sentence.
    for method, url, template in (("GET", "/devices/nope", "/devices/{name}"),
                                  ("PATCH", "/devices/nope", "/devices/{name}"),
                                  ("DELETE", "/devices/nope", "/devices/{name}"),
                                  ("GET", "/devices/nope/frames", "/devices/{name}/frames"),
                                  ("GET", "/devices/cam/latest", "/devices/{name}/latest"),
                                  ("GET", "/frames/7/image", "/frames/{frame_id}/image")):
        check(method, url, template, 404, headers=w, **(
            {"json": {}} if method == "PATCH" else {}))
    check("POST", "/devices", "/devices", 409, json=camera("cam"), headers=w)
    assert check("POST", "/devices", "/devices", 201, json=camera("cam-2"), headers=w)
    check("PATCH", "/devices/cam-2", "/devices/{name}", 409, json={"name": "cam"}, headers=w)
    check("POST", "/devices", "/devices", 401, json=camera("x"))
    check("GET", "/devices", "/devices", 401, headers=bearer("tlc_wrong"))
    check("POST", "/devices/import", "/devices/import", 401, content=b"name,kind\n")
    check("POST", "/devices", "/devices", 403, json=camera("x"), headers=r)
    check("POST", "/devices", "/devices", 403, headers=w, json={
        "name": "f", "kind": "folder", "params": {"path": str(tmp_path)}})
    check("DELETE", "/devices/cam", "/devices/{name}", 403, headers=r)
    check("POST", "/devices/import", "/devices/import", 415, json={"name": "x"}, headers=w)
    check("POST", "/devices", "/devices", 413, headers=w,
          json=camera("x", region="r" * 5000))
    check("GET", "/model-versions", "/model-versions", 413, content=b" " * 5000)
    status, headers, body = asgi(client.http._transport.app, "POST", V1 + "/devices",
                                 [("Content-Length", "many"), ("Authorization",
                                                               f"Bearer {keys['write']}")])
    assert status == 400 and "400" in spec["paths"][V1 + "/devices"]["post"]["responses"]
    S.Error.model_validate_json(body, strict=True)
    limited = make_client(anonymous_rate_per_min=1)
    assert limited.get("/model-versions").status_code == 200
    response = limited.get("/model-versions")
    assert response.status_code == 429
    declared(spec, "GET", "/model-versions", response)
    declared(spec, "GET", "/health", client.get("/health"))
    # Every operation declares the errors every operation can give.
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert {"400", "413", "429", "503"} <= set(operation["responses"]), (method, path)
            if operation.get("security"):
                assert {"401", "422"} <= set(operation["responses"]), (method, path)
            if method != "get":
                assert "403" in operation["responses"], (method, path)


def test_a_405_lists_every_method_of_the_path(make_client, tmp_path, database):
    """PUT /api/v1/devices answered `Allow: GET, HEAD`: the web interface's mount at /
    caught it (and without it, Starlette named only the first route's methods)."""
    from tlc_jax.live import webui

    apps = {"api": API.create_app(database, frames_root=tmp_path),
            "api+web": webui.mount_web(API.create_app(database, frames_root=tmp_path))}
    for name, app in apps.items():
        for method, path, allow in (("PUT", "/api/v1/devices", "GET, POST"),
                                    ("OPTIONS", "/api/v1/devices", "GET, POST"),
                                    ("PUT", "/api/v1/devices/cam", "DELETE, GET, PATCH"),
                                    ("POST", "/api/v1/devices/cam/frames", "GET"),
                                    ("DELETE", "/api/v1/health", "GET"),
                                    ("POST", "/openapi.json", "GET, HEAD"),
                                    ("POST", "/docs", "GET")):
            status, headers, body = asgi(app, method, path)
            assert (status, headers.get("allow")) == (405, allow), (name, method, path)
            S.Error.model_validate_json(body, strict=True)
        assert asgi(app, "GET", "/api/v1/devices")[0] == 200
        assert asgi(app, "PUT", "/api/v1/no-such-endpoint")[0] in (404, 405)
    web = apps["api+web"]
    assert asgi(web, "GET", "/")[0] == 200
    assert asgi(web, "POST", "/index.html")[:2][1]["allow"] == "GET, HEAD"  # The files'.


def test_the_key_is_checked_before_the_body(make_client, keys):
    """A malformed write body without a key got a 422 (or a 400): the API told a
    caller without a key what it accepts. Now: 401, or 403 for a read key."""
    client = make_client()
    assert client.post("/devices", json=camera("cam"),
                       headers=bearer(keys["write"])).status_code == 201
    bodies = {"not JSON": b"{", "not UTF-8": b'{"name": "\xff"}', "wrong": b"[1, 2]",
              "empty": b""}
    json_type = {"Content-Type": "application/json"}
    for why, body in bodies.items():
        for method, url in (("POST", "/devices"), ("PATCH", "/devices/cam")):
            response = client.request(method, url, content=body, headers=json_type)
            assert response.status_code == 401, (why, method, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            response = client.request(method, url, content=body,
                                      headers={**json_type, **bearer("tlc_wrong")})
            assert response.status_code == 401, (why, method, response.text)
            response = client.request(method, url, content=body,
                                      headers={**json_type, **bearer(keys["read"])})
            assert response.status_code == 403, (why, method, response.text)
            response = client.request(method, url, content=body,
                                      headers={**json_type, **bearer(keys["write"])})
            assert response.status_code in (400, 422), (why, method, response.text)
    assert client.post("/devices/import", content=b"\xff",
                       headers={"Content-Type": "text/csv"}).status_code == 401
    assert client.get("/devices/cam").json()["kind"] == "http_snapshot"  # Untouched.


def test_refusals_name_the_field_never_python_internals(make_client, keys, tmp_path):
    """`Folder.__init__() got an unexpected keyword argument 'username'` (and `missing 1
    required positional argument`) came back as 422 details."""
    from tlc_jax.live.policy import DevicePolicy

    client = make_client(policy=DevicePolicy.from_options(folder_roots=[str(tmp_path)]))
    a = bearer(keys["admin"])
    cases = [
        ({"name": "f", "kind": "folder", "params": {"path": str(tmp_path)},
          "credentials": {"username": "u"}}, ["body", "credentials", "username"],
         "kind folder takes no username credential(s) (it takes none)"),
        ({"name": "c", "kind": "http_snapshot", "credentials": {"api_key": "k"},
          "params": {"url": "http://cam.example/x.jpg"}}, ["body", "credentials", "api_key"],
         "kind http_snapshot takes no api_key credential(s) (it takes password, username)"),
        ({"name": "c", "kind": "http_snapshot"}, ["body", "params", "url"],
         "kind http_snapshot needs the parameter(s) url"),
        ({"name": "r", "kind": "relay", "params": {"url_template": "http://r.example/{"
                                                                    "device_id}"}},
         ["body", "params", "device_id"], "kind relay needs the parameter(s) device_id"),
        ({"name": "f", "kind": "folder", "params": {"path": "/etc"}},
         ["body", "params", "path"], "outside the folders the operator allows"),
        ({"name": "c", "kind": "http_snapshot", "params": {"url": "http://cam.example/",
                                                            "max_bytes": 10**11}},
         ["body", "params", "max_bytes"], "above this server's limit"),
        ({"name": "c", "kind": "http_snapshot", "params": {"url": "http://cam.example/",
                                                            "auth": "kerberos"}},
         ["body", "params", "auth"], "auth must be 'basic' or 'digest'"),
    ]
    for body, where, words in cases:
        response = client.post("/devices", json=body, headers=a)
        assert response.status_code == 422, (body, response.text)
        assert loc(response) == [where], response.text
        assert words in detail(response), response.text
        for internal in ("__init__", "keyword argument", "positional argument", "Error("):
            assert internal not in response.text, response.text
    csv = f"name,kind,path,username\nf,folder,{tmp_path},u\n"
    report = client.post("/devices/import", content=csv,
                         headers=csv_headers(keys["admin"])).json()
    assert report["created"] == 0 and "__init__" not in report["errors"][0]["error"]
    assert "takes no username" in report["errors"][0]["error"]
    assert names(client.get("/devices")) == []


def test_the_document_declares_the_key_this_server_needs(make_client):
    """Reads were declared as needing a key although they are open unless the server
    runs with --read-requires-key."""
    for read_requires_key in (False, True):
        spec = make_client(read_requires_key=read_requires_key).http._transport.app.openapi()
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                security = operation.get("security")
                if path == V1 + "/health":
                    assert not security
                elif method == "get":  # A read: the key optional unless required.
                    assert ({} in security) is not read_requires_key, (path, security)
                    assert {"HTTPBearer": []} in security and {"APIKeyHeader": []} in security
                else:
                    assert {} not in security and {"HTTPBearer": []} in security, path
        words = ("Reads need an API key" if read_requires_key else "Reads need no key")
        assert words in spec["info"]["description"]
