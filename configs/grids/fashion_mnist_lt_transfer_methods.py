"""Fashion-MNIST-LT with the paper's whole protocol - ImageNet weights, warm-up, partial
freezing - for every method: TLC and its variants against the long-tail field's
baselines on the same pretrained EfficientNet-Lite0 at 64 px, ratios 100 and 10.

    pip install -e ".[torch,weights]"
    python -m tlc_jax.experiments --grid=configs/grids/fashion_mnist_lt_transfer_methods.py \
        --workdir=workdir/grids/fashion_mnist_lt_transfer_methods

configs/grids/fashion_mnist_lt.py compares the methods on a DenseNet-BC-16 trained from
scratch; TLC is a transfer-learning method, so this grid compares them where TLC is
meant to run: configs/fashion_mnist_lt_transfer.py (2 warm-up epochs of the new head
with the backbone frozen, then 8 epochs with the first two of four stages frozen), the
same for every method - only the fine-tuning's batch composition, loss, classifier or
evaluation-time correction differs (tlc_jax/experiments/methods.py). 64 px: the size
configs/grids/fashion_mnist_lt_transfer.py chose on the contrast set (docs/RESULTS.md).
DRS / DRW switch at fine-tuning epoch 6 of 8 (Cao et al.: 160 of 200), cRT re-trains the
classifier for 2 epochs. The `tlc` and `class-balanced` cells are those of the transfer
grid at 64 px (same command, so the same records folder serves both). About 7 minutes a
ratio-100 run on 2 CPU cores with tcmalloc (2026-12-07): 22 methods x 2 ratios x 3
seeds is a grid for several sessions or a GPU.
"""

from tlc_jax.experiments.methods import long_tail_methods

SIZE = 64


def get_grid():
    return {
        "description": "Fashion-MNIST-LT, the paper's transfer protocol (EfficientNet-Lite0 "
                       f"from ImageNet weights, {SIZE} px): TLC against the long-tail "
                       "field's baselines, same network, weights and budget.",
        "config": "configs/fashion_mnist_lt_transfer.py",
        "variants": {f"ratio={r}_size={SIZE}_imagenet": f"ratio={r},size={SIZE},pretrained=true"
                     for r in (100, 10)},
        "methods": long_tail_methods(defer_epoch=6, crt_epochs=2),
        "seeds": [0, 1, 2],
        "records": "docs/results/records/fashion_mnist_lt_transfer",
    }
