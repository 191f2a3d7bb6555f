"""Recompute mode: same numbers as naive, far fewer bytes kept for the backward pass."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tlc_jax import memory
from tlc_jax.models import create_model, init_variables
from tlc_jax.models.densenet import DenseNet

GiB = 2**30


def _loss_grads_and_stats(model, variables, x, y):
    def loss(params):
        logits, state = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                    x, train=True, mutable=["batch_stats"])
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, y[:, None], axis=1).mean(), (logits, state)

    (value, (logits, state)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables["params"])
    return value, logits, grads, state["batch_stats"]


TINY = {
    # A CIFAR DenseNet-BC with two layers per block.
    "bc": (functools.partial(create_model, "densenet_bc", depth=16, growth_rate=4), 8),
    # The ImageNet stem (7x7/2 conv, max-pool) with a short four-block body.
    "imagenet_stem": (functools.partial(DenseNet, block_sizes=(2, 1, 1, 1), growth_rate=4,
                                        num_init_features=8), 32),
}


# Both policies on the CIFAR body; the ImageNet stem (the costlier compilation) with the
# policy that recomputes the most.
@pytest.mark.parametrize("arch,policy", [("bc", "dots_saveable"), ("bc", "nothing_saveable"),
                                         ("imagenet_stem", "nothing_saveable")])
def test_recompute_matches_naive(arch, policy):
    build, size = TINY[arch]
    naive = build(num_classes=5)
    recompute = build(num_classes=5, memory="recompute", remat_policy=policy)
    x = jax.random.normal(jax.random.key(1), (4, size, size, 3))
    y = jnp.array([0, 1, 2, 4])
    variables = init_variables(naive, jax.random.key(0), x.shape)
    # One checkpoint serves both modes: the trees are identical.
    assert jax.tree.structure(variables) == jax.tree.structure(
        jax.eval_shape(lambda: recompute.init(jax.random.key(0), x)))

    ref = _loss_grads_and_stats(naive, variables, x, y)
    got = _loss_grads_and_stats(recompute, variables, x, y)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # And the gradients are not trivially zero.
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(ref[2]))


def test_saved_residuals_counts_each_array_once():
    policy = jax.checkpoint_policies.nothing_saveable

    def f(x):  # Two checkpointed functions of the same y: y is kept, once.
        y = 2.0 * x
        return (jax.checkpoint(jnp.sin, policy=policy)(y).sum()
                + jax.checkpoint(jnp.cos, policy=policy)(y).sum())

    r = memory.saved_residuals(f, jax.ShapeDtypeStruct((3, 5), jnp.float32))
    assert (r.saved_arrays, r.saved_bytes, r.input_arrays) == (1, 3 * 5 * 4, 0)

    def g(w, x):  # Both arguments are needed for the matmul's gradients.
        return jnp.tanh(x @ w).sum()

    r = memory.saved_residuals(g, jnp.ones((5, 4)), jnp.ones((3, 5)))
    assert (r.input_arrays, r.input_bytes) == (2, (5 * 4 + 3 * 5) * 4)


def _saved_gib(depth, mem, policy="dots_saveable"):
    model = create_model("densenet_bc", depth=depth, growth_rate=12, num_classes=10,
                         memory=mem, remat_policy=policy)
    return memory.memory_report(model, batch_size=64, image_size=32).residuals.saved_bytes / GiB


GROWTH_DEPTHS = (16, 28, 40)


@pytest.fixture(scope="module")
def saved_by_depth():
    """Traced only (nothing runs): DenseNet-BC k=12, batch 64, 32 px, fp32."""
    return {(d, mode): _saved_gib(d, *mode) for d in (*GROWTH_DEPTHS, 100) for mode in
            [("naive",), ("recompute", "dots_saveable"), ("recompute", "nothing_saveable")]}


def _second_over_first_difference(saved, mode):
    a, b, c = (saved[(d, mode)] for d in GROWTH_DEPTHS)
    return (c - b) / (b - a)


def test_naive_grows_quadratically_recompute_linearly(saved_by_depth):
    # Depths are equally spaced: equal differences mean linear growth. Naive: 0.111,
    # 0.231, 0.370 GiB (differences 0.120, 0.139: the ratio 1.16; a pure square of the
    # depth would give 1.55, its linear part lowers it; at depths 40, 70, 100 it is
    # 1.27); recompute: ratio 1.00.
    assert _second_over_first_difference(saved_by_depth, ("naive",)) > 1.1
    for policy in ("dots_saveable", "nothing_saveable"):
        ratio = _second_over_first_difference(saved_by_depth, ("recompute", policy))
        assert 0.98 < ratio < 1.02, (policy, ratio)


def test_recompute_keeps_under_a_fifth_at_depth_100(saved_by_depth):
    naive = saved_by_depth[(100, ("naive",))]
    dots = saved_by_depth[(100, ("recompute", "dots_saveable"))]
    nothing = saved_by_depth[(100, ("recompute", "nothing_saveable"))]
    # The fused BN-ReLU halved naive (4.33 -> 2.03 GiB at the time), reading a dense layer's
    # inputs as pieces (the concatenation never stored) took it to 1.41 GiB, and
    # transitions that pool before their convolution to 1.36 GiB: nothing_saveable
    # stays under a fifth of it; dots_saveable keeps every convolution's output by
    # design (30%).
    assert nothing <= 0.20 * naive < dots <= 0.35 * naive
    # The figures recorded in docs/BENCHMARKS.md (GiB).
    np.testing.assert_allclose([naive, dots, nothing], [1.36, 0.41, 0.17], atol=0.01)
    # Without the fusion (plain autodiff through BatchNorm and ReLU): 4.33 GiB before
    # the transitions' reorder, 4.28 with it.
    unfused = create_model("densenet_bc", depth=100, growth_rate=12, num_classes=10,
                           fused_bn_relu=False)
    unfused_gib = memory.saved_residuals(memory.training_loss(unfused), *memory.abstract_inputs(
        unfused, 64, 32)).saved_bytes / GiB
    np.testing.assert_allclose(unfused_gib, 4.28, atol=0.01)
    assert dots <= 0.20 * unfused_gib


# bfloat16 on one architecture (its dense layers read pieces like the other's): three
# more compilations of a training step per architecture for the same check.
@pytest.mark.parametrize("arch,dtype", [("bc", jnp.float32),
                                        ("imagenet_stem", jnp.float32),
                                        ("bc", jnp.bfloat16)])
def test_fused_bn_relu_equals_plain_autodiff(arch, dtype):
    """Same variables, outputs, loss, gradients and new batch statistics as plain
    autodiff through BatchNorm + ReLU, in fewer saved bytes. In bfloat16 the two round
    differently (the fused op normalises each dense-layer input piece apart, before the
    concatenation), so both are held to the float32 result: the fused one no further
    from it than plain autodiff is."""
    build, size = TINY[arch]
    fused = build(num_classes=5, dtype=dtype)
    plain = build(num_classes=5, dtype=dtype, fused_bn_relu=False)
    x = jax.random.normal(jax.random.key(1), (4, size, size, 3))
    y = jnp.array([0, 1, 2, 4])
    variables = init_variables(plain, jax.random.key(0), x.shape)
    assert jax.tree.structure(variables) == jax.tree.structure(
        jax.eval_shape(lambda: fused.init(jax.random.key(0), x)))
    got = _loss_grads_and_stats(fused, variables, x, y)
    if dtype == jnp.float32:
        ref = _loss_grads_and_stats(plain, variables, x, y)
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    else:
        exact = jax.tree.leaves(_loss_grads_and_stats(
            build(num_classes=5, fused_bn_relu=False), variables, x, y))

        def error(result):
            return max(float(np.max(np.abs(np.asarray(a, np.float32) - b)))
                       for a, b in zip(jax.tree.leaves(result), exact))

        plain_error = error(_loss_grads_and_stats(plain, variables, x, y))
        assert error(got) <= max(1.25 * plain_error, 1e-3), (error(got), plain_error)
    saved = [memory.saved_residuals(memory.training_loss(m),
                                    *memory.abstract_inputs(m, 4, size)).saved_bytes
             for m in (plain, fused)]
    assert saved[1] < 0.7 * saved[0]


def test_fused_bn_relu_of_pieces_is_that_of_their_concatenation():
    """A sequence of maps stands for their concatenation along channels: the same
    outputs and statistics, and per piece the slice of the concatenation's gradient
    (every output's cotangent non-zero, so the statistics' terms count too)."""
    from tlc_jax.models.layers import fused_bn_relu

    pieces = [jax.random.normal(jax.random.key(i), (4, 5, 5, c)) * (i + 1) + i
              for i, c in enumerate((6, 3, 1, 3))]
    x = jnp.concatenate(pieces, -1)
    scale = 1 + 0.3 * jax.random.normal(jax.random.key(9), (13,))
    bias = 0.2 * jax.random.normal(jax.random.key(8), (13,))
    cotangent = (jax.random.normal(jax.random.key(7), x.shape),
                 jnp.linspace(-1, 1, 13), jnp.linspace(0.5, -0.2, 13))
    @jax.jit  # One compilation (op by op, the custom VJP compiles every primitive).
    def both(x, pieces, scale, bias):
        whole, whole_vjp = jax.vjp(
            lambda x, s, b: fused_bn_relu(x, s, b, 1e-5, jnp.float32), x, scale, bias)
        split, split_vjp = jax.vjp(
            lambda p, s, b: fused_bn_relu(p, s, b, 1e-5, jnp.float32), pieces, scale, bias)
        return whole, split, whole_vjp(cotangent), split_vjp(cotangent)

    whole, split, (dx, dscale, dbias), (dpieces, dscale2, dbias2) = both(x, pieces, scale,
                                                                         bias)
    for a, b in zip(whole, split):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert [d.shape for d in dpieces] == [p.shape for p in pieces]
    np.testing.assert_allclose(jnp.concatenate(dpieces, -1), dx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dscale2, dscale, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dbias2, dbias, rtol=1e-5, atol=1e-5)


def test_a_dense_layer_does_not_store_its_concatenated_input():
    """What the backward pass keeps of one dense layer (naive mode): its inputs are
    alive anyway, so besides them only the BN-ReLU output for the 1x1 convolution's
    weight gradient, the bottleneck and its BN-ReLU output - never the concatenation."""
    from tlc_jax.models.densenet import DenseLayer

    layer = DenseLayer(growth_rate=4, bn_size=2, train=True, dtype=jnp.float32)
    inputs = [jnp.ones((2, 4, 4, 6)), jnp.ones((2, 4, 4, 4)), jnp.ones((2, 4, 4, 4))]
    variables = jax.jit(layer.init)(jax.random.key(0), inputs)

    def loss(params, inputs):
        out, _ = layer.apply({**variables, "params": params}, inputs,
                             mutable=["batch_stats"])
        return out.sum()

    jaxpr, (_, vjp) = jax.make_jaxpr(lambda *a: jax.vjp(loss, *a), return_shape=True)(
        variables["params"], inputs)
    outvars = jaxpr.jaxpr.outvars
    saved = [v.aval.shape for v in outvars[len(outvars) - len(jax.tree.leaves(vjp)):]
             if hasattr(v, "aval") and v not in jaxpr.jaxpr.invars]
    concatenated = [s for s in saved if np.prod(s) == 2 * 4 * 4 * 14]
    # One array of the concatenation's size is kept: the normalised input of the 1x1
    # convolution (its weight gradient needs it, as pixels x channels); with the
    # concatenation stored there were two.
    assert len(concatenated) == 1, saved


def test_fused_bn_relu_backward_against_finite_differences():
    from jax.test_util import check_grads

    from tlc_jax.models.layers import fused_bn_relu

    x = jax.random.normal(jax.random.key(0), (3, 2, 2, 4), jnp.float64
                          if jax.config.jax_enable_x64 else jnp.float32)
    scale = jnp.array([1.0, -0.5, 2.0, 0.3], x.dtype)
    bias = jnp.array([0.1, 0.2, -0.3, 0.0], x.dtype)

    def f(x, scale, bias):  # Every output, the statistics included.
        y, mean, var = fused_bn_relu(x, scale, bias, 1e-5, x.dtype)
        return (y * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape)).sum() + mean.sum() \
            + (var * jnp.arange(4, dtype=y.dtype)).sum()

    check_grads(jax.jit(f), (x, scale, bias), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_compiled_memory_and_peak_on_cpu():
    model = create_model("densenet_bc", depth=10, growth_rate=4, num_classes=3)
    compiled = memory.compiled_memory(model, batch_size=2, image_size=8)
    assert compiled["argument"] > 0 and compiled["temp"] > 0
    with memory.disable_xla_remat():
        assert not jax.config.jax_compiler_enable_remat_pass
    assert jax.config.jax_compiler_enable_remat_pass
    if jax.devices()[0].memory_stats() is None:  # CPU: the allocator reports nothing.
        assert memory.peak_bytes_in_use(model, 2, 8) is None
    else:
        assert memory.peak_bytes_in_use(model, 2, 8) > compiled["argument"]


def test_training_loss_is_the_train_steps_loss():
    """The memory analysis differentiates the loss the train step reports."""
    from tlc_jax.models import frozen_mask
    from tlc_jax.preprocess import model_input
    from tlc_jax.step import StepConfig, init_state, make_optimizer, make_train_step

    build, size = TINY["bc"]
    model = build(num_classes=5)
    images = jax.random.randint(jax.random.key(1), (4, size, size, 3), 0, 256, jnp.uint8)
    labels = jnp.array([0, 1, 2, 4], jnp.int32)
    variables = init_variables(model, jax.random.key(0), images.shape)
    tx = make_optimizer("sgd", 0.01, frozen=frozen_mask(model, variables["params"], 0))
    step = make_train_step(model, tx, None, StepConfig(num_classes=5, frozen_stages=0,
                                                       loss="ce"))
    _, metrics = jax.jit(step)(init_state(variables, tx, None),
                               {"image": images, "label": labels},
                               jnp.bincount(labels, length=5).astype(jnp.float32),
                               jax.random.key(2))
    loss = jax.jit(memory.training_loss(model))(variables["params"], variables["batch_stats"],
                                                model_input(images), labels)
    np.testing.assert_allclose(loss, metrics["loss"], rtol=1e-6)


def test_gpu_launch_script_reports_every_mode(tmp_path):
    """launch/gpu_memory.sh: a row per mode; on a CPU, peaks say 'not measured'. (JAX
    rows only: the flags after OUT_DIR reach the benchmark; PyTorch's rows are
    test_benchmarks_memory.py's.)"""
    import csv
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run(["bash", "launch/gpu_memory.sh", "10", "2", str(tmp_path), "--no-torch"],
                   cwd=root,
                   capture_output=True, text=True, check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    with open(tmp_path / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["section"] == "memory"
                and r["framework"] == "jax" and r["metric"] == "gpu_peak_bytes"]
    assert [(r["depth"], r["batch_size"]) for r in rows] == [("10", "2")] * 3
    with open(tmp_path / "results.csv", newline="") as f:
        torch_rows = [r for r in csv.DictReader(f) if r["framework"] == "pytorch"]
    assert torch_rows and all(r["status"] == "skipped" for r in torch_rows)
    assert [(r["mode"], r["policy"]) for r in rows] == [
        ("naive", "-"), ("recompute", "dots_saveable"), ("recompute", "nothing_saveable")]
    if jax.devices()[0].platform == "cpu":
        assert all(r["status"] == "not measured" for r in rows)
