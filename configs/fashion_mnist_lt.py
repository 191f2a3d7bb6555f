"""Fashion-MNIST-LT: a real long-tailed benchmark that needs no download.

    apt-get install dataset-fashion-mnist     # Debian: /usr/share/datasets/fashion-mnist
    python -m tlc_jax.main --config=configs/fashion_mnist_lt.py:ratio=100,seed=0 \
        --workdir=workdir/fmnist_lt_r100_s0

The long tail is cut from the 60,000 official training images with Cao et al.'s
construction (class i of 10 keeps floor(6000 * ratio^(-i/9)) images, T-shirt/top the
head, Ankle boot the tail; each class's images a seeded prefix), the contrast set is
carved from those (10% per class), and the official t10k set (1,000 per class) is the
balanced test set. Images per class before the contrast split:
    exp  ratio 100: 6000 3596 2156 1292 774 464 278 166 100  60  (14,886)
    exp  ratio  50: 6000 3884 2515 1628 1054 682 442 286 185 120  (16,796)
    exp  ratio  10: 6000 4645 3596 2784 2156 1669 1292 1000 774 600  (24,516)
    step ratio 100: 5 x 6000, 5 x 60 (30,300); ratio 50: 5 x 120 (30,600); 10: 5 x 600
A small DenseNet-BC (depth 16, k 12) trains from scratch on the native 28 x 28 grey
images - there are no ImageNet weights for these, so the paper's warm-up and frozen
blocks are off - with SGD 0.1, cosine decay, batch 8 x 10 = 80.
Arguments: ratio=100|50|10, profile=exp|step, seed, epochs, loss (config.train.loss),
composition (config.sampling.composition), root=<folder with the four IDX files>.
"""

from tlc_jax.config import base_config, parse_arg

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"  # apt-get install dataset-fashion-mnist


def get_config(arg=None):
    a = parse_arg(arg, ratio=100.0, profile="exp", seed=0, epochs=10, loss="ce",
                  composition="active", root=DEBIAN_ROOT)
    c = base_config()
    c.seed = a.seed
    c.data.name = "fashion_mnist"
    c.data.root = a.root
    c.data.channels = 1  # Grey, native 28 x 28.
    c.data.imbalance_ratio = a.ratio
    c.data.longtail_profile = a.profile
    c.data.n_max = 6000  # The head keeps every training image of its class.
    c.data.contrast_fraction = 0.1  # From the long-tailed training images.
    c.data.min_contrast_per_class = 2

    c.model.name = "densenet_bc"
    c.model.depth = 16  # 2 bottleneck layers per block: about 270 img/s on 2 cores.
    c.model.growth_rate = 12

    c.augment.crop_padding = 2  # Small shifts; garments are centred.
    c.augment.flip = True  # A mirrored garment is the same garment.

    c.warmup.enabled = False  # From scratch: no pretrained backbone to keep.
    c.train.epochs = a.epochs
    c.train.images_per_class = 8  # B = 8 x 10 = 80.
    c.train.learning_rate = 0.1  # From scratch: a large rate that decays.
    c.train.lr_schedule = "cosine"
    c.train.weight_decay = 5e-4
    c.train.frozen_stages = 0
    c.train.loss = a.loss
    c.train.log_every_steps = 50

    c.sampling.composition = a.composition  # See tlc_jax/config.py.
    c.eval.batch_size = 500
    c.lock()
    return c
