"""The analyzer classifies live frames with a model trained by the trainer."""

import io

import pytest
from PIL import Image

from tlc_jax.data import load_digits
from tlc_jax.live import devices as D
from tlc_jax.live.analyzer import Analyzer


@pytest.fixture
def run_dir(trained_run):
    return trained_run


def digit_frames(n):
    ds = load_digits()
    frames = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(ds.images[i, :, :, 0]).resize((32, 32)).save(buf, "PNG")
        frames.append(D.make_frame(f"cam-{i % 4}", buf.getvalue(), D.DEFAULT_MAX_PIXELS))
    return frames


def test_classify_in_fixed_batch_sizes_without_recompiling(run_dir):
    analyzer = Analyzer(run_dir, batch_sizes=(1, 4, 8), top_k=3)
    analyzer.warm_up()
    assert analyzer._predict._cache_size() == 3
    frames = digit_frames(19)
    for n in (1, 3, 8, 19):  # 19 = 8 + 8 + 3: every chunk padded to a warmed size.
        predictions = analyzer.classify(frames[:n])
        assert len(predictions) == n
    assert analyzer._predict._cache_size() == 3
    for p, f in zip(predictions, frames):
        assert p.device == f.device and p.sha256 == f.sha256
        assert len(p.classes) == 3 and set(p.classes) <= set(analyzer.class_names)
        assert list(p.probabilities) == sorted(p.probabilities, reverse=True)
        assert 0 < sum(p.probabilities) <= 1 + 1e-6
    # Preprocessing follows the model's input: 8x8 grey here, whatever the frame size.
    assert analyzer.preprocess(frames[0]).shape == (8, 8, 1)


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="work directory of a run"):
        Analyzer(tmp_path)


def test_large_jpeg_frames_decode_reduced_to_the_model_input(run_dir):
    """A 1080p JPEG camera frame becomes the model's 8x8 grey input, decoded at 1/8 scale
    by Pillow's draft mode: within a few grey levels of decoding it whole."""
    import numpy as np

    analyzer = Analyzer(run_dir, batch_sizes=(1,))
    digit = load_digits().images[0, :, :, 0]
    big = Image.fromarray(digit).resize((1920, 1080), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.convert("RGB").save(buf, "JPEG", quality=95)
    frame = D.make_frame("cam", buf.getvalue(), D.DEFAULT_MAX_PIXELS)
    x = analyzer.preprocess(frame)
    assert x.shape == (8, 8, 1) and x.dtype == np.uint8
    with Image.open(io.BytesIO(frame.data)) as im:  # The whole decode, as reference.
        im.load()
        assert im.size == (1920, 1080)
        full = np.asarray(im.convert("L").resize((8, 8), Image.Resampling.BILINEAR))
    assert np.abs(x[..., 0].astype(int) - full.astype(int)).mean() < 4
