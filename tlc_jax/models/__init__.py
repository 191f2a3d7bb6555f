"""Model zoo: build any backbone by name.

    model = create_model("densenet121", num_classes=10, memory="recompute")
    variables = model.init(rng, images_NHWC, train=False)   # {"params", "batch_stats"}
    logits, new_state = model.apply(variables, images_NHWC, train=True,
                                    mutable=["batch_stats"])
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn

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


__all__ = [
    "DEFAULT_REMAT_POLICY", "DenseNet", "MEMORY_MODES", "MODEL_NAMES", "REMAT_POLICIES",
    "ResNet", "create_model", "densenet_bc", "imagenet_densenet", "resnet18",
]
