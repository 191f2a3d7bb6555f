"""tlc_jax.pretrained: torchvision weights -> Flax, checked against torchvision itself.

Parity tests build torchvision models from a fixed seed with randomised BatchNorm
statistics and affine parameters (so a wrong mapping cannot hide behind identity BNs),
convert their state dicts and compare logits and updated running statistics. Download
tests serve files from a loopback-only HTTP server; nothing reaches the internet.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file as save_safetensors

from tlc_jax import pretrained
from tlc_jax.models import create_model
from tlc_jax.pretrained import (WeightsDownloadError, WeightsMismatchError, fetch_weights,
                                load_pretrained, read_state_dict, torch_to_flax)

try:
    import torch
    import torchvision
except ImportError:  # The optional [torch] extra: only the download tests run.
    torch = torchvision = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs pip install 'tlc-jax[torch]'")

HEADS = {"densenet": "classifier", "resnet": "fc"}


# ----------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def torch_model(name: str):
    """A seeded torchvision model with non-trivial BatchNorm state and head bias."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            elif isinstance(m, torch.nn.Linear):
                m.bias.copy_(0.1 * torch.randn(m.out_features, generator=gen))
    return model


@functools.lru_cache(maxsize=None)
def numpy_state(name: str) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in torch_model(name).state_dict().items()}


@functools.lru_cache(maxsize=None)
def flax_model(name: str, num_classes: int = 1000):
    return create_model(name, num_classes=num_classes)


@functools.lru_cache(maxsize=None)
def template(name: str, num_classes: int = 1000):
    model = flax_model(name, num_classes)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))


@functools.lru_cache(maxsize=None)
def converted(name: str):
    return torch_to_flax(numpy_state(name), template(name))


@functools.lru_cache(maxsize=None)
def jitted(name: str, train: bool):
    model = flax_model(name)
    if train:
        return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    return jax.jit(lambda v, x: model.apply(v, x))


def images(size: int, seed: int) -> np.ndarray:
    """A batch of two NCHW images (torch layout)."""
    return np.random.default_rng(seed).standard_normal((2, 3, size, size), dtype=np.float32)


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def flat(tree) -> dict[str, np.ndarray]:
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def assert_trees_equal(a, b):
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert fa[k].dtype == fb[k].dtype, k
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def old_style_keys(state: dict) -> dict:
    """torchvision's published DenseNet spelling: denselayerN.norm.1 instead of norm1."""
    pattern = re.compile(r"(denselayer\d+\.(?:norm|conv))([12])\.")
    return {pattern.sub(r"\1.\2.", k): v for k, v in state.items()}


def torch_bn_path(flax_path: tuple[str, ...], family: str) -> str:
    """torch module path of a Flax BatchNorm path (for matching running statistics)."""
    parts = []
    for p in flax_path:
        m = re.fullmatch(r"(layer\d+)_(\d+)", p)
        parts += [m[1], m[2]] if m else {"downsample_bn": ["downsample", "1"]}.get(p, [p])
    return ".".join((["features"] if family == "densenet" else []) + parts)


# ----------------------------------------------------------------------- parity tests

PARITY = [("densenet121", (32, 48)), ("densenet161", (48,)), ("resnet18", (40, 64))]


@needs_torch
@pytest.mark.parametrize("name,sizes", PARITY, ids=[p[0] for p in PARITY])
def test_eval_logits_match_torchvision(name, sizes):
    tmodel, variables = torch_model(name), converted(name)
    for seed, size in enumerate(sizes):
        x = images(size, seed)
        with torch.no_grad():
            want = tmodel(torch.from_numpy(x)).numpy()
        got = np.asarray(jitted(name, False)(variables, nhwc(x)))
        assert got.shape == want.shape == (2, 1000)
        assert np.std(want) > 0.1  # Not a degenerate network.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=f"{name} @ {size}px")


# Train mode (batch statistics, running averages) is the same code for every DenseNet:
# DenseNet-121 and ResNet-18 cover it; DenseNet-161's own shapes are in the eval test.
TRAIN = [("densenet121", 64), ("resnet18", 64)]


