"""DenseNet (Huang et al. 2017) in Flax Linen, with an optional recompute memory mode.

Two topologies share one module:
- `stem="imagenet"`: torchvision's DenseNet-121/169/201/161 (7x7/2 conv, BN, ReLU,
  3x3/2 max-pool, four dense blocks), the backbone TLC transfers from ImageNet;
- `stem="cifar"`: DenseNet-BC for 32 px images (3x3 conv with 2k channels, three
  dense blocks), the network of the memory-efficiency experiments.

Submodules carry torchvision's names (conv0, norm0, denseblock1/denselayer1/norm1, ...,
transition1, norm5, classifier) so ImageNet weights map one-to-one (see pretrained.py).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlc_jax.models import layers
from tlc_jax.models.remat import DEFAULT_REMAT_POLICY, check_memory_mode, maybe_remat


class DenseLayer(nn.Module):
    """concat -> BN -> ReLU -> 1x1 conv (bottleneck) -> BN -> ReLU -> 3x3 conv.

    Takes the list of all earlier feature maps. The fused BN-ReLU reads them as they
    are (`layers.fused_bn_relu` on a sequence): the concatenated input is never stored
    for the backward pass, whose gradient comes back per earlier map - PyTorch's
    memory-efficient DenseNet's shared-storage idea without the shared buffer. Under
    `nn.remat` what is left to recompute is recomputed rather than stored.
    """

    growth_rate: int
    bn_size: int
    train: bool
    dtype: layers.Dtype
    fused: bool = True

    @nn.compact
    def __call__(self, inputs: Sequence[jax.Array]) -> jax.Array:
        x = layers.bn_relu(train=self.train, dtype=self.dtype, fused=self.fused,
                           name="norm1")(list(inputs))
        x = layers.conv(self.bn_size * self.growth_rate, 1, dtype=self.dtype,
                        name="conv1")(x)
        x = layers.bn_relu(train=self.train, dtype=self.dtype, fused=self.fused,
                           name="norm2")(x)
        return layers.conv(self.growth_rate, 3, padding=1, dtype=self.dtype,
                           name="conv2")(x)


class DenseBlock(nn.Module):
    num_layers: int
    growth_rate: int
    bn_size: int
    train: bool
    dtype: layers.Dtype
    memory: str
    remat_policy: str
    fused: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        layer_cls = maybe_remat(DenseLayer, self.memory, self.remat_policy)
        feats = [x]
        for i in range(self.num_layers):
            feats.append(layer_cls(self.growth_rate, self.bn_size, self.train,
                                   self.dtype, self.fused,
                                   name=f"denselayer{i + 1}")(feats))
        return jnp.concatenate(feats, axis=-1)


class Transition(nn.Module):
    """BN -> ReLU -> 1x1 conv (compression) -> 2x2 average pool, computed as
    BN -> ReLU -> pool -> conv: both are linear maps without bias that act on different
    axes (pixels / channels), so they commute and the result is the same up to float
    rounding, while the matrix product runs on a quarter of the pixels (4x fewer
    multiply-adds forward and backward; docs/BENCHMARKS.md, "CPU speed")."""

    features: int
    train: bool
    dtype: layers.Dtype
    fused: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = layers.bn_relu(train=self.train, dtype=self.dtype, fused=self.fused,
                           name="norm")(x)
        return layers.conv(self.features, 1, dtype=self.dtype,
                           name="conv")(layers.avg_pool_2x2(x))


class DenseNet(nn.Module):
    """A DenseNet classifier; `__call__` returns logits, or (logits, features).

    Attributes:
      block_sizes: dense layers per block.
      growth_rate: k, channels each dense layer adds.
      num_init_features: channels of the stem convolution.
      num_classes: size of the classifier head.
      stem: "imagenet" (7x7/2 conv + max-pool) or "cifar" (3x3 conv).
      bn_size: bottleneck width is bn_size * k.
      compression: transition layers keep floor(compression * channels).
      in_channels: channels of the input images (checked at call time).
      dtype: computation dtype (float32 or bfloat16); parameters stay float32.
      memory: "naive" or "recompute" (see remat.py).
      remat_policy: name of a jax.checkpoint policy, used when memory="recompute".
      fused_bn_relu: every BatchNorm -> ReLU pair as one op whose backward keeps only
        its input (layers.fused_bn_relu), as PyTorch's BatchNorm + in-place ReLU do;
        False: plain autodiff, which also keeps the normalised and ReLU outputs. Same
        variables and results either way.
      head: "linear" (torchvision's) or "cosine" (layers.CosineClassifier, for LDAM).
    """

    block_sizes: Sequence[int]
    growth_rate: int
    num_init_features: int
    num_classes: int = 1000
    stem: str = "imagenet"
    bn_size: int = 4
    compression: float = 0.5
    in_channels: int = 3
    dtype: layers.Dtype = jnp.float32
    memory: str = "naive"
    remat_policy: str = DEFAULT_REMAT_POLICY
    fused_bn_relu: bool = True
    head: str = "linear"

    def __post_init__(self):
        check_memory_mode(self.memory, self.remat_policy)
        layers.check_head(self.head)
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"Unknown stem {self.stem!r}; use 'imagenet' or 'cifar'.")
        super().__post_init__()

    @property
    def num_stages(self) -> int:
        return len(self.block_sizes)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False,
                 return_features: bool = False, frozen_stages: int = 0):
        """Logits (B, num_classes), and the pooled features (B, D) if asked.

        `frozen_stages` = s freezes the first s stages (stage 1 is the stem with dense
        block 1 and transition 1, stage b is block b and its transition, the last stage
        ends with norm5): their BatchNorms use running statistics and no gradient flows
        back into them, so the backward pass spends nothing there.
        """
        layers.check_input(x, self.in_channels, type(self).__name__)
        x = x.astype(self.dtype)
        stem_train = train and frozen_stages < 1
        if self.stem == "imagenet":
            x = layers.conv(self.num_init_features, 7, stride=2, padding=3,
                            dtype=self.dtype, name="conv0")(x)
            x = layers.bn_relu(train=stem_train, dtype=self.dtype,
                               fused=self.fused_bn_relu, name="norm0")(x)
            x = layers.max_pool_3x3_s2(x)
        else:
            x = layers.conv(self.num_init_features, 3, padding=1, dtype=self.dtype,
                            name="conv0")(x)
        channels = self.num_init_features
        for b, num_layers in enumerate(self.block_sizes):
            stage_train = train and frozen_stages <= b
            x = DenseBlock(num_layers, self.growth_rate, self.bn_size, stage_train,
                           self.dtype, self.memory, self.remat_policy, self.fused_bn_relu,
                           name=f"denseblock{b + 1}")(x)
            channels += num_layers * self.growth_rate
            if b != len(self.block_sizes) - 1:
                channels = int(channels * self.compression)
                x = Transition(channels, stage_train, self.dtype, self.fused_bn_relu,
                               name=f"transition{b + 1}")(x)
            else:
                x = layers.bn_relu(train=stage_train, dtype=self.dtype,
                                   fused=self.fused_bn_relu, name="norm5")(x)
            if frozen_stages == b + 1:
                x = jax.lax.stop_gradient(x)
        features = layers.global_avg_pool(x)
        logits = layers.classifier(self.num_classes, dtype=self.dtype, head=self.head,
                                   name="classifier")(features)
        return (logits, features) if return_features else logits


# torchvision's ImageNet DenseNets: (block sizes, growth rate, stem channels).
IMAGENET_DENSENETS = {
    "densenet121": ((6, 12, 24, 16), 32, 64),
    "densenet169": ((6, 12, 32, 32), 32, 64),
    "densenet201": ((6, 12, 48, 32), 32, 64),
    "densenet161": ((6, 12, 36, 24), 48, 96),
}


def imagenet_densenet(name: str, **kwargs) -> DenseNet:
    """torchvision's `name` (densenet121/169/201/161); kwargs go to `DenseNet`."""
    blocks, k, init = IMAGENET_DENSENETS[name]
    return DenseNet(block_sizes=blocks, growth_rate=k, num_init_features=init,
                    stem="imagenet", **kwargs)


def densenet_bc(depth: int = 100, growth_rate: int = 12, **kwargs) -> DenseNet:
    """CIFAR DenseNet-BC: three blocks of (depth - 4) / 6 bottleneck layers."""
    if not isinstance(depth, int) or depth < 10 or depth % 6 != 4:
        raise ValueError(
            f"DenseNet-BC depth must be an integer >= 10 with depth % 6 == 4 "
            f"(e.g. 40, 100, 190, 250: 3 blocks of (depth - 4) / 6 bottleneck layers "
            f"plus stem, 2 transitions and classifier); got {depth!r}.")
    if growth_rate < 1:
        raise ValueError(f"growth_rate must be positive; got {growth_rate}.")
    n = (depth - 4) // 6
    return DenseNet(block_sizes=(n, n, n), growth_rate=growth_rate,
                    num_init_features=2 * growth_rate, stem="cifar", **kwargs)
