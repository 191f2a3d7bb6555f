"""The trainer's config schema: every field, its default and its unit, in one place.

Experiment files in configs/ (digits_lt.py, cifar100_lt.py, ...) call `base_config()`,
changes what differs, and returns the config locked, so a mistyped field fails:
    python -m tlc_jax.main --config=configs/cifar100_lt.py:ratio=10,loss=cot \
        --config.train.epochs=50 --workdir=/tmp/run
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults):
    """big_vision-style 'a=1,b=x' -> ConfigDict over `defaults`; unknown keys fail."""
    out = ml_collections.ConfigDict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"Config argument {item!r}: expected key=value with key in "
                             f"{sorted(defaults)}.")
        kind = type(defaults[key])
        out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return out


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # Seeds data splits, long-tail construction, init, sampling, augmentation.

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # A name known to tlc_jax.data.load_dataset.
    c.data.root = ""  # Folder with the dataset's files ("" for digits / synthetic).
    c.data.download = False  # Fetch missing archives from the official URL (CIFAR).
    c.data.image_size = 32  # Side (px) folder / digits images are resized to (0: native).
    c.data.exclude_classes = ()  # Image-folder class names to leave out.
    c.data.skip_corrupt = False  # Skip (and log) undecodable images instead of failing.
    c.data.cache_dir = ""  # Cache decoded image folders here as arrays ("" = no cache).
    c.data.channels = 3  # Channels fed to the model (grey images are repeated to 3).
    c.data.imbalance_ratio = 1.0  # n_max / n_min of the long-tailed training set; 1 = as is.
    c.data.longtail_profile = "exp"  # "exp" (Cao et al. 2019) or "step".
    c.data.n_max = 0  # Images of the head class; 0 = the smallest class's count.
    c.data.test_fraction = 0.0  # Share held out for testing when there is no test set.
    c.data.contrast_fraction = 0.1  # Share of each class's training images -> contrast set.
    c.data.min_contrast_per_class = 1  # Floor per class, never emptying a training class.

    c.model = ml_collections.ConfigDict()
    c.model.name = "densenet121"  # See tlc_jax.models.MODEL_NAMES.
    c.model.depth = 100  # densenet_bc only: depth, 4 mod 6.
    c.model.growth_rate = 12  # densenet_bc only: k.
    c.model.memory = "naive"  # "naive" or "recompute" (E-DenseNet).
    c.model.remat_policy = "dots_saveable"  # jax.checkpoint policy when recomputing.
    c.model.dtype = "float32"  # Computation dtype: float32 or bfloat16.
    c.model.pretrained = ""  # "imagenet", a torchvision weight file, an earlier tlc-jax
    #   run's work directory (transfer from your own source task), or "" (random init).
    c.model.weights_dir = ""  # Where ImageNet weight files are cached ("" = default).

    c.augment = ml_collections.ConfigDict()
    c.augment.enabled = True  # TLC's online augmentation (ablation "No Aug." = False).
    c.augment.crop_padding = 4  # Zero padding (px) before the random crop.
    c.augment.flip = True  # Random horizontal flips.
    c.augment.color_jitter = 0.0  # Max relative brightness/contrast/saturation change.
    c.augment.cutout = 0  # Side (px) of a random square set to zero; 0 = off.
    c.augment.offline_copies = 0  # > 0: the paper's offline mode - K augmented copies
    #   of the training set are made before training, and online augmentation is off.

    c.warmup = ml_collections.ConfigDict()
    c.warmup.enabled = True  # Paper: train only the new classifier first (convs frozen).
    c.warmup.epochs = 10  # Paper: 10.
    c.warmup.batch_size = 128  # Paper: 128, uniform instance sampling.
    c.warmup.learning_rate = 1e-3  # Adam.

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 200  # Paper: 200 fine-tuning epochs.
    c.train.images_per_class = 4  # N: batch size B = N x number of classes.
    c.train.learning_rate = 6e-4  # Paper: SGD lr 0.0006.
    c.train.lr_schedule = "constant"  # Paper: "constant"; or "cosine" decay to 0.
    c.train.momentum = 0.9  # Paper: 0.9.
    c.train.weight_decay = 0.0  # Decoupled weight decay on trained parameters.
    c.train.frozen_stages = 2  # Paper: first two dense blocks frozen (three: Caltech101).
    c.train.loss = "ce"  # "ce", "focal" or "cot".
    c.train.focal_gamma = 2.0  # Focal loss gamma.
    c.train.checkpoint_every_epochs = 1  # Save (atomically) every this many epochs.
    c.train.log_every_steps = 50  # Training metrics cadence.

    c.sampling = ml_collections.ConfigDict()
    c.sampling.active = True  # TLC's active sampling; False = uniform instance sampling.
    c.sampling.update_every_steps = 0  # Quota update period; 0 = every epoch.
    c.sampling.min_quota = 1  # Every class keeps at least this many images per batch.
    c.sampling.f1_momentum = 0.0  # EMA of contrast F1; 0 = off, as in the paper.

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256  # Test / contrast evaluation batch (padded, never recompiles).
    return c


LOSSES = ("ce", "focal", "cot")
LR_SCHEDULES = ("constant", "cosine")


def validate(c: ml_collections.ConfigDict) -> None:
    """Fails fast, before any data is read, on values the trainer cannot use."""
    from tlc_jax.data import DATASET_NAMES
    from tlc_jax.models import MEMORY_MODES, MODEL_NAMES, REMAT_POLICIES

    def choice(field: str, value: str, valid) -> None:
        if value not in valid:
            raise ValueError(f"config.{field}={value!r} is not one of: "
                             f"{', '.join(valid)}.")

    choice("data.name", c.data.name, DATASET_NAMES)
    choice("model.name", c.model.name, MODEL_NAMES)
    choice("model.memory", c.model.memory, MEMORY_MODES)
    choice("model.remat_policy", c.model.remat_policy, REMAT_POLICIES)
    choice("model.dtype", c.model.dtype, ("float32", "bfloat16"))
    choice("train.loss", c.train.loss, LOSSES)
    choice("train.lr_schedule", c.train.lr_schedule, LR_SCHEDULES)
    choice("data.longtail_profile", c.data.longtail_profile, ("exp", "step"))
    positive = {"train.epochs": c.train.epochs, "train.images_per_class":
                c.train.images_per_class, "warmup.batch_size": c.warmup.batch_size,
                "eval.batch_size": c.eval.batch_size, "data.channels": c.data.channels,
                "train.checkpoint_every_epochs": c.train.checkpoint_every_epochs,
                "train.log_every_steps": c.train.log_every_steps}
    for field, value in positive.items():
        if value < 1:
            raise ValueError(f"config.{field} must be >= 1; got {value}.")
    if c.data.imbalance_ratio < 1:
        raise ValueError(f"config.data.imbalance_ratio must be >= 1 (n_max / n_min); "
                         f"got {c.data.imbalance_ratio}.")
    if c.train.frozen_stages < 0:
        raise ValueError(f"config.train.frozen_stages must be >= 0; got "
                         f"{c.train.frozen_stages}.")
    if c.sampling.active and c.sampling.min_quota >= c.train.images_per_class:
        raise ValueError(
            f"config.sampling.min_quota={c.sampling.min_quota} leaves active sampling no "
            f"room: each class starts with images_per_class={c.train.images_per_class} "
            f"images per batch. Raise images_per_class or lower min_quota.")
