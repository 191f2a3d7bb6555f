"""Model zoo: topology (parameter counts), outputs, dtypes and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tlc_jax.models import MODEL_NAMES, create_model, init_variables


def n_params(model, image_size=32, in_channels=3):
    x = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


# torchvision's counts with 1000 classes (torchvision.models.<name>(), sum of numel).
@pytest.mark.parametrize("name, expected", [
    ("densenet121", 7_978_856),
    ("densenet169", 14_149_480),
    ("densenet201", 20_013_928),
    ("densenet161", 28_681_000),
    ("resnet18", 11_689_512),
])
def test_parameter_counts_equal_torchvision(name, expected):
    assert n_params(create_model(name, num_classes=1000), image_size=64) == expected


def test_densenet_bc_100_parameter_count():
    # Huang et al. report 0.8M for DenseNet-BC (L=100, k=12) on CIFAR-10.
    assert n_params(create_model("densenet_bc", depth=100, growth_rate=12,
                                 num_classes=10)) == 769_162


def test_densenet_bc_matches_torchvision_cifar_variant():
    """An independent reference: torchvision's DenseNet class given the CIFAR stem."""
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    net = tv.models.DenseNet(growth_rate=12, block_config=(16, 16, 16),
                             num_init_features=24, bn_size=4, num_classes=10)
    net.features.conv0 = torch.nn.Conv2d(3, 24, 3, padding=1, bias=False)
    for stem_layer in ("norm0", "relu0", "pool0"):
        delattr(net.features, stem_layer)
    expected = sum(p.numel() for p in net.parameters())
    assert n_params(create_model("densenet_bc", depth=100, growth_rate=12,
                                 num_classes=10)) == expected


@pytest.mark.parametrize("num_classes", [1, 7, 102])
def test_any_number_of_classes(num_classes):
    model = create_model("densenet_bc", depth=10, growth_rate=4, num_classes=num_classes)
    x = jnp.zeros((2, 8, 8, 3))
    variables = init_variables(model, jax.random.key(0), x.shape)
    assert jax.jit(model.apply)(variables, x).shape == (2, num_classes)


@pytest.fixture(scope="module")
def tiny():
    model = create_model("densenet_bc", depth=16, growth_rate=4, num_classes=5)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    return model, x, init_variables(model, jax.random.key(0), x.shape)


def test_features_are_the_classifier_input(tiny):
    model, x, variables = tiny
    logits, features = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(
        variables, x)
    assert features.shape == (4, variables["params"]["classifier"]["kernel"].shape[0])
    head = variables["params"]["classifier"]
    np.testing.assert_allclose(logits, features @ head["kernel"] + head["bias"][None, :],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(logits, jax.jit(model.apply)(variables, x))


def test_train_mode_updates_batch_stats_and_eval_mode_does_not(tiny):
    model, x, variables = tiny
    _, updated = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                           variables["batch_stats"], updated["batch_stats"])
    assert all(jax.tree.leaves(changed))
    # Eval mode uses running statistics: a sample's logits do not depend on the batch.
    apply = jax.jit(model.apply)
    np.testing.assert_allclose(apply(variables, x)[:1], apply(variables, x[:1]),
                               rtol=1e-5, atol=1e-6)


def test_bfloat16_computes_in_bf16_with_float32_params():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    fp32 = create_model("densenet_bc", depth=10, growth_rate=4, num_classes=3)
    bf16 = create_model("densenet_bc", depth=10, growth_rate=4, num_classes=3,
                        dtype=jnp.bfloat16)
    variables = init_variables(fp32, jax.random.key(0), x.shape)
    bf16_variables = jax.eval_shape(lambda: bf16.init(jax.random.key(0), x))
    assert jax.tree.structure(variables) == jax.tree.structure(bf16_variables)
    assert {leaf.dtype for leaf in jax.tree.leaves(bf16_variables)} == {
        jnp.dtype(jnp.float32)}
    out = jax.jit(bf16.apply)(variables, x)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), jax.jit(fp32.apply)(variables, x),
                               atol=0.1, rtol=0.05)


def test_resnet18_runs_on_small_images():
    model = create_model("resnet18", num_classes=4)
    x = jnp.ones((2, 32, 32, 3))
    variables = init_variables(model, jax.random.key(0), x.shape)
    logits, features = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(
        variables, x)
    assert logits.shape == (2, 4) and features.shape == (2, 512)
    assert "downsample_conv" in variables["params"]["layer2_0"]
    assert "downsample_conv" not in variables["params"]["layer1_0"]


