"""Helpers shared by the live tests (test modules never import each other)."""

import io
import socket
import threading
import time

import numpy as np
from PIL import Image


def jpeg(value: int, size=(16, 12)) -> bytes:
    """A small JPEG of one grey `value` (size = (width, height))."""
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# Three distinct 16x12 camera frames.
FRAMES = [jpeg(40), jpeg(120), jpeg(200)]


class Server:
    """uvicorn serving `app` on a free loopback port, in a background thread."""

    def __init__(self, app):
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn failed"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
