"""The JAX side of the memory / speed benchmark: the benchmarked models and what is
measured on them.

- `jax_model`: DenseNet-BC (k=12, 10 classes) at a depth, or an ImageNet DenseNet
  (1,000 classes), in a memory mode, built from a model config like the trainer's.
- `jax_traced`: bytes kept for the backward pass of the trainer's loss, traced only
  (`tlc_jax.memory.saved_residuals`), with the parameter, BatchNorm-state and batch
  bytes; `total_estimate` adds them up to a training-state estimate.
- `jax_train_step`: median seconds of a jitted training step (value_and_grad of the
  train-mode cross-entropy, SGD with momentum).

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


def jax_train_step(net, batch: int, size: int, classes: int, *, steps: int,
                   flops: bool = True) -> dict[str, float]:
    """Median step seconds of a jitted value_and_grad + optax SGD (momentum) update."""
    import jax
    import jax.numpy as jnp
    import optax
    key_x, key_init = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (batch, size, size, 3), jnp.float32)
    y = jnp.arange(batch, dtype=jnp.int32) % classes
    variables = jax.jit(lambda k: net.init(k, x[:1], train=False))(key_init)
    tx = optax.sgd(0.01, momentum=0.9)
    state = (variables["params"], variables["batch_stats"],
             tx.init(variables["params"]))

    def step(state, x, y):
        params, batch_stats, opt_state = state

        def loss_fn(p):
            logits, new = net.apply({"params": p, "batch_stats": batch_stats}, x,
                                    train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), y).mean()
            return loss, new["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), new_stats, opt_state), loss

    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, x, y).compile()
    out: dict[str, Any] = {"compile_s": time.perf_counter() - start}
    if flops:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else {}
        if cost and cost.get("flops"):
            out["flops_per_step"] = float(cost["flops"])
    state, loss = compiled(state, x, y)  # Warm-up.
    jax.block_until_ready(loss)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, loss = compiled(state, x, y)
        jax.block_until_ready((state, loss))
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
