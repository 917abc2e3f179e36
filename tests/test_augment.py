"""Augmentation recipes: 1.x meaning of the notebook arguments, the 2.x-literal switch, and `apply`."""
import warnings

import albumentations as A
import cv2
import numpy as np
import pytest

from harness.data import albu_compat as compat
from harness.data.augment import APIS, RECIPES, apply, build

SEEDS = range(20)
GREY = 128


def _random(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _checkerboard(size=64, cell=8):
    yy, xx = np.mgrid[:size, :size]
    return np.repeat(((yy // cell + xx // cell) % 2 * 255).astype(np.uint8)[..., None], 3, axis=2)


def _run(transform, img, seed):
    transform.set_random_seed(seed)
    return transform(image=img)["image"]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("name", [n for n in RECIPES if n != "none"])
def test_every_recipe_builds_runs_and_is_deterministic(name, api):
    channels = 7 if name == "v7" else 3
    transform = build(name, api)
    image = _random((64, 64, channels))
    for per_slice in (True, False):
        slices = np.stack([image] * 3)
        out = apply(transform, slices, per_slice, seed=5)
        assert out.shape == slices.shape and out.dtype == np.uint8
        assert np.array_equal(out, apply(transform, slices, per_slice, seed=5))
    # identical slices stay identical when they share one parameter draw (noise included)
    shared = apply(transform, np.stack([image] * 3), per_slice=False, seed=11)
    assert np.array_equal(shared[0], shared[1]) and np.array_equal(shared[0], shared[2])
    changed = [not np.array_equal(apply(transform, image[None], True, seed)[0], image) for seed in SEEDS]
    assert any(changed)


def test_none_returns_input_and_unknown_api_is_refused():
    slices = _random((2, 8, 8, 3))
    assert build("none") is None and apply(None, slices, True, 0) is slices
    with pytest.raises(ValueError):
        build("v8", api="3.x")


@pytest.mark.parametrize("name", ["rbc0.1", "hflip", "scale0.05"])
def test_tta_views_take_the_7_channel_stack(name):
    stack = _random((1, 64, 64, 7))
    assert apply(build(name), stack, per_slice=False, seed=0).shape == stack.shape


def test_gauss_noise_1x_sigma_is_the_root_of_the_variance_range():
    flat = np.full((64, 64, 3), GREY, np.uint8)
    noise = compat.gauss_noise((5, 30), p=1.0)
    stds = [(_run(noise, flat, s).astype(float) - GREY).std() for s in SEEDS]
    assert min(stds) > np.sqrt(5) * 0.9 and max(stds) < np.sqrt(30) * 1.1
    assert max(stds) < 0.2 * 255 / 5  # far below the 2.x default


def test_gauss_noise_2x_ignores_var_limit_and_uses_the_default_std_range():
    flat = np.full((64, 64, 3), GREY, np.uint8)
    noise = compat.gauss_noise((5, 30), p=1.0, api="2.x")
    stds = [(_run(noise, flat, s).astype(float) - GREY).std() for s in SEEDS]
    # clipping at 0/255 only lowers the largest sigmas
    assert min(stds) > 0.2 * 255 * 0.9 and max(stds) < 0.44 * 255 * 1.02


def _holes(image):
    """(count, heights, widths) of the zeroed areas, or None if some are not plain rectangles (overlaps)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((image[..., 0] == 0).astype(np.uint8), connectivity=4)
    rects = stats[1:]
    if any(r[cv2.CC_STAT_AREA] != r[cv2.CC_STAT_WIDTH] * r[cv2.CC_STAT_HEIGHT] for r in rects):
        return None
    return n - 1, rects[:, cv2.CC_STAT_HEIGHT], rects[:, cv2.CC_STAT_WIDTH]


@pytest.mark.parametrize("api, counts, sizes", [("1.x", (2, 6), (16, 32)), ("2.x", (1, 2), (51, 103))])
def test_coarse_dropout_hole_counts_and_sizes(api, counts, sizes):
    image = np.full((512, 512, 3), 200, np.uint8)
    dropout = compat.coarse_dropout(max_holes=6, max_height=32, max_width=32, min_holes=2, min_height=16,
                                    min_width=16, fill_value=0, p=1.0, api=api)
    measured = [_holes(_run(dropout, image, s)) for s in range(40)]
    clean = [m for m in measured if m is not None]
    assert len(clean) >= 30  # overlapping holes are rare on 512 px
    for count, heights, widths in clean:
        assert counts[0] <= count <= counts[1]
        assert heights.min() >= sizes[0] and heights.max() <= sizes[1]
        assert widths.min() >= sizes[0] and widths.max() <= sizes[1]


def _mean_change(transform, image):
    return np.mean([np.abs(_run(transform, image, s).astype(float) - image).mean() for s in range(10)])


def test_elastic_alpha_affine_moves_the_pattern_only_in_1x():
    board = _checkerboard()
    with_affine = compat.elastic_transform(alpha=1, sigma=50, alpha_affine=20, p=1.0)
    without = compat.elastic_transform(alpha=1, sigma=50, alpha_affine=0, p=1.0)
    literal_2x = compat.elastic_transform(alpha=1, sigma=50, alpha_affine=20, p=1.0, api="2.x")
    assert _mean_change(with_affine, board) > 30
    assert _mean_change(without, board) < 1  # alpha=1, sigma=50: a ~0.01 px field
    assert _mean_change(literal_2x, board) < 10  # 2.x's field is ~0.2 px, still far from the affine


@pytest.mark.parametrize("transform", [compat.elastic_transform(1, 50, alpha_affine=20, p=1.0),
                                       compat.grid_distortion(5, 0.3, p=1.0)], ids=["elastic", "grid"])
def test_7_channel_stack_is_warped_like_its_slices(transform):
    stack = _random((64, 64, 7))
    whole = _run(transform, stack, 3)
    one_by_one = np.dstack([_run(transform, np.ascontiguousarray(stack[..., c:c + 1]), 3) for c in range(7)])
    assert np.array_equal(whole, one_by_one)


def test_grid_distortion_1x_last_cell_ends_at_the_border():
    axis = compat._grid_axis_1x(64, 5, [1.0] * 6)  # 64 = 5 cells of 12 + 4 px; 2.x would end at 72
    assert np.allclose(axis[-4:], [60, 61 + 1 / 3, 62 + 2 / 3, 64])


def test_per_slice_draws_differ_and_shared_draws_align():
    transform = build("scale0.05")
    slices = np.stack([_random((64, 64, 3))] * 7)
    own = apply(transform, slices, per_slice=True, seed=1)
    shared = apply(transform, slices, per_slice=False, seed=1)
    assert len({o.tobytes() for o in own}) == 7
    assert all(np.array_equal(shared[0], s) for s in shared)


def test_recipe_gives_each_transform_its_own_random_stream():
    # 2.x's Compose.set_random_seed gives every child the same seed: both flips would always agree
    recipe = compat.Recipe([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    image = _random((8, 8, 3))
    one_flip = 0
    for s in range(100):
        out = _run(recipe, image, s)
        one_flip += np.array_equal(out, image[:, ::-1]) or np.array_equal(out, image[::-1])
    assert 30 < one_flip < 70


def test_hflip_flips_exactly():
    slices = _random((3, 64, 64, 3))
    assert np.array_equal(apply(build("hflip"), slices, per_slice=True, seed=0), slices[:, :, ::-1])


def test_scale_tta_reflects_the_border_in_1x_and_pads_black_in_2x():
    flat = np.full((1, 64, 64, 3), 100, np.uint8)
    assert all(apply(build("scale0.05"), flat, True, s).min() > 0 for s in SEEDS)
    assert any(apply(build("scale0.05", "2.x"), flat, True, s).min() == 0 for s in SEEDS)


def test_shift_scale_rotate_scale_is_isotropic_only_in_1x():
    def scales(api):
        ssr = compat.shift_scale_rotate(0.1, 0.15, 15, p=1.0, border_mode=cv2.BORDER_CONSTANT, api=api)
        ssr.set_random_seed(0)
        return [ssr.get_params_dependent_on_data({"shape": (64, 64, 3)}, {})["scale"] for _ in range(5)]
    assert all(s["x"] == s["y"] for s in scales("1.x"))
    assert all(s["x"] != s["y"] for s in scales("2.x"))


def _literal(factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory()


@pytest.mark.parametrize("ours, notebook_line", [
    (compat.shift_scale_rotate(0.1, 0.15, 15, p=1.0, border_mode=cv2.BORDER_CONSTANT, api="2.x"),
     lambda: A.ShiftScaleRotate(shift_limit=0.1, scale_limit=0.15, rotate_limit=15,
                                border_mode=cv2.BORDER_CONSTANT, value=0, p=1.0)),
    (compat.shift_scale_rotate(0, 0.05, 0, p=1.0, api="2.x"),
     lambda: A.ShiftScaleRotate(shift_limit=0, scale_limit=0.05, rotate_limit=0, p=1.0)),
    (compat.gauss_noise((5, 40), p=1.0, api="2.x"), lambda: A.GaussNoise(var_limit=(5, 40), p=1.0)),
    (compat.elastic_transform(1, 50, alpha_affine=25, p=1.0, api="2.x"),
     lambda: A.ElasticTransform(alpha=1, sigma=50, alpha_affine=25, p=1.0)),
    (compat.grid_distortion(5, 0.1, p=1.0, api="2.x"), lambda: A.GridDistortion(num_steps=5, distort_limit=0.1, p=1.0)),
    (compat.optical_distortion(0.1, 0.05, p=1.0, api="2.x"),
     lambda: A.OpticalDistortion(distort_limit=0.1, shift_limit=0.05, p=1.0)),
    (compat.coarse_dropout(6, 32, 32, 2, 16, 16, fill_value=0, p=1.0, api="2.x"),
     lambda: A.CoarseDropout(max_holes=6, max_height=32, max_width=32, min_holes=2, min_height=16, min_width=16,
                             fill_value=0, p=1.0)),
], ids=["ssr", "ssr_default_border", "gauss", "elastic", "grid", "optical", "dropout"])
def test_2x_switch_matches_the_notebook_line_run_under_2x(ours, notebook_line):
    literal = _literal(notebook_line)
    image = _random((64, 64, 3))
    for seed in range(3):
        assert np.array_equal(_run(ours, image, seed), _run(literal, image, seed))