# ---------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------

def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown model 'densenet999'") as e:
        create_model("densenet999", num_classes=10)
    for name in MODEL_NAMES:
        assert name in str(e.value)


@pytest.mark.parametrize("depth", [99, 101, 4, 40.0])
def test_densenet_bc_depth_must_be_4_mod_6(depth):
    with pytest.raises(ValueError, match="depth % 6 == 4"):
        create_model("densenet_bc", depth=depth, num_classes=10)


def test_unknown_keyword_names_the_model():
    with pytest.raises(TypeError, match="create_model\\('resnet18'\\)"):
        create_model("resnet18", num_classes=10, depth=18)


def test_unknown_memory_mode_and_policy():
    with pytest.raises(ValueError, match="valid modes: naive, recompute"):
        create_model("densenet121", memory="cheap")
    with pytest.raises(ValueError, match="dots_saveable"):
        create_model("densenet121", memory="recompute", remat_policy="save_all")


def test_wrong_number_of_channels(tiny):
    model, _, variables = tiny
    with pytest.raises(ValueError, match="built for 3 input channel\\(s\\) but the batch has 1"):
        model.apply(variables, jnp.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="channels-last"):
        model.apply(variables, jnp.zeros((2, 3, 8, 8)))
    with pytest.raises(ValueError, match="NHWC"):
        model.apply(variables, jnp.zeros((8, 8, 3)))


def test_grey_images_with_in_channels_1():
    model = create_model("densenet_bc", depth=10, growth_rate=4, num_classes=3,
                         in_channels=1)
    x = jnp.zeros((2, 8, 8, 1))
    variables = init_variables(model, jax.random.key(0), x.shape)
    assert jax.jit(model.apply)(variables, x).shape == (2, 3)


@pytest.mark.parametrize("frozen_stages", [0, 2, 3])
def test_frozen_stages_get_no_gradient_and_keep_their_statistics(frozen_stages):
    from tlc_jax.models import frozen_mask

    model = create_model("densenet_bc", depth=16, growth_rate=4, num_classes=5)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    variables = init_variables(model, jax.random.key(0), x.shape)

    def loss(params):
        logits, state = model.apply({"params": params,
                                     "batch_stats": variables["batch_stats"]}, x,
                                    train=True, frozen_stages=frozen_stages,
                                    mutable=["batch_stats"])
        return jnp.sum(logits**2), state["batch_stats"]

    grads, stats = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
    mask = frozen_mask(model, variables["params"], frozen_stages)
    for frozen, g in zip(jax.tree.leaves(mask), jax.tree.leaves(grads)):
        assert (float(jnp.abs(g).max()) == 0) == frozen
    frozen_names = [k for k, v in mask.items() if all(jax.tree.leaves(v))]
    # conv0, then a dense block and a transition per stage (norm5 closes stage 3).
    assert len(frozen_names) == {0: 0, 2: 5, 3: 7}[frozen_stages]
    for name in variables["batch_stats"]:
        unchanged = all(jax.tree.leaves(jax.tree.map(
            lambda a, b: bool(jnp.all(a == b)), variables["batch_stats"][name], stats[name])))
        assert unchanged == (name in frozen_names)


def test_frozen_mask_names_stages_of_resnet_and_rejects_too_many():
    from tlc_jax.models import frozen_mask

    model = create_model("resnet18", num_classes=3)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                               jnp.zeros((1, 32, 32, 3))))["params"]
    mask = frozen_mask(model, params, 2)
    frozen = sorted(k for k, v in mask.items() if all(jax.tree.leaves(v)))
    assert frozen == ["bn1", "conv1", "layer1_0", "layer1_1", "layer2_0", "layer2_1"]
    with pytest.raises(ValueError, match="frozen_stages must be in \\[0, 4\\]"):
        frozen_mask(model, params, 5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv1x1_is_the_same_convolution_as_nn_conv(dtype):
    """The 1x1 convolutions run as a matrix product with nn.Conv's very parameter."""
    import flax.linen as nn

    from tlc_jax.models import layers

    x = jax.random.normal(jax.random.key(0), (2, 5, 7, 6))
    fast = layers.conv(4, 1, dtype=dtype, name="c")
    assert isinstance(fast, layers.Conv1x1)
    reference = nn.Conv(4, (1, 1), use_bias=False, dtype=dtype, param_dtype=jnp.float32)
    params = reference.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.key(1), x)) == jax.tree.map(
        jnp.shape, params)
    got, want = fast.apply(params, x), reference.apply(params, x)
    assert got.dtype == want.dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=tol, atol=tol)


