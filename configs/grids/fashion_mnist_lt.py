"""Fashion-MNIST-LT at imbalance ratios 100 and 10: TLC against the field's baselines.

    apt-get install dataset-fashion-mnist     # Debian: /usr/share/datasets/fashion-mnist
    python -m tlc_jax.experiments --grid=configs/grids/fashion_mnist_lt.py \
        --workdir=workdir/grids/fashion_mnist_lt

configs/fashion_mnist_lt.py as it is (Cao et al.'s exponential long tail of the official
training images, the official t10k test set, DenseNet-BC-16 k 12 from scratch, 10
epochs, SGD 0.1 cosine, batch 80), the same budget for every method; seeds 0, 1, 2.
Methods (tlc_jax/experiments/methods.py; README, "The field's baselines"):
    tlc, tlc-focal, tlc-cot      active sampling (the paper's rule) with CE / focal / COT
    tlc-balanced-softmax         active sampling with the batch-prior-corrected loss
    tlc-balanced-f1, tlc-recall, tlc-recall-balanced-softmax, tlc-mix, tlc-combined
                                 candidate improvements of the quota rule (README,
                                 "Active sampling variants")
    instance                     uniform instance sampling, CE
    class-balanced, sqrt, progressive   static / scheduled class quotas, CE
    drs                          instance, then class-balanced from epoch 8 (Cao et al.)
    cb-ce                        instance, CE weighted by effective number (Cui et al.)
    ldam-drw                     instance, LDAM on the cosine head, effective-number
                                 weights from epoch 8
    logit-adjusted, posthoc-la, balanced-softmax    Menon et al. / Ren et al.
    crt, tau-norm                instance CE, then Kang et al.'s decoupled corrections
DRS / DRW defer to epoch 8 of 10 (Cao et al.: 160 of 200); cRT re-trains the classifier
for 2 epochs (Kang et al.: 10 of 90). A run trains on about 90% of 14,886 (ratio 100)
or 24,516 (ratio 10) images per epoch, about 270 images/s on 2 CPU cores: 8 to 14
minutes a run, days for the whole grid on 2 cores - run it across sessions or with
--parallel on a larger machine; the runner skips finished runs.
"""

from tlc_jax.experiments.methods import long_tail_methods


def get_grid():
    return {
        "description": "Fashion-MNIST-LT (exponential profile): TLC against the "
                       "long-tail field's baselines, same model and budget.",
        "config": "configs/fashion_mnist_lt.py",
        "variants": ["ratio=100", "ratio=10"],
        "methods": long_tail_methods(defer_epoch=8, crt_epochs=2),
        "seeds": [0, 1, 2],
        # Every finished run is recorded here (committed), so the grid continues on
        # a fresh machine: runs recorded there are not trained again.
        "records": "docs/results/records/fashion_mnist_lt",
    }
