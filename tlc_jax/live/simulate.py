"""Simulated network cameras on loopback: a fleet to test and benchmark the live system.

`CameraServer` is one small asyncio HTTP/1.1 server (standard library only, plus Pillow
and numpy to draw the pictures) that plays `n` cameras at once:

- `GET /cam/{i}/snapshot.jpg`: camera i's current JPEG. Each camera has a few distinct
  pictures (its own colour, stripes and a binary code of its index, with a bright box
  that moves from picture to picture), all encoded once at start-up, so answering a
  request is writing bytes. The picture changes every `change_every_s` seconds of wall
  time (cameras are staggered), so two fetches within one period get identical bytes;
  the run-time's hash de-duplication sees "no new frame", as with a real camera;
- `GET /cam/{i}/stream.mjpg`: a `multipart/x-mixed-replace; boundary=frame` stream of
  a few parts (each with its Content-Length), then the connection closes.

Connections are kept alive (many requests per connection, pipelining included), so one
process can play a thousand cameras at one frame per second for `httpx.AsyncClient`'s
connection pool. Every camera is "healthy" unless `behaviours` says otherwise:

- "slow": waits `slow_s` seconds before answering;
- "dead": reads the request, then closes the connection without an answer;
- "flapping": alternately healthy and HTTP 503 for `flap_s` seconds each;
- "malformed": HTTP 200 with a truncated JPEG followed by garbage;
- "oversized": a valid JPEG padded to `oversized_bytes`, announced by Content-Length;
- "basic": HTTP Basic authentication with the server's `username` / `password`;
- "digest": HTTP Digest authentication (RFC 7616, MD5, qop="auth"): random nonces,
  the response hash really checked (with nc and cnonce), unknown or replayed nonces
  refused.
Unknown paths get 404, methods other than GET 405. `requests` counts camera requests by
behaviour ("healthy", "slow", ...) and by path kind ("snapshot", "stream"), and the
other outcomes: "unauthorized" (401), "unavailable" (503), "not_found", "bad_method",
"bad_request"; `served` counts the frames written completely (snapshots and stream
parts), `connections` the connections accepted. `mix_behaviours(n, {"dead": 0.01})`
makes a seeded mix of behaviours for a large fleet.

Use it inside a running event loop (`async with CameraServer(n=100) as server:`) or from
synchronous code, on an event loop of its own in a daemon thread
(`server = CameraServer(n=100).start_in_thread()` ... `server.stop()`, or `with`).
`server.device_rows(...)` describes the fleet as rows for a devices CSV or database
(columns: `DEVICE_ROW_FIELDS`).

The server is cheap (tens of thousands of requests per second from a raw keep-alive
client); at a thousand cameras, the client side (httpx, decoding) is what costs.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import colorsys
import concurrent.futures
import dataclasses
import hashlib
import hmac
import io
import math
import random
import re
import secrets
import threading
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np

BEHAVIOURS = ("healthy", "slow", "dead", "flapping", "malformed", "oversized", "basic",
              "digest")
# Every key `CameraServer.device_rows` can produce, in CSV column order (the last three
# only for cameras with authentication: use `restval=""` with csv.DictWriter).
DEVICE_ROW_FIELDS = ("name", "kind", "url", "latitude", "longitude", "city", "region",
                     "country", "sector", "poll_interval_s", "active", "username",
                     "password", "auth")
EARTH_RADIUS_KM = 6371.0088  # Mean radius: the same one a haversine check would use.

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}
_BOUNDARY = b"frame"
_MAX_HEAD = 64 << 10  # Request line + headers.
_MAX_BODY = 64 << 10  # A GET body larger than this is not read: the connection closes.
_CHUNK = 256 << 10  # Large bodies are written in pieces of this size.
_ZEROS = bytes(_CHUNK)
_DIGEST_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')
_GOLDEN = 0.6180339887498949


class _Disconnect(Exception):
    """The client went away: stop serving this connection quietly."""


def _head(status: int, headers: Iterable[tuple[str, str]] = (), *, length: int | None = 0,
          close: bool = False, version: str = "HTTP/1.1") -> bytes:
    """Status line and headers of a response, up to and including the blank line."""
    lines = [f"{version} {status} {_REASONS.get(status, '')}", "Server: tlc-jax-simulator"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    elif version == "HTTP/1.0":
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclasses.dataclass
class _Request:
    """A request's line and headers (names lower-case, repeated ones joined by ", ")."""

    method: str
    target: str
    version: str  # "HTTP/1.1" or "HTTP/1.0".
    headers: dict[str, str]
    keep_alive: bool  # Whether the connection stays open after the answer.


