"""Fashion-MNIST-LT ratio 100: can the paper's transfer protocol reach 0.90 balanced
accuracy (issue 13's goal; the protocol as configured gives 0.890 +- 0.001 with TLC)?
Each row changes one choice of configs/fashion_mnist_lt_transfer.py (64 px, ImageNet
weights, TLC's active sampling) - fewer frozen stages, a larger EfficientNet-Lite, a
longer fine-tuning, LDAM's loss (with active sampling throughout or deferred) - and is judged on the contrast set (results.md's
contrast column), never on the test set: screened on seed 0, the best on the contrast
set then run on seeds 1-2.

    pip install -e ".[torch,weights]"
    python -m tlc_jax.experiments --grid=configs/grids/fashion_mnist_lt_transfer_tuning.py \
        --workdir=workdir/grids/fashion_mnist_lt_transfer_tuning

The `tlc` row is the transfer grid's cell (same command, so the same record). On 2 CPU
cores with tcmalloc a run takes 7 (tlc) to about 15 minutes (18 fine-tuning epochs).
"""

SIZE = 64


def get_grid():
    return {
        "description": "Fashion-MNIST-LT ratio 100, EfficientNet-Lite from ImageNet "
                       f"weights at {SIZE} px with TLC: one protocol choice changed per "
                       "row, chosen on the contrast set.",
        "config": "configs/fashion_mnist_lt_transfer.py",
        "variants": {f"ratio=100_size={SIZE}_imagenet": f"ratio=100,size={SIZE},pretrained=true"},
        "methods": {
            "tlc": {},  # Two of Lite0's four stages frozen, 2 + 8 epochs.
            "tlc-frozen1": {"train.frozen_stages": 1},  # Stem + group 1 frozen.
            "tlc-frozen0": {"train.frozen_stages": 0},  # The whole backbone trains.
            "tlc-lite1": {"model.name": "efficientnet_lite1"},  # Its own ImageNet weights.
            "tlc-18epochs": {"train.epochs": 18},  # 2 + 18 epochs: twice the budget.
            # Active sampling with LDAM's margins and cosine classifier (no deferred
            # re-weighting: the quotas already rebalance), added after LDAM-DRW on this
            # network led seed 0 (docs/RESULTS.md).
            "tlc-ldam": {"train.loss": "ldam", "model.head": "cosine"},
            # LDAM-DRW's schedule with its deferred re-weighting replaced by deferred
            # active sampling: instance sampling for fine-tuning epochs 0-5, TLC's quotas
            # for epochs 6-7 (the "active sampling on top of DRW").
            "tlc-ldam-deferred": {"train.loss": "ldam", "model.head": "cosine",
                                  "sampling.defer_epochs": 6},
        },
        "seeds": [0, 1, 2],
        "records": "docs/results/records/fashion_mnist_lt_transfer",
    }
