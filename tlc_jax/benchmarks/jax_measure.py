"""The JAX side of the memory / speed benchmark: the benchmarked models and what is
measured on them.

- `jax_model`: DenseNet-BC (k=12, 10 classes) at a depth, or an ImageNet DenseNet
  (1,000 classes), in a memory mode, built from a model config like the trainer's.
- `jax_traced`: bytes kept for the backward pass of the trainer's loss, traced only
  (`tlc_jax.memory.saved_residuals`), with the parameter, BatchNorm-state and batch
  bytes; `total_estimate` adds them up to a training-state estimate.
- `jax_train_step`: median seconds of the trainer's own jitted train step
  (`tlc_jax.step`), so the speed rows time what trains; `train_step_call`: one call
  of that step, for timings interleaved with another framework's.

JAX is imported inside the functions, so a process that measures only PyTorch
(`tlc_jax.benchmarks.isolated`) never starts it.
"""

from __future__ import annotations

import time
from typing import Any

from tlc_jax.benchmarks.result_rows import num_classes

GROWTH_RATE = 12  # DenseNet-BC's k in every benchmark row.


def jax_model(model: str, depth: int | None, mode: str, policy: str,
              dtype: str = "float32"):
    """The model of one benchmark row; `policy` "-" (naive rows) means the default
    policy, which naive mode does not use."""
    from tlc_jax.models import from_config
    cfg = dict(name=model, depth=depth, growth_rate=GROWTH_RATE, memory=mode, dtype=dtype,
               remat_policy=policy if policy != "-" else "dots_saveable")
    return from_config(cfg, num_classes(model))


def tree_bytes(tree) -> int:
    """Bytes of every array (or shape-dtype struct) in a pytree."""
    import jax
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def jax_traced(model: str, depth: int | None, mode: str, policy: str, batch: int,
               size: int) -> dict[str, int]:
    """Saved-for-backward bytes (traced) plus parameter / state / batch bytes."""
    from tlc_jax.memory import abstract_inputs, saved_residuals, training_loss
    net = jax_model(model, depth, mode, policy)
    args = abstract_inputs(net, batch, size)
    r = saved_residuals(training_loss(net), *args)
    return {"saved_bytes": r.saved_bytes, "saved_arrays": r.saved_arrays,
            "param_bytes": tree_bytes(args[0]), "batch_stats_bytes": tree_bytes(args[1]),
            "input_bytes": tree_bytes(args[2:])}


def total_estimate(t: dict[str, int]) -> int:
    """Training state estimate: saved + params, grads, momentum + BN stats + batch."""
    return (t["saved_bytes"] + 3 * t["param_bytes"] + t["batch_stats_bytes"]
            + t["input_bytes"])


def compiled_train_step(net, batch: int, size: int, classes: int, *,
                        channels: int = 3):
    """The trainer's train step (`tlc_jax.step.make_train_step`) on `net`, compiled
    for one batch shape, with its inputs: returns (compiled, compile_s, state, data,
    quotas, key). The step as training runs it: uint8 images normalised on the device,
    train-mode forward, cross-entropy, SGD with momentum 0.9 on every parameter, the
    batch's class counts against a quota vector; jitted with the state donated."""
    import jax
    import jax.numpy as jnp

    from tlc_jax.models import frozen_mask, init_variables
    from tlc_jax.step import StepConfig, init_state, make_optimizer, make_train_step
    key_x, key_init, key_step = jax.random.split(jax.random.key(0), 3)
    images = jax.random.randint(key_x, (batch, size, size, channels), 0, 256, jnp.uint8)
    labels = jnp.arange(batch, dtype=jnp.int32) % classes
    quotas = jnp.bincount(labels, length=classes).astype(jnp.float32)
    variables = init_variables(net, key_init, (1, *images.shape[1:]))
    tx = make_optimizer("sgd", 0.01, momentum=0.9,
                        frozen=frozen_mask(net, variables["params"], 0))
    step = make_train_step(net, tx, None, StepConfig(num_classes=classes, frozen_stages=0,
                                                     loss="ce", augment=None))
    state = init_state(variables, tx, None)
    data = {"image": images, "label": labels}
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, data, quotas,
                                                     key_step).compile()
    return compiled, time.perf_counter() - start, state, data, quotas, key_step


def train_step_call(net, batch: int, size: int, classes: int, *, channels: int = 3):
    """One call of the trainer's compiled train step on `net` (`compiled_train_step`),
    ended by `block_until_ready`, as a function of no arguments that carries the
    training state from call to call (the state is donated, as in training). Returns
    (call, compiled, compile_s)."""
    import jax

    compiled, compile_s, state, data, quotas, key_step = compiled_train_step(
        net, batch, size, classes, channels=channels)
    carried = [state]

    def call():
        carried[0], metrics = compiled(carried[0], data, quotas, key_step)
        jax.block_until_ready((carried[0], metrics))

    return call, compiled, compile_s


def jax_train_step(net, batch: int, size: int, classes: int, *, steps: int,
                   flops: bool = True, channels: int = 3) -> dict[str, float]:
    """Times the trainer's train step (`compiled_train_step`) on `net`. Returns
    compile_s, step_s (the median of `steps` timed steps after one warm-up, each ended
    by `block_until_ready`) and, where XLA's cost analysis reports it, flops_per_step.
    """
    call, compiled, compile_s = train_step_call(net, batch, size, classes,
                                                channels=channels)
    out: dict[str, Any] = {"compile_s": compile_s}
    if flops:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else {}
        if cost and cost.get("flops"):
            out["flops_per_step"] = float(cost["flops"])
    call()  # Warm-up.
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    out["step_s"] = times[len(times) // 2]
    return out


def device_bytes() -> float:
    """The accelerator's memory limit in bytes (inf where not reported)."""
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    return float(stats.get("bytes_limit", float("inf")))


def on_gpu() -> bool:
    """Whether JAX's default device is a GPU."""
    import jax
    return jax.devices()[0].platform == "gpu"