class _BadRequest(Exception):
    """A request that cannot be understood: answered with `status`, then the connection
    closes."""

    def __init__(self, status: int, version: str = "HTTP/1.1"):
        super().__init__(status)
        self.status, self.version = status, version


def _parse_request(head: bytes) -> _Request:
    """The request line and headers (up to the blank line); _BadRequest if malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise _BadRequest(400)
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest(505 if version.startswith("HTTP/") else 400)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, version)
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = ("close" not in tokens if version == "HTTP/1.1"
                  else "keep-alive" in tokens)
    return _Request(method, target, version, headers, keep_alive)


async def _drop_body(request: _Request, reader: asyncio.StreamReader) -> None:
    """Reads a request body (unusual for GET) and drops it. One that cannot be framed
    (chunked) or is too large is left unread and the connection closes after the
    answer; a bad Content-Length is a _BadRequest."""
    if "transfer-encoding" in request.headers:
        request.keep_alive = False
    elif "content-length" in request.headers:
        length = request.headers["content-length"]
        if not length.isdigit():
            raise _BadRequest(400, request.version)
        if int(length) > _MAX_BODY:
            request.keep_alive = False
        elif int(length):
            await reader.readexactly(int(length))


def _camera_path(target: str) -> tuple[int, bool]:
    """(camera index, whether the stream) of /cam/{i}/snapshot.jpg or /cam/{i}/stream.mjpg
    (also in absolute form, query ignored); index -1 for any other path."""
    path = target
    if path.startswith(("http://", "https://")):  # Absolute form (proxies).
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    path = path.partition("?")[0]
    pieces = path.split("/")
    if (len(pieces) == 4 and pieces[0] == "" and pieces[1] == "cam"
            and pieces[3] in ("snapshot.jpg", "stream.mjpg")
            and pieces[2].isascii() and pieces[2].isdigit() and len(pieces[2]) < 10):
        return int(pieces[2]), pieces[3] == "stream.mjpg"
    return -1, False


def _text(request: _Request, status: int, headers: list[tuple[str, str]],
          text: str) -> bytes:
    """A whole response with a one-line plain-text body (404, 401, 503)."""
    body = (text + "\n").encode()
    return _head(status, headers, length=len(body), close=not request.keep_alive,
                 version=request.version) + body


def _draw(index: int, count: int, width: int, height: int) -> list[np.ndarray]:
    """`count` distinct RGB pictures for camera `index`: its own hue, stripes and index
    code, and a bright box at a different place in each picture."""
    hue = (index * _GOLDEN) % 1.0
    base = np.array(colorsys.hsv_to_rgb(hue, 0.65, 0.95), np.float32) * 255
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 0.55 + 0.45 * yy / max(height - 1, 1)
    period = 4 + index % 7
    stripes = ((xx + (1 + index % 3) * yy) // period) % 2 == 0
    background = base * shade[..., None] * np.where(stripes, 1.0, 0.75)[..., None]
    # The camera's index in binary, white / black cells along the bottom.
    bits = max(12, index.bit_length())
    cell = width // bits
    strip = max(2, height // 8)
    if cell >= 1:
        for b in range(bits):
            value = 255.0 if (index >> (bits - 1 - b)) & 1 else 0.0
            background[height - strip:, b * cell:(b + 1) * cell] = value
    box_w, box_h = max(2, width // 5), max(2, height // 4)
    top = max(0, (height - strip) // 2 - box_h // 2)
    pictures = []
    for k in range(count):
        picture = background.copy()
        left = (k * (width - box_w)) // max(count - 1, 1)
        picture[top:top + box_h, left:left + box_w] = (250.0, 250.0, 235.0)
        pictures.append(np.clip(picture, 0, 255).astype(np.uint8))
    return pictures


def _encode_jpeg(picture: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _destination(lat: float, lon: float, bearing: float, distance_km: float
                 ) -> tuple[float, float]:
    """The point `distance_km` from (lat, lon) along `bearing` (radians), on a sphere."""
    phi, lam, delta = math.radians(lat), math.radians(lon), distance_km / EARTH_RADIUS_KM
    phi2 = math.asin(min(1.0, max(-1.0, math.sin(phi) * math.cos(delta)
                                  + math.cos(phi) * math.sin(delta) * math.cos(bearing))))
    lam2 = lam + math.atan2(math.sin(bearing) * math.sin(delta) * math.cos(phi),
                            math.cos(delta) - math.sin(phi) * math.sin(phi2))
    lon2 = (math.degrees(lam2) + 180.0) % 360.0 - 180.0
    return math.degrees(phi2), lon2


def mix_behaviours(n: int, fractions: Mapping[str, float], seed: int = 0) -> dict[int, str]:
    """A deterministic `behaviours` mapping for `n` cameras with about the given fraction
    of each behaviour, e.g. `mix_behaviours(1000, {"dead": 0.01, "slow": 0.02})`; the
    cameras are spread over the fleet by a seeded shuffle."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}.")
    for behaviour, fraction in fractions.items():
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"Unknown behaviour {behaviour!r}; known: "
                             f"{', '.join(BEHAVIOURS)}.")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"Fraction of {behaviour!r} must be in [0, 1]; got {fraction}.")
    if sum(fractions.values()) > 1.0 + 1e-9:
        raise ValueError(f"Fractions add up to more than 1: {dict(fractions)}.")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    mapping, start = {}, 0
    for behaviour, fraction in fractions.items():
        count = round(fraction * n)
        for i in order[start:start + count]:
            if behaviour != "healthy":
                mapping[i] = behaviour
        start += count
    return mapping


