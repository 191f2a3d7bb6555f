"""Frame store: atomic writes, safe paths, retention by size and by age."""

import os

from tlc_jax.live import devices as D
from tlc_jax.live.store import FrameStore

from live_helpers import FRAMES


def stored(store, name, i, when):
    frame = D.make_frame(name, FRAMES[i % 3], D.DEFAULT_MAX_PIXELS)
    path = store.put(frame)
    os.utime(store.root / path, (when, when))
    return path


def test_put_writes_whole_files_under_safe_names(tmp_path):
    store = FrameStore(tmp_path)
    frame = D.make_frame("../etc/cam 1", FRAMES[0], D.DEFAULT_MAX_PIXELS)
    path = store.put(frame)
    assert (tmp_path / path).read_bytes() == FRAMES[0]
    assert path.startswith("_etc_cam_1/") and path.endswith(".jpg")
    assert (tmp_path / path).resolve().is_relative_to(tmp_path.resolve())
    assert not [p for p in tmp_path.rglob(".*")]  # No temporary file left.


def test_retention_by_age_then_by_size(tmp_path):
    store = FrameStore(tmp_path)
    paths = [stored(store, "cam", i, when=1000.0 + i) for i in range(6)]
    size = (tmp_path / paths[0]).stat().st_size
    # Older than 3.5 s at t=1005: frames 0, 1 (t=1000, 1001) go.
    assert store.enforce_retention(max_age_s=3.5, now=1005.0) == paths[:2]
    total = sum(f.size for f in store.files())
    # Keep at most what the newest two use: the oldest go first.
    deleted = store.enforce_retention(max_bytes=total - 2 * size + 1, now=1005.0)
    assert deleted == paths[2:4]
    assert [f.path for f in store.files()] == paths[4:]
    assert store.enforce_retention(max_bytes=10**9, max_age_s=10**6, now=1005.0) == []


def test_read_returns_what_put_wrote(tmp_path):
    import hashlib
    import time

    from tlc_jax.live.devices import Frame

    store = FrameStore(tmp_path)
    data = b"\x89PNG" + bytes(range(200))
    path = store.put(Frame("cam/../x", time.time(), data, hashlib.sha256(data).hexdigest(),
                           1, 1))
    assert store.read(path) == data and path.endswith(".png")
    assert not path.startswith("..") and "/../" not in path
