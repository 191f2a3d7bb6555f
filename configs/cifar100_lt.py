"""CIFAR-100-LT (Cao et al. 2019 construction) with the TLC paper's protocol.

    python -m tlc_jax.main --config=configs/cifar100_lt.py:ratio=10,loss=cot \
        --config.data.root=/data/cifar --workdir=/runs/c100lt_r10_cot

Paper protocol: ImageNet-pretrained DenseNet-121, a new 100-class
head; warm-up 10 epochs training only the head (Adam, batch 128); then 200 epochs of
SGD (lr 0.0006, momentum 0.9) with the first two dense blocks frozen and active
sampling. Training sets: 10,847 images at ratio 100 (tail classes keep 5 images: the
split keeps at least 4 of them for training), 19,573 at ratio 10.
Arguments: ratio=100|10, loss=ce|focal|cot, download=false, pretrained=imagenet.
"""

from tlc_jax.config import base_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, ratio=100.0, loss="ce", download=False, pretrained="imagenet")
    c = base_config()
    c.data.name = "cifar100"
    c.data.download = a.download  # Fetches cifar-100-python.tar.gz (MD5-checked).
    c.data.imbalance_ratio = a.ratio
    c.data.n_max = 500  # Cao et al.: the head class keeps all 500 images.
    c.data.contrast_fraction = 0.1
    c.data.min_contrast_per_class = 1  # Tail classes of 5: 4 train + 1 contrast.
    c.model.name = "densenet121"
    c.model.pretrained = a.pretrained
    # N = 2: B = 200. With N = 1 the min_quota floor of 1 would pin every class at 1
    # and active sampling could never move an image between classes.
    c.train.images_per_class = 2
    c.train.loss = a.loss
    c.lock()
    return c
