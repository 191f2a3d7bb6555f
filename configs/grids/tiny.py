"""The smallest grid: two methods x two seeds of a tiny DenseNet on 8 x 8 digits.

    python -m tlc_jax.experiments --grid=configs/grids/tiny.py --workdir=/tmp/tiny_grid

What tests/core/test_experiments.py runs (about 12 s per run on 2 CPU cores): the
digits default shrunk as tests/helpers.py's tiny_config shrinks it (native 8 px,
DenseNet-BC depth 10, k 4, batch 4 x 10, constant rate 0.05), one epoch. Its numbers
only show that the machinery works.
"""


def get_grid():
    return {
        "description": "Smoke test of the experiment runner: numbers without meaning "
                       "(one epoch of a tiny network).",
        "config": "configs/digits_lt.py",
        "methods": {
            "tlc": {},
            "no-aug": {"augment.enabled": False},
        },
        "seeds": [0, 1],
        "overrides": {
            "data.image_size": 0,
            "model.depth": 10,
            "model.growth_rate": 4,
            "train.epochs": 1,
            "train.images_per_class": 4,
            "train.lr_schedule": "constant",
            "train.learning_rate": 0.05,
            "eval.batch_size": 64,
        },
    }