@needs_torch
@pytest.mark.parametrize("name,size", TRAIN, ids=[t[0] for t in TRAIN])
def test_train_mode_outputs_and_running_stats_match_torchvision(name, size):
    family = "densenet" if name.startswith("densenet") else "resnet"
    tmodel = copy.deepcopy(torch_model(name)).train()
    bn_count = {}  # Elements per channel each BatchNorm averaged over, for n / (n - 1).
    for mod_name, m in tmodel.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(
                lambda mod, inp, out, mod_name=mod_name:
                bn_count.__setitem__(mod_name, inp[0].numel() // inp[0].shape[1]))
    x = images(size, 10)
    with torch.no_grad():
        want = tmodel(torch.from_numpy(x)).numpy()
    variables = converted(name)
    got, updates = jitted(name, True)(variables, nhwc(x))
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-4)

    torch_state = {k: v.numpy() for k, v in tmodel.state_dict().items()}
    old = flat(variables["batch_stats"])
    new = flat(updates["batch_stats"])
    assert len(new) == 2 * len(bn_count)
    for path, value in new.items():
        *module, stat = path.split("/")
        torch_path = torch_bn_path(tuple(module), family)
        if stat == "mean":
            np.testing.assert_allclose(value, torch_state[torch_path + ".running_mean"],
                                       rtol=0, atol=1e-5, err_msg=path)
        else:
            # torch: 0.9 old + 0.1 unbiased; Flax: 0.9 old + 0.1 biased var.
            n = bn_count[torch_path]
            torch_var = torch_state[torch_path + ".running_var"]
            expected = 0.9 * old[path] + (torch_var - 0.9 * old[path]) * (n - 1) / n
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5, err_msg=path)
            if n < 50:  # The difference is real where batches are small.
                assert not np.allclose(value, torch_var, rtol=0, atol=1e-4), path


@needs_torch
@pytest.mark.parametrize("name", ["densenet121", "densenet161"])
def test_old_densenet_key_names_load_identically(name):
    state = numpy_state(name)
    old = old_style_keys(state)
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    assert "features.denseblock1.denselayer1.conv.2.weight" in old
    assert not any(".norm1." in k or ".conv2." in k for k in old)
    assert_trees_equal(torch_to_flax(old, template(name)), converted(name))


@needs_torch
def test_conversion_layouts_and_collections():
    variables, state = converted("resnet18"), numpy_state("resnet18")
    assert set(variables) == {"params", "batch_stats"}
    p, s = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(p["conv1"]["kernel"],
                                  state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["fc"]["kernel"], state["fc.weight"].T)
    np.testing.assert_array_equal(p["layer2_0"]["downsample_bn"]["scale"],
                                  state["layer2.0.downsample.1.weight"])
    np.testing.assert_array_equal(s["layer4_1"]["bn2"]["var"],
                                  state["layer4.1.bn2.running_var"])
    n_torch = sum(not k.endswith("num_batches_tracked") for k in state)
    assert len(flat(variables)) == n_torch


@needs_torch
def test_recompute_memory_mode_has_the_same_tree():
    """Checkpoints move between memory modes, so pretrained weights load into both."""
    model = create_model("densenet121", memory="recompute")
    tmpl = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    assert_trees_equal(torch_to_flax(numpy_state("densenet121"), tmpl), converted("densenet121"))


# ------------------------------------------------------------------- files and heads


