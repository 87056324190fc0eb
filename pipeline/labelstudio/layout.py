"""A project's label config against a model: which label each model keypoint and class becomes
(``fdpose serve`` checks it once, when Label Studio calls ``/setup``).

Rules (a mismatch is a :class:`pipeline.errors.FdposeError` naming what is missing):

* The config needs an ``<Image value="$key">`` and a ``<KeyPointLabels>``.
* Keypoints: when the keypoint labels carry ``model_index``, model keypoint ``i`` is the label
  with ``model_index="i"`` (names may differ from the model's); otherwise each model keypoint is the
  label of the same name. Every model keypoint must have its label; extra labels are allowed.
* Classes: with a ``<RectangleLabels>``, every model class must be one of its labels (by name) and
  each instance is a rectangle that its keypoints name as ``parentID``; without one, keypoints are
  sent alone.
* Occlusion: a per-region ``<Choices>`` offering the occlusion choice (``occlusion_choice``, else a
  choice whose value contains "occlu") marks keypoints below ``kpt_conf``; without one they are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipeline.errors import FdposeError
from pipeline.labelstudio.config import LabelConfig, parse_label_config
from pipeline.skeleton import Skeleton


@dataclass(frozen=True)
class ProjectLayout:
    """How predictions are written for one project."""

    config: LabelConfig  # keypoint_names: the project's labels of the model keypoints, in model order
    skeleton: Skeleton  # the model's skeleton named with those labels (occlusion_choice when marked)
    image_key: str  # the task data field holding the image


def _keypoint_labels(config: LabelConfig, model_names: list[str], source: str) -> list[str]:
    by_index = {index: value for value, index in config.keypoint_indices.items()}
    if by_index:
        missing = [f"{i} ({name!r})" for i, name in enumerate(model_names) if i not in by_index]
        if missing:
            raise FdposeError(f"no keypoint label with model_index for model keypoint(s) "
                              f"{', '.join(missing)}; the model has {len(model_names)} keypoints "
                              f"{model_names}", path=source)
        return [by_index[i] for i in range(len(model_names))]
    missing = [name for name in model_names if name not in config.keypoint_names]
    if missing:
        raise FdposeError(f"model keypoint(s) {missing} have no <Label> in <KeyPointLabels> "
                          f"{config.keypoint_names} (add them, or number the labels with model_index)",
                          path=source)
    return list(model_names)


def _occlusion(config: LabelConfig, wanted: str | None) -> str | None:
    if config.choices_control is None:
        return None
    if wanted is not None:
        return wanted if wanted in config.choice_values else None
    return next((value for value in config.choice_values if "occlu" in value.lower()), None)


def match_label_config(text: str, keypoint_names: list[str], class_names: list[str], kpt_dims: int = 3,
                       occlusion_choice: str | None = None, source: str = "label config") -> ProjectLayout:
    """Check a project's label config (XML text) against the model's keypoints and classes."""
    config = parse_label_config(text, source)
    if config.image_name is None or config.image_key is None:
        raise FdposeError('label config needs an <Image value="$field"> for the keypoints', path=source)
    labels = _keypoint_labels(config, list(keypoint_names), source)
    if config.rectangle_control is not None:
        unknown = [name for name in class_names if name not in config.class_names]
        if unknown:
            raise FdposeError(f"model class(es) {unknown} are not labels of <RectangleLabels> "
                              f"{config.class_names}", path=source)
    skeleton = Skeleton(keypoint_names=labels, class_names=list(class_names), kpt_dims=kpt_dims,
                        flip_permutation=list(range(len(labels))), occlusion_choice=_occlusion(config,
                                                                                               occlusion_choice))
    return ProjectLayout(replace(config, keypoint_names=labels), skeleton, config.image_key)
