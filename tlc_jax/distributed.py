"""Several processes, one run: start-up on `jax.distributed`, and what they agree on.

One training run may span several processes - one per host, each driving its local
accelerators - that JAX's runtime joins into one set of global devices. The trainer then
runs unchanged on a ("data",) mesh over all of them: each process feeds its slice of
every global batch, XLA's collectives reduce gradients, BatchNorm statistics and
confusion matrices over the global batch, and orbax writes and reads the checkpoints
together. See docs/MULTIHOST.md for launching.

`detect_launch` decides whether this process is one of several: from explicit settings
(`--coordinator_address`, `--num_processes`, `--process_id`, or the environment variables
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID that launch/ sets), else from
the cluster environment as JAX detects it (a SLURM step or an Open MPI job with more than
one task). A single process needs nothing and starts nothing.

What the processes compute must agree exactly (the same F1, hence the same quotas, the
same resume step). The helpers below check it with JAX's own collectives - no home-made
coordination - and raise the same error on every process at once, so a disagreement or a
failure on one process stops the whole run instead of leaving the others waiting:

    assert_same(what, *arrays)      every process holds the same values, else
                                    ProcessMismatchError everywhere
    all_or_none(what, fn)           fn() on every process; if it raises on any, all
                                    raise (the others an OtherProcessError naming it)
    any_process(flag)               True on every process if it is on any
    broadcast(value)                process 0's integer on every process
    barrier(name)                   every process reaches this point

With one process each is a no-op, so the single-process path pays nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
from typing import Any, Callable, Mapping, TypeVar

import jax
import numpy as np
from absl import logging

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # JAX reads this one itself, too.
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
_MESSAGE_BYTES = 2048  # Longest error message passed between processes.

T = TypeVar("T")


class ProcessMismatchError(RuntimeError):
    """The processes of one run computed different values where they must agree."""


class OtherProcessError(RuntimeError):
    """A step failed on another process of the run (raised on the processes where it
    did not fail, with that process's message). `usage` says whether the original was a
    mistake the user can fix (see tlc_jax.train.user_error)."""

    def __init__(self, message: str, usage: bool = False):
        super().__init__(message)
        self.usage = usage


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process joins a multi-process run; a None field is left to JAX's cluster
    detection (SLURM, Open MPI)."""

    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    source: str  # "flags / environment", "SLURM" or "Open MPI", for the log.


def _int_setting(name: str, value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer.") from None


def detect_launch(coordinator_address: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None,
                  environ: Mapping[str, str] | None = None) -> Launch | None:
    """The multi-process launch this process belongs to, or None for a single process.

    Explicit values (flags, then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID) come first; without them a SLURM step (srun) or an Open MPI job with
    more than one task is a multi-process launch, as `jax.distributed.initialize()`
    detects them. Incomplete explicit settings are a ValueError naming what is missing.
    """
    env = os.environ if environ is None else environ
    address = coordinator_address or env.get(ENV_COORDINATOR) or None
    count = (num_processes if num_processes is not None else
             _int_setting(ENV_NUM_PROCESSES, env.get(ENV_NUM_PROCESSES)))
    index = (process_id if process_id is not None else
             _int_setting(ENV_PROCESS_ID, env.get(ENV_PROCESS_ID)))
    if count is not None or index is not None:
        if count is None or count < 1:
            raise ValueError(f"--num_processes (or {ENV_NUM_PROCESSES}) must be a "
                             f"positive number of processes; got {count}.")
        if count == 1:
            if index not in (None, 0):
                raise ValueError(f"--process_id={index} with a single process: it must "
                                 f"be 0.")
            return None
        missing = [flag for flag, value in (("--coordinator_address", address),
                                            ("--process_id", index)) if value is None]
        if missing:
            raise ValueError(f"A run of {count} processes needs {' and '.join(missing)} "
                             f"too (or {ENV_COORDINATOR} / {ENV_PROCESS_ID}); "
                             f"launch/local_processes.sh sets them.")
        if not 0 <= index < count:
            raise ValueError(f"--process_id={index} must lie in [0, {count}) for "
                             f"--num_processes={count}.")
        if ":" not in address:
            raise ValueError(f"--coordinator_address={address!r} must be HOST:PORT "
                             f"(process 0's host and a free port).")
        return Launch(address, count, index, "flags / environment")
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
             "SLURM_LOCALID")
    if all(v in env for v in slurm):
        tasks = env.get("SLURM_STEP_NUM_TASKS") or env["SLURM_NTASKS"]
        if _int_setting("SLURM_STEP_NUM_TASKS", tasks) > 1:
            return Launch(address, None, None, "SLURM")
    if "OMPI_MCA_orte_hnp_uri" in env and _int_setting(
            "OMPI_COMM_WORLD_SIZE", env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return Launch(address, None, None, "Open MPI")
    return None


def initialize(launch: Launch, *, heartbeat_timeout: int = 100, init_timeout: int = 300,
               shutdown_timeout: int = 300) -> None:
    """`jax.distributed.initialize` for `launch`; call before anything touches JAX's
    devices. CPU collectives (test runs on CPU devices) go through gloo.

    The timeouts bound every failure: a process that cannot reach the coordinator
    within `init_timeout` s ends; when a process dies, the others end within about
    `heartbeat_timeout` s (at once if it was process 0), with JAX's message "another
    task died"; an ending process waits at most `shutdown_timeout` s for the others.
    """
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    logging.info("Joining a run of %s processes (%s) as process %s; coordinator %s "
                 "(waiting up to %d s for every process).",
                 launch.num_processes or "the cluster's", launch.source,
                 "?" if launch.process_id is None else launch.process_id,
                 launch.coordinator_address or "from the cluster", init_timeout)
    jax.distributed.initialize(coordinator_address=launch.coordinator_address,
                               num_processes=launch.num_processes,
                               process_id=launch.process_id,
                               initialization_timeout=init_timeout,
                               heartbeat_timeout_seconds=heartbeat_timeout,
                               shutdown_timeout_seconds=shutdown_timeout)


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def describe() -> str:
    """"process 1 of 2 on host: 4 local cpu devices of 8"."""
    local = jax.local_devices()
    return (f"process {jax.process_index()} of {jax.process_count()} on "
            f"{socket.gethostname()}: {len(local)} local {local[0].platform} devices of "
            f"{jax.device_count()}")


def process_major_devices() -> list:
    """All devices, each process's together and the processes in order, so that a 1-D
    mesh over them gives process p the p-th contiguous block of every sharded batch
    (the slice `grain.sharding.ShardByJaxProcess` names)."""
    return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


# --- agreement ---------------------------------------------------------------------

def _gather(rows: np.ndarray) -> np.ndarray:
    """(process_count, *rows.shape): every process's `rows`, on every process."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(rows))


def fingerprint(*values: Any) -> bytes:
    """SHA-256 of values (arrays, numbers, strings), their dtypes and shapes."""
    h = hashlib.sha256()
    for value in values:
        a = np.ascontiguousarray(np.asarray(value))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return h.digest()


def assert_same(what: str, *values: Any) -> None:
    """Raises ProcessMismatchError on every process unless every process passed the
    same `values` (compared by fingerprint)."""
    if not is_multiprocess():
        return
    digests = _gather(np.frombuffer(fingerprint(*values), np.uint8))
    differ = [p for p in range(len(digests)) if not np.array_equal(digests[p], digests[0])]
    if differ:
        raise ProcessMismatchError(
            f"The processes disagree on {what}: process(es) {differ} computed other "
            f"values than process 0. The run stops rather than let them diverge. Every "
            f"host must read the same data (config.data.root on a shared filesystem or "
            f"identical copies) and run the same tlc-jax, jax and jaxlib versions.")


def _encode(message: str) -> np.ndarray:
    raw = message.encode()[:_MESSAGE_BYTES]
    out = np.zeros(_MESSAGE_BYTES + 2, np.uint8)
    out[0] = 1
    out[1:1 + len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def all_or_none(what: str, fn: Callable[[], T],
                usage: Callable[[BaseException], bool] = lambda e: False) -> T:
    """`fn()`'s result on every process, or an error on every process: the process(es)
    where it raised re-raise their own error, the others an OtherProcessError with the
    first failing process's message (`usage(error)`: whether it is a user's mistake)."""
    try:
        result, error = fn(), None
    except Exception as e:  # noqa: BLE001 - handed on below, on every process.
        result, error = None, e
    if not is_multiprocess():
        if error is not None:
            raise error
        return result
    row = np.zeros(_MESSAGE_BYTES + 2, np.uint8)
    if error is not None:
        row = _encode(f"{type(error).__name__}: {error}")
        row[-1] = 1 if usage(error) else 0
    rows = _gather(row)
    if error is not None:
        error.raised_on_every_process = True  # See raised_everywhere.
        raise error
    failed = [p for p in range(len(rows)) if rows[p, 0]]
    if failed:
        p = failed[0]
        message = bytes(rows[p, 1:-1]).rstrip(b"\0").decode(errors="replace")
        raise OtherProcessError(f"{what} failed on process {p}: {message}",
                                usage=bool(rows[p, -1]))
    return result


def raised_everywhere(error: BaseException) -> bool:
    """Whether every process of the run raises this error together (an agreement of
    the helpers above), so they can all end through JAX's shutdown at once."""
    return (isinstance(error, (ProcessMismatchError, OtherProcessError))
            or getattr(error, "raised_on_every_process", False))


def any_process(flag: bool) -> bool:
    """Whether `flag` is set on any process (True on every process then)."""
    if not is_multiprocess():
        return bool(flag)
    return bool(_gather(np.array([int(bool(flag))], np.int32)).any())


def broadcast(value: int) -> int:
    """Process 0's `value` (an integer, or -1 for none) on every process."""
    if not is_multiprocess():
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.array(value, np.int32)))


def barrier(name: str) -> None:
    """Returns once every process has reached the barrier `name`."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
