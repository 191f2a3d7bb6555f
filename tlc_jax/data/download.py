"""Downloading an archive: streamed, checksummed, and never left half-written.

The file is streamed into a temporary name beside its destination while its MD5 is
computed, and only renamed to the final name once the checksum matches. A failed or
interrupted download therefore never leaves a file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from absl import logging

from tlc_jax.data._files import atomic_file


class ChecksumError(ValueError):
    """A downloaded file's MD5 differs from the published one."""


class DownloadError(OSError):
    """A download failed (offline, refused, HTTP error); names the file, URL and folder."""


def download(
    url: str, destination: str | os.PathLike, md5: str | None, timeout: float = 60.0
) -> Path:
    """Downloads `url` to `destination`, verifying `md5` (skipped when None).

    Raises DownloadError when the transfer fails and ChecksumError when the bytes do
    not match; in both cases nothing exists under `destination` afterwards.
    """
    destination = Path(destination)
    folder = destination.parent
    logging.info("Downloading %s to %s", url, destination)
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_file(destination) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                expected = response.headers.get("Content-Length")
                received = 0
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
            problem = None
            # http.client returns a short body without complaint when the server hangs up.
            if expected is not None and expected.isdigit() and received != int(expected):
                problem = f"the connection closed after {received} of {expected} bytes"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            problem = str(e) or type(e).__name__
        if problem is not None:
            raise DownloadError(
                f"could not download {destination.name!r} from {url} ({problem}). Download it by "
                f"hand and put it in the folder {str(folder)!r}, or check the network"
            )
        actual = digest.hexdigest()
        if md5 is not None and actual != md5.lower():
            raise ChecksumError(
                f"checksum mismatch for {destination.name!r} downloaded from {url}: MD5 {actual}, "
                f"expected {md5}. The file was discarded; retry, or put a good copy in "
                f"{str(folder)!r}"
            )
    logging.info("Downloaded %s (md5 %s)", destination, digest.hexdigest())
    return destination