# ---------------------------------------------------------------- the cosine head


def normed_linear_reference(features, kernel):
    """LDAM's NormedLinear (github.com/kaidic/LDAM-DRW, models/resnet_cifar.py):
    F.normalize(x, dim=1).mm(F.normalize(weight, dim=0)), in float64 numpy."""
    x = np.asarray(features, np.float64)
    w = np.asarray(kernel, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ (w / np.maximum(np.linalg.norm(w, axis=0, keepdims=True), 1e-12))


@pytest.mark.parametrize("name,head_module", [("densenet_bc", "classifier"),
                                              ("resnet18", "fc")])
def test_cosine_head_gives_cosines_of_features_and_class_vectors(name, head_module):
    kwargs = dict(depth=10, growth_rate=4) if name == "densenet_bc" else {}
    model = create_model(name, num_classes=6, head="cosine", dtype="bfloat16", **kwargs)
    x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
    variables = init_variables(model, jax.random.key(0), x.shape)
    head = variables["params"][head_module]
    assert set(head) == {"kernel"} and head["kernel"].dtype == jnp.float32  # No bias.
    kernel = np.asarray(head["kernel"])
    assert -1 <= kernel.min() < -0.5 and 0.5 < kernel.max() <= 1  # uniform(-1, 1)
    apply = jax.jit(lambda v, x: model.apply(v, x, return_features=True))
    logits, features = apply(variables, x)
    assert logits.dtype == jnp.float32  # Cosines in float32 even for a bf16 model.
    np.testing.assert_allclose(logits, normed_linear_reference(features, kernel),
                               rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(np.asarray(logits)) <= 1 + 1e-6)
    # Scaling a class vector or the features leaves the cosines as they are.
    scaled = {**variables, "params": {**variables["params"],
                                      head_module: {"kernel": head["kernel"] * 7.0}}}
    np.testing.assert_allclose(apply(scaled, x)[0], logits, rtol=1e-5, atol=1e-6)


def test_cosine_head_matches_torch_normed_linear():
    torch = pytest.importorskip("torch")
    from tlc_jax.models.layers import CosineClassifier

    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 12)).astype(np.float32)
    features[2] = 0.0  # A zero feature vector: normalize's eps keeps it at 0, no NaN.
    kernel = rng.uniform(-1, 1, size=(12, 4)).astype(np.float32)
    f = torch.nn.functional
    want = f.normalize(torch.from_numpy(features), dim=1).mm(
        f.normalize(torch.from_numpy(kernel), dim=0)).numpy()
    got = CosineClassifier(4).apply({"params": {"kernel": kernel}}, features)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got)[2], 0.0)


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="Unknown head 'normed'; valid heads: linear, cosine"):
        create_model("densenet_bc", depth=10, growth_rate=4, head="normed")


@pytest.mark.parametrize("name,size,kwargs", [
    ("densenet_bc", 16, dict(depth=16, growth_rate=12)),
    ("efficientnet_lite0", 32, {}),
])
def test_a_fully_frozen_backbone_costs_no_backward_pass(name, size, kwargs):
    """The warm-up stage trains the head on a frozen backbone: its gradient must cost
    what the forward pass costs (XLA's compiled FLOP count), the backward pass through
    the backbone pruned by the stop-gradient - not the 3x or more of a full step.
    Counted on the lowered program, before XLA's optimisations: JAX itself emits no
    backward pass through the frozen backbone (no later dead-code elimination needed),
    and nothing is compiled."""
    model = create_model(name, num_classes=10, **kwargs)
    x = jnp.zeros((2, size, size, 3))
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))

    def forward(params, stats):
        return model.apply({"params": params, "batch_stats": stats}, x).sum()

    def loss(params, stats, frozen):
        out, _ = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                             frozen_stages=frozen, mutable=["batch_stats"])
        return out.sum()

    def flops(fn, *static):
        cost = jax.jit(fn, static_argnums=(2,) if static else ()).lower(
            v["params"], v["batch_stats"], *static).cost_analysis()
        return (cost if isinstance(cost, dict) else cost[0])["flops"]

    forward_flops = flops(forward)
    warmup = flops(jax.grad(loss), model.num_stages)
    full = flops(jax.grad(loss), 0)
    assert warmup <= 1.05 * forward_flops, (warmup, forward_flops)
    assert full > 2.5 * forward_flops, (full, forward_flops)


