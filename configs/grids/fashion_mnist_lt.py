"""Fashion-MNIST-LT at imbalance ratios 100 and 10: TLC against instance sampling, and
TLC with the focal and COT losses.

    apt-get install dataset-fashion-mnist     # Debian: /usr/share/datasets/fashion-mnist
    python -m tlc_jax.experiments --grid=configs/grids/fashion_mnist_lt.py \
        --workdir=workdir/grids/fashion_mnist_lt

configs/fashion_mnist_lt.py as it is (Cao et al.'s exponential long tail of the official
training images, the official t10k test set, DenseNet-BC-16 k 12 from scratch, 10
epochs): 2 ratios x 4 methods x seeds 0, 1, 2 = 24 runs. Methods: tlc (the config:
active sampling, CE), instance (uniform instance sampling, CE), tlc-focal and tlc-cot
(active sampling with the focal / COT loss). A run trains on about 90% of 14,886
(ratio 100) or 24,516 (ratio 10) images per epoch; at the config's figure of about 270
images/s on 2 CPU cores that is 8 to 14 minutes a run, hours for the grid. The
scikit-learn row took 81 s (ratio 100) and 206 s (ratio 10) for seed 0 on 2 shared
CPU cores (2026-11-30).
"""


def get_grid():
    return {
        "description": "Fashion-MNIST-LT (exponential profile): TLC against instance "
                       "sampling, and TLC with the focal and COT losses.",
        "config": "configs/fashion_mnist_lt.py",
        "variants": ["ratio=100", "ratio=10"],
        "methods": {
            "tlc": {},
            "instance": {"sampling.composition": "instance"},
            "tlc-focal": {"train.loss": "focal"},
            "tlc-cot": {"train.loss": "cot"},
        },
        "seeds": [0, 1, 2],
    }