@pytest.fixture(scope="module")
def densenet_files(tmp_path_factory):
    """densenet121 weights as new-zip .pth, legacy .pth (like torchvision's files,
    with old key names) and .safetensors."""
    folder = tmp_path_factory.mktemp("densenet_files")
    sd = torch_model("densenet121").state_dict()
    torch.save(sd, folder / "new.pth")
    legacy = {k: v.clone() for k, v in old_style_keys(dict(sd)).items()}
    torch.save(legacy, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    save_safetensors(numpy_state("densenet121"), str(folder / "w.safetensors"))
    return folder


@needs_torch
def test_safetensors_and_pth_give_identical_variables(densenet_files):
    model = flax_model("densenet121")
    via_pth = load_pretrained(model, densenet_files / "new.pth", input_shape=(1, 64, 64, 3))
    via_legacy = load_pretrained(model, str(densenet_files / "legacy.pt"))
    via_st = load_pretrained(model, densenet_files / "w.safetensors")
    assert_trees_equal(via_pth, via_st)
    assert_trees_equal(via_legacy, via_st)
    assert all(isinstance(v, jax.Array) for v in jax.tree.leaves(via_st))
    assert_trees_equal(jax.tree.map(np.asarray, via_st), converted("densenet121"))


@needs_torch
def test_safetensors_reading_needs_no_torch(densenet_files):
    """With torch unimportable: the module imports, .safetensors loads, .pth says how."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # Makes `import torch` raise ImportError.
        from tlc_jax.pretrained import read_state_dict
        sd = read_state_dict({str(densenet_files / 'w.safetensors')!r})
        assert len(sd) > 600 and sd["classifier.weight"].shape == (1000, 1024)
        try:
            read_state_dict({str(densenet_files / 'new.pth')!r})
        except ImportError as e:
            assert "pip install 'tlc-jax[torch]'" in str(e) and ".safetensors" in str(e)
            print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr


@needs_torch
def test_head_replaced_when_class_count_differs(densenet_files):
    model = flax_model("densenet121", 10)
    path = densenet_files / "w.safetensors"
    variables = load_pretrained(model, path, rng=jax.random.key(3))
    ref = converted("densenet121")
    head = variables["params"]["classifier"]
    assert head["kernel"].shape == (1024, 10) and head["bias"].shape == (10,)
    np.testing.assert_array_equal(head["bias"], 0)
    assert 0.5 < float(jnp.std(head["kernel"])) * np.sqrt(1024) < 1.5  # lecun_normal
    # Every backbone tensor is the file's.
    backbone = flat(variables)
    assert len(backbone) == len(flat(ref))
    for k, v in flat(ref).items():
        if not k.startswith("params/classifier/"):
            np.testing.assert_array_equal(backbone[k], v, err_msg=k)
    # Deterministic in rng.
    again = load_pretrained(model, path, rng=jax.random.key(3))
    np.testing.assert_array_equal(again["params"]["classifier"]["kernel"], head["kernel"])
    other = load_pretrained(model, path, rng=jax.random.key(4))
    assert not np.array_equal(other["params"]["classifier"]["kernel"], head["kernel"])
    # The file's 1000-class head cannot be kept; a fresh head needs an rng.
    with pytest.raises(WeightsMismatchError,
                       match=r"classifier\.weight: expected \(10, 1024\), got \(1000, 1024\)"):
        load_pretrained(model, path, head="keep")
    with pytest.raises(ValueError, match="pass rng"):
        load_pretrained(model, path)


@needs_torch
def test_fresh_head_equals_model_init(tmp_path):
    model = create_model("resnet18", num_classes=7)
    path = tmp_path / "r.safetensors"
    save_safetensors(numpy_state("resnet18"), str(path))
    rng = jax.random.key(11)
    variables = load_pretrained(model, path, rng=rng)
    init = jax.jit(model.init)(rng, jnp.zeros((1, 32, 32, 3)))
    assert_trees_equal(variables["params"]["fc"], init["params"]["fc"])
    assert jax.jit(model.apply)(variables, jnp.zeros((2, 32, 32, 3))).shape == (2, 7)
    np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"],
                                  converted("resnet18")["params"]["conv1"]["kernel"])


@needs_torch
def test_head_kept_for_1000_classes(densenet_files):
    model = flax_model("densenet121")
    path = densenet_files / "w.safetensors"
    torch_head = torch_model("densenet121").classifier
    for head in ("auto", "keep"):
        cls = load_pretrained(model, path, head=head)["params"]["classifier"]
        np.testing.assert_array_equal(cls["kernel"], torch_head.weight.detach().numpy().T)
        np.testing.assert_array_equal(cls["bias"], torch_head.bias.detach().numpy())
    replaced = load_pretrained(model, path, head="replace", rng=jax.random.key(0))
    assert not np.allclose(replaced["params"]["classifier"]["kernel"],
                           torch_head.weight.detach().numpy().T)
    np.testing.assert_array_equal(replaced["params"]["classifier"]["bias"], 0)


@needs_torch
def test_cosine_head_is_always_fresh(tmp_path):
    """A torchvision classifier is linear: a cosine-head model gets a fresh head even
    for 1000 classes, and head='keep' says why it cannot. (ResNet-18: the same loader
    code as DenseNet's, and a smaller model to initialise as the reference.)"""
    model = create_model("resnet18", head="cosine")
    path = tmp_path / "r.safetensors"
    save_safetensors(numpy_state("resnet18"), str(path))
    rng = jax.random.key(5)
    variables = load_pretrained(model, path, rng=rng)
    head = variables["params"]["fc"]
    assert set(head) == {"kernel"} and head["kernel"].shape == (512, 1000)
    init = jax.jit(model.init)(rng, jnp.zeros((1, 32, 32, 3)))
    assert_trees_equal(head, init["params"]["fc"])
    np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"],
                                  converted("resnet18")["params"]["conv1"]["kernel"])
    with pytest.raises(ValueError, match="head='keep' needs the model's linear head"):
        load_pretrained(model, path, head="keep")


@needs_torch
def test_head_drop_and_backbone_only_files():
    state = numpy_state("resnet18")
    dropped = torch_to_flax(state, template("resnet18"), head="drop")
    assert "fc" not in dropped["params"]
    backbone_only = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert_trees_equal(torch_to_flax(backbone_only, template("resnet18"), head="drop"),
                       dropped)
    with pytest.raises(WeightsMismatchError, match=r"missing from the file \(2\):\n"
                       r"\s+fc\.bias \(1000,\)\n\s+fc\.weight \(1000, 512\)"):
        torch_to_flax(backbone_only, template("resnet18"))
    with pytest.raises(ValueError, match="head must be"):
        torch_to_flax(state, template("resnet18"), head="replace")


# ------------------------------------------------------------------------- bad files


@needs_torch
def test_mismatch_errors_name_every_offending_tensor(tmp_path):
    state = dict(numpy_state("resnet18"))
    del state["layer3.1.bn2.running_var"]
    state["layer9.0.conv1.weight"] = np.zeros((2, 2, 3, 3), np.float32)
    state["layer2.0.conv1.weight"] = np.zeros((128, 64, 5, 5), np.float32)
    path = tmp_path / "bad.safetensors"
    save_safetensors(state, str(path))
    with pytest.raises(WeightsMismatchError) as info:
        load_pretrained(create_model("resnet18"), path)
    msg = str(info.value)
    assert str(path) in msg
    assert re.search(r"missing from the file \(1\):\n\s+layer3\.1\.bn2\.running_var \(256,\)",
                     msg), msg
    assert re.search(r"unexpected in the file \(1\):\n\s+layer9\.0\.conv1\.weight "
                     r"\(2, 2, 3, 3\)", msg), msg
    assert "mis-shaped, torch layout (1):" in msg
    assert "layer2.0.conv1.weight: expected (128, 64, 3, 3), got (128, 64, 5, 5)" in msg


@needs_torch
def test_long_lists_are_truncated():
    state = {k: v for k, v in numpy_state("resnet18").items() if not k.startswith("layer4")}
    n_missing = sum(not k.endswith("num_batches_tracked") for k in numpy_state("resnet18")
                    if k.startswith("layer4"))
    with pytest.raises(WeightsMismatchError) as info:
        torch_to_flax(state, template("resnet18"))
    msg = str(info.value)
    assert f"missing from the file ({n_missing})" in msg
    assert f"... and {n_missing - 10} more" in msg
    assert msg.count("layer4.") == 10


@needs_torch
def test_wrong_architecture_and_prefixed_keys():
    with pytest.raises(WeightsMismatchError) as info:
        torch_to_flax(numpy_state("resnet18"), template("densenet121"))
    msg = str(info.value)
    assert "features.conv0.weight (64, 3, 7, 7)" in msg  # Missing, and unexpected:
    assert "\n    conv1.weight (64, 3, 7, 7)" in msg
    assert "Nothing matched" in msg
    prefixed = {"module." + k: v for k, v in numpy_state("resnet18").items()}
    with pytest.raises(WeightsMismatchError, match="DataParallel"):
        torch_to_flax(prefixed, template("resnet18"))


@needs_torch
def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown suffix '\.npz'"):
        read_state_dict(tmp_path / "w.npz")
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 3}, tmp_path / "ckpt.pth")
    with pytest.raises(ValueError, match="flat state dict.*model, epoch"):
        read_state_dict(tmp_path / "ckpt.pth")


