"""What keypoint names imply: flip pairs in every naming style, unknown flips, COCO sigmas by name;
and skeleton files: written by ``fdpose skeleton infer``, validated by ``fdpose skeleton check``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.errors import FdposeError
from pipeline.skeleton import (
    COCO_PERSON_KEYPOINTS,
    COCO_PERSON_SIGMAS,
    PLACEHOLDER_SIGMA,
    Skeleton,
    infer_flip,
)
from pipeline.skeleton.names import default_sigmas, words


def pairs(names: list[str]) -> set[frozenset[str]]:
    inferred = infer_flip(names)
    return {frozenset((names[i], names[p])) for i, p in enumerate(inferred.permutation) if p != i}


@pytest.mark.parametrize(("left", "right"), [
    ("left_wrist", "right_wrist"), ("LWrist", "RWrist"), ("l_wrist", "r_wrist"), ("forelegL1", "forelegR1"),
    ("hindleg_l_2", "hindleg_r_2"), ("wingL", "wingR"), ("L_eye", "R_eye"), ("Wrist_Left", "Wrist_Right"),
    ("left-wrist", "RightWrist"), ("LEFT WRIST", "right.wrist"), ("leg1L", "leg1R"), ("Nearknee", "Offknee"),
    ("medial_left_knee", "medial_right_knee"), ("L_F_Paw", "R_F_Paw"),
])
def test_side_markers_pair_in_every_style(left, right):
    names = ["head", right, left, "tail"]
    assert pairs(names) == {frozenset((left, right))}
    assert infer_flip(names).safe


@pytest.mark.parametrize("names", [
    ["left_wrist", "right_elbow"],  # the rest of the name differs
    ["forelegL1", "forelegR2"],  # the index differs
    ["hindlegL1", "forelegR1"],
])
def test_names_whose_rest_differs_do_not_pair(names):
    assert pairs(names) == set()
    assert not infer_flip(names).safe and "no partner" in infer_flip(names).problem


def test_a_side_without_partner_or_no_names_makes_the_flip_unknown():
    assert "wingL" in infer_flip(["head", "wingL", "tail"]).problem
    assert "no names" in infer_flip([f"kp{i}" for i in range(5)]).problem
    assert "no names" in infer_flip([str(i) for i in range(1, 6)]).problem
    assert infer_flip(["wrist", "thumb1", "thumb2"]).safe  # no side at all: identity is right
    skeleton = Skeleton([f"kp{i}" for i in range(4)])
    assert not skeleton.mirror and "flip_idx" not in skeleton.data_yaml_fields()
    assert "flip_idx" in Skeleton(["nose", "left_eye", "right_eye"]).data_yaml_fields()


def test_coco_sigmas_by_name_in_any_spelling_and_a_k_independent_placeholder():
    sigmas, sources = default_sigmas(["LShoulder", "Shoulder_Right", "left hip", "Nose", "neck", "tail"])
    assert sigmas == [0.079, 0.079, 0.107, 0.026, PLACEHOLDER_SIGMA, PLACEHOLDER_SIGMA]
    assert sources == ["coco"] * 4 + ["placeholder"] * 2
    assert default_sigmas(COCO_PERSON_KEYPOINTS)[0] == COCO_PERSON_SIGMAS
    for k in (5, 98):
        assert default_sigmas([f"kp{i}" for i in range(k)])[0] == [PLACEHOLDER_SIGMA] * k
    assert words("forelegL1") == ("foreleg", "l", "1") and words("Ankle_Left ") == ("ankle", "left")


def test_skeleton_check_validates_and_prints_pairs_and_sigmas(tmp_path):
    good = tmp_path / "good.yaml"
    layout = {"keypoints": ["nose", "eyeL", "eyeR", "neck"], "edges": [["nose", "neck"]]}
    good.write_text(yaml.safe_dump(layout))
    result = CliRunner().invoke(main, ["skeleton", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "flip pairs (1, from names): eyeL/eyeR" in result.output
    assert "sigmas: 3 coco, 1 placeholder (placeholder: neck)" in result.output
    bad = {
        "flip_idx": ({"keypoints": ["a", "b", "c"], "flip_idx": [1, 2, 0]}, "not an involution"),
        "edges": ({"keypoints": ["a", "b"], "edges": [[0, 5]]}, "unknown keypoint 5"),
        "sigmas": ({"keypoints": ["a", "b"], "sigmas": [0.1, -1]}, "positive OKS sigmas"),
        "names": ({"keypoints": ["a", "a"]}, "duplicate keypoint names"),
    }
    for name, (content, message) in bad.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(content))
        result = CliRunner().invoke(main, ["skeleton", "check", str(path)])
        assert result.exit_code == 1 and message in result.output and str(path) in result.output
        assert len(result.output.strip().splitlines()) == 1
        with pytest.raises(FdposeError):
            Skeleton.load(path)


def test_skeleton_infer_writes_what_convert_infers_and_reads_back(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    names = ["head", "wingL", "wingR", "tail"]
    (tmp_path / "c.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20],
                         "keypoints": [2, 2, 2, 5, 5, 2, 9, 9, 2, 12, 12, 2]}],
        "categories": [{"id": 1, "name": "fly", "keypoints": names, "skeleton": [[1, 2], [1, 3], [1, 4]]}]}))
    out = tmp_path / "fly.yaml"
    args = ["skeleton", "infer", "--from", "coco", "--input", str(tmp_path / "c.json"), "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    loaded = Skeleton.load(out)
    assert loaded.flip_pairs() == [("wingL", "wingR")] and loaded.class_names == ["fly"]
    assert loaded.edges == [(0, 1), (0, 2), (0, 3)] and loaded.sigma_sources == ["placeholder"] * 4
    assert yaml.safe_load(out.read_text())["edges"][0] == ["head", "wingL"]  # by name, to edit


def test_shipped_skeletons_are_valid_and_their_flips_are_given():
    shipped = sorted((Path(__file__).resolve().parents[2] / "cfg" / "skeletons").glob("*.yaml"))
    assert {p.stem for p in shipped} >= {"coco_person", "coco_wholebody_hand", "face68", "ap10k", "crowdpose",
                                          "mpii"}
    for path in shipped:
        skeleton = Skeleton.load(path)
        assert skeleton.flip_source == "file" and skeleton.edges, path
    assert Skeleton.load("coco_wholebody_hand.yaml").num_keypoints == 21
    assert len(Skeleton.load("face68.yaml").flip_pairs()) == 29
    assert [Skeleton.load(f"{n}.yaml").num_keypoints for n in ("ap10k", "crowdpose", "mpii")] == [17, 14, 16]
