"""Keypoint layouts of MMPose's test data (real annotations, read in place): flip pairs against lists
checked by hand, unnamed layouts never mirrored, COCO sigmas by name, foreign edges dropped whole,
unused classes dropped, and the shipped skeletons checked against the files of their datasets.

Where the corpus is absent the tests skip with a reason; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.convert import convert
from pipeline.skeleton import PLACEHOLDER_SIGMA, Skeleton, infer_flip
from pipeline.skeleton.names import words

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "mmpose-testdata"

# Every 2-D layout in the corpus whose categories name their keypoints, with its left/right pairs as
# read by hand from the names (near/off: a horse's left/right side; deepfasion2's names are bare
# numbers and carry no side: it is in UNNAMED). Hands (freihand, onehand10k, panoptic, rhd) have no pair.
FLIP_PAIRS = {
    "aic/test_aic.json": [("Right Shoulder", "Left Shoulder"), ("Right Elbow", "Left Elbow"),
        ("Right Wrist", "Left Wrist"), ("Right Hip", "Left Hip"), ("Right Knee", "Left Knee"),
        ("Right Ankle", "Left Ankle")],
    "ak/test_animalkingdom.json": [("Eye_Left", "Eye_Right"), ("Mouth_Back_Left", "Mouth_Back_Right"),
        ("Shoulder_Left", "Shoulder_Right"), ("Elbow_Left", "Elbow_Right"),
        ("Wrist_Left", "Wrist_Right"), ("Hip_Left", "Hip_Right"), ("Knee_Left", "Knee_Right"),
        ("Ankle_Left ", "Ankle_Right")],
    "animalpose/test_animalpose.json": [("L_Eye", "R_Eye"), ("L_EarBase", "R_EarBase"),
        ("L_F_Elbow", "R_F_Elbow"), ("L_B_Elbow", "R_B_Elbow"), ("L_F_Knee", "R_F_Knee"),
        ("L_B_Knee", "R_B_Knee"), ("L_F_Paw", "R_F_Paw"), ("L_B_Paw", "R_B_Paw")],
    "ap10k/test_ap10k.json": [("left_eye", "right_eye"), ("left_shoulder", "right_shoulder"),
        ("left_elbow", "right_elbow"), ("left_front_paw", "right_front_paw"), ("left_hip", "right_hip"),
        ("left_knee", "right_knee"), ("left_back_paw", "right_back_paw")],
    "atrw/test_atrw.json": [("left_ear", "right_ear"), ("right_shoulder", "left_shoulder"),
        ("right_front_paw", "left_front_paw"), ("right_hip", "left_hip"), ("right_knee", "left_knee"),
        ("right_back_paw", "left_back_paw")],
    "coco/test_coco.json": [("left_eye", "right_eye"), ("left_ear", "right_ear"),
        ("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle")],
    "coco/test_coco_wholebody.json": [("left_eye", "right_eye"), ("left_ear", "right_ear"),
        ("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle")],
    "coco/test_keypoint_partition_metric.json": [("left_eye", "right_eye"), ("left_ear", "right_ear"),
        ("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle")],
    "crowdpose/test_crowdpose.json": [("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle")],
    "exlpose/test_exlpose.json": [("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle")],
    "fld/test_fld.json": [("left collar", "right collar"), ("left sleeve", "right sleeve"),
        ("left waistline", "right waistline"), ("left hem", "right hem")],
    "fly/test_fly.json": [("eyeL", "eyeR"), ("forelegR1", "forelegL1"), ("forelegR2", "forelegL2"),
        ("forelegR3", "forelegL3"), ("forelegR4", "forelegL4"), ("midlegR1", "midlegL1"),
        ("midlegR2", "midlegL2"), ("midlegR3", "midlegL3"), ("midlegR4", "midlegL4"),
        ("hindlegR1", "hindlegL1"), ("hindlegR2", "hindlegL2"), ("hindlegR3", "hindlegL3"),
        ("hindlegR4", "hindlegL4"), ("wingL", "wingR")],
    "freihand/test_freihand.json": [],
    "horse10/test_horse10.json": [("Nearknee", "Offknee"), ("Nearfrontfetlock", "Offfrontfetlock"),
        ("Nearfrontfoot", "Offfrontfoot"), ("Nearhindhock", "Offhindhock"),
        ("Nearhindfetlock", "Offhindfetlock"), ("Nearhindfoot", "Offhindfoot")],
    "humanart/test_humanart.json": [("left_eye", "right_eye"), ("left_ear", "right_ear"),
        ("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle"), ("left_finger", "right_finger"), ("left_toe", "right_toe")],
    "jhmdb/test_jhmdb_sub1.json": [("right_shoulder", "left_shoulder"), ("right_hip", "left_hip"),
        ("right_elbow", "left_elbow"), ("right_knee", "left_knee"), ("right_wrist", "left_wrist"),
        ("right_ankle", "left_ankle")],
    "locust/test_locust.json": [("anttipL", "anttipR"), ("antbaseL", "antbaseR"), ("eyeL", "eyeR"),
        ("forelegL1", "forelegR1"), ("forelegL2", "forelegR2"), ("forelegL3", "forelegR3"),
        ("forelegL4", "forelegR4"), ("midlegL1", "midlegR1"), ("midlegL2", "midlegR2"),
        ("midlegL3", "midlegR3"), ("midlegL4", "midlegR4"), ("hindlegL1", "hindlegR1"),
        ("hindlegL2", "hindlegR2"), ("hindlegL3", "hindlegR3"), ("hindlegL4", "hindlegR4")],
    "macaque/test_macaque.json": [("left_eye", "right_eye"), ("left_ear", "right_ear"),
        ("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle")],
    "mhp/test_mhp.json": [("Right-ankle", "Left-ankle"), ("Right-knee", "Left-knee"),
        ("Right-hip", "Left-hip"), ("Right-wrist", "Left-wrist"), ("Right-elbow", "Left-elbow"),
        ("Right-shoulder", "Left-shoulder")],
    "mpii/test_mpii_trb.json": [("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle"), ("right_neck", "left_neck"),
        ("medial_right_shoulder", "medial_left_shoulder"),
        ("lateral_right_shoulder", "lateral_left_shoulder"), ("medial_right_bow", "medial_left_bow"),
        ("lateral_right_bow", "lateral_left_bow"), ("medial_right_wrist", "medial_left_wrist"),
        ("lateral_right_wrist", "lateral_left_wrist"), ("medial_right_hip", "medial_left_hip"),
        ("lateral_right_hip", "lateral_left_hip"), ("medial_right_knee", "medial_left_knee"),
        ("lateral_right_knee", "lateral_left_knee"), ("medial_right_ankle", "medial_left_ankle"),
        ("lateral_right_ankle", "lateral_left_ankle")],
    "ochuman/test_ochuman.json": [("left_eye", "right_eye"), ("left_ear", "right_ear"),
        ("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
        ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
        ("left_ankle", "right_ankle")],
    "onehand10k/test_onehand10k.json": [],
    "panoptic/test_panoptic.json": [],
    "rhd/test_rhd.json": [],
    "zebra/test_zebra.json": [("forelegL1", "forelegR1"), ("hindlegL1", "hindlegR1")],
}
POSETRACK = [("left_ear", "right_ear"), ("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"),
             ("left_wrist", "right_wrist"), ("left_hip", "right_hip"), ("left_knee", "right_knee"),
             ("left_ankle", "right_ankle")]
FLIP_PAIRS.update({f"posetrack18/annotations/{name}.json": POSETRACK for name in [
    "test_posetrack18_val", "val/003418_mpii_test", "val/009473_mpii_test", "val/012834_mpii_test"]})
UNNAMED = ["deepfasion2/deepfasion2.json"]


def _require_corpus() -> None:
    if not CORPUS.is_dir():
        message = f"MMPose test data not found at {CORPUS} (see SOURCE.md)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _category_names(name: str) -> list[str]:
    return json.loads((CORPUS / name).read_text())["categories"][0]["keypoints"]


def _convert(tmp_path: Path, name: str, **options) -> tuple[dict, dict]:
    result = convert(params_path=os.devnull, source="coco", input_path=CORPUS / name,
                     images=CORPUS / Path(name).parts[0], out=tmp_path / "out", **options)
    return result.report, yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())


def test_every_named_layout_has_hand_checked_pairs():
    _require_corpus()
    named = set()
    for path in CORPUS.rglob("*.json"):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("categories"), list) and data["categories"] \
                and data["categories"][0].get("keypoints") and path.parts[-2] != "interhand2.6m":
            named.add(path.relative_to(CORPUS).as_posix())
    assert named == set(FLIP_PAIRS) | set(UNNAMED)


@pytest.mark.parametrize("name", sorted(FLIP_PAIRS))
def test_flip_pairs_equal_the_hand_checked_list(name, tmp_path):
    _require_corpus()
    names = _category_names(name)
    inferred = infer_flip(names)
    assert inferred.safe, inferred.problem
    got = {frozenset((names[i], names[p])) for i, p in enumerate(inferred.permutation) if p != i}
    assert got == {frozenset(pair) for pair in FLIP_PAIRS[name]}
    if name in ("locust/test_locust.json", "fly/test_fly.json", "zebra/test_zebra.json"):
        report, data = _convert(tmp_path, name)  # the written dataset mirrors with these swaps
        assert {frozenset((names[i], names[p])) for i, p in enumerate(data["flip_idx"]) if p != i} == got


@pytest.mark.parametrize("name", ["wflw/test_wflw.json", "300w/test_300w.json", *UNNAMED])
def test_unnamed_layouts_convert_with_a_warning_and_never_mirror(name, tmp_path):
    _require_corpus()
    report, data = _convert(tmp_path, name)
    assert "flip_idx" not in data  # ultralytics turns fliplr/flipud off; fdpose train and augment too
    warnings = [w for w in report["details"]["warnings"] if "never mirror" in w]
    assert len(warnings) == 1 and "no names" in warnings[0]
    assert report["skeleton"]["flip_source"] == "none"
    assert not Skeleton.from_data_yaml(data).mirror


def _misfit(points: np.ndarray, other: np.ndarray) -> float:
    """1 - the squared correlation of two 2-D shapes after the best rotation, shift and scale (no
    reflection): 0 for the same shape."""
    a, b = points - points.mean(axis=0), other - other.mean(axis=0)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    u, s, vt = np.linalg.svd(b.T @ a)
    return float(1 - (s[0] + np.sign(np.linalg.det(u @ vt)) * s[1]) ** 2)


def test_300w_with_the_shipped_face_skeleton_mirrors_with_the_right_swaps(tmp_path):
    """A face mirrored and relabelled by the flip permutation is the same face: in every annotation of
    300-W, 300-VW and 300W-LP it fits the original better than with any one of the pairs left unswapped."""
    _require_corpus()
    report, data = _convert(tmp_path, "300w/test_300w.json", skeleton="face68.yaml")
    flip = data["flip_idx"]
    assert report["skeleton"]["flip_source"] == "file" and sorted(flip) == list(range(68))
    assert [i for i in range(68) if flip[i] == i] == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]
    pairs = [(i, p) for i, p in enumerate(flip) if p > i]
    for path in ("300w/test_300w.json", "300vw/anno_300vw.json", "300wlp/test_300wlp.json"):
        for ann in json.loads((CORPUS / path).read_text())["annotations"]:
            points = np.array(ann["keypoints"], dtype=float).reshape(68, 3)[:, :2]
            mirrored = points * [-1, 1]
            fit = _misfit(points, mirrored[flip])
            assert fit < 0.25 < _misfit(points, mirrored), path
            for i, p in pairs:
                unswapped = list(flip)
                unswapped[i], unswapped[p] = i, p
                assert _misfit(points, mirrored[unswapped]) > fit, (path, i, p)


def test_crowdpose_gets_coco_sigmas_by_name_and_placeholders_for_the_rest(tmp_path):
    _require_corpus()
    report, data = _convert(tmp_path, "crowdpose/test_crowdpose.json")
    names = report["skeleton"]["keypoints"]
    sigmas = dict(zip(names, data["kpt_oks_sigmas"], strict=True))
    sources = dict(zip(names, data["kpt_oks_sigmas_source"], strict=True))
    assert sigmas["left_shoulder"] == 0.079 and sigmas["right_wrist"] == 0.062 and sigmas["left_hip"] == 0.107
    assert [n for n in names if sources[n] == "placeholder"] == ["head", "neck"]
    assert sigmas["head"] == sigmas["neck"] == PLACEHOLDER_SIGMA
    assert "sigmas: 12 coco, 2 placeholder" in "\n".join(report["layout"])


def test_crowdpose_foreign_edges_are_dropped_whole_with_one_warning(tmp_path):
    _require_corpus()
    report, data = _convert(tmp_path, "crowdpose/test_crowdpose.json")
    assert data["skeleton"] == [] and report["skeleton"]["edges_source"] == "none"
    warnings = [w for w in report["details"]["warnings"] if "edges" in w]
    assert len(warnings) == 1 and "test_crowdpose.json" in warnings[0]
    assert "all 12 edges dropped" in warnings[0] and "cfg/skeletons/crowdpose.yaml" in warnings[0]


def test_crowdpose_with_the_shipped_skeleton_joins_joints_by_name(tmp_path):
    _require_corpus()
    report, data = _convert(tmp_path, "crowdpose/test_crowdpose.json", skeleton="crowdpose.yaml")
    names = report["skeleton"]["keypoints"]
    joined = {frozenset((names[a], names[b])) for a, b in data["skeleton"]}
    for pair in [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_hip", "right_knee"),
                 ("right_knee", "right_ankle"), ("head", "neck"), ("left_shoulder", "neck")]:
        assert frozenset(pair) in joined
    assert frozenset(("neck", "right_ankle")) not in joined  # what COCO's edge [14, 12] read here joined
    assert "crowdpose.yaml" in report["skeleton"]["edges_source"]
    assert not [w for w in report["details"]["warnings"] if "edges" in w]


def test_ap10k_drops_unused_categories_and_merges_into_one_class(tmp_path):
    _require_corpus()
    report, data = _convert(tmp_path / "a", "ap10k/test_ap10k.json")
    assert data["names"] == {0: "antelope", 1: "jaguar"}
    assert len(report["classes"]["dropped_unused"]) == 52 and "bison" in report["classes"]["dropped_unused"]
    report, data = _convert(tmp_path / "b", "ap10k/test_ap10k.json", merge_classes="animal",
                            skeleton="ap10k.yaml")
    assert data["names"] == {0: "animal"} and report["classes"]["merged_into"] == "animal"
    labels = [line.split()[0] for p in (tmp_path / "b" / "out" / "labels").rglob("*.txt")
              for line in p.read_text().splitlines()]
    assert labels == ["0", "0"]


@pytest.mark.parametrize(("skeleton", "files"), [
    ("coco_wholebody_hand.yaml", ["freihand/test_freihand.json", "onehand10k/test_onehand10k.json",
                                  "panoptic/test_panoptic.json", "rhd/test_rhd.json"]),
    ("ap10k.yaml", ["ap10k/test_ap10k.json"]),
    ("crowdpose.yaml", ["crowdpose/test_crowdpose.json"]),
    ("coco_person.yaml", ["coco/test_coco.json", "ochuman/test_ochuman.json"]),
])
def test_shipped_skeleton_matches_its_datasets_files(skeleton, files):
    """Names and order equal the files'; where a file's edges fit, they are the same edges."""
    _require_corpus()
    shipped = Skeleton.load(skeleton)
    edges = {frozenset(e) for e in shipped.edges}
    for name in files:
        category = json.loads((CORPUS / name).read_text())["categories"][0]
        assert category["keypoints"] == shipped.keypoint_names, name
        if name != "crowdpose/test_crowdpose.json":  # its file carries COCO's 17-point edges
            assert {frozenset((a - 1, b - 1)) for a, b in category["skeleton"]} == edges, name


def test_shipped_mpii_and_face_skeletons_fit_their_datasets():
    """MPII's own file has 16 joints per person in MPII's order, which MHP's COCO file names; 300-W's
    68 points fit the face skeleton."""
    _require_corpus()
    mpii = Skeleton.load("mpii.yaml")
    people = json.loads((CORPUS / "mpii/test_mpii.json").read_text())
    assert {len(person["joints"]) for person in people} == {16}
    assert [words(n) for n in _category_names("mhp/test_mhp.json")] == [words(n) for n in mpii.keypoint_names]
    face = Skeleton.load("face68.yaml")
    annotations = json.loads((CORPUS / "300w/test_300w.json").read_text())["annotations"]
    k = {len(a["keypoints"]) // 3 for a in annotations}
    assert k == {face.num_keypoints} == {68}
