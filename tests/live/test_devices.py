"""Device kinds against real HTTP servers on loopback playing cameras."""

import asyncio
import base64
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from tlc_jax.live import devices as D

from live_helpers import FRAMES, jpeg

BIG = jpeg(90) + b"\0" * (3 << 20)  # A valid JPEG padded to 3 MiB.


class Camera(BaseHTTPRequestHandler):
    """Plays several cameras, one per path."""

    def log_message(self, *args):  # Keep test output quiet.
        pass

    def send_bytes(self, data, content_type="image/jpeg", status=200):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path
        if path == "/snapshot.jpg":
            self.send_bytes(FRAMES[0])
        elif path == "/private.jpg":
            expected = "Basic " + base64.b64encode(b"admin:s3cret").decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="cam"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_bytes(FRAMES[1])
        elif path.startswith("/relay/"):
            if self.headers.get("X-API-Key") != "key-123":
                self.send_bytes(b"forbidden", "text/plain", 403)
                return
            self.send_bytes(FRAMES[2] if path.endswith("/cam-7") else FRAMES[0])
        elif path == "/big.jpg":
            self.send_bytes(BIG)
        elif path == "/broken.jpg":
            self.send_bytes(FRAMES[0][: len(FRAMES[0]) // 3] + b"garbage")
        elif path == "/text":
            self.send_bytes(b"<html>not an image</html>", "text/html")
        elif path == "/slow.jpg":
            time.sleep(1.0)
            try:
                self.send_bytes(FRAMES[0])
            except (BrokenPipeError, ConnectionResetError):
                pass  # The client gave up first, as it should.
        elif path in ("/stream.mjpg", "/private-stream.mjpg"):
            if path.startswith("/private") and self.headers.get("Authorization") != (
                    "Basic " + base64.b64encode(b"admin:s3cret").decode()):
                self.send_bytes(b"", "text/plain", 401)
                return
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for data in FRAMES * 3:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                     + f"Content-Length: {len(data)}\r\n\r\n".encode()
                                     + data + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass  # The client took its frame and left.
        else:
            self.send_bytes(b"", "text/plain", 404)


@pytest.fixture(scope="module")
def camera():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fetch(device, timeout=5.0):
    async def run():
        async with httpx.AsyncClient(timeout=timeout) as client:
            return await device.fetch(client)

    return asyncio.run(run())


def test_http_snapshot(camera):
    frame = fetch(D.make_device("http_snapshot", "cam-a", url=f"{camera}/snapshot.jpg"))
    assert frame.data == FRAMES[0] and (frame.width, frame.height) == (16, 12)
    assert frame.device == "cam-a" and len(frame.sha256) == 64


def test_basic_auth_and_credentials_stay_private(camera):
    device = D.make_device("http_snapshot", "cam-b", url=f"{camera}/private.jpg",
                           username="admin", password="s3cret")
    assert fetch(device).data == FRAMES[1]
    assert "s3cret" not in repr(device)
    wrong = D.make_device("http_snapshot", "cam-b", url=f"{camera}/private.jpg",
                          username="admin", password="guess")
    with pytest.raises(D.FrameRejected) as e:
        fetch(wrong)
    assert e.value.reason == "http_status" and "401" in str(e.value)
    assert "guess" not in str(e.value) and "guess" not in repr(wrong)


def test_relay_with_api_key(camera):
    template = camera + "/relay/{device_id}"
    device = D.make_device("relay", "agency-7", url_template=template, device_id="cam-7",
                           api_key="key-123")
    assert fetch(device).data == FRAMES[2]
    assert "key-123" not in repr(device)
    with pytest.raises(D.FrameRejected, match="http_status.*403"):
        fetch(D.make_device("relay", "agency-7", url_template=template,
                            device_id="cam-7", api_key="stolen"))


def test_mjpeg_stream_gives_a_complete_frame(camera):
    frame = fetch(D.make_device("mjpeg", "cam-m", url=f"{camera}/stream.mjpg"))
    assert frame.data in FRAMES
    with pytest.raises(D.FrameRejected) as e:
        fetch(D.make_device("mjpeg", "cam-m", url=f"{camera}/snapshot.jpg"))
    assert e.value.reason == "not_mjpeg"


@pytest.mark.parametrize("path, reason", [
    ("/big.jpg", "oversized"),
    ("/broken.jpg", "undecodable"),
    ("/text", "undecodable"),
    ("/missing.jpg", "http_status"),
])
def test_bad_payloads_are_rejected_with_a_reason(camera, path, reason):
    device = D.make_device("http_snapshot", "cam-x", url=camera + path, max_bytes=1 << 20)
    with pytest.raises(D.FrameRejected) as e:
        fetch(device)
    assert e.value.reason == reason


def test_decompression_bombs_are_refused_before_decoding():
    huge = io.BytesIO()
    Image.new("L", (4000, 3000)).save(huge, "PNG")  # 12 Mpx, a few KB compressed.
    with pytest.raises(D.FrameRejected) as e:
        D.make_frame("cam-z", huge.getvalue(), max_pixels=1_000_000)
    assert e.value.reason == "too_many_pixels" and "4000x3000" in str(e.value)


def test_timeouts_and_dead_devices(camera):
    with pytest.raises(D.FrameRejected) as e:
        fetch(D.make_device("http_snapshot", "slow", url=f"{camera}/slow.jpg"), timeout=0.2)
    assert e.value.reason == "timeout"
    import socket

    with socket.socket() as s:  # A port nothing listens on.
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(D.FrameRejected) as e:
        fetch(D.make_device("http_snapshot", "dead", url=f"http://127.0.0.1:{port}/x.jpg"))
    assert e.value.reason == "unreachable"


def folder_device(path, roots):
    """A folder device confined as the run-time confines it (--folder-root roots)."""
    from tlc_jax.live.policy import DevicePolicy

    policy = DevicePolicy.from_options(folder_roots=[str(r) for r in roots])
    return policy.confine(D.make_device("folder", "replay", path=str(path)))


def test_folder_device_replays_in_order(tmp_path):
    for i, data in enumerate(FRAMES):
        (tmp_path / f"{i:02d}.jpg").write_bytes(data)
    (tmp_path / "notes.txt").write_text("ignored")
    device = folder_device(tmp_path, [tmp_path])
    got = [fetch(device).data for _ in range(4)]
    assert got == FRAMES + FRAMES[:1]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(D.FrameRejected, match="empty_folder"):
        fetch(folder_device(empty, [tmp_path]))
    with pytest.raises(D.FrameRejected, match="missing_path"):
        fetch(folder_device(tmp_path / "gone", [tmp_path]))


def test_folder_device_reads_nothing_outside_the_allowed_roots(tmp_path):
    """Issue 14, item 1: a folder device reads only under the operator's --folder-root
    folders, resolved (symbolic links included); with none, nothing at all."""
    root, secret = tmp_path / "root", tmp_path / "secret"
    (root / "cams").mkdir(parents=True)
    secret.mkdir()
    (secret / "s.jpg").write_bytes(FRAMES[2])
    (root / "cams" / "00.jpg").write_bytes(FRAMES[0])
    (root / "cams" / "01.jpg").symlink_to(secret / "s.jpg")  # A file link leading out.
    (root / "cams" / "02.jpg").write_bytes(FRAMES[1])
    (root / "out").symlink_to(secret)  # A folder link leading out.
    unconfined = D.make_device("folder", "replay", path=str(root / "cams"))
    with pytest.raises(D.FrameRejected) as e:  # No roots (the default): nothing.
        fetch(unconfined)
    assert e.value.reason == "forbidden_path"
    device = folder_device(root / "cams", [root])
    assert fetch(device).data == FRAMES[0]
    with pytest.raises(D.FrameRejected) as e:
        fetch(device)  # 01.jpg leads out of the root.
    assert e.value.reason == "forbidden_path" and str(secret) not in str(e.value)
    assert fetch(device).data == FRAMES[1]  # The rotation goes on.
    for path in (secret, root / "out", root / ".." / "secret", "/", "/etc"):
        with pytest.raises(D.FrameRejected) as e:
            fetch(folder_device(path, [root]))
        assert e.value.reason == "forbidden_path", path
    big = root / "big"
    big.mkdir()
    (big / "big.jpg").write_bytes(BIG)
    small = folder_device(big, [root])
    small.max_bytes = 1 << 20
    with pytest.raises(D.FrameRejected, match="oversized"):
        fetch(small)


def test_mjpeg_with_credentials(camera):
    device = D.make_device("mjpeg", "cam-m", url=f"{camera}/private-stream.mjpg",
                           username="admin", password="s3cret")
    assert fetch(device).data in FRAMES and "s3cret" not in repr(device)
    with pytest.raises(D.FrameRejected, match="http_status"):
        fetch(D.make_device("mjpeg", "cam-m", url=f"{camera}/private-stream.mjpg"))


@pytest.mark.parametrize("kind, params", [
    ("http_snapshot", {"url": "http://admin:hunter2@cam.example/x.jpg"}),
    ("http_snapshot", {"url": "http://admin@cam.example/x.jpg"}),
    ("mjpeg", {"url": "https://admin:hunter2@cam.example/stream"}),
    ("relay", {"url_template": "https://u:hunter2@agency.example/{device_id}.jpg",
               "device_id": "7"}),
])
def test_passwords_written_into_urls_are_refused(kind, params):
    """Issue 14, item 4: user:password@ in a URL is refused (it would come back in
    the device's params); the message names the fix and never the secret."""
    with pytest.raises(ValueError) as e:
        D.make_device(kind, "cam", **params)
    assert "hunter2" not in str(e.value)
    assert "credentials" in str(e.value) or "api_key" in str(e.value)


def test_relay_templates_take_only_the_device_id():
    for template in ("http://a.example/{device_id.__class__}", "http://a.example/{0}",
                     "http://a.example/{device_id!r}", "http://a.example/{other}"):
        with pytest.raises(ValueError, match="device_id"):
            D.make_device("relay", "r", url_template=template, device_id="7")
    D.make_device("relay", "r", url_template="http://a.example/{{x}}/{device_id}.jpg",
                  device_id="7")


def test_unknown_kind_bad_params_and_new_kinds():
    with pytest.raises(ValueError, match="Unknown device kind 'rtsp'.*folder, http_snapshot, mjpeg, relay"):
        D.make_device("rtsp", "cam")
    with pytest.raises(ValueError, match="Device 'cam' \\(http_snapshot\\)"):
        D.make_device("http_snapshot", "cam")  # No url.
    with pytest.raises(ValueError, match="auth must be"):
        D.make_device("http_snapshot", "cam", url="http://x", auth="ntlm")

    @D.register_kind("constant_test")
    class Constant:  # A new kind plugs in without touching anything else.
        def __init__(self, name):
            self.name = name

        async def fetch(self, client):
            return D.make_frame(self.name, FRAMES[0], D.DEFAULT_MAX_PIXELS)

    try:
        assert fetch(D.make_device("constant_test", "c")).data == FRAMES[0]
        with pytest.raises(ValueError, match="already registered"):
            D.register_kind("constant_test")(Constant)
    finally:
        D.KINDS.pop("constant_test")