@pytest.mark.parametrize("kernel,stride,shape", [(3, 1, (2, 9, 7, 6)), (5, 2, (2, 9, 8, 4)),
                                                 (3, 2, (1, 6, 6, 3))])
def test_depthwise_conv_is_the_grouped_convolution(kernel, stride, shape):
    """Same parameter, initialisation, outputs and gradients as nn.Conv with
    feature_group_count = channels and SAME padding (odd and even sizes, strides 1, 2)."""
    import flax.linen as nn

    from tlc_jax.models.layers import DepthwiseConv, conv_init

    c = shape[-1]
    x = jax.random.normal(jax.random.key(1), shape)
    ours = DepthwiseConv(kernel, stride)
    ref = nn.Conv(c, (kernel, kernel), strides=(stride, stride), padding="SAME",
                  feature_group_count=c, use_bias=False, kernel_init=conv_init)
    v = ours.init(jax.random.key(0), x)
    np.testing.assert_array_equal(v["params"]["kernel"],
                                  ref.init(jax.random.key(0), x)["params"]["kernel"])
    np.testing.assert_allclose(jax.jit(ours.apply)(v, x), jax.jit(ref.apply)(v, x),
                               rtol=1e-5, atol=1e-5)
    grad = lambda m: jax.jit(jax.grad(  # noqa: E731
        lambda p, x: (m.apply({"params": p}, x) ** 2).sum(), argnums=(0, 1)))(v["params"], x)
    for a, b in zip(jax.tree.leaves(grad(ours)), jax.tree.leaves(grad(ref))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_init_variables_is_model_init_compiled_once():
    """The same variables as `model.init` (to float rounding: the random numbers are
    the same integers, turned into floats by differently optimised code), placed as
    asked."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    model = create_model("densenet_bc", depth=10, growth_rate=4, num_classes=3,
                         in_channels=1)
    want = jax.jit(lambda k: model.init(k, jnp.zeros((1, 8, 8, 1)), train=False))(
        jax.random.key(3))
    replicated = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)),
                               PartitionSpec())
    got = init_variables(model, jax.random.key(3), (1, 8, 8, 1), out_shardings=replicated)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.sharding == replicated and a.dtype == b.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(float(jnp.abs(leaf).max()) > 0.1 for leaf in jax.tree.leaves(got))


@pytest.mark.parametrize("shape", [(2, 8, 8, 6), (3, 7, 9, 4)])
def test_transition_pools_before_its_convolution_with_the_same_result(shape):
    """densenet.Transition pools, then convolves: the same values and gradients as
    torchvision's order (1x1 convolution, then 2x2 average pool), written here with
    nn.Conv and nn.avg_pool on the same variables, odd sizes (pool floors) included."""
    import flax.linen as nn

    from tlc_jax.models.densenet import Transition

    x = jax.random.normal(jax.random.key(0), shape)
    module = Transition(features=5, train=True, dtype=jnp.float32)
    variables = module.init(jax.random.key(1), x)

    def ours(params, x):
        return module.apply({**variables, "params": params}, x, mutable=["batch_stats"])[0]

    def torchvision_order(params, x):
        y, _ = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5).apply(
            {"params": params["norm"], "batch_stats": variables["batch_stats"]["norm"]}, x,
            mutable=["batch_stats"])
        y = nn.Conv(5, (1, 1), use_bias=False).apply(
            {"params": params["conv"]}, jax.nn.relu(y))
        return nn.avg_pool(y, (2, 2), strides=(2, 2))

    # Jitted: one compilation each, where op-by-op dispatch compiles every primitive.
    np.testing.assert_allclose(jax.jit(ours)(variables["params"], x),
                               jax.jit(torchvision_order)(variables["params"], x),
                               rtol=1e-5, atol=1e-5)
    loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))  # noqa: E731
    got = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(variables["params"], x)
    want = jax.jit(jax.grad(loss(torchvision_order), argnums=(0, 1)))(
        variables["params"], x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
