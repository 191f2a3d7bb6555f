"""Caltech101 (9,146 images, 101 classes, 40-800 per class) with the TLC protocol.

    python -m tlc_jax.main --config=configs/caltech101.py \
        --config.data.root=/data/caltech101 --workdir=/runs/caltech101

`data.root` holds 101_ObjectCategories/ (or is it). Paper protocol: 80% train / 20%
test; ImageNet-pretrained DenseNet-121 at 224 px; warm-up 10 epochs (Adam, batch 128)
training only the head; 200 epochs of SGD (lr 0.0006, momentum 0.9) with the first
THREE dense blocks frozen (Caltech101 only) and active sampling.
Arguments: loss=ce|focal|cot, pretrained=imagenet.
"""

from tlc_jax.config import base_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, loss="ce", pretrained="imagenet")
    c = base_config()
    c.data.name = "caltech101"
    c.data.image_size = 224
    c.data.exclude_classes = ("BACKGROUND_Google",)  # Not one of the 101 categories.
    c.data.test_fraction = 0.2  # Paper: 80 / 20, stratified.
    c.data.contrast_fraction = 0.1  # Of the remaining training images.
    c.data.cache_dir = ""  # Set to cache the decoded 224 px arrays between runs.
    c.model.name = "densenet121"
    c.model.pretrained = a.pretrained
    c.train.images_per_class = 2  # B = 2 x 101 = 202.
    c.train.frozen_stages = 3  # Paper: three frozen blocks for Caltech101.
    c.train.loss = a.loss
    c.augment.crop_padding = 16  # At 224 px.
    c.lock()
    return c
