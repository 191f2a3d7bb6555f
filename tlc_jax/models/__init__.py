"""Model zoo: build any backbone by name.

    model = create_model("densenet121", num_classes=10, memory="recompute")
    variables = model.init(rng, images_NHWC, train=False)   # {"params", "batch_stats"}
    logits, new_state = model.apply(variables, images_NHWC, train=True,
                                    mutable=["batch_stats"])
"""

from __future__ import annotations

import re
from typing import Any, Callable

import flax.linen as nn
import jax

from tlc_jax.models.densenet import IMAGENET_DENSENETS, DenseNet, densenet_bc, imagenet_densenet
from tlc_jax.models.remat import DEFAULT_REMAT_POLICY, MEMORY_MODES, REMAT_POLICIES
from tlc_jax.models.resnet import ResNet, resnet18

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    **{name: (lambda name=name, **kw: imagenet_densenet(name, **kw))
       for name in IMAGENET_DENSENETS},
    "densenet_bc": densenet_bc,
    "resnet18": resnet18,
}
MODEL_NAMES = tuple(_FACTORIES)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """The model called `name`; kwargs are its attributes (num_classes, dtype, memory,
    remat_policy, in_channels; depth and growth_rate for densenet_bc)."""
    if name not in _FACTORIES:
        raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}.")
    try:
        return _FACTORIES[name](**kwargs)
    except TypeError as e:  # An unknown keyword: say which model refused it.
        raise TypeError(f"create_model({name!r}): {e}") from e


_STEM = {"conv0", "norm0", "conv1", "bn1"}  # DenseNet / ResNet stems: stage 1.
_HEAD = {"classifier", "fc"}  # Never frozen.


def param_stage(model: nn.Module, name: str) -> int | None:
    """Stage (1-based) of a top-level submodule, as `frozen_stages` counts; None for
    the classifier head."""
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
    "DEFAULT_REMAT_POLICY", "DenseNet", "MEMORY_MODES", "MODEL_NAMES", "REMAT_POLICIES",
    "ResNet", "create_model", "frozen_mask", "param_stage", "densenet_bc", "imagenet_densenet", "resnet18",
]
