"""Files that are never half-written, and downloads that are verified before use.

Readers of a cache, a split file, a report or a downloaded archive must never see part
of one: everything is written under a temporary name in the destination folder (same
filesystem), flushed, and then moved into place with `os.replace`, which is atomic on
POSIX. Downloads are hashed while they stream and renamed into place only when the
digest matches.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

from absl import logging


def try_lock(path: str | os.PathLike) -> int | None:
    """An open file descriptor holding an exclusive lock on the file `path` (created
    if missing), or None if another process holds it. The kernel releases the lock
    when every copy of the descriptor is closed - also when its process is killed, so
    a lock is never left stale by kill -9."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON in `path`, or None when it is absent or unreadable (being written)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it replaces `path` atomically.

    On any exception the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty temporary folder beside `path`; on success it becomes `path`.

    An existing `path` is replaced as a whole (moved aside, then deleted), so a reader
    sees the old complete folder or the new complete one, never a mix. On any exception
    the temporary folder is deleted and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                _fsync_file(child)
        os.chmod(tmp, 0o755)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex}"
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Writes `payload` as JSON to `path`; readers see the old file or the new one."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1))


class ChecksumError(ValueError):
    """A downloaded file's digest differs from the published one."""


class DownloadError(OSError):
    """A download failed (offline, refused, HTTP error); names the file, URL and folder."""


def download(url: str, destination: str | os.PathLike, expected: str | None, *,
             algorithm: str = "md5", timeout: float = 60.0,
             headers: dict[str, str] | None = None) -> Path:
    """Downloads `url` to `destination`; its `algorithm` digest must start with `expected`.

    `expected` is a full digest (CIFAR's MD5) or a prefix of one (torch.hub's SHA-256
    prefixes in file names); None skips the check. Raises DownloadError when the
    transfer fails and ChecksumError when the bytes do not match; in both cases nothing
    exists under `destination` afterwards.
    """
    destination = Path(destination)
    folder = destination.parent
    logging.info("Downloading %s to %s", url, destination)
    digest = hashlib.new(algorithm, usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "tlc-jax", **(headers or {})})
    with atomic_file(destination) as tmp:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, \
                    open(tmp, "wb") as out:
                length = response.headers.get("Content-Length")
                received = 0
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
            problem = None
            # http.client returns a short body without complaint when the server hangs up.
            if length is not None and length.isdigit() and received != int(length):
                problem = f"the connection closed after {received} of {length} bytes"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            problem = str(e) or type(e).__name__
        if problem is not None:
            raise DownloadError(
                f"could not download {destination.name!r} from {url} ({problem}). Download "
                f"it by hand and put it in the folder {str(folder)!r}, or check the network")
        actual = digest.hexdigest()
        if expected is not None and not actual.startswith(expected.lower()):
            name = {"md5": "MD5", "sha256": "SHA-256"}.get(algorithm, algorithm)
            raise ChecksumError(
                f"checksum mismatch for {destination.name!r} downloaded from {url}: {name} "
                f"{actual}, expected {expected}{'...' if len(expected) < len(actual) else ''}"
                f". The file was discarded; retry, or put a good copy in {str(folder)!r}")
    logging.info("Downloaded %s (%s %s)", destination, algorithm, actual)
    return destination
