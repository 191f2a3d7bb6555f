"""Long-tail construction: the published CIFAR-LT sizes, properties, and bad input."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlc_jax.data import longtail_counts, longtail_indices, make_longtailed, synthetic


@pytest.mark.parametrize(
    "n_max, num_classes, ratio, total",
    [(5000, 10, 100, 12406), (5000, 10, 10, 20431), (500, 100, 100, 10847), (500, 100, 10, 19573)],
)
def test_published_cifar_lt_sizes(n_max, num_classes, ratio, total):
    counts = longtail_counts(n_max, num_classes, ratio)
    assert counts.sum() == total
    # The same on a CIFAR-shaped label array (labels only; no images needed).
    labels = np.repeat(np.arange(num_classes), n_max)
    indices, per_class = longtail_indices(labels, ratio, seed=0)
    assert len(indices) == total and len(np.unique(indices)) == total
    np.testing.assert_array_equal(per_class, counts)
    np.testing.assert_array_equal(np.bincount(labels[indices], minlength=num_classes), counts)
    assert np.all(np.diff(indices) > 0)


def test_cifar10_r100_counts_match_cao_et_al():
    np.testing.assert_array_equal(
        longtail_counts(5000, 10, 100), [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    )


def test_step_profile():
    np.testing.assert_array_equal(
        longtail_counts(500, 10, 10, profile="step"), [500] * 5 + [50] * 5
    )
    np.testing.assert_array_equal(
        longtail_counts(100, 5, 4, "step", step_fraction=0.4), [100, 100, 25, 25, 25]
    )
    labels = np.repeat(np.arange(4), 10)
    _, counts = longtail_indices(labels, 5, profile="step")
    np.testing.assert_array_equal(counts, [10, 10, 2, 2])


def test_exact_floors_where_floats_round_down():
    # 49 * (1/49) is 0.9999999999999999 in floats; the tail keeps its 1 image.
    assert longtail_counts(49, 2, 49).tolist() == [49, 1]
    assert longtail_counts(5000, 3, 100).tolist() == [5000, 500, 50]


def test_seeded_no_duplicates_nested_and_class_order():
    labels = np.repeat(np.arange(10), 100)
    a, _ = longtail_indices(labels, 10, seed=1)
    b, _ = longtail_indices(labels, 10, seed=1)
    c, _ = longtail_indices(labels, 10, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    stricter, _ = longtail_indices(labels, 100, seed=1)
    assert set(stricter) <= set(a)  # Each class takes a prefix of its own permutation.
    reversed_idx, counts = longtail_indices(labels, 10, seed=1, class_order=list(range(9, -1, -1)))
    assert counts[9] == 100 and counts[0] == 10
    np.testing.assert_array_equal(np.bincount(labels[reversed_idx]), counts)


def test_make_longtailed_on_a_dataset():
    ds = synthetic(num_classes=5, per_class=20, image_size=4, seed=0)
    lt, counts = make_longtailed(ds, 10, seed=3)
    np.testing.assert_array_equal(lt.class_counts(), counts)
    np.testing.assert_array_equal(counts, longtail_counts(20, 5, 10))
    # The images travel with their labels.
    lookup = {ds.images[i].tobytes(): ds.labels[i] for i in range(len(ds))}
    assert all(lookup[img.tobytes()] == lab for img, lab in zip(lt.images, lt.labels, strict=True))


def test_n_max_defaults_to_smallest_class_and_can_be_set():
    labels = np.repeat(np.arange(3), [30, 12, 40])
    _, counts = longtail_indices(labels, 4)
    assert counts.tolist() == [12, 6, 3]
    _, counts = longtail_indices(labels, 4, n_max=20, class_order=[2, 0, 1])
    assert counts.tolist() == [10, 5, 20]


@pytest.mark.parametrize("ratio", [0.5, 0.999, -1, float("nan"), float("inf")])
def test_ratio_below_one_or_not_finite(ratio):
    with pytest.raises(ValueError, match="ratio must be a finite number >= 1"):
        longtail_counts(100, 10, ratio)
    with pytest.raises(ValueError, match="ratio"):
        longtail_indices(np.repeat(np.arange(3), 5), ratio)


def test_a_class_left_empty_names_it_and_the_fix():
    ds = synthetic(num_classes=10, per_class=5, seed=0)
    with pytest.raises(ValueError) as e:
        make_longtailed(ds, 10)
    message = str(e.value)
    assert (
        "3 class(es) with 0 images: class 7 (class_7), class 8 (class_8), class 9 (class_9)"
        in message
    )
    assert "ratio <= n_max (5)" in message
    with pytest.raises(ValueError, match=r"positions 7\.\.9 of 10 with 0 images"):
        longtail_counts(5, 10, 10)


def test_a_class_with_too_few_images():
    labels = np.repeat(np.arange(3), [50, 10, 50])
    with pytest.raises(ValueError, match="class 1 has 10, needs 25"):
        longtail_indices(labels, 4, n_max=50)
    with pytest.raises(ValueError, match="class 1 has no images"):
        longtail_indices(np.repeat([0, 2], 5), 2, num_classes=3)


def test_bad_class_order_and_profile():
    labels = np.repeat(np.arange(3), 5)
    with pytest.raises(ValueError, match="permutation"):
        longtail_indices(labels, 2, class_order=[0, 0, 1])
    with pytest.raises(ValueError, match="profile"):
        longtail_counts(10, 3, 2, profile="linear")


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    n_max=st.integers(1, 100_000),
    num_classes=st.integers(2, 300),
    ratio=st.floats(1.0, 1000.0, allow_nan=False) | st.integers(1, 1000),
    profile=st.sampled_from(["exp", "step"]),
    step_fraction=st.floats(0.01, 0.99),
)
def test_counts_properties(n_max, num_classes, ratio, profile, step_fraction):
    tail = math.floor(Fraction(n_max) / Fraction(ratio))
    if tail == 0:
        with pytest.raises(ValueError, match="0 images"):
            longtail_counts(n_max, num_classes, ratio, profile, step_fraction)
        return
    counts = longtail_counts(n_max, num_classes, ratio, profile, step_fraction)
    assert counts.shape == (num_classes,) and counts.dtype == np.int64
    assert counts[0] == n_max
    assert counts[-1] == tail
    assert np.all(np.diff(counts) <= 0)
    if profile == "exp":  # Within one image of the real-valued formula.
        exact = n_max * float(ratio) ** (-np.arange(num_classes) / (num_classes - 1))
        assert np.all(np.abs(counts - exact) < 1 + 1e-6 * n_max)
