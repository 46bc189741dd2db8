"""Improved precision/recall: against a dense sklearn/scipy reference for many tilings, and known answers."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

from autophagy.metrics import precision_recall
from autophagy.metrics.precision_recall import knn_radii, knn_radii_squared, precision_recall_against

pytestmark = pytest.mark.usefixtures("one_thread")


def _dense_reference(real, generated, k):
    """Kynkaanniemi et al. (2019), Eqs. 1-3, with full float64 distance matrices."""

    def radii(x):
        distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
        return distances[:, k]  # column 0 is the point itself

    def coverage(queries, centres):
        return float(np.mean((cdist(queries, centres) <= radii(centres)[None, :]).any(axis=1)))

    return coverage(generated, real), coverage(real, generated)


@pytest.mark.parametrize("row_chunk, col_chunk", [(10_000, 10_000), (7, 13), (64, 5), (1, 300), (257, 64)])
def test_matches_dense_reference(row_chunk, col_chunk):
    rng = np.random.default_rng(0)
    real = rng.standard_normal((301, 16)).astype(np.float32)
    generated = (1.3 * rng.standard_normal((257, 16)) + 0.4).astype(np.float32)
    expected = _dense_reference(real.astype(np.float64), generated.astype(np.float64), k=3)
    assert 0.1 < expected[0] < 0.9 and 0.1 < expected[1] < 0.99  # a non-trivial case
    assert precision_recall(real, generated, k=3, row_chunk=row_chunk, col_chunk=col_chunk) == expected


@pytest.mark.parametrize("k", [1, 5])
def test_matches_dense_reference_other_k(k):
    rng = np.random.default_rng(k)
    real, generated = rng.standard_normal((200, 8)), rng.standard_normal((150, 8)) * 0.8
    assert precision_recall(real, generated, k=k, row_chunk=33, col_chunk=50) == _dense_reference(real, generated, k)


@pytest.mark.parametrize("k", [1, 3, 6])
@pytest.mark.parametrize("row_chunk, col_chunk", [(10, 3), (3, 10), (7, 7), (1, 1), (64, 200), (123, 123), (500, 2)])
def test_radii_match_sklearn_with_chunks(k, row_chunk, col_chunk):
    """Each pair's distance is computed in one tile only (the upper triangle of blocks) and serves
    both rows; at every tiling, square or not, dividing the rows or not, the radii are sklearn's."""
    x = np.random.default_rng(1).standard_normal((123, 5))
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    radii = knn_radii_squared(torch.as_tensor(x, dtype=torch.float32), k, row_chunk=row_chunk, col_chunk=col_chunk)
    np.testing.assert_allclose(radii.sqrt().numpy(), distances[:, k], rtol=1e-4)


def test_identical_sets():
    x = np.random.default_rng(2).standard_normal((100, 10))
    assert precision_recall(x, x.copy(), row_chunk=30, col_chunk=40) == (1.0, 1.0)


def test_far_apart_sets():
    rng = np.random.default_rng(3)
    real, generated = rng.standard_normal((100, 4)), rng.standard_normal((80, 4)) + 1000.0
    assert precision_recall(real, generated) == (0.0, 0.0)


def test_one_mode_of_two():
    """Samples that are exactly one of two real modes: every sample is real (precision 1); half the
    real data, the other mode, lies far from every sample (recall 1/2)."""
    rng = np.random.default_rng(4)
    mode_a, mode_b = rng.standard_normal((100, 6)), rng.standard_normal((100, 6)) + 50.0
    real = np.concatenate([mode_a, mode_b])
    assert precision_recall(real, mode_a.copy(), row_chunk=64, col_chunk=48) == (1.0, 0.5)


@pytest.mark.parametrize(
    "real, generated, k, message",
    [
        (np.zeros((10, 3)), np.zeros((10, 4)), 3, "3 dimensions, generated features have 4"),
        (np.zeros((3, 2)), np.zeros((10, 2)), 3, "more than 3 samples, got 3"),
        (np.zeros((10, 2)), np.zeros((2, 2)), 3, "generated features: k-NN radii"),
        (np.full((10, 2), np.nan), np.zeros((10, 2)), 3, "NaN"),
        (np.zeros(10), np.zeros((10, 2)), 3, "2-D array"),
        (np.zeros((10, 2)), np.zeros((10, 2)), 0, "k must be a positive integer"),
    ],
)
def test_rejects_bad_input(real, generated, k, message):
    with pytest.raises(ValueError, match=message):
        precision_recall(real, generated, k=k)


# ------------------------------------------------------------------ far from the origin, duplicates


