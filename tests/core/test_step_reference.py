"""A numerical reference for one train step: loss and parameter checksums after one
step on fixed data and seed. Recorded before the core was restructured (issue 11) and
kept passing after it, so moving code cannot change what a step computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tlc_jax import augment
from tlc_jax import step as step_lib
from tlc_jax.models import create_model, frozen_mask

# (loss, complement loss or None, sum of params, sum of |params|, sum of batch_stats)
# after one step; measured on the 2-core development VM (x86-64) on 2026-11-30.
REFERENCE = {
    "ce_augmented": (2.3136708736419678, None, 113.20517529086129, 483.00247272094595,
                     98.59888090644381),
    "cot": (2.295612096786499, -0.23633575439453125, 113.35858836031184,
            483.0438379302723, 96.56571277289186),
}


def one_step(loss: str, augmented: bool):
    model = create_model("densenet_bc", depth=10, growth_rate=4, num_classes=10,
                         in_channels=1)
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (40, 8, 8, 1)).astype(np.uint8),
             "label": (np.arange(40) % 10).astype(np.int32)}
    variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, 8, 8, 1)), train=False))(
        jax.random.key(0))
    params = variables["params"]
    tx = step_lib.make_optimizer("sgd", 0.05, momentum=0.9, weight_decay=5e-4,
                                 frozen=frozen_mask(model, params, 0))
    cot_tx = (step_lib.make_optimizer("sgd", 0.05, momentum=0.9, weight_decay=5e-4,
                                      frozen=frozen_mask(model, params, 0))
              if loss == "cot" else None)
    cfg = step_lib.StepConfig(
        num_classes=10, frozen_stages=0, loss=loss, focal_gamma=2.0,
        augment=augment.AugmentOptions(2, False, 0.0, 0) if augmented else None)
    state = step_lib.TrainState(jnp.zeros((), jnp.int32), params,
                                variables["batch_stats"], tx.init(params),
                                cot_tx.init(params) if cot_tx else None)
    step = jax.jit(step_lib.make_train_step(model, tx, cot_tx, cfg))
    quotas = jnp.full((10,), 4.0, jnp.float32)
    state, out = step(state, batch, quotas, jax.random.key(3))
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(state.params)]
    stats = [np.asarray(x, np.float64) for x in jax.tree.leaves(state.batch_stats)]
    return (float(out["loss"]),
            float(out["complement_loss"]) if "complement_loss" in out else None,
            sum(x.sum() for x in leaves), sum(np.abs(x).sum() for x in leaves),
            sum(x.sum() for x in stats))


@pytest.mark.parametrize("name,loss,augmented", [("ce_augmented", "ce", True),
                                                 ("cot", "cot", False)])
def test_one_step_matches_the_recorded_reference(name, loss, augmented):
    got = one_step(loss, augmented)
    want = REFERENCE[name]
    if want[1] is None:
        assert got[1] is None
    else:
        assert got[1] == pytest.approx(want[1], rel=1e-4)
    np.testing.assert_allclose([got[0], got[2], got[3], got[4]],
                               [want[0], want[2], want[3], want[4]], rtol=1e-4)
