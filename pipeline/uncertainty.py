"""How sure a model is of one image's predictions: the score that orders a labelling queue.

Label Studio sorts the Data Manager by a prediction's ``score``; sorted ascending, the tasks the model
is least sure of come first, which is where a label teaches it most. For one image with detections
``d`` (detection score ``s_d``, keypoint confidences ``c_dk``):

* keypoint certainty ``q_dk = |2 c_dk - 1|``: 1 when the model is sure a point is there (``c = 1``) or
  sure it is not (``c = 0``), 0 when it cannot tell (``c = 0.5``);
* detection certainty ``u_d = s_d * mean_k q_dk`` (``mean_k q_dk = 1`` for keypoints without a
  confidence channel);
* task score ``min_d u_d``: one doubtful instance is enough to make an image worth labelling. An
  image with no detection scores 0: either it is empty or the model missed everything, and only a
  person can tell which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def detection_certainty(score: float, keypoints: np.ndarray) -> float:
    """``score * mean |2 c - 1|`` over the keypoint confidences (the third column of ``keypoints``)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] < 3 or not len(keypoints):
        return float(score)
    confidence = np.clip(keypoints[:, 2], 0.0, 1.0)
    return float(score) * float(np.mean(np.abs(2.0 * confidence - 1.0)))


def task_score(detections: Sequence[Any]) -> float:
    """The least certain detection's certainty (0 for no detection); ``detections`` have ``score``
    and ``keypoints`` ``(K, 3)``, as a predicted :class:`~pipeline.dataset.Instance` has."""
    if not detections:
        return 0.0
    return min(detection_certainty(d.score, d.keypoints) for d in detections)
