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
    c.data.resize_to = 0  # Side (px) every chosen image (any dataset) is then resized to,
    #   bilinear, e.g. 28 px Fashion-MNIST up for an ImageNet network; 0 = as loaded.
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
    c.model.head = "linear"  # Classifier: "linear" (with bias) or "cosine" (normalised
    #   features and class vectors, no bias: LDAM's classifier, needed by train.loss=ldam).
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
    c.train.loss = "ce"  # ce, focal, cot, ldam, logit_adjusted or balanced_softmax
    #   (tlc_jax.step.LOSSES); the last two correct for the batch's class prior.
    c.train.focal_gamma = 2.0  # Focal loss gamma.
    c.train.ldam_max_margin = 0.5  # LDAM: the rarest class's margin (Cao et al.: 0.5).
    c.train.ldam_scale = 30.0  # LDAM: logit scale s (Cao et al.: 30).
    c.train.logit_adjust_tau = 1.0  # logit_adjusted loss: tau (Menon et al.: 1).
    c.train.class_weighting = "none"  # "none" or "effective_number" (Cui et al. 2019).
    c.train.cb_beta = 0.9999  # Effective-number beta (Cui et al.; LDAM-DRW: 0.9999).
    c.train.reweight_epoch = 0  # Deferred re-weighting (DRW, Cao et al. 2019): class
    #   weights only from this fine-tuning epoch on (0-based); 0 = from the start.
    c.train.checkpoint_every_epochs = 1  # Save (atomically) every this many epochs.
    c.train.log_every_steps = 50  # Training metrics cadence.

    c.sampling = ml_collections.ConfigDict()
    c.sampling.composition = "active"  # Fine-tuning batches: "active" (TLC: quotas from
    #   contrast F1, Eq. 4), "instance" (uniform over images), "class_balanced" (equal
    #   quotas), "sqrt" (quotas ~ sqrt(n_k)), "progressive" (instance -> balanced).
    c.sampling.defer_epochs = 0  # Deferred re-sampling (DRS, Cao et al. 2019): instance
    #   sampling for this many fine-tuning epochs, then `composition`; 0 = off.
    c.sampling.update_every_steps = 0  # Quota update period; 0 = every epoch.
    c.sampling.min_quota = 1  # Every class keeps at least this many images per batch.
    c.sampling.f1_momentum = 0.0  # EMA of the contrast score; 0 = off, as in the paper.
    c.sampling.signal = "f1"  # Per-class contrast score Eq. 4 reads: "f1" (paper) or
    #   "recall" (not lowered by head classes' false positives).
    c.sampling.balanced_contrast = False  # Score on the contrast confusion matrix
    #   re-weighted to equal class sizes (the balanced test prior).
    c.sampling.mix_balanced = 0.0  # Quotas = (1 - a) Eq. 4 + a equal shares; 0 = Eq. 4.

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256  # Test / contrast evaluation batch (padded, never recompiles).
    c.eval.logit_adjust_tau = 0.0  # Post-hoc logit adjustment (Menon et al. 2021):
    #   logits - tau * log(training prior) at evaluation; 0 = off (their tau: 1).
    c.eval.tau_norm = 0.0  # tau-normalised classifier (Kang et al. 2020): w_k / |w_k|^tau
    #   at evaluation; 0 = off.
    c.eval.tau_candidates = ()  # Non-empty: the tau of the correction turned on above
    #   (tau_norm or logit_adjust_tau, exactly one) is chosen from these by contrast-set
    #   balanced accuracy (Kang et al. tune tau on held-out data), e.g. "(0.,0.25,0.5,1.)";
    #   the choice and every candidate's score go into report.json.

    c.decoupled = ml_collections.ConfigDict()
    c.decoupled.enabled = False  # cRT (Kang et al. 2020): after fine-tuning, re-train a
    #   fresh classifier on the frozen backbone with class-balanced batches.
    c.decoupled.epochs = 10  # cRT epochs (Kang et al.: 10).
    c.decoupled.learning_rate = 0.1  # cRT SGD learning rate, cosine decay to 0.
    c.decoupled.images_per_class = 0  # cRT batch = this x classes; 0 = train's.
    return c


LR_SCHEDULES = ("constant", "cosine")
CLASS_WEIGHTINGS = ("none", "effective_number")


def _flag_spelling(python_literal: str) -> str:
    """A default as typed on the command line: false, not False; cifar, not "cifar"."""
    import ast

    try:
        value = ast.literal_eval(python_literal)
    except (ValueError, SyntaxError):
        return python_literal
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value or '""'
    return python_literal


