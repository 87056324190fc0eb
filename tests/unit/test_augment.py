"""``fdpose augment``: keypoint semantics under known transforms, out-of-frame handling, determinism
across runs and worker counts, config errors, report and preview."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from pipeline.augment import augment, is_mirror
from pipeline.cli import main
from pipeline.dataset import Dataset, ImageRecord, Instance
from pipeline.errors import FdposeError
from pipeline.formats.yolo import read_yolo, write_yolo
from pipeline.skeleton import Skeleton

CONFIG = Path(__file__).resolve().parents[2] / "cfg" / "augment.yaml"  # the shipped transforms

W, H = 100, 80  # not square, so that transposes and rotations are visible in the size
NAMES = ["left_hand", "right_hand", "head", "tail"]
# Points at pixel centres (continuous coordinates), left and right hands far apart.
POINTS = np.array([[20.5, 30.5, 2], [70.5, 50.5, 2], [45.5, 20.5, 1], [60.5, 60.5, 2]])
RED, BLUE = (0, 0, 255), (255, 0, 0)  # BGR markers under the left and right hand


def make_dataset(root: Path, kpt_dims: int = 3, extra_instance: bool = False, train_images: int = 1,
                 ) -> Path:
    """A YOLO-pose dataset: PNG images with a red marker under the left hand and a blue one under the
    right hand, one labelled instance each, and one validation image."""
    skeleton = Skeleton(NAMES, ["thing"], kpt_dims=kpt_dims)
    assert skeleton.flip_permutation == [1, 0, 2, 3]
    dataset = Dataset(skeleton)
    rng = np.random.default_rng(7)
    for index in range(train_images + 1):
        pixels = rng.integers(60, 190, (H, W, 3), dtype=np.uint8)
        for (x, y, _), colour in zip(POINTS[:2], (RED, BLUE), strict=True):
            cv2.rectangle(pixels, (int(x) - 2, int(y) - 2), (int(x) + 2, int(y) + 2), colour, -1)
        path = root / "src" / f"img{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), pixels)
        instances = [Instance(0, [15, 15, 75, 65], POINTS.copy())]
        if extra_instance:  # a small instance near the right border, cropped away by CROP below
            corner = np.array([[93.5, 10.5, 2], [96.5, 10.5, 2], [95.5, 8.5, 2], [95.5, 14.5, 2]])
            instances.append(Instance(0, [92, 7, 98, 16], corner))
        split = "train" if index < train_images else "val"
        dataset.images.append(ImageRecord(path, f"img{index}.png", W, H, instances, split=split))
    return write_yolo(dataset, root / "dataset")


def write_config(path: Path, transforms: list) -> Path:
    path.write_text(yaml.safe_dump({"transforms": transforms}))
    return path


def augmented_record(out: Path, name: str = "img0_aug1.png") -> ImageRecord:
    dataset = read_yolo(out / "data.yaml")
    return next(image for image in dataset.images if image.file_name == name)


def run(tmp_path: Path, transforms: list, **kwargs):
    data = make_dataset(tmp_path / "in", **{k: kwargs.pop(k) for k in ("kpt_dims", "extra_instance")
                                            if k in kwargs})
    config = write_config(tmp_path / "augment.yaml", transforms)
    result = augment(data, tmp_path / "out", copies=1, seed=0, config=config, workers=1, progress=False,
                     **kwargs)
    return result, augmented_record(tmp_path / "out")


CROP = {"Crop": {"x_min": 10, "y_min": 5, "x_max": 90, "y_max": 75, "p": 1}}


@pytest.mark.parametrize(("transform", "size", "expected", "mirrored"), [
    # left and right trade places under a mirror: expected[i] is where keypoint i ends up.
    ({"HorizontalFlip": {"p": 1}}, (W, H), lambda x, y: (W - x, y), True),
    ({"VerticalFlip": {"p": 1}}, (W, H), lambda x, y: (x, H - y), True),
    ({"Transpose": {"p": 1}}, (H, W), lambda x, y: (y, x), True),
    # Rotation by +90 degrees about the centre (counter-clockwise as displayed): not a mirror.
    ({"Rotate": {"limit": [90, 90], "p": 1}}, (W, H), lambda x, y: (W / 2 + (y - H / 2), H / 2 - (x - W / 2)),
     False),
    (CROP, (80, 70), lambda x, y: (x - 10, y - 5), False),
], ids=["hflip", "vflip", "transpose", "rotate90", "crop"])
def test_known_transform_gives_analytic_coordinates(tmp_path, transform, size, expected, mirrored):
    result, record = run(tmp_path, [transform])
    assert (record.width, record.height) == size
    assert result.mirrored_variants == int(mirrored)
    (instance,) = record.instances
    moved = np.array([expected(x, y) for x, y, _ in POINTS])
    if mirrored:
        moved = moved[[1, 0, 2, 3]]  # the left hand now looks like a right hand, and takes its index
    np.testing.assert_allclose(instance.keypoints[:, :2], moved, atol=0.5)
    visibility = POINTS[:, 2][[1, 0, 2, 3]] if mirrored else POINTS[:, 2]
    np.testing.assert_array_equal(instance.keypoints[:, 2], visibility)


def test_horizontal_flip_swaps_left_and_right(tmp_path):
    result, record = run(tmp_path, [{"HorizontalFlip": {"p": 1}}])
    left, right = record.instances[0].keypoints[:2, :2]
    # The label follows what the image shows: the point now labelled right_hand is on the red marker
    # (the old left hand), at the mirrored position, and it is on the right of the image's left hand.
    pixels = cv2.imread(str(record.path))
    assert tuple(pixels[int(right[1]), int(right[0])]) == RED
    assert tuple(pixels[int(left[1]), int(left[0])]) == BLUE
    np.testing.assert_allclose(right, [W - 20.5, 30.5], atol=0.5)
    np.testing.assert_allclose(left, [W - 70.5, 50.5], atol=0.5)
    # The original is kept unchanged beside its variant.
    original = augmented_record(tmp_path / "out", "img0.png")
    np.testing.assert_allclose(original.instances[0].keypoints, POINTS, atol=1e-5)


def test_two_flips_cancel_out(tmp_path):
    """Horizontal then vertical flip is a 180-degree rotation: positions move, no left/right swap."""
    result, record = run(tmp_path, [{"HorizontalFlip": {"p": 1}}, {"VerticalFlip": {"p": 1}}])
    assert result.mirrored_variants == 0
    expected = np.array([[W - x, H - y] for x, y, _ in POINTS])
    np.testing.assert_allclose(record.instances[0].keypoints[:, :2], expected, atol=0.5)


@pytest.mark.parametrize("kpt_dims", [3, 2])
def test_out_of_frame_points_become_invisible_and_lost_instances_are_dropped(tmp_path, kpt_dims):
    # The crop keeps x in [10, 90): the second instance (x > 92) leaves the frame entirely; a shift
    # then pushes the left hand (x = 20.5 - 10) out on the left.
    transforms = [CROP, {"Affine": {"translate_px": {"x": -15, "y": 0}, "p": 1}}]
    result, record = run(tmp_path, transforms, kpt_dims=kpt_dims, extra_instance=True)
    assert result.instances_dropped == 1
    assert result.keypoints_made_invisible == 1
    (instance,) = record.instances
    np.testing.assert_array_equal(instance.keypoints[0], [0, 0, 0])  # out: invisible, coordinates 0
    np.testing.assert_allclose(instance.keypoints[1:, :2], POINTS[1:, :2] - [25, 5], atol=0.5)
    assert (instance.keypoints[1:, 2] > 0).all()
    # The box is the moved box, clipped to the frame: x from 15 - 25 -> 0, to 75 - 25 = 50.
    np.testing.assert_allclose(instance.bbox, [0, 10, 50, 60], atol=0.5)
    label = (tmp_path / "out" / "labels" / "train" / "img0_aug1.txt").read_text().split()
    assert len(label) == 5 + 4 * kpt_dims  # one instance, keypoints kept in place
    assert label[5:7] == ["0.000000", "0.000000"]


def test_report_preview_and_untouched_validation_split(tmp_path):
    data = make_dataset(tmp_path / "in", train_images=2)
    out = tmp_path / "out"
    result = augment(data, out, copies=2, seed=3, config=CONFIG, workers=1, progress=False)
    assert (result.images_in, result.images_out) == (2, 6)
    report = yaml.safe_load((out / "report.json").read_text())
    assert report["images_in"] == 2 and report["images_out"] == 6 and report["copies"] == 2
    for key in ("instances_dropped", "keypoints_made_invisible"):
        assert report[key] == getattr(result, key)
    preview = cv2.imread(str(out / "preview.png"))
    tile_height, tile_width = preview.shape[0] // 2, preview.shape[1] // 3  # 2 rows: original + 2 copies
    assert preview.shape[:2] == (2 * tile_height, 3 * tile_width) and tile_height > tile_width
    colours = {tuple(int(c) for c in pixel) for pixel in preview.reshape(-1, 3)}
    assert {(255, 128, 0), (0, 160, 255)} <= colours  # left and right keypoints drawn in their colours
    # Validation images are linked, not re-encoded, and carry the same labels.
    source_val = tmp_path / "in" / "dataset" / "images" / "val" / "img2.png"
    assert (out / "images" / "val" / "img2.png").read_bytes() == source_val.read_bytes()
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == [
        "img0.png", "img0_aug1.png", "img0_aug2.png", "img1.png", "img1_aug1.png", "img1_aug2.png"]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    data = make_dataset(tmp_path / "in", train_images=5)
    runs = {}
    for name, workers, seed in (("one", 1, 11), ("two", 2, 11), ("again", 2, 11), ("other", 1, 12)):
        augment(data, tmp_path / name, copies=2, seed=seed, config=CONFIG, workers=workers,
                progress=False)
        runs[name] = tree_bytes(tmp_path / name)
    assert len(runs["one"]) == 2 * (5 * 3 + 1) + 3  # images and labels, data.yaml, report, preview
    assert runs["one"] == runs["two"] == runs["again"]
    assert runs["other"] != runs["one"]  # the seed matters


@pytest.mark.parametrize(("transforms", "message"), [
    ([{"NoSuchTransform": {"p": 1}}], "transforms[0] (NoSuchTransform): unknown albumentations transform"),
    ([{"HorizontalFlip": {"p": 1}}, {"Affine": {"rotat": 10}}], "transforms[1] (Affine): unknown parameter"),
    ([{"Affine": {"scale": "big"}}], "transforms[0] (Affine): invalid parameters for Affine"),
    ([{"OneOf": {"transforms": [{"Blur": {"blur_limt": 3}}]}}],
     "transforms[0].transforms[0] (Blur): unknown parameter"),
    (["HorizontalFlip"], "transforms[0]: each transform must be written"),
])
def test_bad_config_is_a_clear_error_and_keeps_previous_output(tmp_path, transforms, message):
    data = make_dataset(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous output")
    config = write_config(tmp_path / "bad.yaml", transforms)
    with pytest.raises(FdposeError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        augment(data, out, config=config, workers=1, progress=False)
    assert (out / "keep.txt").read_text() == "previous output"
    # The command line says it in one line, exit code 1, no traceback.
    outcome = CliRunner().invoke(main, ["augment", "--data", str(data), "--out", str(out),
                                        "--config", str(config), "--workers", "1"])
    assert outcome.exit_code == 1
    assert outcome.output.startswith("Error: ") and str(config) in outcome.output
    assert "Traceback" not in outcome.output


@pytest.mark.parametrize(("name", "params", "mirror"), [
    ("HorizontalFlip", {}, True), ("VerticalFlip", {}, True), ("Transpose", {}, True),
    ("D4", {"group_element": "h"}, True), ("D4", {"group_element": "hvt"}, True),
    ("D4", {"group_element": "r90"}, False), ("RandomRotate90", {"factor": 1}, False),
    ("Affine", {"matrix": np.array([[-1.0, 0, 99], [0, 1, 0], [0, 0, 1]])}, True),
    ("Affine", {"matrix": np.array([[0.0, 1, 0], [-1, 0, 99], [0, 0, 1]])}, False),
    ("RandomBrightnessContrast", {"alpha": 1.1}, False),
])
def test_mirror_detection(name, params, mirror):
    assert is_mirror(name, params) is mirror


def test_transform_that_cannot_run_on_pose_data_names_the_image(tmp_path):
    data = make_dataset(tmp_path / "in")
    config = write_config(tmp_path / "mask.yaml", [{"MaskDropout": {"p": 1}}])
    with pytest.raises(FdposeError, match=r"img0\.png: copy 1: augmentation failed: .*mask"):
        augment(data, tmp_path / "out", config=config, workers=1, progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))  # no staging left


def test_a_dataset_with_unknown_pairs_gets_no_mirrored_variant(tmp_path):
    """Without flip_idx in data.yaml (left/right pairs unknown) a mirrored variant is never written: it
    is counted as skipped; unmirrored variants are kept."""
    data = make_dataset(tmp_path / "in", train_images=4)
    spec = yaml.safe_load(data.read_text())
    del spec["flip_idx"]
    data.write_text(yaml.safe_dump(spec))
    config = write_config(tmp_path / "augment.yaml", [{"HorizontalFlip": {"p": 0.5}}])
    result = augment(data, tmp_path / "out", copies=4, seed=0, config=config, workers=1, progress=False)
    assert result.mirrored_variants == 0 and result.mirrored_skipped > 0
    assert result.images_out == 4 + 16 - result.mirrored_skipped
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["mirrored_skipped"] == result.mirrored_skipped and "skipped" in result.summary()
    assert "flip_idx" not in yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
