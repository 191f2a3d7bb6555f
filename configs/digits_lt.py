"""The embedded default: scikit-learn's 8x8 digits made long-tailed; needs no download.

    python -m tlc_jax.main --config=configs/digits_lt.py --workdir=workdir/digits_lt

A small DenseNet-BC is trained from scratch: there are no ImageNet weights for 8x8 grey
digits, so the paper's warm-up (which trains only the classifier on top of pretrained
convolutions) and its frozen blocks are off here; everything else - online
augmentation, active sampling from contrast-set F1, the report - is the paper's
protocol. Arguments: configs/digits_lt.py:ratio=10,loss=ce,epochs=40,active=true
"""

from tlc_jax.config import base_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, ratio=10.0, loss="ce", epochs=40, active=True)
    c = base_config()
    c.data.name = "digits"
    c.data.image_size = 16  # 8x8 digits upsampled (nearest) to 16x16.
    c.data.channels = 1  # Grey.
    c.data.imbalance_ratio = a.ratio  # ~150 images of the head class, ~15 of the tail.
    c.data.test_fraction = 0.3  # Balanced test set carved out before the long tail.
    c.data.contrast_fraction = 0.15
    c.data.min_contrast_per_class = 2

    c.model.name = "densenet_bc"
    c.model.depth = 16  # 2 bottleneck layers per block: small enough for CPUs.
    c.model.growth_rate = 12

    c.augment.crop_padding = 2  # Digits are centred; small shifts only.
    c.augment.flip = False  # Mirrored digits are other digits.

    c.warmup.enabled = False  # No pretrained backbone to keep (see the docstring).
    c.train.epochs = a.epochs
    c.train.images_per_class = 8  # B = 8 x 10 = 80.
    c.train.learning_rate = 0.1  # From scratch needs a larger rate than fine-tuning,
    c.train.lr_schedule = "cosine"  # and a decaying one to settle.
    c.train.weight_decay = 5e-4
    c.train.frozen_stages = 0
    c.train.loss = a.loss
    c.train.log_every_steps = 20

    c.sampling.composition = "active" if a.active else "instance"
    c.eval.batch_size = 128
    c.lock()
    return c
