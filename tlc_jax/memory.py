"""How much memory a training step needs: three views, from cheapest to most real.

All three differentiate `training_loss`, the trainer's own loss (`tlc_jax.step`).

1. **Saved for backward** (`saved_residuals`): the arrays reverse-mode autodiff keeps
   from the forward pass for the backward pass, read off the traced program (the same
   analysis as `jax.ad_checkpoint.print_saved_residuals`, but deduplicated by array:
   a feature map that ten later dense layers need is counted once). Nothing runs and
   nothing is compiled, so it works on every backend and for networks far larger than
   the machine. This is what `memory="recompute"` changes, and what the tests check.
2. **Compiled** (`compiled_memory`): XLA's buffer assignment for the jitted gradient
   (temp / argument / output bytes). On GPU and TPU this shows the saving. On CPU it
   does not: XLA:CPU expands the rematerialisation barriers and common-subexpression
   elimination then merges the recomputed work with the original, so the compiled CPU
   program stores what the naive one stores. Read view 1 on CPU.
   On GPU, compile the naive baseline inside `disable_xla_remat()` to keep it honest:
   XLA's own rematerialisation pass would otherwise trim it behind our back.
3. **Measured** (`peak_bytes_in_use`): the device allocator's peak after running the
   step, on backends that report it (GPUs). The allocator's peak is per process and is
   never reset, so measure one configuration per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlc_jax.models import init_variables
from tlc_jax.step import StepConfig, make_loss


@dataclasses.dataclass(frozen=True)
class Residuals:
    """Arrays kept for the backward pass, each counted once."""

    saved_bytes: int  # Intermediates computed in the forward pass and kept.
    saved_arrays: int
    input_bytes: int  # Kept arguments (parameters, the batch): live anyway.
    input_arrays: int


def saved_residuals(fn: Callable[..., Any], *args: Any) -> Residuals:
    """What `jax.vjp(fn, *args)` keeps for the backward pass; traces only.

    `args` may be arrays or `jax.ShapeDtypeStruct`s (pytrees of either).
    """
    jaxpr, out_shape = jax.make_jaxpr(lambda *a: jax.vjp(fn, *a), return_shape=True)(*args)
    num_res = len(jax.tree.leaves(out_shape[1]))  # The vjp closure's leaves.
    outvars = jaxpr.jaxpr.outvars
    residuals = outvars[len(outvars) - num_res:]
    inputs = set(jaxpr.jaxpr.invars)
    seen: set[Any] = set()
    saved = [0, 0]
    kept_inputs = [0, 0]
    for var in residuals:
        if not hasattr(var, "aval") or hasattr(var, "val") or var in seen:
            continue  # Literals are constants in the program; duplicates count once.
        seen.add(var)
        nbytes = var.aval.size * var.aval.dtype.itemsize
        bucket = kept_inputs if var in inputs else saved
        bucket[0] += nbytes
        bucket[1] += 1
    return Residuals(saved_bytes=saved[0], saved_arrays=saved[1],
                     input_bytes=kept_inputs[0], input_arrays=kept_inputs[1])


def training_loss(model: nn.Module) -> Callable[..., jax.Array]:
    """`loss(params, batch_stats, images, labels)`: the trainer's loss, a scalar.

    It is `tlc_jax.step.make_loss` for cross-entropy with nothing frozen (a train-mode
    forward pass on already-normalised float images, BatchNorm using this batch's
    statistics, then the mean cross-entropy) under a uniform class prior, so every view
    here measures the loss that trains."""
    num_classes = model.num_classes
    step_loss = make_loss(model, StepConfig(num_classes=num_classes, frozen_stages=0,
                                            loss="ce"))
    prior = jnp.full((num_classes,), 1.0 / num_classes, jnp.float32)

    def loss(params, batch_stats, images, labels):
        mean, _ = step_loss(params, batch_stats, images, labels, prior)
        return mean

    return loss


def abstract_inputs(model: nn.Module, batch_size: int, image_size: int,
                    in_channels: int = 3) -> tuple[Any, Any, jax.ShapeDtypeStruct,
                                                   jax.ShapeDtypeStruct]:
    """Shapes of (params, batch_stats, images, labels), via `jax.eval_shape`."""
    images = jax.ShapeDtypeStruct((batch_size, image_size, image_size, in_channels),
                                  jnp.float32)
    labels = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), images)
    return variables["params"], variables["batch_stats"], images, labels


@contextlib.contextmanager
def disable_xla_remat() -> Iterator[None]:
    """Turns XLA's automatic rematerialisation pass off while compiling (GPU baseline)."""
    previous = jax.config.jax_compiler_enable_remat_pass
    jax.config.update("jax_compiler_enable_remat_pass", False)
    try:
        yield
    finally:
        jax.config.update("jax_compiler_enable_remat_pass", previous)


