"""Active sampling in a plain JAX training loop, without the tlc-jax trainer.

    python -m tlc_jax.examples.sampler_port [--steps 600] [--batch_per_class 6]

Everything tlc-jax specific is the three imports below: a quota sampler that plans the
class mix of each batch, and two pure functions (per-class F1 from a confusion matrix,
quotas from F1). The model is a linear softmax classifier on long-tailed 8x8 digits,
trained with and without active sampling on the same split; balanced accuracy and the
tail classes' accuracy are printed for both.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

from tlc_jax.metrics import confusion_matrix, precision_recall_f1
from tlc_jax.quotas import update_quotas
from tlc_jax.sampling import QuotaSampler


def long_tailed_digits(seed: int = 0, ratio: float = 20.0):
    """Digits split into train / contrast / test, the training part long-tailed."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    train, contrast, test = [], [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:50])
        contrast.append(idx[50:60])
        keep = int(100 * ratio ** (-c / 9))  # 100 images of class 0 ... 5 of class 9.
        train.append(idx[60:60 + keep])
    pick = lambda parts: np.concatenate(parts)
    return x, y, pick(train), pick(contrast), pick(test)


def run(active: bool, steps: int, batch_per_class: int, seed: int = 0) -> dict:
    x, y, train, contrast, test = long_tailed_digits(seed)
    batch = batch_per_class * 10
    # The sampler works on the training labels; it returns indices into them.
    sampler = QuotaSampler(y[train] if active else np.zeros(len(train), int),
                           10 if active else 1, batch, seed=seed)
    params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    tx = optax.sgd(0.5, momentum=0.9)
    opt_state = tx.init(params)

    def logits(p, xs):
        return xs @ p["w"] + p["b"][None, :]

    @jax.jit
    def step(p, s, xs, ys):
        loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
            logits(p, xs), ys).mean()
        grads = jax.grad(loss)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    predict = jax.jit(lambda p, xs: jnp.argmax(logits(p, xs), -1))
    for i in range(steps):
        idx = train[sampler.next_batch()]
        params, opt_state = step(params, opt_state, x[idx], y[idx])
        # Once per epoch, but not after the last step: those quotas would never be used.
        if active and (i + 1) % sampler.steps_per_epoch == 0 and i + 1 < steps:
            cm = confusion_matrix(y[contrast], np.asarray(predict(params, x[contrast])), 10)
            _, _, f1 = precision_recall_f1(cm)
            sampler.set_quotas(update_quotas(f1, batch, min_quota=1))
    cm = confusion_matrix(y[test], np.asarray(predict(params, x[test])), 10)
    recall = np.diag(cm) / cm.sum(axis=1)
    return {"balanced_accuracy": float(recall.mean()),
            "tail_accuracy": float(recall[-3:].mean()),  # The three rarest classes.
            "final_quotas": sampler.quotas.tolist() if active else None}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch_per_class", type=int, default=6)
    args = parser.parse_args(argv)
    for active in (False, True):
        r = run(active, args.steps, args.batch_per_class)
        name = "active sampling " if active else "uniform sampling"
        print(f"{name}: balanced accuracy {r['balanced_accuracy']:.3f}, "
              f"tail accuracy {r['tail_accuracy']:.3f}"
              + (f", final quotas {r['final_quotas']}" if active else ""))


if __name__ == "__main__":
    main()
