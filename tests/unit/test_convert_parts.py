"""The pieces convert stands on: EXIF point mapping, label text formatting, split hashing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.dataset import Instance
from pipeline.errors import FdposeError
from pipeline.formats.yolo import _fixed6, label_text, label_values
from pipeline.images import image_info, orient_points
from pipeline.split import hash_fraction, parse_ratios, split_of


def label_line(instance: Instance, width: int, height: int, kpt_dims: int) -> str:
    """One label line through the whole-dataset formatter, for checks one instance at a time."""
    values = label_values(instance.bbox[None], instance.keypoints[None], np.array([width]),
                          np.array([height]), kpt_dims)
    return label_text(np.array([instance.class_id]), values)[0].decode().rstrip("\n")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_points_matches_pil_exif_transpose(tmp_path, orientation):
    """A marked pixel, stored at (x, y), is found by PIL at the mapped position after orientation."""
    stored = Image.new("L", (7, 5), 0)
    stored.putpixel((1, 3), 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "a.png"
    stored.save(path, exif=exif)
    info = image_info(path)
    with Image.open(path) as image:
        shown = np.array(ImageOps.exif_transpose(image))
    assert (info.size[1], info.size[0]) == shown.shape
    row, col = np.argwhere(shown == 255)[0]
    mapped = orient_points(np.array([[1.5, 3.5]]), orientation, 7, 5)[0]  # the pixel's centre
    np.testing.assert_allclose(mapped, [col + 0.5, row + 0.5])


def test_missing_and_corrupt_images_are_clear_errors(tmp_path):
    with pytest.raises(FdposeError, match="image file not found"):
        image_info(tmp_path / "none.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(FdposeError, match="corrupt or unreadable image"):
        image_info(tmp_path / "bad.jpg")


def test_corrupt_image_stays_a_clear_error_after_ultralytics_patches_pil(tmp_path):
    # ultralytics' import replaces PIL's Image.open with one that tries to install pi-heif on a file
    # PIL cannot identify; a corrupt image must still be reported, and nothing installed.
    import ultralytics.utils.patches  # noqa: F401

    (tmp_path / "bad.gif").write_bytes(b"GIF89a truncated")
    (tmp_path / "bad.bin").write_bytes(b"neither jpeg nor png")
    for name in ("bad.gif", "bad.bin"):
        with pytest.raises(FdposeError, match="corrupt or unreadable image"):
            image_info(tmp_path / name)


def test_fixed6_is_percent_f_formatting():
    """The vectorised formatter against Python's .6f formatting (the literal oracle)."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.random(50_000), rng.integers(0, 3, 100), [0, 1, 2, 0.5, 1e-7, 0.9999994]])
    text = [bytes(row).decode() for row in _fixed6(values)]
    assert text == [f"{v:.6f}" for v in values]


def test_label_line_normalises_and_clips():
    keypoints = np.array([[5, 6, 2], [250, -4, 1], [9, 9, 0]])
    line = label_line(Instance(3, [-10, 10, 50, 60], keypoints), 100, 50, kpt_dims=3)
    assert line == (
        "3 0.250000 0.600000 0.500000 0.800000 0.050000 0.120000 2.000000 1.000000 0.000000 "
        "1.000000 0.000000 0.000000 0.000000"
    )
    two = label_line(Instance(0, [0, 0, 10, 10], keypoints), 100, 50, kpt_dims=2)
    assert len(two.split()) == 5 + 3 * 2


@pytest.mark.parametrize(
    "text, ratios",
    [("0.8,0.2", (0.8, 0.2, 0.0)), ("0.7, 0.2, 0.1", (0.7, 0.2, 0.1)), ([1, 0], (1.0, 0.0, 0.0))],
)
def test_parse_ratios(text, ratios):
    assert parse_ratios(text) == ratios


@pytest.mark.parametrize("text", ["0.8", "0.5,0.6", "a,b", "0,1", "0.5,0.5,0,0", "-0.1,1.1"])
def test_bad_ratios_are_errors(text):
    with pytest.raises(FdposeError, match="--split"):
        parse_ratios(text)


def test_split_hash_is_stable_and_follows_the_ratios():
    assert hash_fraction("a.jpg", 0) == hash_fraction("a.jpg", 0) != hash_fraction("a.jpg", 1)
    names = [f"{i}.jpg" for i in range(4000)]
    splits = [split_of(n, (0.7, 0.2, 0.1), 0) for n in names]
    shares = {s: splits.count(s) / len(names) for s in ("train", "val", "test")}
    assert (
        abs(shares["train"] - 0.7) < 0.03
        and abs(shares["val"] - 0.2) < 0.03
        and abs(shares["test"] - 0.1) < 0.03
    )
    assert set(split_of(n, (0.8, 0.2, 0.0), 0) for n in names) == {"train", "val"}


def _save(path, image, **options):
    image.save(path, **options)
    return path


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize(
    "suffix, options",
    [(".jpg", {}), (".jpg", {"progressive": True}), (".png", {}), (".bmp", {}), (".webp", {})],
)
def test_fast_header_read_agrees_with_pil(tmp_path, orientation, suffix, options):
    from pipeline.images import _pil_info

    exif = Image.Exif()
    exif[0x0112] = orientation
    extra = {} if suffix == ".bmp" else {"exif": exif}
    path = _save(tmp_path / f"a{suffix}", Image.new("RGB", (37, 21), (1, 2, 3)), **extra, **options)
    assert image_info(path) == _pil_info(path)
    if suffix != ".bmp":
        assert image_info(path).orientation == orientation


def test_truncated_jpeg_header_is_left_to_pil(tmp_path):
    path = _save(tmp_path / "a.jpg", Image.new("RGB", (37, 21)))
    data = path.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:40])  # inside the quantisation tables, before the frame header
    with pytest.raises(FdposeError, match="corrupt or unreadable image"):
        image_info(tmp_path / "cut.jpg")


def test_label_text_with_multi_digit_classes_matches_single_lines():
    from pipeline.formats.yolo import label_text, label_values

    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [1, 2, 3, 4]], dtype=float)
    keypoints = np.array([[[5, 5, 2]], [[10, 10, 1]], [[0, 0, 0]]], dtype=float)
    values = label_values(boxes, keypoints, np.array([20.0] * 3), np.array([40.0] * 3), 3)
    for class_ids in ([1, 2, 3], [12, 3, 101]):
        text, offsets = label_text(np.array(class_ids), values)
        rows = [text[a:b].decode() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        expected = [
            label_line(Instance(c, box, points), 20, 40, 3) + "\n"
            for c, box, points in zip(class_ids, boxes, keypoints, strict=True)
        ]
        assert rows == expected and offsets[-1] == len(text)
        assert rows[0].startswith(
            f"{class_ids[0]} 0.250000 0.125000 0.500000 0.250000 0.250000 0.125000 2.000000"
        )


def test_dataset_without_instances_writes_background_images(tmp_path):
    # Background-only datasets (or splits) are valid for ultralytics: empty label files.
    from PIL import Image

    from pipeline.dataset import Dataset, ImageRecord
    from pipeline.formats.yolo import read_yolo, write_yolo
    from pipeline.skeleton import Skeleton

    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    image = ImageRecord(tmp_path / "a.png", "a.png", 20, 10, [], split="train")
    dataset = Dataset(Skeleton(["a", "b"]), [image])
    write_yolo(dataset, tmp_path / "out")
    assert (tmp_path / "out" / "labels" / "train" / "a.txt").read_text() == ""
    again = read_yolo(tmp_path / "out" / "data.yaml")
    assert [len(image.instances) for image in again.images] == [0]
