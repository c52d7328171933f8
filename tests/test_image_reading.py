"""Reading image files (fewshot_sla.data.images: open_image / to_mode / walk_files) wherever they are
read: dataset folders (decode_files, load_folder), predict's preprocessing and folder listing.
References: numpy rotations of the upright pixels (EXIF), hand formulas (16-bit scaling, alpha on
white, CMYK), hand-written file lists (symbolic-link cycles)."""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_sla.data import DataError
from fewshot_sla.data.archives import FileTree
from fewshot_sla.data.folder import load_folder
from fewshot_sla.data.images import decode_image, open_image, to_mode, walk_files
from fewshot_sla.predict.preprocess import ImageSpec, image_pixels, list_images
from fewshot_sla.predict.support import read_support

ORIENT = 0x0112
# EXIF orientation -> the rotation (np.rot90's k) that turns the stored pixels upright
UPRIGHT_K = {1: 0, 3: 2, 6: -1, 8: 1}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _save_oriented(path, upright, orientation, **kw):
    """Store ``upright`` as a viewer would need EXIF ``orientation`` to show it upright."""
    stored = np.rot90(upright, -UPRIGHT_K[orientation]).copy()
    exif = Image.Exif()
    exif[ORIENT] = orientation
    Image.fromarray(stored).save(path, exif=exif, **kw)
    return stored


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- EXIF orientation
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_gives_the_upright_pixels(tmp_path, orientation):
    up = _rng(orientation).integers(0, 256, (4, 6, 3), dtype=np.uint8)  # not square: a transpose shows
    path = tmp_path / "photo.png"
    stored = _save_oriented(path, up, orientation)
    if orientation != 1:
        assert stored.shape != up.shape or not np.array_equal(stored, up)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), "RGB", name=path.name), up)
    np.testing.assert_array_equal(np.asarray(open_image(path)), up)


def test_exif_orientation_in_predict_and_folder_datasets(tmp_path):
    up = _rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    (tmp_path / "ds" / "a").mkdir(parents=True)
    (tmp_path / "ds" / "b").mkdir()
    _save_oriented(tmp_path / "ds" / "a" / "0.png", up, 6)
    Image.fromarray(up[::-1].copy()).save(tmp_path / "ds" / "b" / "0.png")
    spec = ImageSpec(3, 8)
    got = image_pixels(tmp_path / "ds" / "a" / "0.png", spec)
    np.testing.assert_array_equal((got * 255).round().byte().permute(1, 2, 0).numpy(), up)
    # a PIL image the caller opened keeps its tag too: predict applies it as well
    with Image.open(tmp_path / "ds" / "a" / "0.png") as im:
        np.testing.assert_array_equal(image_pixels(im, spec), got)
    ds = load_folder(tmp_path / "ds", "all", channels=3)
    np.testing.assert_array_equal(ds.images[0].permute(1, 2, 0).numpy(), up)


def test_exif_orientation_of_a_jpeg_photo_equals_rot90_of_its_decoded_pixels(tmp_path):
    up = np.zeros((12, 20, 3), np.uint8)
    up[:, :10] = (200, 30, 30)  # left half red: a rotation moves it
    path = tmp_path / "phone.jpg"
    _save_oriented(path, up, 6, quality=95)
    with Image.open(path) as raw:  # the stored (sideways) pixels, decoded by PIL without EXIF
        stored = np.asarray(raw.convert("RGB"))
    np.testing.assert_array_equal(decode_image(path.read_bytes(), "RGB", name=str(path)), np.rot90(stored, -1))


# --------------------------------------------------------------------------- modes
def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    a = np.array([0, 1, 128, 129, 257, 385, 386, 30000, 65278, 65535, 1000, 40000], np.uint16).reshape(3, 4)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    expect = np.rint(a.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), "L", name=path.name), expect)
    np.testing.assert_array_equal(decode_image(path.read_bytes(), "RGB", name=path.name),
                                  np.repeat(expect[..., None], 3, axis=2))
    assert expect.max() == 255 and (expect < 255).sum() > 3  # PIL's clipping would have made most 255
    # a 32-bit 'I' image in memory (predict accepts PIL images) follows the same rule
    sq = a.reshape(-1)[:9].reshape(3, 3)
    got = image_pixels(Image.fromarray(sq.astype(np.int32)), ImageSpec(1, 3))
    np.testing.assert_array_equal((got[0] * 255).round().byte().numpy(), expect.reshape(-1)[:9].reshape(3, 3))


def test_rgba_and_la_are_composited_on_white(tmp_path):
    rng = _rng(2)
    rgb = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (5, 5, 1), dtype=np.uint8)
    alpha[0, 0], alpha[0, 1] = 0, 255
    Image.fromarray(np.concatenate([rgb, alpha], 2), "RGBA").save(tmp_path / "rgba.png")
    a = alpha.astype(np.float64) / 255.0
    expect = np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)  # hand formula
    got = decode_image((tmp_path / "rgba.png").read_bytes(), "RGB", name="rgba.png")
    np.testing.assert_array_equal(got, expect)
    assert (got[0, 0] == 255).all() and (got[0, 1] == rgb[0, 1]).all()
    grey = decode_image((tmp_path / "rgba.png").read_bytes(), "L", name="rgba.png")
    np.testing.assert_array_equal(grey, np.asarray(Image.fromarray(expect).convert("L")))
    g = rgb[..., 0]
    Image.fromarray(np.stack([g, alpha[..., 0]], 2), "LA").save(tmp_path / "la.png")
    expect_la = np.rint(g * a[..., 0] + 255.0 * (1.0 - a[..., 0])).astype(np.uint8)
    np.testing.assert_array_equal(decode_image((tmp_path / "la.png").read_bytes(), "L", name="la.png"), expect_la)


