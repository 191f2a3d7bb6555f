"""Online augmentation: each transform checked against a brute-force numpy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tlc_jax import augment

IMAGES = np.random.default_rng(0).random((16, 6, 5, 3)).astype(np.float32)


def windows(image, padding):
    """Every crop a padding-p random crop can produce, by brute force."""
    h, w, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    return [padded[i:i + h, j:j + w] for i in range(2 * padding + 1)
            for j in range(2 * padding + 1)]


def test_random_crop_is_a_window_of_the_padded_image_and_varies():
    out = np.asarray(augment.random_crop(jax.random.key(0), jnp.asarray(IMAGES), 2))
    assert out.shape == IMAGES.shape
    for img, got in zip(IMAGES, out):
        assert any(np.array_equal(got, w) for w in windows(img, 2))
    shifted = sum(not np.array_equal(a, b) for a, b in zip(IMAGES, out))
    assert shifted >= 8  # 24 of 25 offsets move the image.


def test_random_flip_mirrors_about_half():
    out = np.asarray(augment.random_flip(jax.random.key(1), jnp.asarray(IMAGES)))
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, IMAGES)]
    kept = [np.array_equal(o, i) for o, i in zip(out, IMAGES)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 3 <= sum(flipped) <= 13


def test_cutout_zeroes_one_clipped_square_per_image():
    ones = jnp.ones((32, 9, 9, 3))
    out = np.asarray(augment.cutout(jax.random.key(2), ones, 4))
    for img in out:
        zero = (img == 0).all(axis=-1)
        assert ((img == 0).any(axis=-1) == zero).all()  # All channels cut together.
        rows, cols = np.nonzero(zero)
        assert rows.size > 0
        # The zeros form a full rectangle of at most 4 x 4 (clipped at the border).
        assert zero.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert rows.max() - rows.min() < 4 and cols.max() - cols.min() < 4
    assert (out == 0).all(axis=-1).sum(axis=(1, 2)).max() == 16  # Some square unclipped.


def test_color_jitter_zero_strength_is_identity_and_keeps_range():
    x = jnp.asarray(IMAGES)
    np.testing.assert_allclose(augment.color_jitter(jax.random.key(3), x, 0.0), x,
                               atol=1e-6)
    out = np.asarray(augment.color_jitter(jax.random.key(3), x, 0.4))
    assert out.min() >= 0 and out.max() <= 1 and not np.allclose(out, IMAGES)
    with pytest.raises(ValueError, match="RGB"):
        augment.color_jitter(jax.random.key(3), x[..., :1], 0.4)


def test_augment_batch_is_keyed_and_jittable():
    opts = augment.AugmentOptions(crop_padding=2, flip=True, color_jitter=0.2, cutout=2)
    run = jax.jit(lambda k, x: augment.augment_batch(k, x, opts))
    a = run(jax.random.key(5), jnp.asarray(IMAGES))
    np.testing.assert_array_equal(a, run(jax.random.key(5), jnp.asarray(IMAGES)))
    assert not np.array_equal(a, run(jax.random.key(6), jnp.asarray(IMAGES)))
    off = augment.AugmentOptions(crop_padding=0, flip=False)
    np.testing.assert_array_equal(augment.augment_batch(jax.random.key(5),
                                                        jnp.asarray(IMAGES), off), IMAGES)


def test_materialize_offline_copies():
    u8 = (IMAGES * 255).astype(np.uint8)
    opts = augment.AugmentOptions(crop_padding=1, flip=True)
    copies = augment.materialize(u8, copies=3, seed=0, options=opts, chunk=5)
    assert copies.shape == (3, *u8.shape) and copies.dtype == np.uint8
    np.testing.assert_array_equal(copies, augment.materialize(u8, 3, 0, opts, chunk=5))
    assert not np.array_equal(copies[0], copies[1])
    for img, got in zip(u8, copies[2]):  # Every copy is a flipped or plain window.
        candidates = windows(img, 1) + windows(img[:, ::-1], 1)
        assert any(np.array_equal(got, w) for w in candidates)
    with pytest.raises(ValueError, match="copies must be >= 1"):
        augment.materialize(u8, 0, 0)
