"""The parts of ``fdpose serve`` that need no server: the task score, label-config matching, image
URLs, request fields and the work folder."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.dataset import Instance
from pipeline.errors import FdposeError
from pipeline.labelstudio.layout import match_label_config
from pipeline.serve.predictor import image_url
from pipeline.serve.protocol import RequestError, field, parse_body, project_id
from pipeline.serve.state import WorkFolder
from pipeline.uncertainty import detection_certainty, task_score

MODEL_KEYPOINTS = ["head", "left_hand", "right_hand"]
CONFIG = """<View><Image name="img" value="$picture"/>
<RectangleLabels name="box" toName="img"><Label value="dog"/><Label value="person"/></RectangleLabels>
<KeyPointLabels name="kp" toName="img">{labels}</KeyPointLabels>{extra}</View>"""


def _config(labels: str, extra: str = "") -> str:
    return CONFIG.format(labels=labels, extra=extra)


def _det(score: float, confidences: list[float]) -> Instance:
    keypoints = np.array([[10.0, 20.0, c] for c in confidences])
    return Instance(0, np.array([0.0, 0.0, 5.0, 5.0]), keypoints, score=score)


# --- the task score --------------------------------------------------------------------------------


def test_task_score_is_the_least_certain_detection():
    sure = _det(0.9, [1.0, 0.0, 1.0])  # sure of every point, present or absent
    unsure = _det(0.9, [0.5, 0.5, 1.0])  # cannot tell for two of three points
    assert detection_certainty(0.9, sure.keypoints) == pytest.approx(0.9)
    assert detection_certainty(0.9, unsure.keypoints) == pytest.approx(0.9 / 3)
    assert task_score([sure, unsure]) == pytest.approx(0.3)
    assert task_score([sure]) == pytest.approx(0.9)
    assert task_score([_det(0.4, [1.0, 1.0, 1.0])]) == pytest.approx(0.4)  # a doubtful detection
    assert task_score([]) == 0.0  # nothing found: worth a look
    # Sorting by score ascending puts the image worth labelling first.
    ranked = sorted({"sure": [sure], "unsure": [sure, unsure], "empty": []}.items(),
                    key=lambda item: task_score(item[1]))
    assert [name for name, _ in ranked] == ["empty", "unsure", "sure"]


# --- label config against the model ----------------------------------------------------------------


def test_keypoints_map_by_model_index_whatever_their_names():
    labels = ('<Label value="R" model_index="2"/><Label value="H" model_index="0"/>'
              '<Label value="L" model_index="1"/>')
    layout = match_label_config(_config(labels), MODEL_KEYPOINTS, ["person"])
    assert layout.config.keypoint_names == ["H", "L", "R"]
    assert layout.skeleton.keypoint_names == ["H", "L", "R"]
    assert layout.image_key == "picture"
    assert layout.config.rectangle_control == "box"
    assert layout.skeleton.occlusion_choice is None


def test_keypoints_map_by_name_and_extra_labels_are_fine():
    labels = "".join(f'<Label value="{n}"/>' for n in ["tail", *reversed(MODEL_KEYPOINTS)])
    layout = match_label_config(_config(labels), MODEL_KEYPOINTS, ["person"])
    assert layout.config.keypoint_names == MODEL_KEYPOINTS


def test_occlusion_choice_is_found_or_named():
    labels = "".join(f'<Label value="{n}"/>' for n in MODEL_KEYPOINTS)
    choices = ('<Choices name="vis" toName="img" perRegion="true"><Choice value="visible"/>'
               '<Choice value="Occluded"/></Choices>')
    assert match_label_config(_config(labels, choices), MODEL_KEYPOINTS,
                              ["person"]).skeleton.occlusion_choice == "Occluded"
    assert match_label_config(_config(labels, choices), MODEL_KEYPOINTS, ["person"],
                              occlusion_choice="visible").skeleton.occlusion_choice == "visible"
    assert match_label_config(_config(labels, choices), MODEL_KEYPOINTS, ["person"],
                              occlusion_choice="hidden").skeleton.occlusion_choice is None


@pytest.mark.parametrize(("config", "reason"), [
    (_config('<Label value="head"/><Label value="left_hand"/>'), r"model keypoint\(s\) \['right_hand'\]"),
    (_config('<Label value="a" model_index="0"/><Label value="b" model_index="1"/><Label value="c" '
             'model_index="3"/>'), r"model_index for model keypoint\(s\) 2 \('right_hand'\)"),
    (_config("".join(f'<Label value="{n}"/>' for n in MODEL_KEYPOINTS)).replace('"person"', '"cat"'),
     r"model class\(es\) \['person'\] are not labels of <RectangleLabels>"),
    ('<View><Image name="img" value="$image"/><RectangleLabels name="b" toName="img"><Label value="person"/>'
     "</RectangleLabels></View>", "no <KeyPointLabels>"),
    ('<View><Image name="img" value="$image"', "invalid label config XML"),
    ('<View><KeyPointLabels name="kp" toName="img"><Label value="head"/></KeyPointLabels></View>',
     r"needs an <Image"),
])
def test_a_mismatched_config_is_one_clear_error(config, reason):
    with pytest.raises(FdposeError, match=reason):
        match_label_config(config, MODEL_KEYPOINTS, ["person"], source="project 3")


def test_without_rectangles_keypoints_go_alone():
    config = ('<View><Image name="img" value="$image"/><KeyPointLabels name="kp" toName="img">'
              + "".join(f'<Label value="{n}"/>' for n in MODEL_KEYPOINTS) + "</KeyPointLabels></View>")
    assert match_label_config(config, MODEL_KEYPOINTS, ["person"]).config.rectangle_control is None


# --- image references ------------------------------------------------------------------------------


def test_images_come_only_from_the_label_studio_server():
    base = "http://ls.local:8080"
    assert image_url("/data/upload/3/ab12cd34-x.png", base, 1) == "http://ls.local:8080/data/upload/3/ab12cd34-x.png"
    assert image_url("/data/local-files/?d=a/b.jpg", base + "/", 1) == "http://ls.local:8080/data/local-files/?d=a/b.jpg"
    assert image_url("http://ls.local:8080/data/upload/1/x.png", base, 1).endswith("/1/x.png")
    for reference, reason in [("http://elsewhere:8080/x.png", "not on the Label Studio server"),
                              ("https://ls.local:8080/x.png", "not on the Label Studio server"),
                              ("file:///etc/passwd", "not on the Label Studio server"),
                              ("images/x.png", "local paths are never read"),
                              ("C:/x.png", "not on the Label Studio server"),
                              ("", "no image reference"), (None, "no image reference"),
                              (42, "no image reference")]:
        with pytest.raises(RequestError, match=reason) as error:
            image_url(reference, base, 7)
        assert error.value.status == 422 and "task 7" in error.value.message


# --- request bodies --------------------------------------------------------------------------------


def test_request_fields_are_checked():
    assert parse_body(b'{"a": 1}') == {"a": 1}
    assert parse_body(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a byte-order mark is UTF-8 all the same
    for body, status, reason in [(b"", 400, "empty request body"), (b"{nope", 400, "malformed JSON"),
                                 (b"\xff\xfe", 400, "malformed JSON"), (b'"\\ud800"', 400, "surrogate"),
                                 (b"[1, 2]", 422, "expected a JSON object")]:
        with pytest.raises(RequestError, match=reason) as error:
            parse_body(body)
        assert error.value.status == status
    with pytest.raises(RequestError, match="predict: missing field 'tasks'"):
        field({}, "tasks", list, "predict")
    with pytest.raises(RequestError, match="field 'tasks' must be list, got str"):
        field({"tasks": "x"}, "tasks", list, "predict")
    assert project_id("12.1700000000") == 12 and project_id({"id": 5}) == 5 and project_id(3) == 3
    for bad in ("x.1", None, True, {"name": "p"}):
        with pytest.raises(RequestError, match="must name a Label Studio project"):
            project_id(bad)


# --- the work folder -------------------------------------------------------------------------------


def test_work_folder_is_made_for_one_model_and_survives_restarts(tmp_path):
    base = tmp_path / "pkg"
    base.mkdir()
    work = WorkFolder(tmp_path / "work")
    state = work.initialise(base, "v-base")
    assert state["current"] == {"version": "v-base", "path": str(base.resolve())}
    with work.update() as state:
        state["current"] = {"version": "v-2", "path": "/trained"}
        state["training"] = {"project": 1, "started": "t"}
    again = WorkFolder(tmp_path / "work").initialise(base, "v-base")  # a restart
    assert again["current"]["version"] == "v-2" and again["base_version"] == "v-base"
    WorkFolder(tmp_path / "work").clear_stale_training()
    state = work.read()
    assert state["training"] is None and "interrupted by a server restart" in state["last_error"]
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(FdposeError, match="serves models derived from"):
        work.initialise(other, "v-other")


def test_prune_keeps_the_newest_packages_and_runs_and_always_the_served_one(tmp_path):
    base = tmp_path / "pkg"
    base.mkdir()
    work = WorkFolder(tmp_path / "work")
    work.initialise(base, "v-base")
    for version in ("v1", "v2", "v3", "v4"):  # made in this order; v2 is served (v3, v4 were rejected
        (work.models / version).mkdir(parents=True)  # by another rule, or the server rolled back)
        (work.models / version / "model.pt").write_bytes(b"weights")
    with work.update() as state:
        state["history"] = [{"status": "accepted", "version": v, "path": str(work.models / v)}
                            for v in ("v1", "v2", "v3", "v4")]
        state["current"] = {"version": "v2", "path": str(work.models / "v2")}
    jobs = [work.next_job() for _ in range(5)]
    assert [job.name for job in jobs] == ["0001", "0002", "0003", "0004", "0005"]
    removed = work.prune(2)
    assert sorted(path.name for path in work.models.iterdir()) == ["v2", "v3", "v4"]
    assert sorted(path.name for path in work.jobs.iterdir()) == ["0004", "0005"]
    assert sorted(path.name for path in removed) == ["0001", "0002", "0003", "v1"]
    assert [entry.get("pruned", False) for entry in work.read()["history"]] == [True, False, False, False]
    assert work.next_job().name == "0006"  # numbered after the highest, not after the count
    assert work.prune(0) == [] and len(list(work.jobs.iterdir())) == 3  # 0: keep everything
    work.prune(1)
    assert sorted(path.name for path in work.models.iterdir()) == ["v2", "v4"]
    assert sorted(path.name for path in work.jobs.iterdir()) == ["0006"]
    assert base.is_dir()  # the --model the folder serves from is never the work folder's to remove


@pytest.mark.slow  # three job processes, each importing torch
def test_trainings_prune_their_runs_down_to_keep(tmp_path):
    from pathlib import Path

    from pipeline.serve.training import Trainer

    base = tmp_path / "pkg"
    base.mkdir()
    work = WorkFolder(tmp_path / "work")
    work.initialise(base, "v-base")
    params = Path(__file__).resolve().parents[2] / "cfg" / "params.yaml"
    trainer = Trainer(work, params, keep=2)
    trainer.remember(5, "http://127.0.0.1:9", "key")  # the discard port: each job fails at its download
    for _ in range(3):
        assert trainer.request(5) == "started"
        trainer.wait(120)
    history = work.read()["history"]
    assert [entry["status"] for entry in history] == ["failed"] * 3
    assert [entry["job"] for entry in history] == ["0001", "0002", "0003"]
    assert sorted(path.name for path in work.jobs.iterdir()) == ["0002", "0003"]


# --- the swap rule ---------------------------------------------------------------------------------


def test_a_trained_model_replaces_the_served_one_only_when_at_least_as_good():
    from pipeline.serve.job import decide

    better = decide({"oks_map": 0.31}, {"oks_map": 0.3}, "val", 4)
    assert better["status"] == "accepted"
    assert better["reason"] == "OKS mAP 0.31 >= served 0.3 on the val split (4 images)"
    assert decide({"oks_map": 0.3}, {"oks_map": 0.3}, "val", 4)["status"] == "accepted"
    worse = decide({"oks_map": 0.15}, {"oks_map": 0.2}, "val", 1)
    assert worse["status"] == "rejected" and "0.15 < served 0.2" in worse["reason"]
    assert worse["metrics"] == {"new": {"oks_map": 0.15}, "old": {"oks_map": 0.2}}
    assert decide({"oks_map": None}, {"oks_map": 0.0}, "val", 2)["status"] == "accepted"  # neither scores
    assert decide({"oks_map": None}, {"oks_map": 0.1}, "val", 2)["status"] == "rejected"
