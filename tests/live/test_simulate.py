"""The simulated camera fleet, checked with httpx and the live system's own device kinds."""

import asyncio
import hashlib
import io
import logging
import math
import socket
import time

import httpx
import pytest
from PIL import Image

from tlc_jax.live import devices as D
from tlc_jax.live.simulate import (BEHAVIOURS, DEVICE_ROW_FIELDS, CameraServer,
                                   mix_behaviours)

from helpers import wait_for

BEHAVIOUR_OF = {1: "slow", 2: "dead", 3: "flapping", 4: "malformed", 5: "oversized",
                6: "basic", 7: "digest"}
USER, PASSWORD = "viewer", "pa55word"


@pytest.fixture(scope="module")
def server():
    with CameraServer(n=10, behaviours=BEHAVIOUR_OF, slow_s=1.0, flap_s=0.2,
                      username=USER, password=PASSWORD) as server:
        yield server


def run(coro_fn, timeout=5.0):
    async def main():
        async with httpx.AsyncClient(timeout=timeout) as client:
            return await coro_fn(client)

    return asyncio.run(main())


def fetch(device, timeout=5.0):
    return run(device.fetch, timeout)


def rejection(device, timeout=5.0) -> D.FrameRejected:
    with pytest.raises(D.FrameRejected) as e:
        fetch(device, timeout)
    return e.value


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


def test_healthy_snapshot_is_stable_within_a_period_and_changes_after_it():
    with CameraServer(n=3, change_every_s=0.3) as server:
        device = D.HttpSnapshot(name="cam-0", url=server.url(0))

        async def two(client):
            return await device.fetch(client), await device.fetch(client)

        for attempt in range(1, 6):  # Again only if a period ended between the fetches.
            before = server.frame_number(0)
            a, b = run(two)
            if server.frame_number(0) == before:
                break
        assert a.data == b.data and a.sha256 == b.sha256
        assert (a.width, a.height) == (64, 48)
        assert decode(a.data).mode == "RGB"
        wait_for(lambda: server.frame_number(0) > before, 5, "the next picture period")
        c = fetch(device)
        assert c.data != a.data
        other = fetch(D.HttpSnapshot(name="cam-1", url=server.url(1)))
        assert other.data not in (a.data, c.data)  # Every camera looks different.
        assert server.requests["healthy"] == 2 * attempt + 2
        # The server counts a frame once its write has drained, which can be just after
        # the client has read it.
        wait_for(lambda: server.served == 2 * attempt + 2, 5, "every frame counted served")


def test_pictures_cycle_with_the_clock_and_cameras_are_staggered():
    now = [1000.0]
    server = CameraServer(n=2, change_every_s=1.0, images_per_camera=4, size=(32, 24),
                          clock=lambda: now[0])
    numbers = []
    for step in range(9):
        now[0] = 1000.0 + 0.5 * step
        numbers.append(server.frame_number(0))
    assert all(b - a in (0, 1) for a, b in zip(numbers, numbers[1:]))
    assert numbers[-1] - numbers[0] == 4  # One change per second.
    # Staggered: the two cameras do not change at the same instants.
    changes = [[t for t in range(200) if server.frame_number(i, 1000 + t / 100)
                != server.frame_number(i, 1000 + (t - 1) / 100)] for i in (0, 1)]
    assert changes[0] and changes[1] and changes[0] != changes[1]

    async def pictures():
        async with server:
            async with httpx.AsyncClient() as client:
                got = []
                for step in range(5):
                    now[0] = 2000.0 + step
                    got.append((await client.get(server.url(1))).content)
                return got

    got = asyncio.run(pictures())
    assert len(set(got[:4])) == 4 and got[4] == got[0]  # Four pictures, then again.
    assert {decode(g).size for g in got} == {(32, 24)}


def test_keep_alive_reuses_one_connection(server):
    async def many(client):
        return [(await client.get(server.url(i % 2 * 8))).status_code for i in range(6)]

    before = server.connections
    assert run(many) == [200] * 6
    assert server.connections == before + 1