def _clouds(dtype):
    """Two overlapping unit-scale clouds in d = 32 (the non-trivial P/R of the issue's check)."""
    rng = np.random.default_rng(10)
    real = rng.standard_normal((600, 32))
    generated = 1.1 * rng.standard_normal((500, 32)) + 0.2
    return real.astype(dtype), generated.astype(dtype)


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_a_common_offset_changes_nothing(offset):
    """||a||^2 - 2 a.b + ||b||^2 in float32 lost the distances far from the origin (on these clouds
    |dP| = 0.118 at 10^3 and 0.606 at 10^4 before the features were centred). Float64 features shifted
    in float64 give the same P/R exactly: centring undoes the shift up to about 1e-12, far below
    float32's rounding."""
    real, generated = _clouds(np.float64)
    expected = precision_recall(real, generated, row_chunk=128, col_chunk=200)
    assert expected == _dense_reference(real, generated, k=3) and 0.2 < expected[0] < 0.8
    assert precision_recall(real + offset, generated + offset, row_chunk=128, col_chunk=200) == expected


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_a_common_offset_on_float32_features(offset):
    """float32 features plus 10^4 in float32 are themselves moved by up to half an ulp of 10^4
    (4.9e-4 per coordinate, a few 1e-3 on a distance, where the k-NN radii are 4.5 to 7.3): a point
    that close to a ball's edge may change sides, so P/R may differ by a few of 500-600 points; the
    test allows 0.01 (measured: 0 at 10^3, 0.002 at 10^4; before the fix 0.118 and 0.606)."""
    real, generated = _clouds(np.float32)
    p0, r0 = precision_recall(real, generated)
    p, r = precision_recall(real + np.float32(offset), generated + np.float32(offset))
    assert abs(p - p0) <= 0.01 and abs(r - r0) <= 0.01


@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("row_chunk, col_chunk", [(10_000, 10_000), (7, 13), (1, 300), (64, 5)])
def test_duplicated_points_have_radius_zero_and_cover_their_copies(offset, row_chunk, col_chunk):
    """Every real point four times (k = 3: its three nearest other points are copies, radius 0);
    half the generated points are exact copies of real points (covered: distance 0 <= radius 0),
    the rest lie 0.5 away or elsewhere (not covered). Two modes 30 apart keep the points away from
    the real mean; the result is the float64 dense reference's at every tiling and offset."""
    rng = np.random.default_rng(11)
    points = rng.standard_normal((120, 16))
    points[:60, 0] += 30.0
    real = np.repeat(points, 4, axis=0)
    generated = np.concatenate([points[:50], points[50:80] + 0.5, rng.standard_normal((20, 16))])
    expected = _dense_reference(real, generated, k=3)
    assert expected[0] == 0.5  # the 50 copies, and none of the others
    radii = knn_radii_squared(
        torch.as_tensor(real - real.mean(axis=0), dtype=torch.float32), 3, row_chunk=row_chunk, col_chunk=col_chunk
    )
    assert float(radii.max()) < 1e-3  # zero up to float32 rounding of the norms (about 30^2 * 1e-7)
    for dtype in (np.float64, np.float32):
        got = precision_recall(
            (real + offset).astype(dtype),
            (generated + offset).astype(dtype),
            k=3,
            row_chunk=row_chunk,
            col_chunk=col_chunk,
        )
        assert got == expected, (dtype, got, expected)


@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("row_chunk, col_chunk", [(10_000, 10_000), (7, 13), (1, 300), (64, 5)])
def test_duplicated_generated_points_cover_their_real_copies(offset, row_chunk, col_chunk):
    """A collapsed model repeats samples: every generated point four times (radius 0 with k = 3),
    half the real points exact copies of them. Recall counts those copies (0.5) at every tiling and
    offset, as the float64 reference does; it did not when the generated radii were computed in the
    generated set's own frame and compared with tiles in the real set's frame (0.40 to 0.45)."""
    rng = np.random.default_rng(11)
    points = rng.standard_normal((120, 16))
    points[:60, 0] += 30.0
    generated = np.repeat(points, 4, axis=0)
    real = np.concatenate([points[:50], points[50:80] + 0.5, rng.standard_normal((20, 16))])
    expected = _dense_reference(real, generated, k=3)
    assert expected[1] == 0.5
    for dtype in (np.float64, np.float32):
        got = precision_recall(
            (real + offset).astype(dtype),
            (generated + offset).astype(dtype),
            k=3,
            row_chunk=row_chunk,
            col_chunk=col_chunk,
        )
        assert got == expected, (dtype, got, expected)


@pytest.mark.parametrize("row_chunk, col_chunk", [(10_000, 10_000), (7, 13), (64, 5)])
def test_given_real_radii_give_the_numbers_computed_here(row_chunk, col_chunk):
    """Radii computed beforehand (as cached with reference features, at the default tiling) give
    the P/R computed from scratch and the dense reference's, also far from the origin."""
    real, generated = _clouds(np.float32)
    dense = _dense_reference(real.astype(np.float64), generated.astype(np.float64), k=3)
    for offset in (0.0, 1e3):
        r, g = real + np.float32(offset), generated + np.float32(offset)
        plain = precision_recall(r, g, row_chunk=row_chunk, col_chunk=col_chunk)
        given = precision_recall(r, g, row_chunk=row_chunk, col_chunk=col_chunk, real_radii2=knn_radii(r, 3))
        assert given == plain
        if offset == 0.0:
            assert plain == dense


