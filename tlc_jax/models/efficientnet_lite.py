"""EfficientNet-Lite0..4 (Tan & Le 2019; TensorFlow's `efficientnet/lite`) in Flax Linen.

The Lite variants are EfficientNet-B0 made friendly to integer accelerators: ReLU6 for
swish, no squeeze-and-excitation, and a stem (32 channels) and head (1280 channels, the
1x1 conv before pooling) that width scaling leaves alone, as do depth scaling the first
and last block groups. Everything else follows the reference PyTorch port,
`efficientnet_lite_pytorch` (pip install efficientnet-lite-pytorch), whose converted
ImageNet weights load one-to-one (tlc_jax.pretrained):

- block groups (repeats, kernel, stride, expansion, in, out), `BLOCK_GROUPS`, and the
  (width, depth) coefficients per variant, `EFFICIENTNET_LITES`; `round_filters` /
  `round_repeats` are the reference's (channels to a multiple of 8, never more than 10 %
  down; repeats rounded up);
- an MBConv block: [1x1 expand conv -> BN -> ReLU6] (when expansion != 1), depthwise
  kxk conv (stride s) -> BN -> ReLU6, 1x1 project conv -> BN, plus the input when
  stride 1 and the channels agree;
- BatchNorm as TensorFlow's: decay 0.99 (PyTorch momentum 0.01, Flax momentum 0.99)
  and epsilon 1e-3, running statistics updated in train mode as the reference's (but
  for Flax folding the biased batch variance, see tlc_jax.pretrained), batch variance
  in two passes;
- TensorFlow's "SAME" padding, computed from the actual input size (pad
  (ceil(i / s) - 1) * s + k - i in total, the smaller half before - asymmetric for
  stride 2). The reference pads statically for the variant's design resolution (224 px
  for Lite0); that is the same padding whenever every stride-2 layer sees an input of
  the same parity as at the design resolution (for Lite0: any multiple of 32), and at
  other sizes this module keeps TensorFlow's (the weights' origin) behaviour, which is
  the reference's `Conv2dDynamicSamePadding` (`image_size=None`).

Submodules carry the reference's names without the leading underscore: conv_stem, bn0,
blocks_0 ... blocks_{N-1} (expand_conv, bn0, depthwise_conv, bn1, project_conv, bn2),
conv_head, bn1 and fc (the reference's `_fc`; here `layers.classifier`, linear or
cosine).

Stages (for `frozen_stages`), by output stride as ResNet's four:
  1: conv_stem, bn0, block groups 1-2 (stride 4, 24 ch at width 1);
  2: block group 3 (stride 8, 40 ch);
  3: block groups 4-5 (stride 16, 112 ch);
  4: block groups 6-7, conv_head and bn1 (stride 32, 1280 ch).

Left out, both stochastic and absent at evaluation: the reference's dropout before the
classifier (rate 0.2-0.3) - the trainer's step passes no dropout rng - and drop-connect
(stochastic depth, rate 0.2 scaled by block index). Train-mode outputs equal the
reference's with both set to 0.

Preprocessing the ImageNet weights expect (TensorFlow's efficientnet_lite_builder.py):
(pixel - 127) / 128 on 0-255 RGB (`MEAN_RGB`, `STDDEV_RGB`), at the variant's
resolution (`EFFICIENTNET_LITES`), evaluation crop: the centre 224/256 of the shorter
side, resized.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlc_jax.models import layers
from tlc_jax.models.remat import DEFAULT_REMAT_POLICY, check_memory_mode, maybe_remat

# (width coefficient, depth coefficient, resolution, dropout rate of the reference).
EFFICIENTNET_LITES = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}

# efficientnet_lite_builder's blocks_args 'r1_k3_s11_e1_i32_o16', ...:
# (repeats, kernel, stride, expand ratio, input filters, output filters).
BLOCK_GROUPS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
GROUP_STAGE = (1, 1, 2, 3, 3, 4, 4)  # Stage (1-based) of each block group.
NUM_STAGES = 4
STEM_FEATURES = 32  # Not scaled by width in the Lite variants.
HEAD_FEATURES = 1280  # Nor is the head.
DEPTH_DIVISOR = 8
BN_MOMENTUM = 0.99  # TensorFlow's decay; PyTorch's momentum 1 - 0.99 = 0.01.
BN_EPSILON = 1e-3
MEAN_RGB = (127.0, 127.0, 127.0)  # On 0-255 pixels: x -> (x - 127) / 128.
STDDEV_RGB = (128.0, 128.0, 128.0)


def round_filters(filters: int, width: float, divisor: int = DEPTH_DIVISOR) -> int:
    """Channels scaled by `width`, to a multiple of `divisor`, at most 10 % below."""
    if not width:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return repeats if not depth else int(math.ceil(depth * repeats))


class BlockSpec(NamedTuple):
    kernel: int
    stride: int
    expand_ratio: int
    in_features: int
    out_features: int
    stage: int


def block_specs(width: float, depth: float) -> tuple[BlockSpec, ...]:
    """Every MBConv block of the network, in order (the reference's `_blocks`)."""
    specs = []
    last = len(BLOCK_GROUPS) - 1
    for g, (repeats, kernel, stride, expand, in_f, out_f) in enumerate(BLOCK_GROUPS):
        in_f, out_f = round_filters(in_f, width), round_filters(out_f, width)
        if g in (0, last):  # The Lite variants fix the first and last groups' depth.
            in_f = STEM_FEATURES if g == 0 else in_f
        else:
            repeats = round_repeats(repeats, depth)
        for r in range(repeats):
            specs.append(BlockSpec(kernel, stride if r == 0 else 1, expand,
                                   in_f if r == 0 else out_f, out_f, GROUP_STAGE[g]))
    return tuple(specs)


def _conv(features: int, kernel: int, *, stride: int = 1, groups: int = 1,
          dtype: layers.Dtype, name: str) -> nn.Module:
    """Bias-free conv with TensorFlow's SAME padding; 1x1 stride 1 as a matrix product,
    depthwise as shifted multiply-adds (`layers.DepthwiseConv`, same parameter)."""
    if kernel == 1 and stride == 1 and groups == 1:
        return layers.Conv1x1(features, dtype=dtype, name=name)
    if groups > 1 and groups == features:
        return layers.DepthwiseConv(kernel, stride, dtype=dtype, name=name)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME",
                   feature_group_count=groups, use_bias=False,
                   kernel_init=layers.conv_init, dtype=dtype, param_dtype=jnp.float32,
                   name=name)