def test_pipelined_http10_and_bad_requests_over_raw_sockets(server):
    def exchange(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    two = exchange(b"GET /cam/0/snapshot.jpg HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /cam/8/snapshot.jpg?t=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert two.count(b"HTTP/1.1 200 OK\r\n") == 2
    old = exchange(b"GET /cam/0/snapshot.jpg HTTP/1.0\r\n\r\n")
    assert old.startswith(b"HTTP/1.0 200 OK\r\n") and b"Connection: close" in old
    assert exchange(b"POST /cam/0/snapshot.jpg HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                    ).startswith(b"HTTP/1.1 405 ")
    assert exchange(b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert exchange(b"GET / HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    assert exchange(b"GET /cam/0/snapshot.jpg HTTP/1.1\r\nX: " + b"a" * 70_000
                    + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")


def test_idle_connections_are_closed():
    with CameraServer(n=1, idle_timeout_s=0.2) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /cam/0/snapshot.jpg HTTP/1.1\r\n\r\n")
            received, start = b"", time.monotonic()
            while chunk := s.recv(65536):  # Ends when the server closes the connection.
                received += chunk
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert 0.15 < time.monotonic() - start < 3.0


def test_unknown_paths_and_methods(server):
    async def statuses(client):
        urls = [server.base_url + path for path in ("/cam/10/snapshot.jpg",
                                                    "/cam/x/snapshot.jpg",
                                                    "/cam/0/other.jpg", "/")]
        got = [(await client.get(u)).status_code for u in urls]
        response = await client.post(server.url(0), content=b"hello")
        return got, response.status_code, response.headers.get("allow")

    got, post, allow = run(statuses)
    assert got == [404] * 4 and post == 405 and allow == "GET"
    assert rejection(D.HttpSnapshot(name="x", url=f"{server.base_url}/cam/99/snapshot.jpg")
                     ).detail == "404"


def test_basic_auth(server):
    frame = fetch(D.HttpSnapshot(name="b", url=server.url(6), username=USER,
                                 password=PASSWORD))
    assert decode(frame.data).size == (64, 48)
    e = rejection(D.HttpSnapshot(name="b", url=server.url(6), username=USER,
                                 password="wrong"))
    assert (e.reason, e.detail) == ("http_status", "401")
    response = run(lambda client: client.get(server.url(6)))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic realm=")


def test_digest_auth_with_httpx(server):
    frame = fetch(D.HttpSnapshot(name="d", url=server.url(7), username=USER,
                                 password=PASSWORD, auth="digest"))
    assert decode(frame.data).size == (64, 48)
    e = rejection(D.HttpSnapshot(name="d", url=server.url(7), username=USER,
                                 password="wrong", auth="digest"))
    assert (e.reason, e.detail) == ("http_status", "401")
    # Basic credentials are no use on a digest camera.
    e = rejection(D.HttpSnapshot(name="d", url=server.url(7), username=USER,
                                 password=PASSWORD, auth="basic"))
    assert e.detail == "401"


def _digest_header(challenge: str, uri: str, password: str, nc: int = 1,
                   nonce: str | None = None) -> str:
    fields = dict(part.strip().split("=", 1) for part in challenge[len("Digest "):].split(","))
    fields = {k: v.strip('"') for k, v in fields.items()}
    nonce = nonce or fields["nonce"]
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = md5(f"{USER}:{fields['realm']}:{password}"), md5(f"GET:{uri}")
    nc_value, cnonce = f"{nc:08x}", "0a4f113b"
    response = md5(f"{ha1}:{nonce}:{nc_value}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{USER}", realm="{fields["realm"]}", nonce="{nonce}", '
            f'uri="{uri}", qop=auth, nc={nc_value}, cnonce="{cnonce}", '
            f'response="{response}", opaque="{fields["opaque"]}", algorithm=MD5')


def test_digest_server_really_checks_nonce_count_and_hash(server):
    uri = "/cam/7/snapshot.jpg"

    async def exchange(client):
        first = await client.get(server.url(7))
        challenge = first.headers["www-authenticate"]
        assert first.status_code == 401 and 'qop="auth"' in challenge
        assert "algorithm=MD5" in challenge and "opaque=" in challenge
        def get(header):
            return client.get(server.url(7), headers={"Authorization": header})

        return [first.status_code,
                (await get(_digest_header(challenge, uri, PASSWORD, nc=1))).status_code,
                (await get(_digest_header(challenge, uri, PASSWORD, nc=2))).status_code,
                # The same nonce count again: a replay.
                (await get(_digest_header(challenge, uri, PASSWORD, nc=2))).status_code,
                (await get(_digest_header(challenge, uri, "wrong", nc=3))).status_code,
                # A nonce the server never issued, with a hash that is right for it.
                await get(_digest_header(challenge, uri, PASSWORD, nonce="f" * 32)),
                # Another URI than the one requested.
                (await get(_digest_header(challenge, "/cam/0/snapshot.jpg", PASSWORD,
                                          nc=4))).status_code]

    got = run(exchange)
    unknown_nonce = got.pop(5)
    assert got == [401, 200, 200, 401, 401, 401]
    assert unknown_nonce.status_code == 401
    assert "stale=true" in unknown_nonce.headers["www-authenticate"]


def test_mjpeg_stream(server):
    frame = fetch(D.Mjpeg(name="m", url=server.url(0, stream=True)))
    assert decode(frame.data).size == (64, 48)

    async def whole(client):
        response = await client.get(server.url(8, stream=True))
        return response.headers["content-type"], response.content

    content_type, body = run(whole)
    assert content_type == "multipart/x-mixed-replace; boundary=frame"
    assert body.count(b"--frame\r\n") == server.stream_parts
    assert body.endswith(b"--frame--\r\n")
    assert body.count(b"Content-Length: ") == server.stream_parts
    # Behaviours apply to streams too.
    assert rejection(D.Mjpeg(name="m", url=server.url(4, stream=True))).reason == "undecodable"


@pytest.mark.parametrize("index, reason", [(4, "undecodable"), (5, "oversized"),
                                           (2, "unreachable")])
def test_broken_cameras_are_rejected_with_a_reason(server, index, reason):
    assert rejection(D.HttpSnapshot(name="x", url=server.url(index))).reason == reason
    if index == 5:
        assert server.oversized_bytes > D.DEFAULT_MAX_BYTES  # The default is rejected.
        e = rejection(D.Mjpeg(name="x", url=server.url(index, stream=True)))
        assert e.reason == "oversized"


def test_oversized_payload_is_a_valid_padded_jpeg():
    with CameraServer(n=1, behaviours={0: "oversized"}, oversized_bytes=300_000) as server:
        response = run(lambda client: client.get(server.url(0)))
    assert response.status_code == 200 and len(response.content) == 300_000
    assert response.headers["content-length"] == "300000"
    assert decode(response.content).size == (64, 48)


def test_slow_camera_times_out(server):
    e = rejection(D.HttpSnapshot(name="slow", url=server.url(1)), timeout=0.2)
    assert e.reason == "timeout"


def test_flapping_camera_gives_frames_and_503s():
    with CameraServer(n=2, behaviours={1: "flapping"}, flap_s=0.1) as server:
        device = D.HttpSnapshot(name="flap", url=server.url(1))

        async def poll(client):
            seen = set()
            deadline = time.monotonic() + 3.0
            while len(seen) < 2 and time.monotonic() < deadline:
                try:
                    await device.fetch(client)
                    seen.add("frame")
                except D.FrameRejected as e:
                    seen.add(f"{e.reason} {e.detail}")
                await asyncio.sleep(0.03)
            return seen

        assert run(poll) == {"frame", "http_status 503"}
        assert server.requests["unavailable"] >= 1


def test_disconnects_leave_no_tracebacks(caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    server = CameraServer(n=3, behaviours={1: "oversized", 2: "slow"}, slow_s=0.3,
                          stream_parts=50, stream_interval_s=0.01).start_in_thread()
    try:
        for device, timeout in [(D.HttpSnapshot(name="o", url=server.url(1)), 5.0),
                                (D.HttpSnapshot(name="s", url=server.url(2)), 0.1),
                                (D.Mjpeg(name="m", url=server.url(1, stream=True)), 5.0)]:
            rejection(device, timeout)  # The client hangs up mid-answer.
        fetch(D.Mjpeg(name="m", url=server.url(0, stream=True)))  # Leaves after one part.
        time.sleep(0.4)  # The slow answer meets a closed connection.
        # A stream still running when the server stops.
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"GET /cam/0/stream.mjpg HTTP/1.1\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
            server.stop()
    finally:
        server.stop()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]


def test_async_use_and_clean_close():
    async def main():
        async with CameraServer(n=4, behaviours={3: "dead"}) as server:
            async with httpx.AsyncClient() as client:
                ok = await client.get(server.url(0))
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(server.url(3))
            port = server.port
        # Closed: nothing listens any more.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        return ok.status_code, server.requests

    status, requests = asyncio.run(main())
    assert status == 200 and requests["dead"] == 1 and requests["healthy"] == 1


def test_bad_arguments():
    for kwargs in [dict(n=0), dict(n=-3), dict(n=2.5), dict(n=4, behaviours={4: "slow"}),
                   dict(n=4, behaviours={-1: "slow"}), dict(n=4, behaviours={0: "sleepy"}),
                   dict(n=4, change_every_s=0), dict(n=4, flap_s=-1), dict(n=4, size=(2, 2)),
                   dict(n=4, slow_s=-1), dict(n=4, images_per_camera=0),
                   dict(n=4, username="a:b"), dict(n=4, oversized_bytes=0)]:
        with pytest.raises(ValueError):
            CameraServer(**kwargs)
    with pytest.raises(ValueError, match="out of range"):
        CameraServer(n=4, behaviours={9: "dead"})
    with pytest.raises(ValueError, match="Unknown behaviour 'sleepy'"):
        CameraServer(n=4, behaviours={1: "sleepy"})
    server = CameraServer(n=4)
    with pytest.raises(RuntimeError, match="not started"):
        server.url(0)
    with pytest.raises(ValueError, match="out of range"):
        server.behaviour(4)
    with pytest.raises(ValueError, match="oversized_bytes"):
        asyncio.run(CameraServer(n=1, oversized_bytes=10).start())
    with pytest.raises(ValueError):
        mix_behaviours(10, {"exploding": 0.1})


def _haversine_km(a, b):
    (lat1, lon1), (lat2, lon2) = [(math.radians(x), math.radians(y)) for x, y in (a, b)]
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def test_device_rows(server):
    rows = server.device_rows(center=(48.8566, 2.3522), spread_km=5.0, city="Paris",
                              region="Île-de-France", country="FR", interval_s=2.0,
                              mjpeg=[0])
    assert len(rows) == server.n and len({r["name"] for r in rows}) == server.n
    assert rows[3]["name"] == "cam-0003" and rows[3]["url"] == server.url(3)
    assert rows[0]["kind"] == "mjpeg" and rows[0]["url"] == server.url(0, stream=True)
    assert {r["kind"] for r in rows[1:]} == {"http_snapshot"}
    distances = [_haversine_km((48.8566, 2.3522), (r["latitude"], r["longitude"]))
                 for r in rows]
    assert max(distances) <= 5.0 + 1e-3 and len(set(distances)) == len(rows)
    for r in rows:
        assert set(r) <= set(DEVICE_ROW_FIELDS) and r["active"] is True
        assert (r["city"], r["country"], r["poll_interval_s"]) == ("Paris", "FR", 2.0)
    assert rows[6]["auth"] == "basic" and rows[7]["auth"] == "digest"
    assert (rows[7]["username"], rows[7]["password"]) == (USER, PASSWORD)
    assert "auth" not in rows[0] and PASSWORD not in repr(server)
    assert rows == server.device_rows(center=(48.8566, 2.3522), spread_km=5.0, city="Paris",
                                      region="Île-de-France", country="FR", interval_s=2.0,
                                      mjpeg=[0])  # Deterministic.
    # Every row makes a device of the live system, and it fetches a frame.
    params = {k: v for k, v in rows[7].items() if k in ("url", "username", "password", "auth")}
    frame = fetch(D.make_device(rows[7]["kind"], rows[7]["name"], **params))
    assert frame.device == "cam-0007"
    with pytest.raises(ValueError):
        server.device_rows(center=(91.0, 0.0))
    with pytest.raises(ValueError):
        server.device_rows(interval_s=0)


def test_device_rows_wrap_at_the_antimeridian():
    server = CameraServer(n=200)
    server.port = 1  # device_rows only needs the URL prefix.
    rows = server.device_rows(center=(-16.5, 179.99), spread_km=30.0)
    lons = [r["longitude"] for r in rows]
    assert all(-180.0 <= x < 180.0 for x in lons) and min(lons) < 0 < max(lons)
    assert max(_haversine_km((-16.5, 179.99), (r["latitude"], r["longitude"]))
               for r in rows) <= 30.0 + 1e-3


def test_mix_behaviours():
    mix = mix_behaviours(1000, {"dead": 0.01, "slow": 0.02, "digest": 0.005})
    counts = {b: list(mix.values()).count(b) for b in ("dead", "slow", "digest")}
    assert counts == {"dead": 10, "slow": 20, "digest": 5}
    assert mix == mix_behaviours(1000, {"dead": 0.01, "slow": 0.02, "digest": 0.005})
    assert set(mix.values()) <= set(BEHAVIOURS)
    CameraServer(n=1000, behaviours=mix)  # Accepted as is.
