"""One interface for every kind of network device: `await device.fetch(client) -> Frame`.

Kinds (register more with `@register_kind("name")`, nothing else changes):
- `http_snapshot`: a JPEG / PNG at the device's own URL, optionally with basic or
  digest authentication;
- `relay`: a frame served by an agency's server, URL template + API-key header;
- `mjpeg`: the current frame of a `multipart/x-mixed-replace` stream;
- `folder`: images in a local folder replayed in order (demos and tests); it reads only
  under the folders the operator allows (`roots`, from `--folder-root`, set by
  `tlc_jax.live.policy`; none by default, so nothing), symbolic links resolved.

Every payload is checked before it is accepted: at most `max_bytes` are read (a larger
one is rejected without being downloaded whole), and it must decode as an image of at
most `max_pixels` (Pillow's decompression-bomb guard, made explicit). Rejections raise
`FrameRejected` with a short machine-readable reason for the run-time's counters.
Credentials are kept out of `repr` and of every error message, and never written into
a URL: a URL holding `user:password@` is refused (give them as credentials, which are
stored apart and never returned). Kinds that fetch URLs list them in `urls()`, which
`tlc_jax.live.policy` checks against the request-forgery allow-list.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import os
import stat
import string
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

import httpx

from tlc_jax.live import ssrf

DEFAULT_MAX_BYTES = 8 << 20  # 8 MiB per frame.
DEFAULT_MAX_PIXELS = 40_000_000  # About 7,000 x 5,700.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass(frozen=True)
class Frame:
    device: str
    captured_at: float  # Unix time when the payload arrived.
    data: bytes  # The encoded image, as the device sent it.
    sha256: str  # Of `data`: unchanged frames are recognised by it.
    width: int
    height: int

    def __repr__(self) -> str:
        return (f"Frame({self.device!r}, {self.width}x{self.height}, {len(self.data)} B, "
                f"sha256 {self.sha256[:12]})")


class FrameRejected(Exception):
    """A fetch that produced no usable frame; `reason` is a short counter name."""

    def __init__(self, device: str, reason: str, detail: str = ""):
        self.device, self.reason, self.detail = device, reason, detail
        super().__init__(f"{device}: {reason}" + (f" ({detail})" if detail else ""))


def check_image(device: str, data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an encoded image, or FrameRejected('undecodable' / 'too_many_pixels')."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:  # Checked before any pixel is decoded.
                raise FrameRejected(device, "too_many_pixels", f"{width}x{height}")
            im.load()
    except FrameRejected:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise FrameRejected(device, "undecodable", type(e).__name__) from None
    return width, height


def make_frame(device: str, data: bytes, max_pixels: int) -> Frame:
    width, height = check_image(device, data, max_pixels)
    return Frame(device, time.time(), data, hashlib.sha256(data).hexdigest(), width, height)


class Device(Protocol):
    name: str

    async def fetch(self, client: httpx.AsyncClient) -> Frame: ...


KINDS: dict[str, type] = {}


def register_kind(kind: str) -> Callable[[type], type]:
    """Class decorator: makes a device kind available to `make_device` by name."""

    def register(cls: type) -> type:
        if kind in KINDS:
            raise ValueError(f"Device kind {kind!r} is already registered.")
        KINDS[kind] = cls
        cls.kind = kind
        return cls

    return register


def make_device(kind: str, name: str, **params: Any) -> Device:
    if kind not in KINDS:
        raise ValueError(f"Unknown device kind {kind!r} for device {name!r}; known kinds: "
                         f"{', '.join(sorted(KINDS))}.")
    try:
        return KINDS[kind](name=name, **params)
    except TypeError as e:
        raise ValueError(f"Device {name!r} ({kind}): {e}") from None


def _check_limits(device) -> None:
    for key in ("max_bytes", "max_pixels"):
        value = getattr(device, key, None)
        if value is not None and not value >= 1:
            raise ValueError(f"{key} must be >= 1; got {value}")


def _check_url(url: str, field: str = "url", fix: str = "the username and password "
               "credentials") -> None:
    """ValueError if the URL holds a user name or password (they would be stored and
    shown with the device's parameters). The message never repeats the URL."""
    try:
        userinfo = httpx.URL(url).userinfo
    except (httpx.InvalidURL, TypeError, ValueError):
        return  # Not a URL at all: the policy's URL check says so.
    if userinfo:
        raise ValueError(f"{field} holds a user name or password (user:password@host); "
                         f"remove them from it and give {fix} instead (stored apart, "
                         f"never shown)")


def _auth(username: str, password: str, kind: str):
    if not username:
        return None
    return (httpx.BasicAuth if kind == "basic" else httpx.DigestAuth)(username, password)


async def _read_limited(device: str, response: httpx.Response, max_bytes: int) -> bytes:
    """The body, or FrameRejected('oversized') as soon as it exceeds max_bytes."""
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise FrameRejected(device, "oversized", f"{length} bytes announced")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise FrameRejected(device, "oversized", f"more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def _response(device: str, client: httpx.AsyncClient, url: str, **kwargs: Any):
    """A streamed 200 response; any other status, a timeout or a transport error is a
    FrameRejected with its reason."""
    try:
        async with client.stream("GET", url, **kwargs) as response:
            if response.status_code != 200:
                raise FrameRejected(device, "http_status", str(response.status_code))
            yield response
    except httpx.TimeoutException:
        raise FrameRejected(device, "timeout") from None
    except ssrf.Forbidden as e:  # A private / loopback / metadata address: not allowed.
        raise FrameRejected(device, "forbidden_address", e.kind) from None
    except httpx.TransportError as e:
        raise FrameRejected(device, "unreachable", type(e).__name__) from None


async def _get(device: str, client: httpx.AsyncClient, url: str, max_bytes: int,
               **kwargs: Any) -> bytes:
    async with _response(device, client, url, **kwargs) as response:
        return await _read_limited(device, response, max_bytes)


@dataclasses.dataclass
class _UrlWithLogin:
    """The fields and checks the device kinds fetched from their own URL share, with an
    optional login (HTTP basic or digest)."""

    name: str
    url: str
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    auth: str = "basic"  # "basic" or "digest", used when username is set.
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    kind: ClassVar[str]

    def __post_init__(self):
        if self.auth not in ("basic", "digest"):
            raise ValueError(f"auth must be 'basic' or 'digest'; got {self.auth!r}.")
        _check_limits(self)
        _check_url(self.url)

    def urls(self) -> list[str]:
        return [self.url]


@register_kind("http_snapshot")
@dataclasses.dataclass
class HttpSnapshot(_UrlWithLogin):
    """A still image at the device's own URL (the commonest kind of public camera)."""

    async def fetch(self, client: httpx.AsyncClient) -> Frame:
        data = await _get(self.name, client, self.url, self.max_bytes,
                          auth=_auth(self.username, self.password, self.auth))
        return make_frame(self.name, data, self.max_pixels)


@register_kind("relay")
@dataclasses.dataclass
class Relay:
    """A device reachable only through an agency's server: template + API-key header."""

    name: str
    url_template: str  # e.g. "https://agency.example/cams/{device_id}/latest.jpg"
    device_id: str
    api_key: str = dataclasses.field(default="", repr=False)
    api_key_header: str = "X-API-Key"
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    kind: ClassVar[str]

    def __post_init__(self):
        _check_limits(self)
        fields = [(f, c, s) for _, f, s, c in string.Formatter().parse(self.url_template)
                  if f is not None]
        if any(f != "device_id" or c or s for f, c, s in fields):
            raise ValueError("url_template may hold no placeholder but {device_id} "
                             "(write { and } as {{ and }})")
        _check_url(self.urls()[0], "url_template", "the api_key credential")

    def urls(self) -> list[str]:
        return [self.url_template.format(device_id=self.device_id)]

    async def fetch(self, client: httpx.AsyncClient) -> Frame:
        url = self.urls()[0]
        headers = {self.api_key_header: self.api_key} if self.api_key else {}
        data = await _get(self.name, client, url, self.max_bytes, headers=headers)
        return make_frame(self.name, data, self.max_pixels)


@register_kind("mjpeg")
@dataclasses.dataclass
class Mjpeg(_UrlWithLogin):
    """The current frame of a `multipart/x-mixed-replace` stream: connect, take the
    first complete part, disconnect."""

    async def fetch(self, client: httpx.AsyncClient) -> Frame:
        async with _response(self.name, client, self.url,
                             auth=_auth(self.username, self.password,
                                        self.auth)) as response:
            boundary = _boundary(self.name, response.headers.get("content-type", ""))
            data = await _first_part(self.name, response, boundary, self.max_bytes)
        return make_frame(self.name, data, self.max_pixels)


def _boundary(device: str, content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/x-mixed-replace":
        raise FrameRejected(device, "not_mjpeg", kind.strip() or "no content type")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            value = value.strip('"')
            return (value if value.startswith("--") else "--" + value).encode()
    raise FrameRejected(device, "not_mjpeg", "no boundary")


async def _first_part(device: str, response: httpx.Response, boundary: bytes,
                      max_bytes: int) -> bytes:
    """The body of the first complete part (by Content-Length, else up to the next
    boundary)."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > 2 * max_bytes + 4096:
            raise FrameRejected(device, "oversized", f"no complete part in {len(buffer)} B")
        start = buffer.find(boundary)
        if start < 0:
            continue
        header_end = buffer.find(b"\r\n\r\n", start)
        if header_end < 0:
            continue
        headers = buffer[start + len(boundary):header_end].decode("latin-1").lower()
        body_start = header_end + 4
        length = next((int(line.split(":", 1)[1]) for line in headers.splitlines()
                       if line.startswith("content-length:")), None)
        if length is not None:
            if length > max_bytes:
                raise FrameRejected(device, "oversized", f"part of {length} bytes")
            if len(buffer) >= body_start + length:
                return buffer[body_start:body_start + length]
        else:
            end = buffer.find(boundary, body_start)
            if end >= 0:
                return buffer[body_start:end].rstrip(b"\r\n")
    raise FrameRejected(device, "stream_ended", "no complete frame")


@register_kind("folder")
@dataclasses.dataclass
class Folder:
    """Images of a local folder, one per fetch in name order, then from the start.

    It reads the server's own files, so it reads only under `roots`: the folders the
    operator allows (`--folder-root`), which `tlc_jax.live.policy` sets on the device -
    never a device record (empty by default: every path is refused). The folder and
    each file are resolved (symbolic links followed) before the check, and the file
    read is the resolved one."""

    name: str
    path: str
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    kind: ClassVar[str]
    roots: tuple[Path, ...] = dataclasses.field(default=(), init=False, repr=False,
                                                compare=False)
    # Playback position: not part of the device's identity (edits are detected by equality).
    _next: int = dataclasses.field(default=0, repr=False, compare=False)

    def __post_init__(self):
        _check_limits(self)

    def urls(self) -> list[str]:
        return []

    async def fetch(self, client: httpx.AsyncClient | None = None) -> Frame:
        data = await asyncio.to_thread(self._read_next)
        return make_frame(self.name, data, self.max_pixels)

    def _inside(self, path: Path, what: str) -> Path:
        """The resolved path, or FrameRejected unless it is under an allowed root."""
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):  # Missing, or a loop of links.
            raise FrameRejected(self.name, "missing_path", what) from None
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise FrameRejected(self.name, "forbidden_path",
                                f"{what} is outside the folders allowed by --folder-root")
        return resolved

    def _read_next(self) -> bytes:
        folder = self._inside(Path(self.path), "the folder")
        try:
            files = sorted(p for p in folder.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as e:
            raise FrameRejected(self.name, "unreadable", type(e).__name__) from None
        if not files:
            raise FrameRejected(self.name, "empty_folder", self.path)
        path = files[self._next % len(files)]
        self._next += 1
        target = self._inside(path, path.name)
        try:  # The resolved path, not following a link swapped in since.
            fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise FrameRejected(self.name, "unreadable", f"{path.name} is not a file")
                data = f.read(self.max_bytes + 1)
        except OSError as e:
            raise FrameRejected(self.name, "unreadable", type(e).__name__) from None
        if len(data) > self.max_bytes:
            raise FrameRejected(self.name, "oversized", f"more than {self.max_bytes} bytes")
        return data