def test_palette_with_transparency_cmyk_and_one_bit(tmp_path):
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette([10, 20, 30, 200, 0, 0, 0, 250, 0] + [0] * 759)
    pal.save(tmp_path / "p.png", transparency=0)
    colours = np.array([[255, 255, 255], [200, 0, 0], [0, 250, 0]], np.uint8)  # index 0 transparent -> white
    np.testing.assert_array_equal(decode_image((tmp_path / "p.png").read_bytes(), "RGB", name="p.png"),
                                  colours[idx])
    cmyk = _rng(3).integers(0, 256, (4, 4, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    got = decode_image((tmp_path / "c.tif").read_bytes(), "RGB", name="c.tif").astype(np.float64)
    c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
    assert np.abs(got - (255 - c) * (255 - k) / 255).max() <= 1.0  # (1 - C)(1 - K) on the 0..255 scale
    bits = _rng(4).integers(0, 2, (6, 7)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as im:
        assert im.mode == "1"
    np.testing.assert_array_equal(decode_image((tmp_path / "b.png").read_bytes(), "L", name="b.png"),
                                  bits.astype(np.uint8) * 255)


def test_float_mode_is_clipped_and_rounded():
    f = np.array([[-3.0, 0.4, 0.6], [127.5, 254.6, 999.0]], np.float32)
    got = np.asarray(to_mode(Image.fromarray(f, "F"), "L"))
    np.testing.assert_array_equal(got, [[0, 0, 1], [128, 255, 255]])


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("side", [9, 15])  # 81 px: over the limit (PIL would warn); 225: over twice (PIL raises)
def test_decompression_bomb_is_a_one_line_refusal_naming_the_file(tmp_path, monkeypatch, side):
    path = tmp_path / "ds" / "a" / "bomb.png"
    path.parent.mkdir(parents=True)
    Image.new("RGB", (side, side)).save(path)
    (tmp_path / "ds" / "b").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "ds" / "b" / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak as a warning either
        with pytest.raises(DataError) as e:
            image_pixels(path, ImageSpec(3, 4))
        msg = _one_line(e)
        assert str(path) in msg and "decompression bomb" in msg and "MAX_IMAGE_PIXELS" in msg
        with pytest.raises(DataError) as e:
            load_folder(tmp_path / "ds", "all", image_size=4, channels=3)
        assert "bomb.png" in _one_line(e) and "decompression bomb" in str(e.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert image_pixels(path, ImageSpec(3, 4)).shape == (3, 4, 4)


def test_broken_and_dangling_files_are_one_line_naming_them(tmp_path):
    good = tmp_path / "ds" / "a" / "0.png"
    good.parent.mkdir(parents=True)
    Image.fromarray(_rng(5).integers(0, 256, (16, 16), dtype=np.uint8)).save(good)
    (tmp_path / "ds" / "b").mkdir()
    broken = tmp_path / "ds" / "b" / "cut.png"
    broken.write_bytes(good.read_bytes()[:60])
    for call in (lambda: image_pixels(broken, ImageSpec(1, 16)),
                 lambda: load_folder(tmp_path / "ds", "all", channels=1)):
        with pytest.raises(DataError) as e:
            call()
        assert "cut.png" in _one_line(e) and "cannot read image" in str(e.value)
    broken.unlink()
    os.symlink(tmp_path / "nowhere.png", tmp_path / "ds" / "b" / "gone.png")
    with pytest.raises(DataError) as e:
        load_folder(tmp_path / "ds", "all", channels=1)
    assert "gone.png" in _one_line(e)


# --------------------------------------------------------------------------- folder traversal
def _symlink_tree(tmp_path):
    root = tmp_path / "root"
    for rel in ("a/x.png", "b/y.png", "b/deep/z.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), 7).save(root / rel)
    outside = tmp_path / "outside" / "c"
    outside.mkdir(parents=True)
    Image.new("L", (4, 4), 9).save(outside / "w.png")
    os.symlink(root, root / "a" / "loop")  # back to the root: a cycle
    os.symlink("..", root / "b" / "deep" / "up")  # relative link to its parent: a cycle
    os.symlink(root / "b", root / "b" / "deep" / "again")  # to an ancestor: a cycle
    os.symlink(outside, root / "c")  # a class folder kept elsewhere: followed
    return root


def test_walk_files_cuts_symlink_cycles_and_follows_other_links(tmp_path):
    root = _symlink_tree(tmp_path)
    expect = ["a/x.png", "b/deep/z.png", "b/y.png", "c/w.png"]
    assert walk_files(root) == expect
    with FileTree.open(root) as tree:
        assert tree.files() == expect
    assert list_images([root]) == sorted(root / f for f in expect)


def test_folder_dataset_and_predict_support_with_a_symlink_loop(tmp_path):
    root = _symlink_tree(tmp_path)
    (root / "b" / "deep" / "z.png").unlink()
    ds = load_folder(root, "all", channels=1)
    assert ds.class_names == ["a", "b", "c"]
    assert torch.equal(ds.images[:, 0, 0, 0], torch.tensor([7, 7, 9], dtype=torch.uint8))
    support = read_support(root, None, ImageSpec(1, 4))
    assert support.classes == ["a", "b", "c"] and support.labels.tolist() == [0, 1, 2]
    assert torch.equal((support.pixels[:, 0, 0, 0] * 255).round(), torch.tensor([7.0, 7.0, 9.0]))