def test_torchvision_names_and_url_table():
    for name in ("densenet121", "densenet169", "densenet201", "densenet161", "resnet18"):
        assert pretrained.torchvision_name(create_model(name, num_classes=5)) == name
        file_name = pretrained.WEIGHT_URLS[name].rsplit("/", 1)[-1]
        assert re.fullmatch(name + r"-[0-9a-f]{8}\.pth", file_name)
    bc = create_model("densenet_bc")
    assert pretrained.torchvision_name(bc) is None
    with pytest.raises(ValueError, match="no weights for this DenseNet"):
        load_pretrained(bc)


# -------------------------------------------------------------------------- downloads


class _Server:
    """Serves a folder on 127.0.0.1 (loopback only) and counts GET requests."""

    def __init__(self, folder: Path):
        self.requests = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(folder), **kw)

            def do_GET(self):
                outer.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, file_name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{file_name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def served(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    folder = tmp_path / "www"
    folder.mkdir()
    server = _Server(folder)
    yield folder, server
    server.close()


def _publish(folder: Path, stem: str, payload: bytes, digest_len: int = 8) -> str:
    name = f"{stem}-{hashlib.sha256(payload).hexdigest()[:digest_len]}.pth"
    (folder / name).write_bytes(payload)
    return name


def _no_partials(folder: Path):
    """No temporary or partial download left behind (fileio's names start with '.')."""
    return not folder.exists() or not any(p.name.startswith(".") or ".partial" in p.name
                                          for p in folder.iterdir())


def test_download_is_cached_and_reused_offline(served, tmp_path):
    www, server = served
    payload = np.random.default_rng(0).bytes(300_000)
    name = _publish(www, "fake", payload)
    cache = tmp_path / "cache"
    urls = {"fake": server.url(name)}
    path = fetch_weights("fake", cache_dir=cache, urls=urls)
    assert path == cache / name and path.read_bytes() == payload
    assert server.requests == 1 and _no_partials(cache)
    assert fetch_weights("fake", cache_dir=cache, urls=urls) == path
    assert server.requests == 1
    server.close()  # Offline now: the cached file is still found.
    assert fetch_weights("fake", cache_dir=cache, urls=urls) == path


def test_full_digest_and_cache_dir_precedence(served, tmp_path, monkeypatch):
    www, server = served
    payload = b"weights" * 1000
    name = _publish(www, "full", payload, digest_len=64)
    urls = {"full": server.url(name)}
    monkeypatch.setenv("TLC_JAX_CACHE", str(tmp_path / "env_cache"))
    assert pretrained.default_cache_dir() == tmp_path / "env_cache"
    assert fetch_weights("full", urls=urls) == tmp_path / "env_cache" / name
    explicit = fetch_weights("full", urls=urls, cache_dir=tmp_path / "explicit")
    assert explicit == tmp_path / "explicit" / name and explicit.read_bytes() == payload
    assert server.requests == 2
    monkeypatch.delenv("TLC_JAX_CACHE")
    assert pretrained.default_cache_dir() == Path.home() / ".cache" / "tlc_jax" / "weights"


def test_checksum_mismatch_leaves_nothing(served, tmp_path):
    www, server = served
    payload = b"not the weights you want"
    (www / "fake-0123abcd.pth").write_bytes(payload)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsDownloadError) as info:
        fetch_weights("fake", cache_dir=cache, urls={"fake": server.url("fake-0123abcd.pth")})
    msg = str(info.value)
    assert "0123abcd" in msg and hashlib.sha256(payload).hexdigest() in msg
    assert not (cache / "fake-0123abcd.pth").exists() and _no_partials(cache)


def test_unreachable_url_says_what_to_fetch_and_where(tmp_path):
    with socket.socket() as s:  # A port nothing listens on.
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/densenet121-a639ec97.pth"
    cache = tmp_path / "cache"
    with pytest.raises(WeightsDownloadError) as info:
        load_pretrained(flax_model("densenet121"), cache_dir=cache, urls={"densenet121": url})
    msg = str(info.value)
    assert "densenet121-a639ec97.pth" in msg and url in msg and str(cache) in msg
    assert ".safetensors" in msg and _no_partials(cache)


def test_http_error_and_unhashed_names(served, tmp_path):
    _, server = served
    with pytest.raises(WeightsDownloadError, match="404"):
        fetch_weights("x", cache_dir=tmp_path, urls={"x": server.url("x-deadbeef.pth")})
    with pytest.raises(ValueError, match="no SHA-256 prefix"):
        fetch_weights("x", cache_dir=tmp_path, urls={"x": server.url("x.pth")})
    with pytest.raises(ValueError, match="No weights URL for 'resnet99'"):
        fetch_weights("resnet99", cache_dir=tmp_path)
    assert _no_partials(tmp_path)


@needs_torch
def test_load_pretrained_downloads_torchvision_file(served, tmp_path):
    """End to end: weights=None picks the architecture's URL, downloads, converts."""
    www, server = served
    staging = tmp_path / "staging.pth"
    torch.save(torch_model("resnet18").state_dict(), staging)
    name = _publish(www, "resnet18", staging.read_bytes())
    urls = {"resnet18": server.url(name)}
    model = flax_model("resnet18")
    variables = load_pretrained(model, cache_dir=tmp_path / "cache", urls=urls)
    assert (tmp_path / "cache" / name).is_file() and server.requests == 1
    assert_trees_equal(jax.tree.map(np.asarray, variables), converted("resnet18"))