class CameraServer:
    """`n` simulated cameras behind one HTTP/1.1 server on loopback; see the module
    docstring. Start with `async with`, `await start()`, `start_in_thread()` or `with`."""

    def __init__(self, n: int, behaviours: Mapping[int, str] | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, size: tuple[int, int] = (64, 48),
                 images_per_camera: int = 4, change_every_s: float = 1.0,
                 slow_s: float = 2.0, flap_s: float = 2.0,
                 oversized_bytes: int = 9 << 20, stream_parts: int = 3,
                 stream_interval_s: float = 0.05, username: str = "admin",
                 password: str = "simulated", realm: str = "tlc-jax-simulator",
                 jpeg_quality: int = 85, idle_timeout_s: float = 30.0,
                 nonce_lifetime_s: float = 300.0,
                 clock: Callable[[], float] = time.time):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (the number of cameras) must be an integer >= 1; got {n!r}.")
        checked: dict[int, str] = {}
        for index, behaviour in dict(behaviours or {}).items():
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                raise ValueError(f"Camera indices must be integers; got {index!r}.")
            if not 0 <= index < n:
                raise ValueError(f"Camera index {index} out of range for {n} cameras "
                                 f"(0 to {n - 1}).")
            if behaviour not in BEHAVIOURS:
                raise ValueError(f"Unknown behaviour {behaviour!r} for camera {index}; "
                                 f"known: {', '.join(BEHAVIOURS)}.")
            if behaviour != "healthy":
                checked[int(index)] = behaviour
        width, height = size
        if not (8 <= width <= 8192 and 8 <= height <= 8192):
            raise ValueError(f"size must be (width, height) within 8..8192; got {size}.")
        for name, value in (("change_every_s", change_every_s), ("flap_s", flap_s),
                            ("idle_timeout_s", idle_timeout_s),
                            ("nonce_lifetime_s", nonce_lifetime_s)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0; got {value}.")
        for name, value in (("slow_s", slow_s), ("stream_interval_s", stream_interval_s)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0; got {value}.")
        if images_per_camera < 1 or stream_parts < 1:
            raise ValueError("images_per_camera and stream_parts must be >= 1; got "
                             f"{images_per_camera} and {stream_parts}.")
        if not 1 <= jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in 1..95; got {jpeg_quality}.")
        if isinstance(oversized_bytes, bool) or not isinstance(oversized_bytes, int) \
                or oversized_bytes < 1:
            raise ValueError("oversized_bytes must be a positive integer; got "
                             f"{oversized_bytes!r}.")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535; got {port}.")
        if not username or ":" in username or not password:
            raise ValueError("username must be non-empty without ':' and password non-empty.")

        self.n, self.behaviours = n, checked
        self.host, self._requested_port = host, port
        self.size, self.images_per_camera = (int(width), int(height)), images_per_camera
        self.change_every_s, self.slow_s, self.flap_s = change_every_s, slow_s, flap_s
        self.stream_parts, self.stream_interval_s = stream_parts, stream_interval_s
        self.username, self.password, self.realm = username, password, realm
        self.jpeg_quality, self.idle_timeout_s = jpeg_quality, idle_timeout_s
        self.nonce_lifetime_s, self.clock = nonce_lifetime_s, clock
        self._jpegs: list[list[bytes]] = []  # [camera][picture], filled at start.
        self._snapshots: list[list[bytes]] = []  # The whole 200 response, ready to write.
        self.oversized_bytes = oversized_bytes  # Checked against the JPEG sizes at start.

        self.requests: collections.Counter[str] = collections.Counter()
        self.served = 0  # Frames written completely (snapshots and stream parts).
        self.connections = 0  # Connections accepted.
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._handlers: dict[asyncio.Task, list] = {}  # -> [last activity, busy, writer].
        self._reaper: asyncio.Task | None = None
        self._started_at = 0.0
        self._basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self._opaque = secrets.token_hex(16)
        self._nonces: collections.OrderedDict[str, list] = collections.OrderedDict()
        self._ha1 = hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()

    # ------------------------------------------------------------------ the public face

    def __repr__(self) -> str:  # No password.
        where = self.base_url if self.port else "not started"
        kinds = collections.Counter(self.behaviours.values())
        return f"CameraServer(n={self.n}, {where}, behaviours={dict(kinds)})"

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("The camera server is not started.")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def behaviour(self, i: int) -> str:
        self._check_index(i)
        return self.behaviours.get(i, "healthy")

    def url(self, i: int, stream: bool = False) -> str:
        """Camera i's snapshot URL, or its MJPEG stream's with `stream=True`."""
        self._check_index(i)
        return f"{self.base_url}/cam/{i}/{'stream.mjpg' if stream else 'snapshot.jpg'}"

    def frame_number(self, i: int, now: float | None = None) -> int:
        """How many times camera i's picture has changed (at `now`, wall time): picture
        number `frame_number % images_per_camera` is the one served."""
        offset = ((i * _GOLDEN) % 1.0) * self.change_every_s  # Staggered cameras.
        return math.floor(((self.clock() if now is None else now) + offset)
                          / self.change_every_s)

    def device_rows(self, center: tuple[float, float] = (0.0, 0.0), spread_km: float = 10.0,
                    city: str = "", region: str = "", country: str = "",
                    sector: str = "public", interval_s: float = 1.0,
                    mjpeg: Iterable[int] = (), seed: int = 0) -> list[dict[str, Any]]:
        """One dict per camera, ready for a devices CSV or database: name ("cam-0007"),
        kind ("http_snapshot", or "mjpeg" for the indices in `mjpeg`), url, latitude and
        longitude (seeded uniform positions in a disc of `spread_km` around `center`),
        city, region, country, sector, poll_interval_s, active; plus username, password
        and auth ("basic" / "digest") for the cameras that need them. The keys are
        those of `DEVICE_ROW_FIELDS`."""
        lat0, lon0 = center
        if not (-90.0 <= lat0 <= 90.0 and -180.0 <= lon0 <= 180.0):
            raise ValueError(f"center must be (latitude, longitude) in degrees; got {center}.")
        if not spread_km >= 0:
            raise ValueError(f"spread_km must be >= 0; got {spread_km}.")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0; got {interval_s}.")
        streams = set()
        for i in mjpeg:
            self._check_index(i)
            streams.add(i)
        rng = random.Random(seed)
        digits = max(4, len(str(self.n - 1)))
        rows = []
        for i in range(self.n):
            # sqrt: uniform over the disc's area, not bunched at the centre.
            distance = spread_km * math.sqrt(rng.random())
            lat, lon = _destination(lat0, lon0, rng.uniform(0.0, 2 * math.pi), distance)
            row: dict[str, Any] = {
                "name": f"cam-{i:0{digits}d}",
                "kind": "mjpeg" if i in streams else "http_snapshot",
                "url": self.url(i, stream=i in streams),
                "latitude": round(lat, 6), "longitude": round(lon, 6),
                "city": city, "region": region, "country": country, "sector": sector,
                "poll_interval_s": interval_s, "active": True}
            behaviour = self.behaviours.get(i)
            if behaviour in ("basic", "digest"):
                row.update(username=self.username, password=self.password, auth=behaviour)
            rows.append(row)
        return rows

    # ------------------------------------------------------------ starting and stopping

    async def start(self) -> "CameraServer":
        """Encode the pictures and start listening, on the running event loop."""
        if self._server is not None:
            raise RuntimeError("The camera server is already started.")
        if not self._jpegs:
            await asyncio.to_thread(self._prepare)
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self._requested_port, limit=_MAX_HEAD,
            backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started_at = time.monotonic()
        self._reaper = asyncio.create_task(self._reap_idle())
        return self

    async def close(self) -> None:
        """Stop listening, end every connection (streams and slow answers included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, *([self._reaper] if self._reaper else []),
                             return_exceptions=True)
        self._reaper = None
        await server.wait_closed()

    async def __aenter__(self) -> "CameraServer":
        return await self.start()

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def start_in_thread(self, timeout_s: float = 60.0) -> "CameraServer":
        """Start on an event loop of its own in a daemon thread; returns self. `stop()`
        ends it."""
        if self._server is not None or self._thread is not None:
            raise RuntimeError("The camera server is already started.")
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as e:  # Reported to the starting thread.
                ready.set_exception(e)
                loop.close()
                return
            ready.set_result(None)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="CameraServer", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout_s)
        except BaseException:
            self._thread = None
            raise
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop a server started with `start_in_thread` (from any other thread)."""
        thread, loop = self._thread, self._loop
        if thread is None:
            if self._server is not None:
                raise RuntimeError("Started with `await start()` / `async with`: use "
                                   "`await server.close()`.")
            return
        if self._server is not None and loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(timeout_s)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> "CameraServer":
        return self.start_in_thread()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------------ internals

    def _check_index(self, i: int) -> None:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.n:
            raise ValueError(f"Camera index {i!r} out of range for {self.n} cameras "
                             f"(0 to {self.n - 1}).")

    def _prepare(self) -> None:
        """Every camera's pictures, encoded once; the common 200 responses pre-built."""
        width, height = self.size
        jpegs = [[_encode_jpeg(p, self.jpeg_quality)
                  for p in _draw(i, self.images_per_camera, width, height)]
                 for i in range(self.n)]
        largest = max(len(j) for pictures in jpegs for j in pictures)
        if self.oversized_bytes <= largest:
            raise ValueError(f"oversized_bytes ({self.oversized_bytes}) must exceed the "
                             f"largest picture ({largest} bytes).")
        headers = [("Content-Type", "image/jpeg"), ("Cache-Control", "no-store")]
        self._snapshots = [[_head(200, headers, length=len(j)) + j for j in pictures]
                           for pictures in jpegs]
        self._jpegs = jpegs

    def _picture(self, i: int) -> int:
        return self.frame_number(i) % self.images_per_camera

    def _body(self, i: int, behaviour: str) -> tuple[bytes, int]:
        """Camera i's current payload: (bytes, total length; zero-padded beyond bytes)."""
        jpeg = self._jpegs[i][self._picture(i)]
        if behaviour == "malformed":
            jpeg = jpeg[:len(jpeg) // 3] + b"\x00GARBAGE\xde\xad\xbe\xef" * 8
        elif behaviour == "oversized":
            return jpeg, self.oversized_bytes
        return jpeg, len(jpeg)

    async def _reap_idle(self) -> None:
        """Closes connections idle for longer than idle_timeout_s."""
        while True:
            await asyncio.sleep(max(0.05, self.idle_timeout_s / 4))
            limit = time.monotonic() - self.idle_timeout_s
            for task, state in list(self._handlers.items()):
                if not state[1] and state[0] < limit:
                    state[2].close()  # The pending read ends; the handler returns.

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        state = [time.monotonic(), False, writer]  # Last activity, busy, writer.
        self._handlers[task] = state
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    self.requests["bad_request"] += 1
                    await self._send(writer, _head(431, close=True))
                    break
                state[1] = True
                keep_alive = await self._handle(head, reader, writer)
                state[0], state[1] = time.monotonic(), False
                if not keep_alive:
                    break
        except (_Disconnect, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # The client went away (or the idle reaper closed the connection).
        except asyncio.CancelledError:
            pass  # close(): asyncio's stream callback would log a cancelled task.
        finally:
            self._handlers.pop(task, None)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.is_closing():
            raise _Disconnect
        writer.write(data)
        await writer.drain()

    async def _send_padded(self, writer: asyncio.StreamWriter, head: bytes, body: bytes,
                           total: int) -> None:
        """head + body + zeros up to `total` bytes of body, large ones in pieces."""
        if total <= _CHUNK:
            await self._send(writer, head + body + _ZEROS[:total - len(body)])
            return
        await self._send(writer, head + body)
        left = total - len(body)
        while left > 0:
            piece = min(left, _CHUNK)
            await self._send(writer, _ZEROS[:piece])
            left -= piece

    async def _handle(self, head: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        """Answers one request; False when the connection must close afterwards."""
        try:
            request = _parse_request(head)
            await _drop_body(request, reader)
        except _BadRequest as e:
            self.requests["bad_request"] += 1
            await self._send(writer, _head(e.status, close=True, version=e.version))
            return False
        if request.method != "GET":
            self.requests["bad_method"] += 1
            await self._send(writer, _head(405, [("Allow", "GET")],
                                           close=not request.keep_alive,
                                           version=request.version))
            return request.keep_alive
        index, stream = _camera_path(request.target)
        if not 0 <= index < self.n:
            self.requests["not_found"] += 1
            await self._send(writer, _text(request, 404, [("Content-Type", "text/plain")],
                                           "No such camera."))
            return request.keep_alive

        behaviour = self.behaviours.get(index, "healthy")
        self.requests[behaviour] += 1
        self.requests["stream" if stream else "snapshot"] += 1
        refused = await self._misbehave(request, behaviour, writer)
        if refused is not None:
            return refused
        if stream:
            await self._stream(writer, index, behaviour, request.version)
            return False
        await self._snapshot(request, index, behaviour, writer)
        return request.keep_alive

    async def _misbehave(self, request: _Request, behaviour: str,
                         writer: asyncio.StreamWriter) -> bool | None:
        """What the camera's behaviour does before it answers with a picture: None when
        the picture follows, else whether the connection stays open (a dead camera
        closes it without a word; a flapping one may answer 503, an authenticating one
        401)."""
        if behaviour == "dead":
            return False
        if behaviour == "slow" and self.slow_s:
            await asyncio.sleep(self.slow_s)
            if writer.is_closing():
                raise _Disconnect
        if behaviour == "flapping":
            if int((time.monotonic() - self._started_at) / self.flap_s) % 2:
                self.requests["unavailable"] += 1
                await self._send(writer, _text(
                    request, 503, [("Content-Type", "text/plain"), ("Retry-After", "1")],
                    "Camera temporarily unavailable."))
                return request.keep_alive
        elif behaviour in ("basic", "digest"):
            authorization = request.headers.get("authorization", "")
            if behaviour == "basic":
                ok = hmac.compare_digest(authorization.encode(), self._basic.encode())
                challenge = f'Basic realm="{self.realm}", charset="UTF-8"'
            else:
                ok, stale = self._check_digest(authorization, "GET", request.target)
                challenge = self._digest_challenge(stale)
            if not ok:
                self.requests["unauthorized"] += 1
                await self._send(writer, _text(
                    request, 401,
                    [("WWW-Authenticate", challenge), ("Content-Type", "text/plain")],
                    "Authentication required."))
                return request.keep_alive
        return None

    async def _snapshot(self, request: _Request, index: int, behaviour: str,
                        writer: asyncio.StreamWriter) -> None:
        """Camera `index`'s current picture as one response: the response encoded at
        start-up when the picture is valid and the connection a keep-alive HTTP/1.1 one,
        else written here (malformed, oversized, or with its connection header)."""
        if behaviour in ("healthy", "slow", "flapping", "basic", "digest") \
                and request.keep_alive and request.version == "HTTP/1.1":
            await self._send(writer, self._snapshots[index][self._picture(index)])
        else:
            body, total = self._body(index, behaviour)
            head = _head(200, [("Content-Type", "image/jpeg"), ("Cache-Control", "no-store")],
                         length=total, close=not request.keep_alive, version=request.version)
            await self._send_padded(writer, head, body, total)
        self.served += 1

    async def _stream(self, writer: asyncio.StreamWriter, index: int, behaviour: str,
                      version: str) -> None:
        """A short multipart/x-mixed-replace stream; the connection closes after it."""
        content_type = f"multipart/x-mixed-replace; boundary={_BOUNDARY.decode()}"
        await self._send(writer, _head(
            200, [("Content-Type", content_type), ("Cache-Control", "no-store")],
            length=None, close=True, version=version))
        for part in range(self.stream_parts):
            if part:
                await asyncio.sleep(self.stream_interval_s)
            body, total = self._body(index, behaviour)
            head = (b"--" + _BOUNDARY + b"\r\nContent-Type: image/jpeg\r\n"
                    + f"Content-Length: {total}\r\n\r\n".encode())
            await self._send_padded(writer, head, body, total)
            await self._send(writer, b"\r\n")
            self.served += 1
        await self._send(writer, b"--" + _BOUNDARY + b"--\r\n")

    # ------------------------------------------------------------------- digest details

    def _digest_challenge(self, stale: bool) -> str:
        now = time.monotonic()
        while self._nonces:  # Forget expired nonces (the oldest come first).
            nonce, (issued, _) = next(iter(self._nonces.items()))
            if now - issued <= self.nonce_lifetime_s and len(self._nonces) < 100_000:
                break
            self._nonces.popitem(last=False)
        nonce = secrets.token_hex(16)
        self._nonces[nonce] = [now, 0]  # Issued at, highest nonce count seen.
        return (f'Digest realm="{self.realm}", qop="auth", nonce="{nonce}", '
                f'opaque="{self._opaque}", algorithm=MD5'
                + (", stale=true" if stale else ""))

    def _check_digest(self, authorization: str, method: str, uri: str) -> tuple[bool, bool]:
        """(accepted, stale): stale when the credentials are right but the nonce is not
        (unknown or expired), so the client may retry with the new nonce."""
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "digest":
            return False, False
        params = {key.lower(): (value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                                if value.startswith('"') else value)
                  for key, value in _DIGEST_PARAM.findall(rest)}
        required = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if any(not params.get(key) for key in required):
            return False, False
        if (params.get("algorithm", "MD5").upper() != "MD5" or params["qop"] != "auth"
                or params["username"] != self.username or params["realm"] != self.realm
                or params.get("opaque") != self._opaque or params["uri"] != uri
                or not re.fullmatch(r"[0-9a-fA-F]{8}", params["nc"])):
            return False, False
        ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
        expected = hashlib.md5(":".join((self._ha1, params["nonce"], params["nc"],
                                         params["cnonce"], "auth", ha2)).encode()).hexdigest()
        if not hmac.compare_digest(expected, params["response"].lower()):
            return False, False  # Wrong password (or a forged response).
        entry = self._nonces.get(params["nonce"])
        if entry is None or time.monotonic() - entry[0] > self.nonce_lifetime_s:
            return False, True  # Not a nonce of ours, or expired.
        count = int(params["nc"], 16)
        if count <= entry[1]:
            return False, False  # A replayed nonce count.
        entry[1] = count
        return True, False