def reference() -> str:
    """Every config field with its default and comment, read from `base_config`'s
    source (the one place they are written): the text `tlc_jax.main --help` prints."""
    import inspect
    import re

    lines, out = inspect.getsource(base_config).splitlines(), []
    field = re.compile(r"^\s*c\.(\w+(?:\.\w+)?) = (.*?)(?:\s+#\s?(.*))?$")
    for line in lines:
        m = field.match(line)
        if m and "ConfigDict()" not in m.group(2):
            out.append(f"  --config.{m.group(1)}={_flag_spelling(m.group(2))}"
                       + (f"\n      {m.group(3)}" if m.group(3) else ""))
        elif out and re.match(r"^\s*#\s{2,}", line):  # A comment's continuation.
            out[-1] += " " + line.strip().lstrip("#").strip()
    return "\n".join(out)


def validate(c: ml_collections.ConfigDict) -> None:
    """Fails fast, before any data is read, on values the trainer cannot use."""
    from tlc_jax.data import DATASET_NAMES
    from tlc_jax.models import MEMORY_MODES, MODEL_NAMES, REMAT_POLICIES
    from tlc_jax.active_sampling import SIGNALS
    from tlc_jax.stages import BATCH_COMPOSITIONS
    from tlc_jax.models.layers import HEADS
    from tlc_jax.step import LOSSES

    def choice(field: str, value: str, valid) -> None:
        if value not in valid:
            raise ValueError(f"config.{field}={value!r} is not one of: "
                             f"{', '.join(valid)}.")

    choice("data.name", c.data.name, DATASET_NAMES)
    choice("model.name", c.model.name, MODEL_NAMES)
    choice("model.memory", c.model.memory, MEMORY_MODES)
    choice("model.remat_policy", c.model.remat_policy, REMAT_POLICIES)
    choice("model.dtype", c.model.dtype, ("float32", "bfloat16"))
    choice("model.head", c.model.head, HEADS)
    choice("train.loss", c.train.loss, LOSSES)
    choice("train.lr_schedule", c.train.lr_schedule, LR_SCHEDULES)
    choice("train.class_weighting", c.train.class_weighting, CLASS_WEIGHTINGS)
    choice("sampling.composition", c.sampling.composition, BATCH_COMPOSITIONS)
    choice("sampling.signal", c.sampling.signal, SIGNALS)
    choice("data.longtail_profile", c.data.longtail_profile, ("exp", "step"))
    positive = {"train.epochs": c.train.epochs, "train.images_per_class":
                c.train.images_per_class, "warmup.batch_size": c.warmup.batch_size,
                "eval.batch_size": c.eval.batch_size, "data.channels": c.data.channels,
                "train.checkpoint_every_epochs": c.train.checkpoint_every_epochs,
                "train.log_every_steps": c.train.log_every_steps}
    for field, value in positive.items():
        if value < 1:
            raise ValueError(f"config.{field} must be >= 1; got {value}.")
    size = c.data.image_size
    sizes = size if isinstance(size, (tuple, list)) else (size,)
    if not (len(sizes) in (1, 2) and all(isinstance(v, int) and v >= 0 for v in sizes)
            and (len(sizes) == 1 or min(sizes) > 0)):
        raise ValueError(f"config.data.image_size must be a side in pixels >= 1 (or 0 "
                         f"for the native size), or (height, width); got {size!r}. E.g. "
                         f"--config.data.image_size=32.")
    if c.data.channels not in (1, 3):
        raise ValueError(f"config.data.channels must be 1 (grey) or 3 (RGB); got "
                         f"{c.data.channels}.")
    for field in ("test_fraction", "contrast_fraction"):
        if not 0 <= c.data[field] < 1:
            raise ValueError(f"config.data.{field} must lie in [0, 1); got "
                             f"{c.data[field]}.")
    for field in ("n_max", "min_contrast_per_class", "resize_to"):
        if c.data[field] < 0:
            raise ValueError(f"config.data.{field} must be >= 0; got {c.data[field]}.")
    if c.model.pretrained == "imagenet":
        from tlc_jax.pretrained import IMAGENET_MODELS

        if c.model.name not in IMAGENET_MODELS:
            raise ValueError(
                f"config.model.pretrained='imagenet', but no ImageNet weights are "
                f"published for config.model.name={c.model.name!r}; models that have "
                f"them: {', '.join(IMAGENET_MODELS)}. Or set --config.model.pretrained="
                f"'' (random initialisation), a weights file or an earlier run's folder.")
    if c.data.imbalance_ratio < 1:
        raise ValueError(f"config.data.imbalance_ratio must be >= 1 (n_max / n_min); "
                         f"got {c.data.imbalance_ratio}.")
    if c.train.frozen_stages < 0:
        raise ValueError(f"config.train.frozen_stages must be >= 0; got "
                         f"{c.train.frozen_stages}.")
    if (c.sampling.composition == "active"
            and c.sampling.min_quota >= c.train.images_per_class):
        raise ValueError(
            f"config.sampling.min_quota={c.sampling.min_quota} leaves active sampling no "
            f"room: each class starts with images_per_class={c.train.images_per_class} "
            f"images per batch. Raise images_per_class or lower min_quota.")
    _validate_methods(c)


