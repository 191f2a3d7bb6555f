"""Benchmark measurements that each need a fresh process.

- A device allocator's peak is per process and never reset: one peak per process.
- PyTorch's CPU allocator keeps freed pages: a few big forward passes in one process
  add up (killed by the OOM killer on a 24 GiB machine).
- XLA_FLAGS are read when JAX starts: each XLA variant of the step in its own process.

`run_row(spec)` starts `python -m tlc_jax.benchmarks.isolated '<spec as JSON>'`, which
measures one spec and prints `ROW {json}`; `run_row` returns that dict, or
`{"error": why}` when the process failed or timed out. A spec's `kind` is one of
jax_peak (XLA's compiled memory and the GPU peak of one gradient step), torch_saved
(PyTorch's saved-for-backward bytes), torch_peak (PyTorch's GPU peak of one SGD step)
and jax_speed (the trainer's step time, `jax_measure.jax_train_step`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import Any


def run_row(spec: dict[str, Any], timeout: int, env_extra: dict[str, str] | None = None
            ) -> dict[str, Any]:
    """Runs one spec in a fresh process; returns its JSON or an error."""
    env = dict(os.environ, **(env_extra or {}))
    # The parent process holds the GPU too: no process may grab most of its memory.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    cmd = [sys.executable, "-m", "tlc_jax.benchmarks.isolated", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("ROW "):
            return json.loads(line[4:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: {' / '.join(tail)[-300:]}"}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    from tlc_jax.benchmarks.result_rows import num_classes
    kind = spec["kind"]
    if kind.startswith("jax_"):  # JAX only where measured: a PyTorch row skips its import.
        from tlc_jax.benchmarks.jax_measure import jax_model, jax_train_step
    if kind == "jax_peak":
        from tlc_jax.memory import compiled_memory, disable_xla_remat, peak_bytes_in_use
        net = jax_model(spec["model"], spec["depth"], spec["mode"], spec["policy"])
        ctx = disable_xla_remat() if spec["mode"] == "naive" else contextlib.nullcontext()
        with ctx:
            return {"compiled": compiled_memory(net, spec["batch"], spec["size"]),
                    "peak": peak_bytes_in_use(net, spec["batch"], spec["size"])}
    if kind == "torch_saved":
        from tlc_jax.benchmarks import torch_reference as T
        nc = num_classes(spec["model"])
        net = T.build(spec["model"], spec["depth"], spec["mode"] == "efficient", nc)
        device = spec["device"]
        if device == "cuda":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        out = T.saved_for_backward(net, spec["batch"], spec["size"], num_classes=nc,
                                   device=device)
        return dict(out, device=device)
    if kind == "torch_peak":
        from tlc_jax.benchmarks import torch_reference as T
        nc = num_classes(spec["model"])
        net = T.build(spec["model"], spec["depth"], spec["mode"] == "efficient", nc)
        return {"peak": T.cuda_peak_bytes(net, spec["batch"], spec["size"], nc)}
    if kind == "jax_speed":
        net = jax_model(spec["model"], spec["depth"], spec["mode"], spec["policy"],
                        spec.get("dtype", "float32"))
        return jax_train_step(net, spec["batch"], spec["size"], spec["num_classes"],
                              steps=spec["steps"])
    raise SystemExit(f"unknown row kind {kind!r}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tlc_jax.benchmarks.isolated '<spec JSON>'")
    print("ROW " + json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
