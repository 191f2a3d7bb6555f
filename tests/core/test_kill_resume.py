"""Fault injection: `python -m tlc_jax.main` killed with SIGKILL at random points -
among them during an asynchronous checkpoint write - and started again with the same
command, until it finishes. The final report must equal an uninterrupted run's.

Bounded: at most MAX_KILLS kills (seeded delays), each start waited for with a
deadline; the run is a tiny config of a few seconds per epoch.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT

ARGS = [f"--config={ROOT / 'configs' / 'digits_lt.py'}", "--config.data.image_size=0",
        "--config.model.depth=10", "--config.model.growth_rate=4",
        "--config.train.images_per_class=4", "--config.train.lr_schedule=constant",
        "--config.eval.batch_size=64", "--config.train.epochs=4"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
MAX_KILLS = 3


def start(workdir):
    return subprocess.Popen([sys.executable, "-m", "tlc_jax.main", *ARGS,
                             f"--workdir={workdir}"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def checkpoint_being_written(workdir) -> bool:
    """orbax writes a step under a temporary name, renamed when complete."""
    folder = workdir / "checkpoints"
    return folder.is_dir() and any("tmp" in p.name for p in folder.iterdir())


def wait(process, condition, timeout):
    """Polls until `condition()` or the process ends; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            return True
        time.sleep(0.005)
    pytest.fail(f"no progress within {timeout} s")


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_report(tmp_path):
    reference = subprocess.run([sys.executable, "-m", "tlc_jax.main", *ARGS,
                                f"--workdir={tmp_path / 'reference'}"], cwd=ROOT,
                               env=ENV, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    want = json.loads((tmp_path / "reference" / "report.json").read_text())

    workdir = tmp_path / "killed"
    rng = np.random.default_rng(0)
    kills = []
    for attempt in range(MAX_KILLS + 1):
        process = start(workdir)
        if attempt == MAX_KILLS:  # Enough: let it finish.
            break
        if attempt % 2 == 0:  # Mid-write: as soon as a checkpoint is being written.
            killed = wait(process, lambda: checkpoint_being_written(workdir), 300)
            what = "during a checkpoint write"
        else:  # At a random moment after start-up.
            delay = time.monotonic() + rng.uniform(2.0, 12.0)
            killed = wait(process, lambda: time.monotonic() > delay, 300)
            what = "at a random point"
        if not killed:  # It finished before the moment came.
            break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        kills.append(what)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert "during a checkpoint write" in kills  # The interesting case happened.

    got = json.loads((workdir / "report.json").read_text())
    assert got["test"]["confusion_matrix"] == want["test"]["confusion_matrix"]
    assert got["history"]["quotas"] == want["history"]["quotas"]
    np.testing.assert_allclose([e["loss"] for e in got["history"]["epochs"]],
                               [e["loss"] for e in want["history"]["epochs"]], rtol=1e-6)
    assert not (workdir / "checkpoints_unreadable").exists()  # Nothing was damaged.
