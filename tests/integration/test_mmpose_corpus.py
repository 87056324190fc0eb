"""Every JSON file of MMPose's test data (real annotations, in the folder :data:`CORPUS` names)
converts, or fails with one clear error for its stated reason.

The folder is read in place. Where it is absent the tests skip with a reason; under ``CI=true``
they fail instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.convert import convert
from pipeline.errors import FdposeError

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "mmpose-testdata"

# file -> (images, instances, keypoints per instance, classes), converted with the JSON's own folder as
# the images root (posetrack18's annotations/ resolve against posetrack18/, as its file_names say).
CONVERTS = {
    "300vw/anno_300vw.json": (3, 3, 68, 1),  # no bbox at all: derived from the keypoints
    "300w/test_300w.json": (2, 2, 68, 1),  # category with an empty keypoint list: K from annotations
    "300wlp/test_300wlp.json": (2, 2, 68, 1),
    "aflw/test_aflw.json": (2, 2, 19, 1),
    "aic/test_aic.json": (3, 9, 14, 1),
    "animalpose/test_animalpose.json": (2, 2, 20, 1),
    "ap10k/test_ap10k.json": (2, 2, 17, 2),  # 54 species listed, 2 annotated: unused ones dropped
    "atrw/test_atrw.json": (2, 2, 15, 1),  # 0-based skeleton edges
    "coco/test_coco.json": (4, 14, 17, 1),  # num_keypoints == 0 kept as boxes
    "coco/test_coco_wholebody.json": (4, 14, 17, 1),
    "cofw/test_cofw.json": (2, 2, 29, 1),
    "crowdpose/test_crowdpose.json": (2, 5, 14, 1),
    "deepfasion2/deepfasion2.json": (2, 2, 294, 1),
    "exlpose/test_exlpose.json": (2, 6, 14, 1),
    "fld/test_fld.json": (2, 2, 8, 1),
    "fly/test_fly.json": (2, 2, 32, 1),
    "freihand/test_freihand.json": (8, 8, 21, 1),
    "horse10/test_horse10.json": (3, 3, 22, 1),
    "jhmdb/test_jhmdb_sub1.json": (3, 3, 15, 1),  # sub-folders with '@' in their names
    "lapa/test_lapa.json": (2, 2, 106, 1),
    "locust/test_locust.json": (2, 2, 35, 1),
    "macaque/test_macaque.json": (2, 2, 17, 1),
    "mhp/test_mhp.json": (2, 4, 16, 1),
    "mpii/test_mpii_trb.json": (5, 5, 40, 1),  # no bbox: derived
    "ochuman/test_ochuman.json": (3, 5, 17, 1),
    "onehand10k/test_onehand10k.json": (4, 4, 21, 1),
    "panoptic/test_panoptic.json": (4, 4, 21, 1),
    "posetrack18/annotations/test_posetrack18_val.json": (3, 14, 17, 1),  # keypoints past the edge: clipped
    "posetrack18/annotations/val/003418_mpii_test.json": (1, 1, 17, 1),
    "posetrack18/annotations/val/009473_mpii_test.json": (1, 2, 17, 1),
    "posetrack18/annotations/val/012834_mpii_test.json": (1, 11, 17, 1),
    "rhd/test_rhd.json": (3, 3, 21, 1),  # keypoints as nested [x, y, v] lists
    "wflw/test_wflw.json": (2, 4, 98, 1),
    "zebra/test_zebra.json": (2, 2, 9, 1),
}
# file -> (error message pattern, the stated reason)
FAILS = {
    "coco/test_coco_det_AP_H_56.json": ("top level is a list", "detection results, not keypoints"),
    "crowdpose/test_crowdpose_det_AP_40.json": ("top level is a list", "detection results"),
    "humanart/test_humanart_det_AP_H_56.json": ("top level is a list", "detection results"),
    "posetrack18/annotations/test_posetrack18_human_detections.json": ("top level is a list", "detections"),
    "mpii/test_mpii.json": ("top level is a list", "MPII's own format, not COCO"),
    "interhand2.6m/test_interhand2.6m_camera.json": (
        "no 'images' and 'annotations'",
        "3-D camera parameters",
    ),
    "interhand2.6m/test_interhand2.6m_joint_3d.json": ("no 'images' and 'annotations'", "3-D joints"),
    "interhand2.6m/test_interhand2.6m_data.json": ("no 2-D keypoints", "3-D data: joint validity only"),
    "coco/test_keypoint_partition_metric.json": (
        r"expected 17 keypoints \(51 or 34 values\), found 399 values",
        "133 whole-body keypoints under a category naming 17",
    ),
    "ak/test_animalkingdom.json": (
        r"category_id 4 is not among the file's keypoint categories \['1', '2'\]",
        "annotations use a category the file does not list",
    ),
    "halpe/test_halpe.json": ("no usable images.*image file not found", "its images are COCO's, in coco/"),
    "humanart/test_humanart.json": (
        "no usable images.*image file not found",
        "images not where file_name says",
    ),
    "ubody3d/ubody3d_train.json": ("no usable images.*image file not found", "its images are absent"),
}


def _require_corpus() -> None:
    if not CORPUS.is_dir():
        message = f"MMPose test data not found at {CORPUS} (see SOURCE.md)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _files() -> list[str]:
    if not CORPUS.is_dir():
        return ["<corpus missing>"]
    return sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*.json"))


def _images_root(name: str) -> Path:
    return CORPUS / ("posetrack18" if name.startswith("posetrack18/") else Path(name).parts[0])


def test_every_file_has_a_stated_outcome():
    _require_corpus()
    assert set(_files()) == set(CONVERTS) | set(FAILS)


@pytest.mark.parametrize("name", _files())
def test_file_converts_or_fails_clearly(name, tmp_path):
    _require_corpus()
    source = CORPUS / name
    if name in FAILS:
        pattern, _reason = FAILS[name]
        with pytest.raises(FdposeError, match=pattern) as error:
            convert(
                params_path=os.devnull,
                source="coco",
                input_path=source,
                images=_images_root(name),
                out=tmp_path / "out",
            )
        assert str(error.value).startswith(str(source)) and "\n" not in str(error.value)
        assert not (tmp_path / "out").exists()
        return
    images, instances, k, classes = CONVERTS[name]
    result = convert(
        params_path=os.devnull,
        source="coco",
        input_path=source,
        images=_images_root(name),
        out=tmp_path / "out",
    )
    summary = result.report["summary"]
    assert (summary["images"], summary["instances"], summary["kpt_shape"]) == (images, instances, [k, 3])
    data = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert len(data["names"]) == classes and len(data["kpt_oks_sigmas"]) == k
    # flip_idx only where the left/right pairs are known (absent: never mirrored, and a warning says so)
    mirror_warned = any("never mirror" in w for w in result.report["details"]["warnings"])
    assert ("flip_idx" not in data) == mirror_warned and len(data.get("flip_idx", [0] * k)) == k
    lines = [
        line for p in (tmp_path / "out" / "labels").rglob("*.txt") for line in p.read_text().splitlines()
    ]
    assert len(lines) == instances and all(len(line.split()) == 5 + 3 * k for line in lines)
    values = np.array([list(map(float, line.split()[1:])) for line in lines])
    assert values.min() >= 0 and values[:, :4].max() <= 1


def test_halpe_converts_against_cocos_images(tmp_path):
    """halpe's file_names are COCO's images: pointed at coco/, its 136-keypoint file converts."""
    _require_corpus()
    result = convert(
        params_path=os.devnull,
        source="coco",
        input_path=CORPUS / "halpe/test_halpe.json",
        images=CORPUS / "coco",
        out=tmp_path / "out",
    )
    assert result.report["summary"]["instances"] == 14 and result.report["summary"]["kpt_shape"] == [136, 3]


@pytest.mark.parametrize(
    "name", ["coco/test_coco.json", "rhd/test_rhd.json", "300vw/anno_300vw.json", "ap10k/test_ap10k.json"]
)
def test_label_lines_match_source_coordinates(name, tmp_path):
    """Label values recomputed from the raw JSON (an independent, literal oracle)."""
    _require_corpus()
    convert(
        params_path=os.devnull,
        source="coco",
        input_path=CORPUS / name,
        images=_images_root(name),
        out=tmp_path / "out",
        split="1,0",
    )
    coco = json.loads((CORPUS / name).read_text())
    used = {a["category_id"] for a in coco["annotations"] if not a.get("iscrowd")}
    category_index = {c["id"]: i for i, c in enumerate(c for c in coco["categories"] if c["id"] in used)}
    checked = 0
    for image in coco["images"]:
        w, h = image["width"], image["height"]
        label = (
            tmp_path
            / "out"
            / "labels"
            / "train"
            / Path(image["file_name"].replace("/", "__")).with_suffix(".txt")
        )
        rows = [list(map(float, line.split())) for line in label.read_text().splitlines()]
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a.get("iscrowd")]
        assert len(rows) == len(anns)
        for row, ann in zip(rows, anns, strict=True):
            points = np.array(ann["keypoints"], dtype=float).reshape(-1, 3)
            labelled = points[:, 2] > 0
            if "bbox" in ann:
                x, y, bw, bh = ann["bbox"]
            else:
                x, y = points[labelled, 0].min(), points[labelled, 1].min()
                bw, bh = points[labelled, 0].max() - x, points[labelled, 1].max() - y
            assert row[0] == category_index[ann["category_id"]]
            np.testing.assert_allclose(
                row[1:5], [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h], atol=1e-6
            )
            expected = np.where(labelled[:, None], points / [w, h, 1], 0.0)
            np.testing.assert_allclose(np.array(row[5:]).reshape(-1, 3), expected, atol=1e-6)
            checked += 1
    assert checked == len([a for a in coco["annotations"] if not a.get("iscrowd")])
