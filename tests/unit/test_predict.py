"""The shared inference path of ``fdpose predict``: letterbox, decoding with NMS, sources, COCO output."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.dataset import Instance
from pipeline.errors import FdposeError
from pipeline.formats.coco_results import coco_result
from pipeline.inference import Letterbox, ModelMeta, decode, letterbox, nms
from pipeline.predict import draw, iter_frames
from pipeline.skeleton import Skeleton

META = ModelMeta(Skeleton(["a", "b"], class_names=["person", "dog"], kpt_dims=3, edges=[(0, 1)]),
                 imgsz=64, stride=32)


def test_letterbox_fits_centres_and_pads_like_ultralytics():
    image = np.zeros((50, 100, 3), np.uint8)
    image[:, :, 2] = 255  # red in BGR
    batch, transform = letterbox(image, 64)
    assert batch.shape == (1, 3, 64, 64) and batch.dtype == np.float32
    assert (transform.gain_x, transform.gain_y) == (0.64, 0.64)  # 100x50 -> 64x32
    assert (transform.pad_x, transform.pad_y) == (0, 16)
    assert np.allclose(batch[0, :, 0, 0], 114 / 255)  # grey padding above
    assert np.allclose(batch[0, :, 32, 32], [1, 0, 0])  # RGB order inside


def _raw(columns: list[list[float]]) -> np.ndarray:
    """Raw head output (4 + nc + K*3, N) from per-anchor columns."""
    return np.array(columns, dtype=np.float32).T[None]


def test_decode_thresholds_suppresses_per_class_and_undoes_the_letterbox():
    transform = Letterbox(gain_x=0.5, gain_y=0.5, pad_x=0, pad_y=8, width=128, height=96)
    keypoints = [10, 18, 0.9, 30, 28, 0.2]
    raw = _raw([
        [20, 28, 20, 20, 0.9, 0.1, *keypoints],  # best person
        [21, 28, 20, 20, 0.8, 0.1, *keypoints],  # overlaps it: suppressed
        [21, 28, 20, 20, 0.1, 0.7, *keypoints],  # same place, other class: kept
        [50, 40, 10, 10, 0.2, 0.1, *keypoints],  # under the threshold
    ])
    detections = decode(raw, META, transform, conf=0.25, iou=0.5)
    assert [(d.class_id, round(d.score, 3)) for d in detections] == [(0, 0.9), (1, 0.7)]
    np.testing.assert_allclose(detections[0].bbox, [20, 20, 60, 60])  # (10..30 - 0) / 0.5, (18..38 - 8) / 0.5
    np.testing.assert_allclose(detections[0].keypoints, [[20, 20, 0.9], [60, 40, 0.2]], rtol=1e-6)


def test_decode_clips_to_the_image_and_checks_the_channel_count():
    transform = Letterbox(1.0, 1.0, 0, 0, 64, 64)
    detections = decode(_raw([[60, 60, 20, 20, 0.9, 0.0, 70, -5, 1.0, 1, 1, 1.0]]), META, transform)
    np.testing.assert_allclose(detections[0].bbox, [50, 50, 64, 64])
    np.testing.assert_allclose(detections[0].keypoints[0], [64, 0, 1.0])
    with pytest.raises(FdposeError, match="expected 4 \\+ 2 \\+ 2\\*3"):
        decode(np.zeros((1, 11, 5), np.float32), META, transform)


def test_nms_keeps_the_best_of_overlapping_boxes_up_to_max_det():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [40, 40, 50, 50]], float)
    scores = np.array([0.5, 0.9, 0.3, 0.8])
    assert nms(boxes, scores, 0.5, 10) == [1, 3, 2]
    assert nms(boxes, scores, 0.5, 2) == [1, 3]
    assert nms(boxes, scores, 0.9, 10) == [1, 3, 0, 2]  # IoU 0.68 survives a 0.9 threshold


def test_coco_result_and_drawing():
    det = Instance(1, [10.0, 20.0, 40.0, 60.0004], [[12.0, 22.0001, 0.9], [30.0, 50.0, 0.1]],
                   score=0.87654321)
    assert coco_result(det, 7) == {"image_id": 7, "category_id": 2, "bbox": [10.0, 20.0, 30.0, 40.0],
                                   "score": 0.876543, "keypoints": [12.0, 22.0, 0.9, 30.0, 50.0, 0.1]}
    with pytest.raises(ValueError, match="no score"):  # a label is not a prediction
        coco_result(Instance(1, det.bbox, det.keypoints), 7)
    image = np.zeros((64, 64, 3), np.uint8)
    drawn = draw(image, [det], META)
    assert image.sum() == 0 and drawn.sum() > 0  # drawn on a copy
    assert drawn[22, 12].any()  # the confident keypoint
    assert not drawn[50, 30].any()  # the unsure one is not drawn (nor is the edge to it)


def test_frames_from_a_folder_with_a_video_and_an_unreadable_image(tmp_path):
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "a.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    writer = cv2.VideoWriter(str(tmp_path / "sub" / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (16, 16))
    for _ in range(3):
        writer.write(np.zeros((16, 16, 3), np.uint8))
    writer.release()
    frames = list(iter_frames(tmp_path))
    assert [(f.file_name, f.frame_index, f.image is None) for f in frames] == [
        ("a.jpg", None, True), ("b.png", None, False), ("sub/clip.avi", 0, False), ("sub/clip.avi", 1, False),
        ("sub/clip.avi", 2, False)]


def test_bad_sources_are_one_clear_error(tmp_path):
    with pytest.raises(FdposeError, match="source not found"):
        list(iter_frames(tmp_path / "missing"))
    with pytest.raises(FdposeError, match="no images or videos"):
        list(iter_frames(tmp_path))
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(FdposeError, match="unsupported file type '.txt'"):
        list(iter_frames(tmp_path / "x.txt"))


def test_model_meta_round_trip_and_malformed():
    assert ModelMeta.from_dict(META.to_dict(), "m") == META
    with pytest.raises(FdposeError, match="m: kpt_shape \\[3, 3\\] does not match 2"):
        ModelMeta.from_dict({**META.to_dict(), "kpt_shape": [3, 3]}, "m")
    with pytest.raises(FdposeError, match="malformed model metadata"):
        ModelMeta.from_dict({"class_names": ["x"]}, "m")


def test_backend_choices_are_checked_before_any_model_loads(tmp_path):
    from pipeline.model_io import load_runner

    package = tmp_path / "pkg"
    package.mkdir()
    without = "pkg: no model.xml in the package \\(packaged without fdpose\\[openvino\\]\\)"
    with pytest.raises(FdposeError, match=without):
        load_runner(package, backend="openvino")
    with pytest.raises(FdposeError, match="pkg: no model.onnx in the package"):
        load_runner(package, backend="onnx")
    with pytest.raises(FdposeError, match="backend: unknown backend 'tensorrt'"):
        load_runner(package, backend="tensorrt")
    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(FdposeError, match="best.pt: a .pt file runs with backend torch, not onnx"):
        load_runner(tmp_path / "best.pt", backend="onnx")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(FdposeError, match="model.onnx: a .onnx file runs with backend onnx, not openvino"):
        load_runner(tmp_path / "model.onnx", backend="openvino")


def test_openvino_missing_is_one_line_saying_how_to_install_it(tmp_path, monkeypatch):
    import sys

    from pipeline.inference import import_openvino

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the extra were not installed
    with pytest.raises(FdposeError, match="OpenVINO is not installed .*pip install 'fdpose\\[openvino\\]'"):
        import_openvino()