def compile_grad(model: nn.Module, batch_size: int, image_size: int,
                 in_channels: int = 3):
    """The gradient of `training_loss`, compiled for these shapes (compile once, then
    read its memory analysis and run it)."""
    args = abstract_inputs(model, batch_size, image_size, in_channels)
    return jax.jit(jax.grad(training_loss(model))).lower(*args).compile()


def compiled_memory(model: nn.Module, batch_size: int, image_size: int,
                    in_channels: int = 3, compiled=None) -> dict[str, int]:
    """XLA's memory analysis of the compiled gradient, in bytes: temp, argument, output,
    alias, generated_code and (where XLA reports it) peak_memory. See the module
    docstring for why CPU figures show no saving from recompute."""
    compiled = compiled or compile_grad(model, batch_size, image_size, in_channels)
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    # temp_size_in_bytes -> "temp", peak_memory_in_bytes -> "peak_memory", ...
    return {f.removesuffix("_in_bytes").removesuffix("_size"): int(getattr(stats, f))
            for f in dir(stats)
            if f.endswith("_in_bytes") and not f.startswith("host_")}


def peak_bytes_in_use(model: nn.Module, batch_size: int, image_size: int,
                      in_channels: int = 3, seed: int = 0, compiled=None) -> int | None:
    """Runs one gradient step and returns the device's peak bytes in use, if reported.

    The peak covers everything this process has run so far: call it in a fresh process.
    """
    device = jax.devices()[0]
    if device.memory_stats() is None:
        return None
    params, batch_stats, images, labels = abstract_inputs(model, batch_size, image_size,
                                                          in_channels)
    key_x, key_init = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(key_x, images.shape, images.dtype)
    y = jnp.zeros(labels.shape, labels.dtype)
    variables = init_variables(model, key_init, (1, *x.shape[1:]), dtype=x.dtype)
    compiled = compiled or compile_grad(model, batch_size, image_size, in_channels)
    grads = compiled(variables["params"], variables["batch_stats"], x, y)
    jax.block_until_ready(grads)
    return int(device.memory_stats().get("peak_bytes_in_use", 0)) or None


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    """The three views for one model and batch shape (see the module docstring)."""

    batch_size: int
    image_size: int
    residuals: Residuals
    compiled: dict[str, int] | None  # None when not asked for.
    peak_bytes_in_use: int | None  # None on backends that report no allocator stats.


def memory_report(model: nn.Module, batch_size: int, image_size: int, *,
                  in_channels: int = 3, compile: bool = False,
                  measure: bool = False) -> MemoryReport:
    """All three views for one model and batch; compiling and running are opt-in."""
    args = abstract_inputs(model, batch_size, image_size, in_channels)
    residuals = saved_residuals(training_loss(model), *args)
    executable = (compile_grad(model, batch_size, image_size, in_channels)
                  if compile or measure else None)  # Compiled once for both views.
    compiled = (compiled_memory(model, batch_size, image_size, in_channels, executable)
                if compile else None)
    peak = (peak_bytes_in_use(model, batch_size, image_size, in_channels,
                              compiled=executable) if measure else None)
    return MemoryReport(batch_size, image_size, residuals, compiled, peak)
