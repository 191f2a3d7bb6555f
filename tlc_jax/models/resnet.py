"""ResNet-18 with torchvision's topology: the baseline backbone of the TLC paper (Table 5).

Block `layer{s}_{i}` holds torchvision's `layer{s}.{i}` (conv1, bn1, conv2, bn2 and, where
the shape changes, downsample_conv / downsample_bn for `downsample.0` / `downsample.1`).
`memory="recompute"` wraps each residual block in `nn.remat`, as for the DenseNets.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlc_jax.models import layers
from tlc_jax.models.remat import DEFAULT_REMAT_POLICY, check_memory_mode, maybe_remat


class BasicBlock(nn.Module):
    features: int
    stride: int
    train: bool
    dtype: layers.Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        identity = x
        y = layers.conv(self.features, 3, stride=self.stride, padding=1,
                        dtype=self.dtype, name="conv1")(x)
        y = nn.relu(layers.batch_norm(train=self.train, dtype=self.dtype, name="bn1")(y))
        y = layers.conv(self.features, 3, padding=1, dtype=self.dtype, name="conv2")(y)
        y = layers.batch_norm(train=self.train, dtype=self.dtype, name="bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            identity = layers.conv(self.features, 1, stride=self.stride,
                                   dtype=self.dtype, name="downsample_conv")(x)
            identity = layers.batch_norm(train=self.train, dtype=self.dtype,
                                         name="downsample_bn")(identity)
        return nn.relu(y + identity)


class ResNet(nn.Module):
    """A basic-block ResNet; `__call__` returns logits, or (logits, features)."""

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 1000
    in_channels: int = 3
    dtype: layers.Dtype = jnp.float32
    memory: str = "naive"
    remat_policy: str = DEFAULT_REMAT_POLICY
    head: str = "linear"  # "linear" or "cosine" (layers.CosineClassifier).

    def __post_init__(self):
        check_memory_mode(self.memory, self.remat_policy)
        layers.check_head(self.head)
        super().__post_init__()

    @property
    def num_stages(self) -> int:
        return len(self.stage_sizes)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False,
                 return_features: bool = False, frozen_stages: int = 0):
        """Logits, and pooled features if asked; `frozen_stages` as for DenseNet
        (stage 1 is the stem with layer1, stage s is layer s)."""
        layers.check_input(x, self.in_channels, type(self).__name__)
        x = x.astype(self.dtype)
        x = layers.conv(64, 7, stride=2, padding=3, dtype=self.dtype, name="conv1")(x)
        x = layers.batch_norm(train=train and frozen_stages < 1, dtype=self.dtype,
                              name="bn1")(x)
        x = layers.max_pool_3x3_s2(nn.relu(x))
        block_cls = maybe_remat(BasicBlock, self.memory, self.remat_policy)
        for s, num_blocks in enumerate(self.stage_sizes):
            for i in range(num_blocks):
                stride = 2 if s > 0 and i == 0 else 1
                x = block_cls(64 * 2**s, stride, train and frozen_stages <= s, self.dtype,
                              name=f"layer{s + 1}_{i}")(x)
            if frozen_stages == s + 1:
                x = jax.lax.stop_gradient(x)
        features = layers.global_avg_pool(x)
        logits = layers.classifier(self.num_classes, dtype=self.dtype, head=self.head,
                                   name="fc")(features)
        return (logits, features) if return_features else logits


def resnet18(**kwargs) -> ResNet:
    return ResNet(stage_sizes=(2, 2, 2, 2), **kwargs)
