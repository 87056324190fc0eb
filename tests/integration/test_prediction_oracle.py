"""An oracle for fdpose's own inference path: on the learning test's trained stock model (learning.py) and
its validation images, fdpose's runners (the package's PyTorch safetensors, ONNX Runtime and OpenVINO
models, through pipeline.model_io.load_runner and pipeline.inference.run_image: our letterbox, decode,
NMS and letterbox undo) find the same people as ultralytics' own ``YOLO(best.pt).predict``, with boxes
and keypoints within PIXELS pixels after matching each ultralytics detection to the fdpose one of
highest IoU. ultralytics runs with ``rect=False`` so both fit the image into the same square input
(its default, ``rect=True``, pads only to the stride and so sees a different input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from learning import STOCK, TRAINING

pytestmark = pytest.mark.slow

PIXELS = 1.0  # largest box-corner or keypoint difference, original image pixels
SCORE = 0.01  # largest confidence difference (detection score, keypoint confidence)
CONF, IOU, MAX_DET = 0.25, 0.7, 300
BACKENDS = ["torch", "onnx", "openvino"]


@pytest.fixture(scope="module")
def trained_package(learned, tmp_path_factory):
    """The trained stock model, packaged (pt, safetensors, ONNX, OpenVINO) at the training size."""
    from pipeline.cli import main

    trained = learned.get(STOCK)
    out = tmp_path_factory.mktemp("oracle") / "package"
    arguments = ["--weights", trained.weights, "--eval", trained.eval_dir, "--out", out,
                 "--data", learned.set.data]
    done = CliRunner().invoke(main, ["package", *map(str, arguments)])
    assert done.exit_code == 0, done.output
    return trained, out


def ultralytics_predictions(weights: Path, images: list[Path]) -> list[dict[str, np.ndarray]]:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    found = []
    for image in images:
        result = model.predict(str(image), imgsz=TRAINING["imgsz"], conf=CONF, iou=IOU, max_det=MAX_DET,
                               rect=False, device="cpu", verbose=False)[0]
        found.append({"boxes": result.boxes.xyxy.numpy().astype(np.float64),
                      "scores": result.boxes.conf.numpy().astype(np.float64),
                      "keypoints": result.keypoints.data.numpy().astype(np.float64)})
    return found


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of ``b``'s."""
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda box: (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_runners_match_ultralytics_predict(trained_package, learned, backend):
    import cv2

    from pipeline.inference import run_image
    from pipeline.model_io import load_runner

    trained, package = trained_package
    images = sorted((learned.set.data.parent / "images" / "val").iterdir())
    expected = ultralytics_predictions(trained.weights, images)
    assert sum(len(e["boxes"]) for e in expected) >= len(images) // 2  # a trained model finds people
    runner = load_runner(package, backend)
    compared, worst = 0, [0.0, 0.0]  # largest pixel and confidence differences seen
    for image, want in zip(images, expected, strict=True):
        got = run_image(runner, cv2.imread(str(image)), TRAINING["imgsz"], CONF, IOU, MAX_DET)
        boxes = np.array([d.bbox for d in got]).reshape(-1, 4)
        unmatched = set(range(len(got)))
        for box, score, keypoints in zip(want["boxes"], want["scores"], want["keypoints"], strict=True):
            overlaps = iou(box, boxes)
            best = int(np.argmax(overlaps)) if len(got) else -1
            if best < 0 or best not in unmatched or overlaps[best] < 0.9:
                # Only a detection at the threshold may be on one side alone (a score rounding apart).
                assert abs(score - CONF) <= SCORE, (image.name, backend, box, score)
                continue
            unmatched.discard(best)
            mine = got[best]
            pixels = max(np.abs(mine.bbox - box).max(),
                         np.abs(mine.keypoints[:, :2] - keypoints[:, :2]).max())
            confidence = max(abs(mine.score - score), np.abs(mine.keypoints[:, 2] - keypoints[:, 2]).max())
            assert pixels <= PIXELS and confidence <= SCORE, (image.name, backend, pixels, confidence)
            worst = [max(worst[0], pixels), max(worst[1], confidence)]
            compared += 1
        assert all(abs(got[i].score - CONF) <= SCORE for i in unmatched), (image.name, backend)
    print(f"{backend}: {compared} detections matched; largest differences {worst[0]:.3f} px, "
          f"{worst[1]:.4f} in confidence")
    assert compared >= len(images) // 2
