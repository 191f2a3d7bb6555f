"""Several processes, one run (tlc_jax.distributed, launch/, docs/MULTIHOST.md).

Real processes on localhost, each with 4 CPU devices (XLA's host-platform device count)
and gloo collectives, started by launch/local_processes.sh as a user would:

  - 2 processes x 4 devices give what 1 process x 8 devices gives: the same quotas and
    contrast F1 at every update and the same test confusion matrix (exactly), epoch
    losses within rtol 1e-4 and final parameters / BatchNorm statistics within 1e-3 of
    their largest magnitude (the cross-process all-reduce adds in another order: about
    1e-6 per step, growing to ~1e-5 over 20 steps); one report, one metrics log.
  - a process killed with SIGKILL after the first checkpoint: the other stops within the
    heartbeat timeout (10 s here) plus a margin, with JAX's "another task died"; the same
    launch, stopped by Ctrl-C, stops both processes cleanly (status 130); launched once
    more it resumes and ends with the uninterrupted 2-process report.
  - a checkpoint restores onto other devices (1 x 4 from 1 x 8), and a launch with
    another number of processes than saved it is refused with one line on each.
  - the agreement checks (different values on two processes, an error on one, the
    work-directory lock held by process 0 alone, a quota disagreement inside the
    trainer) stop every process with the same clear error.
  - launch/slurm.sbatch rendered with --dry-run: its srun line and environment.

Every wait has a deadline; a child's stderr is shown when something fails.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tlc_jax import distributed
from tlc_jax.sampling import QuotaSampler

from helpers import TEST_XLA_FLAGS, ROOT

ARGS = [f"--config={ROOT / 'configs' / 'digits_lt.py'}", "--config.data.image_size=0",
        "--config.model.depth=10", "--config.model.growth_rate=4",
        "--config.train.images_per_class=4", "--config.train.lr_schedule=constant",
        "--config.eval.batch_size=64", "--config.train.epochs=2",
        "--config.sampling.update_every_steps=4",  # 4 quota updates in 20 steps.
        "--heartbeat_timeout=10"]
HEARTBEAT = 10
LAUNCH = str(ROOT / "launch" / "local_processes.sh")
# The test session's compilation cache stays (relaunches reuse what the first compiled).
_CLEAN = {k: v for k, v in os.environ.items()
          if not k.startswith(("JAX_", "SLURM_", "OMPI_", "XLA_FLAGS"))
          or k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}


def env(devices: int, **extra) -> dict:
    return {**_CLEAN, "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable,
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}",
            **extra}


def tail(text: str, n: int = 4000) -> str:
    return text[-n:]


def one_process(workdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tlc_jax.main", *ARGS,
                             f"--workdir={workdir}"], cwd=ROOT, env=env(8),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interruptible() -> None:
    """In the launcher's process before it starts: SIGINT handled by default and not
    blocked, as from a terminal. A non-interactive shell cannot trap a signal that was
    ignored when it started, and the pytest-xdist worker these tests run in could pass
    SIGINT on ignored or blocked (a launch in the full suite never saw the Ctrl-C the
    test sent, while the same file alone passed)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


class Launch:
    """launch/local_processes.sh 2 ... with its stderr in a file (the children's pids
    are read from it, to clean up after a failed test)."""

    def __init__(self, workdir: Path, *extra: str):
        self.log = workdir.parent / f"{workdir.name}.launch.log"
        with open(self.log, "w") as f:
            self.process = subprocess.Popen(
                ["bash", LAUNCH, "2", *ARGS, *extra, f"--workdir={workdir}"], cwd=ROOT,
                env=env(4), stdout=subprocess.PIPE, stderr=f, text=True,
                preexec_fn=interruptible)

    def stderr(self) -> str:
        return self.log.read_text()

    def pid(self, process: int) -> int:
        return int(re.search(rf"process {process} of 2: pid (\d+)", self.stderr()).group(1))

    def communicate(self, timeout: float):
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except BaseException:
            self.kill()
            raise
        return out, self.stderr()

    def kill(self) -> None:
        for pid in re.findall(r"of 2: pid (\d+)", self.stderr()):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.kill()

    @property
    def returncode(self):
        return self.process.returncode


