"""CIFAR-10-LT (Cao et al. 2019 construction) with the TLC paper's protocol.

    python -m tlc_jax.main --config=configs/cifar10_lt.py:ratio=100,loss=ce \
        --config.data.root=/data/cifar --workdir=/runs/c10lt_r100_ce

Paper protocol: ImageNet-pretrained DenseNet-121, a new 10-class
head; warm-up 10 epochs training only the head (Adam, batch 128); then 200 epochs of
SGD (lr 0.0006, momentum 0.9) with the first two dense blocks frozen and active
sampling (batch N x C). Training sets: 12,406 images at ratio 100, 20,431 at 10; the
official test set stays balanced. Images stay at their native 32 px.
Arguments: ratio=100|10, loss=ce|focal|cot, download=false, pretrained=imagenet.
"""

from tlc_jax.config import base_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, ratio=100.0, loss="ce", download=False, pretrained="imagenet")
    c = base_config()
    c.data.name = "cifar10"
    c.data.download = a.download  # Fetches cifar-10-python.tar.gz (MD5-checked).
    c.data.imbalance_ratio = a.ratio
    c.data.n_max = 5000  # Cao et al.: the head class keeps all 5,000 images.
    c.data.contrast_fraction = 0.1  # Carved from the long-tailed training set.
    c.model.name = "densenet121"
    c.model.pretrained = a.pretrained
    c.train.images_per_class = 12  # N: B = 12 x 10 = 120.
    c.train.loss = a.loss
    c.lock()
    return c
