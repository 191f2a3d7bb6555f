"""The long-tail field's methods as overrides of one trainer's config: the method table
the results grids share (README, "The field's baselines").

    from tlc_jax.experiments.methods import long_tail_methods
    methods = long_tail_methods(defer_epoch=160, crt_epochs=10)   # Cao / Kang budgets

Every method trains the same network on the same data for the same number of epochs;
only the batch composition, the loss, the classifier or an evaluation-time correction
differs. Keys are run names; values are `--config.<field>=<value>` overrides.
"""

from __future__ import annotations

INSTANCE = {"sampling.composition": "instance"}
TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)  # tau-norm's candidates.


def long_tail_methods(defer_epoch: int, crt_epochs: int) -> dict[str, dict]:
    """TLC (the paper's rule with three losses, and candidate variants of the rule)
    against the field's baselines.

    `defer_epoch`: the fine-tuning epoch at which deferred re-sampling (DRS) and
    deferred re-weighting (DRW) switch on (Cao et al.: 160 of 200). `crt_epochs`: the
    epochs of classifier re-training after the main run (Kang et al.: 10).
    """
    return {
        # TLC: active sampling (the config's default composition).
        "tlc": {},
        "tlc-focal": {"train.loss": "focal"},
        "tlc-cot": {"train.loss": "cot"},
        "tlc-balanced-softmax": {"train.loss": "balanced_softmax"},
        # Candidate improvements of the quota rule (README, "Active sampling variants").
        "tlc-balanced-f1": {"sampling.balanced_contrast": True},
        "tlc-recall": {"sampling.signal": "recall"},
        "tlc-recall-balanced-softmax": {"sampling.signal": "recall",
                                        "train.loss": "balanced_softmax"},
        # Half Eq. 4, half equal shares: class-balanced sampling's mean with part of
        # the F1 feedback's lift of the weakest class (Fashion-MNIST-LT, docs/RESULTS.md).
        "tlc-mix": {"sampling.mix_balanced": 0.5},
        # Every fix the evidence points to at once (README, "Active sampling
        # variants"): recall (only missed images ask for more), averaged over updates
        # (one contrast snapshot per epoch swings the quotas), half equal shares (no
        # class starved to one image a batch) and the loss corrected for the batch's
        # class prior (extra samples of a class no longer move the decision prior).
        "tlc-combined": {"sampling.signal": "recall", "sampling.f1_momentum": 0.5,
                         "sampling.mix_balanced": 0.5, "train.loss": "balanced_softmax"},
        # Active sampling with LDAM's label-distribution-aware margins and the cosine
        # classifier LDAM's scale assumes (Cao et al. 2019), no deferred re-weighting
        # (the quotas already rebalance): on the pretrained Lite0 the contrast set's
        # choice among the TLC variants (docs/RESULTS.md, transfer tuning).
        "tlc-ldam": {"train.loss": "ldam", "model.head": "cosine"},
        # Re-sampling.
        "instance": INSTANCE,
        "class-balanced": {"sampling.composition": "class_balanced"},
        "sqrt": {"sampling.composition": "sqrt"},
        "progressive": {"sampling.composition": "progressive"},
        "drs": {"sampling.composition": "class_balanced",
                "sampling.defer_epochs": defer_epoch},
        # Re-weighting and margins.
        "cb-ce": {**INSTANCE, "train.class_weighting": "effective_number"},
        "ldam-drw": {**INSTANCE, "train.loss": "ldam", "model.head": "cosine",
                     "train.class_weighting": "effective_number",
                     "train.reweight_epoch": defer_epoch},
        # Prior-corrected losses and post-hoc adjustment.
        "logit-adjusted": {**INSTANCE, "train.loss": "logit_adjusted"},
        "posthoc-la": {**INSTANCE, "eval.logit_adjust_tau": 1.0},
        "balanced-softmax": {**INSTANCE, "train.loss": "balanced_softmax"},
        # Decoupled classifier corrections.
        "crt": {**INSTANCE, "decoupled.enabled": True, "decoupled.epochs": crt_epochs},
        # tau chosen on the contrast set, as Kang et al. choose it on validation data.
        "tau-norm": {**INSTANCE, "eval.tau_norm": 1.0, "eval.tau_candidates": TAUS},
    }


def cifar_lt_grid(classes: int, root: str) -> dict:
    """The GPU grid of configs/grids/cifar{10,100}_lt.py: configs/cifar{classes}_lt.py
    (the TLC paper's protocol: ImageNet-pretrained DenseNet-121, 200 epochs) at ratios
    100 and 10, every method of `long_tail_methods` with Cao's / Kang's budgets (DRS /
    DRW at epoch 160, cRT 10 epochs), seeds 0-2, the archive fetched into `root`."""
    return {
        "description": f"CIFAR-{classes}-LT, the TLC paper's protocol (ImageNet-pretrained "
                       f"DenseNet-121, 200 epochs): TLC against the long-tail field's "
                       f"baselines, same model and budget.",
        "config": f"configs/cifar{classes}_lt.py",
        "config_args": "download=true",
        "variants": ["ratio=100", "ratio=10"],
        "methods": long_tail_methods(defer_epoch=160, crt_epochs=10),
        "seeds": [0, 1, 2],
        "overrides": {"data.root": root},
    }
