"""HAM10000 (10,015 dermatoscopic images, 7 classes, max ratio 58.3) with TLC.

    python -m tlc_jax.main --config=configs/ham10000.py \
        --config.data.root=/data/ham10000 --workdir=/runs/ham10000

`data.root` holds HAM10000_metadata.csv and the image folders. Splits are by lesion:
the several images of one lesion never land in two splits. Paper protocol: 80% train /
20% test; ImageNet-pretrained DenseNet-121 at 224 px; warm-up 10 epochs (Adam, batch
128) training only the head; 200 epochs of SGD (lr 0.0006, momentum 0.9) with the first
two dense blocks frozen and active sampling.
Arguments: loss=ce|focal|cot, pretrained=imagenet.
"""

from tlc_jax.config import base_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, loss="ce", pretrained="imagenet")
    c = base_config()
    c.data.name = "ham10000"
    c.data.image_size = 224
    c.data.test_fraction = 0.2  # Paper: 80 / 20 (grouped by lesion).
    c.data.contrast_fraction = 0.1
    c.model.name = "densenet121"
    c.model.pretrained = a.pretrained
    c.train.images_per_class = 16  # B = 16 x 7 = 112.
    c.train.loss = a.loss
    c.augment.crop_padding = 16
    c.lock()
    return c