def _validate_methods(c: ml_collections.ConfigDict) -> None:
    """Combinations of baselines that have no meaning fail here, with the fix."""
    t, s = c.train, c.sampling
    if not 0 <= t.reweight_epoch < t.epochs:
        raise ValueError(f"config.train.reweight_epoch={t.reweight_epoch} must lie in "
                         f"[0, train.epochs={t.epochs}).")
    if t.reweight_epoch > 0 and t.class_weighting == "none":
        raise ValueError("config.train.reweight_epoch > 0 defers class weights, but "
                         "config.train.class_weighting is 'none'; set it to "
                         "'effective_number' (DRW) or the epoch to 0.")
    if not 0 <= s.mix_balanced <= 1:
        raise ValueError(f"config.sampling.mix_balanced must lie in [0, 1]; got "
                         f"{s.mix_balanced}.")
    if not 0 < t.cb_beta < 1:
        raise ValueError(f"config.train.cb_beta must lie in (0, 1); got {t.cb_beta}.")
    if not 0 <= s.defer_epochs < t.epochs:
        raise ValueError(f"config.sampling.defer_epochs={s.defer_epochs} must lie in "
                         f"[0, train.epochs={t.epochs}).")
    if s.defer_epochs and s.composition in ("instance", "progressive"):
        raise ValueError(
            f"config.sampling.defer_epochs defers to another composition, but "
            f"'{s.composition}' already starts as instance sampling; use class_balanced "
            f"(DRS), sqrt or active, or set defer_epochs=0.")
    if t.loss == "cot" and t.class_weighting != "none":
        raise ValueError("config.train.loss='cot' has its own complement step; class "
                         "weighting is defined for the other losses only.")
    for field in ("eval.logit_adjust_tau", "eval.tau_norm", "train.logit_adjust_tau"):
        section, name = field.split(".")
        if c[section][name] < 0:
            raise ValueError(f"config.{field} must be >= 0; got {c[section][name]}.")
    if t.loss == "ldam" and c.model.head == "linear" and t.ldam_scale != 1:
        raise ValueError(
            f"config.train.loss='ldam' scales logits by train.ldam_scale={t.ldam_scale}, "
            f"which assumes cosine logits in [-1, 1]; with the linear head it diverges. "
            f"Set --config.model.head=cosine (Cao et al.'s classifier) or "
            f"--config.train.ldam_scale=1 for raw logits.")
    if c.eval.tau_candidates:
        if bool(c.eval.tau_norm) == bool(c.eval.logit_adjust_tau):
            raise ValueError(
                "config.eval.tau_candidates chooses the tau of one post-hoc correction: "
                "turn on exactly one of eval.tau_norm and eval.logit_adjust_tau (any "
                "value > 0; the chosen candidate replaces it).")
        if any(not isinstance(t, (int, float)) or t < 0 for t in c.eval.tau_candidates):
            raise ValueError(f"config.eval.tau_candidates must be numbers >= 0, e.g. "
                             f"'(0.,0.5,1.)'; got {c.eval.tau_candidates!r}.")
    if c.model.head == "cosine" and (c.eval.logit_adjust_tau or c.eval.tau_norm):
        raise ValueError(
            "config.eval.logit_adjust_tau and eval.tau_norm correct a linear classifier "
            "(its bias / weight norms); the cosine head has no bias and unit-norm class "
            "vectors. Set them to 0 or use --config.model.head=linear.")
    if c.decoupled.enabled and (c.decoupled.epochs < 1 or c.decoupled.images_per_class < 0):
        raise ValueError("config.decoupled needs epochs >= 1 and images_per_class >= 0.")
