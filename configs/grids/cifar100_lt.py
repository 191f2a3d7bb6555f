"""CIFAR-100-LT at imbalance ratios 100 and 10, the TLC paper's protocol: TLC against
the long-tail field's baselines on a GPU.

    CIFAR_ROOT=/data/cifar python -m tlc_jax.experiments \
        --grid=configs/grids/cifar100_lt.py --workdir=runs/grids/cifar100_lt --parallel=1

configs/cifar100_lt.py as it is: ImageNet-pretrained DenseNet-121 (torchvision's
weights, fetched once), a new head warmed up for 10 epochs with the backbone frozen,
then 200 epochs of SGD with the first two dense blocks frozen; native 32 px images,
Cao et al.'s exponential long tail of the official training set, the official test set.
Every method gets the same network, data and epochs (tlc_jax/experiments/methods.py):
DRS / DRW switch on at epoch 160 of 200 and cRT re-trains the classifier for 10 epochs,
as Cao et al. and Kang et al. do. The CIFAR archive is downloaded into $CIFAR_ROOT
(default data/cifar) if missing (MD5-checked); the weights into the weight cache.
2 ratios x 22 methods x 3 seeds = 132 runs, each 200+ epochs of DenseNet-121: a GPU
grid, not yet run (no GPU run of it has been measured; docs/RESULTS.md says when).
"""

import os

from tlc_jax.experiments.methods import cifar_lt_grid


def get_grid():
    return cifar_lt_grid(100, os.environ.get("CIFAR_ROOT", "data/cifar"))