def test_knn_radii_match_sklearn_far_from_the_origin():
    x = np.random.default_rng(5).standard_normal((300, 12)) + 1e4
    distances, _ = NearestNeighbors(n_neighbors=4).fit(x - 1e4).kneighbors(x - 1e4)
    radii2 = knn_radii(x, 3, row_chunk=64, col_chunk=100)
    assert radii2.dtype == np.float32 and radii2.shape == (300,)
    np.testing.assert_allclose(np.sqrt(radii2), distances[:, 3], rtol=1e-4)


@pytest.mark.parametrize(
    "radii2, message",
    [(np.ones(9), r"real radii must be \[10\]"), (-np.ones(10), "non-negative"), (np.full(10, np.nan), "finite")],
)
def test_rejects_bad_radii(radii2, message):
    x = np.random.default_rng(6).standard_normal((10, 3))
    with pytest.raises(ValueError, match=message):
        precision_recall(x, x, real_radii2=radii2)


# ------------------------------------------------------------------ several real sets in one frame


@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("row_chunk, col_chunk", [(10_000, 10_000), (7, 13), (64, 5)])
def test_against_two_real_sets_in_the_first_ones_frame(offset, row_chunk, col_chunk):
    """A collapsed model (every generated point four times, radius 0) against a train and a test
    set that each hold exact copies of half the generated points: recall 0.5 for both, as the
    float64 reference says, though the generated radii are computed once, in the train set's frame,
    and the test set's own mean is elsewhere (its radii are computed in that same frame)."""
    rng = np.random.default_rng(12)
    points = rng.standard_normal((120, 16))
    points[:60, 0] += 30.0
    generated = np.repeat(points, 4, axis=0)
    train = np.concatenate([points[:50], points[50:80] + 0.5, rng.standard_normal((20, 16))])
    test = np.concatenate([points[70:100], rng.standard_normal((30, 16)) - 3.0])
    for dtype in (np.float64, np.float32):
        # float32 + 10^4 rounds the points themselves: the reference sees the rounded points
        g = (generated + offset).astype(dtype)
        reals = {"train": (train + offset).astype(dtype), "test": (test + offset).astype(dtype)}
        got = precision_recall_against(g, reals, row_chunk=row_chunk, col_chunk=col_chunk)
        for name, real in reals.items():
            expected = _dense_reference(real.astype(np.float64), g.astype(np.float64), k=3)
            assert got[name] == expected and expected[1] == 0.5, (name, dtype)


def test_against_given_radii_in_the_frame_give_the_numbers_computed_here():
    """Radii computed beforehand with ``centre`` the first set's mean (as cached for every reference
    after the first) give what computing them here gives; one real set alone is precision_recall."""
    real, generated = _clouds(np.float32)
    train, test = real[:400] + np.float32(1e3), real[400:] + np.float32(1e3)
    generated = generated + np.float32(1e3)
    centre = train.mean(axis=0, dtype=np.float64)
    plain = precision_recall_against(generated, {"train": train, "test": test})
    radii = {"train": knn_radii(train, 3), "test": knn_radii(test, 3, centre=centre)}
    assert precision_recall_against(generated, {"train": train, "test": test}, real_radii2=radii) == plain
    assert precision_recall_against(generated, {"test": test}, centre=centre) == {"test": plain["test"]}
    assert precision_recall_against(generated, {"train": train}) == {"train": precision_recall(train, generated)}


def test_knn_radii_in_a_given_frame_are_those_of_the_moved_set():
    x = np.random.default_rng(7).standard_normal((200, 8)) + 3.0
    centre = np.full(8, 2.5)
    np.testing.assert_array_equal(knn_radii(x, 3, centre=centre), knn_radii(x - centre, 3, centre=np.zeros(8)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reals": {}}, "at least one real set"),
        ({"real_radii2": {"valid": np.ones(10)}}, r"radii of \['valid'\], which are not among the real sets"),
        ({"centre": np.zeros(4)}, r"the centre must be \[3\]"),
        ({"reals": {"test": np.zeros((10, 4))}}, "test features have 4 dimensions, generated features have 3"),
    ],
)
def test_against_rejects_bad_input(kwargs, message):
    x = np.random.default_rng(8).standard_normal((10, 3))
    arguments = {"reals": {"train": x}} | kwargs
    with pytest.raises(ValueError, match=message):
        precision_recall_against(x, **arguments)
