"""Model zoo: build any backbone by name.

    model = create_model("densenet121", num_classes=10, memory="recompute")
    # Also: densenet169/201/161, densenet_bc, resnet18, efficientnet_lite0 ... lite4.
    variables = init_variables(model, rng, (1, 224, 224, 3))  # {"params", "batch_stats"}
    logits, new_state = model.apply(variables, images_NHWC, train=True,
                                    mutable=["batch_stats"])
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlc_jax.models.densenet import IMAGENET_DENSENETS, DenseNet, densenet_bc, imagenet_densenet
from tlc_jax.models.efficientnet_lite import EFFICIENTNET_LITES, EfficientNetLite
from tlc_jax.models.efficientnet_lite import param_stage as _lite_param_stage
from tlc_jax.models.efficientnet_lite import efficientnet_lite_variant
from tlc_jax.models.remat import DEFAULT_REMAT_POLICY, MEMORY_MODES, REMAT_POLICIES
from tlc_jax.models.resnet import ResNet, resnet18

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    **{name: (lambda name=name, **kw: imagenet_densenet(name, **kw))
       for name in IMAGENET_DENSENETS},
    "densenet_bc": densenet_bc,
    "resnet18": resnet18,
    **{name: (lambda name=name, **kw: efficientnet_lite_variant(name, **kw))
       for name in EFFICIENTNET_LITES},
}
MODEL_NAMES = tuple(_FACTORIES)


# Config fields that only some models take (the others have them fixed by name).
_ARCHITECTURE_FIELDS = {"densenet_bc": ("depth", "growth_rate")}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """The model called `name`; kwargs are its attributes (num_classes, dtype - a
    jnp dtype or its name -, memory, remat_policy, in_channels; depth and growth_rate
    for densenet_bc)."""
    if name not in _FACTORIES:
        raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}.")
    if isinstance(kwargs.get("dtype"), str):
        kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
    try:
        return _FACTORIES[name](**kwargs)
    except TypeError as e:  # An unknown keyword: say which model refused it.
        raise TypeError(f"create_model({name!r}): {e}") from e


def config_kwargs(cfg: Mapping[str, Any], num_classes: int,
                  in_channels: int = 3) -> dict[str, Any]:
    """`create_model` keywords (JSON-ready: dtype by name) from a model config - the
    trainer's `config.model` or any mapping with its fields (name, memory,
    remat_policy, dtype, head - "linear" when absent -; depth and growth_rate where the
    model takes them)."""
    kwargs = dict(num_classes=num_classes, in_channels=in_channels,
                  dtype=str(jnp.dtype(cfg["dtype"])), memory=cfg["memory"],
                  remat_policy=cfg["remat_policy"], head=cfg.get("head", "linear"))
    kwargs.update({f: cfg[f] for f in _ARCHITECTURE_FIELDS.get(cfg["name"], ())})
    return kwargs


def from_config(cfg: Mapping[str, Any], num_classes: int,
                in_channels: int = 3) -> nn.Module:
    """The model a model config describes (see `config_kwargs`)."""
    return create_model(cfg["name"], **config_kwargs(cfg, num_classes, in_channels))


_STEM = {"conv0", "norm0", "conv1", "bn1"}  # DenseNet / ResNet stems: stage 1.
_HEAD = {"classifier", "fc"}  # Never frozen.
# EfficientNet-Lite names its head BatchNorm `bn1` too (after conv_head, in the last
# stage), so its stages come from the model: efficientnet_lite.param_stage (conv_stem and
# bn0 in stage 1, blocks_i in its block group's stage, conv_head and bn1 in the last,
# fc never frozen).


def param_stage(model: nn.Module, name: str) -> int | None:
    """Stage (1-based) of a top-level submodule, as `frozen_stages` counts; None for
    the classifier head."""
    if isinstance(model, EfficientNetLite):
        return _lite_param_stage(model, name)
    if name in _HEAD:
        return None
    if name in _STEM:
        return 1
    if name == "norm5":
        return model.num_stages
    match = re.fullmatch(r"(?:denseblock|transition|layer)(\d+)(?:_\d+)?", name)
    if match is None:
        raise ValueError(f"Parameter group {name!r} belongs to no known stage.")
    return int(match.group(1))


# Initialisation runs once, so it is compiled without XLA:CPU's backend (LLVM)
# optimisations: each parameter's random numbers are a threefry hash of its own that
# takes ~0.6 s to compile optimised on a 2-core CPU, and a model has one per parameter
# (DenseNet-BC-16 at 28 px: 9.3 -> 2.5 s; docs/BENCHMARKS.md, "Start-up"). The values
# are the same random numbers (integer hashing), their conversion to floats may differ
# in the last bit.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def init_variables(model: nn.Module, rng: jax.Array, input_shape: tuple[int, ...], *,
                   dtype: Any = jnp.float32, out_shardings: Any = None) -> dict:
    """`model.init(rng, zeros(input_shape), train=False)` ({"params", "batch_stats"}),
    compiled once as one program (eager `model.init` compiles every operation on its
    own, several times slower), with `INIT_COMPILER_OPTIONS` on CPU; `out_shardings` as
    for `jax.jit`."""
    init = lambda key: model.init(key, jnp.zeros(input_shape, dtype), train=False)
    jitted = jax.jit(init) if out_shardings is None else jax.jit(init,
                                                                 out_shardings=out_shardings)
    options = INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return jitted.lower(rng).compile(compiler_options=options)(rng)


def frozen_mask(model: nn.Module, params: Any, frozen_stages: int) -> Any:
    """A pytree of bools like `params`: True for parameters in the first
    `frozen_stages` stages (for `optax.multi_transform` labels)."""
    if not 0 <= frozen_stages <= model.num_stages:
        raise ValueError(f"frozen_stages must be in [0, {model.num_stages}] for this "
                         f"model; got {frozen_stages}.")
    def stage_frozen(name):
        stage = param_stage(model, name)
        return stage is not None and stage <= frozen_stages
    return {name: jax.tree.map(lambda _: stage_frozen(name), sub)
            for name, sub in params.items()}


__all__ = [
    "DEFAULT_REMAT_POLICY", "DenseNet", "EfficientNetLite", "MEMORY_MODES", "MODEL_NAMES",
    "REMAT_POLICIES", "ResNet", "config_kwargs", "create_model", "from_config",
    "frozen_mask", "init_variables", "param_stage", "densenet_bc", "efficientnet_lite_variant",
    "imagenet_densenet", "resnet18",
]
