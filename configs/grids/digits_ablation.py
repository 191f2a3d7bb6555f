"""Ablation on the embedded digits default: what active sampling, augmentation and the
paper's losses do.

    python -m tlc_jax.experiments --grid=configs/grids/digits_ablation.py \
        --workdir=workdir/grids/digits_ablation --parallel=2

configs/digits_lt.py as it is (8 x 8 digits upsampled to 16 px, long tail ratio 10,
DenseNet-BC-16 k 12 from scratch, 40 epochs, CE) with TLC's active sampling and online
augmentation, against the same without active sampling (uniform instance sampling) and
without augmentation, and with the focal and COT losses; seeds 0, 1, 2 (each seed also
draws its own split and test set, shared by the methods). Fifteen runs; one took 42 s
wall clock (28 s of training) on 2 shared CPU cores (2026-11-30).
"""


def get_grid():
    return {
        "description": "TLC on the digits default against itself without active "
                       "sampling, without online augmentation, and with the focal "
                       "and COT losses.",
        "config": "configs/digits_lt.py",
        "methods": {
            "tlc": {},
            "no-active-sampling": {"sampling.composition": "instance"},
            "no-augmentation": {"augment.enabled": False},
            "focal": {"train.loss": "focal"},
            "cot": {"train.loss": "cot"},
        },
        "seeds": [0, 1, 2],
    }