def _bn(*, train: bool, dtype: layers.Dtype, name: str) -> nn.BatchNorm:
    """TensorFlow's BatchNorm constants. The batch variance is computed in two passes
    (mean first), as PyTorch does: the one-pass E[x^2] - E[x]^2 loses digits where a
    channel's mean dwarfs its spread, and EfficientNet's epsilon (1e-3) hides less."""
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                        epsilon=BN_EPSILON, dtype=dtype, param_dtype=jnp.float32,
                        use_fast_variance=False, name=name)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (ReLU6)."""

    kernel: int
    stride: int
    expand_ratio: int
    in_features: int
    out_features: int
    train: bool
    dtype: layers.Dtype

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        hidden = self.in_features * self.expand_ratio
        x = inputs
        if self.expand_ratio != 1:
            x = _conv(hidden, 1, dtype=self.dtype, name="expand_conv")(x)
            x = jax.nn.relu6(_bn(train=self.train, dtype=self.dtype, name="bn0")(x))
        x = _conv(hidden, self.kernel, stride=self.stride, groups=hidden, dtype=self.dtype,
                  name="depthwise_conv")(x)
        x = jax.nn.relu6(_bn(train=self.train, dtype=self.dtype, name="bn1")(x))
        x = _conv(self.out_features, 1, dtype=self.dtype, name="project_conv")(x)
        x = _bn(train=self.train, dtype=self.dtype, name="bn2")(x)
        if self.stride == 1 and self.in_features == self.out_features:
            x = x + inputs
        return x


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite classifier; `__call__` returns logits, or (logits, features).

    Attributes:
      width_coefficient, depth_coefficient: the variant (see EFFICIENTNET_LITES).
      num_classes: size of the classifier head.
      in_channels: channels of the input images (checked at call time).
      dtype: computation dtype (float32 or bfloat16); parameters stay float32.
      memory: "naive" or "recompute" (each MBConv block under nn.remat; see remat.py).
      remat_policy: name of a jax.checkpoint policy, used when memory="recompute".
      head: "linear" (the reference's) or "cosine" (layers.CosineClassifier).
    """

    width_coefficient: float = 1.0
    depth_coefficient: float = 1.0
    num_classes: int = 1000
    in_channels: int = 3
    dtype: layers.Dtype = jnp.float32
    memory: str = "naive"
    remat_policy: str = DEFAULT_REMAT_POLICY
    head: str = "linear"
    # What the ImageNet weights expect on [0, 1] pixels (tlc_jax.preprocess reads these).
    input_mean = tuple(m / 255.0 for m in MEAN_RGB)
    input_std = tuple(s / 255.0 for s in STDDEV_RGB)

    def __post_init__(self):
        check_memory_mode(self.memory, self.remat_policy)
        layers.check_head(self.head)
        super().__post_init__()

    @property
    def num_stages(self) -> int:
        return NUM_STAGES

    @property
    def block_specs(self) -> tuple[BlockSpec, ...]:
        return block_specs(self.width_coefficient, self.depth_coefficient)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False,
                 return_features: bool = False, frozen_stages: int = 0):
        """Logits (B, num_classes), and the pooled features (B, 1280) if asked.

        `frozen_stages` = s freezes the first s stages (see the module docstring):
        their BatchNorms use running statistics and no gradient flows back into them.
        """
        layers.check_input(x, self.in_channels, type(self).__name__)
        x = x.astype(self.dtype)
        x = _conv(STEM_FEATURES, 3, stride=2, dtype=self.dtype, name="conv_stem")(x)
        x = jax.nn.relu6(_bn(train=train and frozen_stages < 1, dtype=self.dtype,
                             name="bn0")(x))
        block_cls = maybe_remat(MBConv, self.memory, self.remat_policy)
        specs = self.block_specs
        for i, s in enumerate(specs):
            x = block_cls(s.kernel, s.stride, s.expand_ratio, s.in_features,
                          s.out_features, train and frozen_stages < s.stage, self.dtype,
                          name=f"blocks_{i}")(x)
            stage_ends = i + 1 == len(specs) or specs[i + 1].stage != s.stage
            if stage_ends and s.stage < NUM_STAGES and frozen_stages == s.stage:
                x = jax.lax.stop_gradient(x)
        x = _conv(HEAD_FEATURES, 1, dtype=self.dtype, name="conv_head")(x)
        x = jax.nn.relu6(_bn(train=train and frozen_stages < NUM_STAGES, dtype=self.dtype,
                             name="bn1")(x))
        if frozen_stages == NUM_STAGES:
            x = jax.lax.stop_gradient(x)
        features = layers.global_avg_pool(x)
        logits = layers.classifier(self.num_classes, dtype=self.dtype, head=self.head,
                                   name="fc")(features)
        return (logits, features) if return_features else logits


def param_stage(model: EfficientNetLite, name: str) -> int | None:
    """Stage (1-based) of a top-level submodule; None for the classifier (fc)."""
    if name == "fc":
        return None
    if name in ("conv_stem", "bn0"):
        return 1
    if name in ("conv_head", "bn1"):
        return NUM_STAGES
    specs = model.block_specs
    if name.startswith("blocks_") and name[7:].isdigit() and int(name[7:]) < len(specs):
        return specs[int(name[7:])].stage
    raise ValueError(f"Parameter group {name!r} belongs to no known stage.")


def efficientnet_lite_variant(name: str, **kwargs) -> EfficientNetLite:
    """`name` (efficientnet_lite0 ... efficientnet_lite4); kwargs go to the module."""
    width, depth, _, _ = EFFICIENTNET_LITES[name]
    return EfficientNetLite(width_coefficient=width, depth_coefficient=depth, **kwargs)