def two_processes(workdir: Path, *extra: str) -> Launch:
    return Launch(workdir, *extra)


def finish(process, what: str, timeout: float = 600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"{what} failed ({process.returncode}):\n{tail(err)}"
    return out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny config as 1 process x 8 devices and as 2 processes x 4 devices (run
    side by side), each to the end: {name: (workdir, stdout, stderr, report)}."""
    root = tmp_path_factory.mktemp("multihost")
    started = {"1x8": one_process(root / "1x8"), "2x4": two_processes(root / "2x4")}
    out = {}
    for name, process in started.items():
        stdout, stderr = finish(process, name)
        report = json.loads((root / name / "report.json").read_text())
        out[name] = (root / name, stdout, stderr, report)
    return out


def flat(tree) -> np.ndarray:
    import jax

    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


@pytest.mark.slow
def test_two_processes_give_what_one_process_gives(runs):
    (w1, _, _, one), (w2, out2, err2, two) = runs["1x8"], runs["2x4"]
    # The same quotas at every update (active sampling, 4 updates), the same F1.
    assert len(two["history"]["quotas"]) == 4
    assert two["history"]["quotas"] == one["history"]["quotas"]
    assert two["history"]["contrast_f1"] == one["history"]["contrast_f1"]
    assert two["test"]["confusion_matrix"] == one["test"]["confusion_matrix"]
    assert two["contrast"]["confusion_matrix"] == one["contrast"]["confusion_matrix"]
    for key in ("accuracy", "macro_f1", "balanced_accuracy", "few_shot_accuracy"):
        assert two["test"][key] == one["test"][key]
    np.testing.assert_allclose([e["loss"] for e in two["history"]["epochs"]],
                               [e["loss"] for e in one["history"]["epochs"]], rtol=1e-4)
    # BatchNorm statistics over the global batch: the final running statistics (and
    # weights) match the single process's.
    from tlc_jax.inference import restore_state

    (s1, a), (s2, b) = restore_state(w1), restore_state(w2)
    assert s1 == s2 == 1
    for part in ("params", "batch_stats"):
        x, y = flat(a[part]), flat(b[part])
        assert np.max(np.abs(x - y)) <= 1e-3 * np.max(np.abs(x)), part
    # Process 0 alone wrote the outputs and printed the result; process 1 kept quiet.
    assert out2.count("Report: ") == 1
    lines = lambda w: (w / "metrics.jsonl").read_text().splitlines()
    assert len(lines(w2)) == len(lines(w1))
    assert len(list((w2 / "tensorboard").iterdir())) == 1
    assert "process 0 of 2 on" in err2 and "process 1 of 2 on" in err2
    assert "4 local cpu devices of 8" in err2
    assert err2.count("finetune epoch 2/2") == 1
    # Each process saved its own data-iterator state.
    assert sorted(p.name for p in (w2 / "checkpoints" / "1" / "sampler").glob("*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]


def wait_for(condition, timeout: float, what: str, launch: Launch):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if launch.process.poll() is not None:
            break
        time.sleep(0.01)
    launch.kill()
    pytest.fail(f"no {what} within {timeout} s:\n{tail(launch.stderr())}")


@pytest.mark.slow
def test_a_killed_process_stops_the_run_and_the_same_launch_resumes(runs, tmp_path):
    workdir = tmp_path / "run"
    launch = two_processes(workdir)
    wait_for(lambda: (workdir / "checkpoints" / "0" / "commit_success.txt").exists(),
             400, "first checkpoint", launch)
    os.kill(launch.pid(1), signal.SIGKILL)
    killed = time.monotonic()
    launch.communicate(timeout=HEARTBEAT + 60)  # Kills everything on a timeout.
    stopped_after = time.monotonic() - killed
    print(f"process 0 stopped {stopped_after:.1f} s after process 1 was killed")
    err = launch.stderr()
    assert launch.returncode != 0, tail(err)
    assert not (workdir / "report.json").exists()
    # Process 0 ended by itself (not killed by the launcher's grace), with JAX's reason.
    assert re.search(r"process 0 \(pid \d+\) ended with status", err), tail(err)
    assert "killing them" not in err
    assert "another task died" in err or "lost contact with another process" in err
    assert stopped_after < HEARTBEAT + 30, stopped_after

    # The same launch again, stopped by Ctrl-C (SIGINT to the launcher, which passes it
    # on once; checks at every step here): both processes stop at the same step.
    launch = two_processes(workdir, "--config.train.log_every_steps=1")
    wait_for(lambda: "Resumed finetune after epoch 1 of 2" in launch.stderr(), 300,
             "resume", launch)
    launch.process.send_signal(signal.SIGINT)
    _, err = launch.communicate(timeout=120)
    signals = (f"this process: SIGINT handler {signal.getsignal(signal.SIGINT)}, "
               + ", ".join(l for l in Path("/proc/self/status").read_text().splitlines()
                           if l.startswith(("SigBlk", "SigIgn"))))
    assert launch.returncode == 130, f"{signals}\n{tail(err)}"
    assert err.count("interrupted; run the same command again to resume") == 2, tail(err)
    assert "Traceback" not in err and "another task died" not in err

    out, err = finish(two_processes(workdir), "resumed launch")
    assert "Resumed finetune after epoch 1 of 2" in err
    got = json.loads((workdir / "report.json").read_text())
    want = runs["2x4"][3]
    assert got["test"]["confusion_matrix"] == want["test"]["confusion_matrix"]
    assert got["history"]["quotas"] == want["history"]["quotas"]
    assert got["history"]["contrast_f1"] == want["history"]["contrast_f1"]
    np.testing.assert_allclose([e["loss"] for e in got["history"]["epochs"]],
                               [e["loss"] for e in want["history"]["epochs"]], rtol=1e-6)
    assert not (workdir / "checkpoints_unreadable").exists()


@pytest.mark.slow
def test_a_checkpoint_resumes_on_other_devices_not_another_process_count(runs, tmp_path):
    """The state restores onto any devices (1 x 4 here, saved from 1 x 8); the data
    iterators need as many processes as saved them."""
    def after_first_epoch(name):
        workdir = tmp_path / name
        shutil.copytree(runs["1x8"][0], workdir, ignore=shutil.ignore_patterns(
            "report.json", ".trainer.lock"))
        shutil.rmtree(workdir / "checkpoints" / "1")
        return workdir

    workdir, refused = after_first_epoch("four_devices"), after_first_epoch("two")
    one = subprocess.Popen([sys.executable, "-m", "tlc_jax.main", *ARGS,
                            f"--workdir={workdir}"], cwd=ROOT, env=env(4),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    launch = two_processes(refused)  # Side by side.
    _, err = finish(one, "resumed on 4 devices")
    assert "Resumed finetune after epoch 1 of 2" in err
    assert not (workdir / "checkpoints_unreadable").exists()
    got, want = (json.loads((w / "report.json").read_text())
                 for w in (workdir, runs["1x8"][0]))
    np.testing.assert_allclose([e["loss"] for e in got["history"]["epochs"]],
                               [e["loss"] for e in want["history"]["epochs"]], rtol=1e-4)

    _, err = launch.communicate(timeout=300)
    assert launch.returncode == 2, tail(err)
    message = ("was written by a run of 1 processes; this run has 2. Resume it with the "
               "same number of processes")
    assert err.count(message) == 2, tail(err)  # Both processes, one line each.
    assert "Traceback" not in err


# --- agreement between processes --------------------------------------------------

CHILD = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])  # tests/, for helpers.tiny_config
    import numpy as np
    import jax
    from tlc_jax import distributed, train
    from tlc_jax.workdir import WorkdirBusyError

    distributed.initialize(distributed.detect_launch(), heartbeat_timeout=10,
                           init_timeout=60)
    me = jax.process_index()
    out = {"process": me, "count": jax.process_count(),
           "devices": [jax.local_device_count(), jax.device_count()]}

    def outcome(fn):
        try:
            return {"value": fn()}
        except Exception as e:
            return {"error": type(e).__name__, "message": str(e),
                    "usage": train.user_error(e)}

    out["same"] = outcome(lambda: distributed.assert_same("a test value", np.arange(3)))
    out["differ"] = outcome(lambda: distributed.assert_same("a test value",
                                                             np.arange(3) + me))
    def fails_on_1():
        if me == 1:
            raise FileNotFoundError("no such file on process 1")
        return 7
    out["all_or_none"] = outcome(
        lambda: distributed.all_or_none("reading", fails_on_1, lambda e: True))
    out["any"] = distributed.any_process(me == 1)
    out["broadcast"] = distributed.broadcast(5 + me)

    from helpers import tiny_config
    workdir = Path(sys.argv[1])
    trainer = train.Trainer(tiny_config(), workdir)
    out["lock_holder"] = (workdir / ".trainer.lock").read_text().strip()
    out["pid"] = os.getpid()
    out["second_trainer"] = outcome(lambda: train.Trainer(tiny_config(), workdir))
    # A quota update whose contrast confusion matrix differs on process 1.
    stage = trainer.stages[-1]
    iterator = trainer.batches(stage)["sampler"]
    confusion = np.diag(np.arange(10) + 5) + me * np.eye(10, dtype=int)[::-1]
    trainer.contrast_confusion = lambda state, stage, step: confusion
    out["quotas"] = outcome(lambda: trainer.update_quotas(stage, None, iterator, 4))
    trainer._unlock()
    print("RESULT " + json.dumps(out), flush=True)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_processes_that_disagree_or_fail_stop_together(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    address = f"localhost:{free_port()}"
    children = [subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "run"), str(ROOT / "tests")],
        cwd=ROOT, env=env(4, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2",
                          JAX_PROCESS_ID=str(i)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, tail(err)
        results.append(json.loads(out.split("RESULT ", 1)[1]))
    zero, one = results
    assert [r["process"] for r in results] == [0, 1]
    assert zero["devices"] == one["devices"] == [4, 8]
    assert zero["same"] == one["same"] == {"value": None}
    for r in results:
        assert r["differ"]["error"] == "ProcessMismatchError"
        assert "disagree on a test value: process(es) [1]" in r["differ"]["message"]
        assert r["any"] is True and r["broadcast"] == 5
    # The failing process raises its own error; the other names it, as a usage error.
    assert one["all_or_none"]["error"] == "FileNotFoundError"
    assert zero["all_or_none"] == {
        "error": "OtherProcessError", "usage": True,
        "message": "reading failed on process 1: FileNotFoundError: no such file on "
                   "process 1"}
    # One lock for the run, held by process 0; a second trainer is refused everywhere.
    assert zero["lock_holder"] == one["lock_holder"] == str(zero["pid"])
    assert zero["second_trainer"]["error"] == "WorkdirBusyError"
    assert one["second_trainer"]["error"] == "OtherProcessError"
    assert one["second_trainer"]["usage"] is True
    assert "in use by another training process" in one["second_trainer"]["message"]
    # Different contrast F1 on one process: the quota update stops both, same message.
    assert zero["quotas"]["error"] == one["quotas"]["error"] == "ProcessMismatchError"
    assert zero["quotas"]["message"] == one["quotas"]["message"]
    assert "quotas after finetune step 4" in zero["quotas"]["message"]


# --- start-up, launch scripts, sharding ---------------------------------------------

def test_detect_launch_from_flags_environment_and_clusters():
    assert distributed.detect_launch(environ={}) is None  # A single process.
    assert distributed.detect_launch(num_processes=1, environ={}) is None
    got = distributed.detect_launch("h:1234", 2, 1, environ={})
    assert (got.coordinator_address, got.num_processes, got.process_id) == ("h:1234", 2, 1)
    got = distributed.detect_launch(environ={"JAX_COORDINATOR_ADDRESS": "h:1",
                                             "JAX_NUM_PROCESSES": "4",
                                             "JAX_PROCESS_ID": "3"})
    assert (got.num_processes, got.process_id) == (4, 3)
    assert distributed.detect_launch(process_id=0, environ={
        "JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}).process_id == 0
    for kwargs, message in [
            ({"num_processes": 2}, "needs --coordinator_address and --process_id"),
            ({"num_processes": 2, "process_id": 2, "coordinator_address": "h:1"},
             "must lie in [0, 2)"),
            ({"num_processes": 2, "process_id": 0, "coordinator_address": "h"},
             "must be HOST:PORT"),
            ({"num_processes": 0}, "positive number of processes")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            distributed.detect_launch(environ={}, **kwargs)
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_PROCID": "1",
             "SLURM_LOCALID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2"}
    assert distributed.detect_launch(environ=slurm).source == "SLURM"
    assert distributed.detect_launch(environ={**slurm, "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert distributed.detect_launch(environ={"OMPI_MCA_orte_hnp_uri": "1.2@tcp://10.0.0.1:5",
                                              "OMPI_COMM_WORLD_SIZE": "2"}).source == "Open MPI"


def test_slurm_sbatch_dry_run_shows_its_srun_line_and_environment(tmp_path):
    script = ROOT / "launch" / "slurm.sbatch"
    header = [l for l in script.read_text().splitlines() if l.startswith("#SBATCH")]
    assert "#SBATCH --ntasks-per-node=1" in header
    assert any(l.startswith("#SBATCH --gpus-per-node=") for l in header)
    out = subprocess.run(["bash", str(script), "--dry-run", "--config=configs/x.py",
                          "--workdir=/shared/runs/a b"], capture_output=True, text=True,
                         env={**_CLEAN, "SLURM_GPUS_ON_NODE": "4", "PYTHON": "python3"},
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "JAX_LOCAL_DEVICE_IDS=0,1,2,3",
        r"srun --ntasks-per-node=1 --kill-on-bad-exit=1 python3 -m tlc_jax.main "
        r"--config=configs/x.py --workdir=/shared/runs/a\ b "]
    # Without SLURM's count, the GPUs the driver lists; none: a clear refusal.
    for listed, want in [("GPU 0: A\nGPU 1: B\n", "JAX_LOCAL_DEVICE_IDS=0,1"), ("", None)]:
        stub = tmp_path / "bin" / "nvidia-smi"
        stub.parent.mkdir(exist_ok=True)
        stub.write_text(f"#!/bin/sh\nprintf '{listed}'\n")
        stub.chmod(0o755)
        out = subprocess.run(["bash", str(script), "--dry-run"], capture_output=True,
                             text=True, timeout=60, env={
                                 **_CLEAN, "PATH": f"{stub.parent}:{os.environ['PATH']}"})
        if want:
            assert out.returncode == 0 and out.stdout.splitlines()[0] == want, out.stderr
        else:
            assert out.returncode == 2 and "no GPUs found" in out.stderr


def test_local_processes_needs_a_count():
    out = subprocess.run(["bash", LAUNCH, "--config=x"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "usage:" in out.stderr


def test_each_process_plans_its_block_of_the_global_batch_as_grain_shards():
    from grain.sharding import ShardOptions

    labels = np.repeat(np.arange(5), [40, 20, 10, 6, 4])
    quotas = np.array([6, 5, 4, 3, 2])
    whole = QuotaSampler(labels, 5, 20, seed=3, quotas=quotas).plan(6)
    parts = [QuotaSampler(labels, 5, 20, seed=3, quotas=quotas,
                          shard_options=ShardOptions(i, 4, drop_remainder=True)).plan(6)
             for i in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    for batch in np.concatenate(parts, axis=1):  # Exact quotas over the global batch.
        np.testing.assert_array_equal(np.bincount(labels[batch], minlength=5), quotas)
