"""CIFAR-10/100 from fake archives in the official format, and the checksummed download."""

import contextlib
import functools
import hashlib
import http.server
import os
import pickle
import socket
import tarfile
import threading

import numpy as np
import pytest

from tlc_jax.data import ChecksumError, DownloadError, load_cifar10, load_cifar100, load_dataset
from tlc_jax.data.cifar import CIFAR10_MD5

from helpers import write_cifar10, write_cifar100


def expected_images(batches, names):
    data = np.concatenate([batches[n][b"data"] for n in names])
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def test_cifar10_from_archive_train_and_test(tmp_path):
    _, batches = write_cifar10(tmp_path)
    train = load_cifar10(tmp_path, "train")
    assert train.images.shape == (15, 32, 32, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images, expected_images(batches, TRAIN))
    np.testing.assert_array_equal(train.labels, sum((batches[n][b"labels"] for n in TRAIN), []))
    assert train.class_names[0] == "airplane" and train.num_classes == 10
    # CHW rows -> HWC: pixel (0, 1) of image 0 takes bytes 1, 1025, 2049 of its row.
    row = batches["data_batch_1"][b"data"][0]
    np.testing.assert_array_equal(train.images[0, 0, 1], row[[1, 1025, 2049]])
    test = load_cifar10(tmp_path, split="test")
    np.testing.assert_array_equal(test.images, expected_images(batches, ["test_batch"]))


def test_cifar10_from_extracted_folder(tmp_path):
    path, batches = write_cifar10(tmp_path)
    with tarfile.open(path) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "extracted", **safe)
    path.unlink()
    for root in (tmp_path / "extracted", tmp_path / "extracted" / "cifar-10-batches-py"):
        ds = load_cifar10(root, "test")
        np.testing.assert_array_equal(ds.images, expected_images(batches, ["test_batch"]))
    os.remove(tmp_path / "extracted" / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(FileNotFoundError, match="data_batch_3.*cifar-10-batches-py"):
        load_cifar10(tmp_path / "extracted", "train")
    os.remove(tmp_path / "extracted" / "cifar-10-batches-py" / "batches.meta")
    with pytest.raises(FileNotFoundError, match="batches.meta.*cifar-10-batches-py"):
        load_cifar10(tmp_path / "extracted", "test")


def test_cifar100_fine_and_coarse(tmp_path):
    _, batches = write_cifar100(tmp_path)
    fine = load_cifar100(tmp_path)
    assert fine.num_classes == 100 and fine.class_names[7] == "fine7"
    np.testing.assert_array_equal(fine.labels, batches["train"][b"fine_labels"])
    np.testing.assert_array_equal(fine.images, expected_images(batches, ["train"]))
    coarse = load_dataset("CIFAR-100", tmp_path, split="test", label_type="coarse")
    assert coarse.num_classes == 20
    np.testing.assert_array_equal(coarse.labels, batches["test"][b"coarse_labels"])


def test_missing_archive_names_file_folder_and_url(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_cifar10(tmp_path)
    message = str(e.value)
    assert "cifar-10-python.tar.gz" in message and str(tmp_path) in message
    assert (
        "download=True" in message
        and "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    )


def test_truncated_archive_is_a_clear_error(tmp_path):
    path, _ = write_cifar10(tmp_path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz.*corrupt"):
        load_cifar10(tmp_path)


def test_bad_split_and_label_type(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_cifar10(tmp_path, "val")
    with pytest.raises(ValueError, match="label_type"):
        load_cifar100(tmp_path, label_type="medium")


def test_pickles_that_run_code_are_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    # A pickled global: what an exploit uses to run code on load.
    (folder / "batches.meta").write_bytes(pickle.dumps(os.getcwd, protocol=2))
    (folder / "test_batch").write_bytes(b"")
    with pytest.raises(ValueError, match="refusing to load posix.getcwd"):
        load_cifar10(tmp_path, "test")


# --- download, served from 127.0.0.1 only -------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory):
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def test_download_with_good_checksum(tmp_path, no_proxy):
    archive, batches = write_cifar10(tmp_path / "server")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "data"
    with serve(archive.parent) as base:
        ds = load_cifar10(
            root, "test", download=True, url=f"{base}/cifar-10-python.tar.gz", md5=md5
        )
    np.testing.assert_array_equal(ds.images, expected_images(batches, ["test_batch"]))
    assert os.listdir(root) == ["cifar-10-python.tar.gz"]
    # Present now: a second load reads it without the server.
    assert len(load_cifar10(root, "test")) == 4


def test_download_with_bad_checksum_leaves_nothing(tmp_path, no_proxy):
    archive, _ = write_cifar10(tmp_path / "server")
    root = tmp_path / "data"
    with serve(archive.parent) as base, pytest.raises(ChecksumError) as e:
        load_cifar10(root, download=True, url=f"{base}/cifar-10-python.tar.gz")  # The official MD5.
    assert CIFAR10_MD5 in str(e.value) and "cifar-10-python.tar.gz" in str(e.value)
    assert os.listdir(root) == []


def test_download_from_closed_port_names_file_url_and_folder(tmp_path, no_proxy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as e:
        load_cifar10(root, download=True, url=url)
    message = str(e.value)
    assert "cifar-10-python.tar.gz" in message and url in message and str(root) in message
    assert os.listdir(root) == []


def test_download_http_error(tmp_path, no_proxy):
    (tmp_path / "server").mkdir()
    with serve(tmp_path / "server") as base, pytest.raises(DownloadError, match="404"):
        load_cifar100(tmp_path / "data", download=True, url=f"{base}/cifar-100-python.tar.gz")


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Promises 100,000 bytes, sends 10, and hangs up: an interrupted transfer."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_interrupted_download_leaves_nothing(tmp_path, no_proxy):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TruncatingHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    try:
        with pytest.raises(
            DownloadError, match="cifar-10-python.tar.gz.*closed after 10 of 100000 bytes"
        ):
            load_cifar10(tmp_path, download=True, url=url)
    finally:
        server.shutdown()
        server.server_close()
    assert os.listdir(tmp_path) == []
