"""Memory modes: store every activation, or recompute cheap ones in the backward pass.

`memory="naive"` keeps what autodiff saves by default. For a DenseNet that includes,
for every layer, the concatenation of all earlier feature maps and its BatchNorm / ReLU
outputs, so the bytes kept grow with depth squared.

`memory="recompute"` wraps each layer in `nn.remat` (`jax.checkpoint`) with a policy
chosen by name, as big_vision does. With `dots_saveable` (the default) only convolution
outputs are kept and concat -> BN -> ReLU is recomputed - the recipe of Pleiss et al.,
"Memory-Efficient Implementation of DenseNets" (2017). With `nothing_saveable` only the
layer inputs (earlier layers' outputs) are kept, at the cost of recomputing the
convolutions too. Either way the bytes kept grow linearly with depth.

`nn.remat` gives auto-named submodules different names, so every layer is named
explicitly: the parameter tree is the same in both modes and checkpoints move freely.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax

MEMORY_MODES = ("naive", "recompute")

# Policies of `jax.checkpoint_policies` that take no arguments. Those that need names
# (save_only_these_names, ...) are not selectable by a string.
REMAT_POLICIES = (
    "dots_saveable",
    "nothing_saveable",
    "everything_saveable",
    "dots_with_no_batch_dims_saveable",
    "checkpoint_dots",
    "checkpoint_dots_with_no_batch_dims",
)
DEFAULT_REMAT_POLICY = "dots_saveable"


def check_memory_mode(memory: str, remat_policy: str) -> None:
    """Raises ValueError naming the valid choices if either string is unknown."""
    if memory not in MEMORY_MODES:
        raise ValueError(
            f"Unknown memory mode {memory!r}; valid modes: {', '.join(MEMORY_MODES)}.")
    if remat_policy not in REMAT_POLICIES:
        raise ValueError(
            f"Unknown remat policy {remat_policy!r}; valid policies: "
            f"{', '.join(REMAT_POLICIES)} (from jax.checkpoint_policies).")


def checkpoint_policy(name: str) -> Callable[..., bool]:
    """The `jax.checkpoint_policies` entry called `name`."""
    check_memory_mode("recompute", name)
    return getattr(jax.checkpoint_policies, name)


def maybe_remat(module_cls: type[nn.Module], memory: str,
                remat_policy: str) -> type[nn.Module]:
    """`module_cls` itself (naive) or wrapped in `nn.remat` with the named policy."""
    check_memory_mode(memory, remat_policy)
    if memory == "naive":
        return module_cls
    return nn.remat(module_cls, policy=checkpoint_policy(remat_policy))
