"""Helpers shared by test modules (test modules never import each other)."""

import gzip
import importlib.util
import io
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The XLA flags every test process runs under (tests/conftest.py says why): compiled
# fast, not run fast.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"


def wait_for(condition, timeout: float, what: str, process=None, every: float = 0.1):
    """Polls `condition()` until it returns something true and returns that; fails
    after `timeout` seconds, or at once if `process` (a Popen) has ended. Tests wait for
    conditions with deadlines like this, never on fixed sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process ended (status {process.returncode})")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def load_config(arg=None, name="digits_lt"):
    """configs/<name>.py's get_config(arg), loaded as `--config` loads it."""
    spec = importlib.util.spec_from_file_location(name, ROOT / f"configs/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def tiny_config(**overrides):
    """The default config shrunk for 2 CPU cores: 8 px digits, DenseNet-BC-10, k=4."""
    c = load_config()
    c.unlock()
    c.data.image_size = 0  # Native 8 x 8.
    c.model.depth = 10
    c.model.growth_rate = 4
    c.train.epochs = 2
    c.train.images_per_class = 4
    c.train.lr_schedule = "constant"
    c.train.learning_rate = 0.05
    c.eval.batch_size = 64
    for key, value in overrides.items():
        section, field = key.split(".")
        c[section][field] = value
    c.lock()
    return c


# --- CIFAR archives in the official format, with random images ---------------------

def _batch(rng, n, num_classes, label_keys):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"fake", b"data": data, b"filenames": [b"x.png"] * n}
    for key in label_keys:
        batch[key] = rng.integers(0, num_classes, size=n).tolist()
    return batch


def _add(tar, name, obj):
    payload = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar10(folder, per_batch=3, test=4, seed=0):
    """A cifar-10-python.tar.gz laid out like the official one; returns (path, batches)."""
    rng = np.random.default_rng(seed)
    batches = {f"data_batch_{i}": _batch(rng, per_batch, 10, [b"labels"]) for i in range(1, 6)}
    batches["test_batch"] = _batch(rng, test, 10, [b"labels"])
    names = [
        n.encode()
        for n in [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "cifar-10-batches-py/batches.meta", {b"label_names": names, b"num_vis": 3072})
        for name, batch in batches.items():
            _add(tar, f"cifar-10-batches-py/{name}", batch)
    return path, batches


def write_cifar100(folder, seed=0):
    rng = np.random.default_rng(seed)
    batches = {
        "train": _batch(rng, 5, 100, [b"fine_labels", b"coarse_labels"]),
        "test": _batch(rng, 2, 100, [b"fine_labels", b"coarse_labels"]),
    }
    for b in batches.values():
        b[b"coarse_labels"] = [x % 20 for x in b[b"coarse_labels"]]
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    path = folder / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "cifar-100-python/meta", meta)
        for name, batch in batches.items():
            _add(tar, f"cifar-100-python/{name}", batch)
    return path, batches


# --- IDX files (MNIST family) -----------------------------------------------------

def idx_bytes(array, type_code=0x08):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, type_code=0x08):
    data = idx_bytes(array, type_code)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
