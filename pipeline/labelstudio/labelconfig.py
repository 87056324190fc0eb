"""A skeleton as a Label Studio labeling config, and back: ``fdpose skeleton label-config`` writes the
XML a project is set up with, so the project and the skeleton cannot drift apart; ``fdpose convert`` and
``fdpose serve`` read it back unchanged (keypoint order by ``model_index``).

The config has the image, a ``<RectangleLabels>`` with one label per class (each instance is a box its
keypoints name as parent), a ``<KeyPointLabels>`` with one label per keypoint (``model_index`` = its
index; left-side points blue, right-side red, others yellow), and, when the skeleton names an
``occlusion_choice`` (default ``occluded``), a per-region ``<Choices>`` offering it for keypoints.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from pipeline.errors import FdposeError
from pipeline.labelstudio.config import parse_label_config
from pipeline.skeleton import Skeleton
from pipeline.skeleton.names import side_of

DEFAULT_OCCLUSION = "occluded"
SIDE_COLOURS = {"left": "#1E78EB", "right": "#EB4628", None: "#EBD75A"}
CLASS_COLOURS = ["#27AE60", "#8E44AD", "#E67E22", "#16A085", "#C0392B", "#2C3E50"]


def read_text(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise FdposeError(f"unreadable {what} ({error})", path=path) from None


def label_config_xml(skeleton: Skeleton) -> str:
    """The labeling config XML of ``skeleton`` (see the module docstring)."""
    view = ElementTree.Element("View")
    ElementTree.SubElement(view, "Image", name="image", value="$image", zoom="true")
    boxes = ElementTree.SubElement(view, "RectangleLabels", name="bbox", toName="image")
    for index, name in enumerate(skeleton.class_names):
        colour = CLASS_COLOURS[index % len(CLASS_COLOURS)]
        ElementTree.SubElement(boxes, "Label", value=name, background=colour)
    points = ElementTree.SubElement(view, "KeyPointLabels", name="keypoints", toName="image", smart="true")
    for index, name in enumerate(skeleton.keypoint_names):
        ElementTree.SubElement(points, "Label", value=name, model_index=str(index),
                               background=SIDE_COLOURS[side_of(name)])
    choices = ElementTree.SubElement(view, "Choices", name="visibility", toName="image", perRegion="true",
                                     whenTagName="keypoints")
    ElementTree.SubElement(choices, "Choice", value=skeleton.occlusion_choice or DEFAULT_OCCLUSION)
    ElementTree.indent(view, space="  ")
    return ElementTree.tostring(view, encoding="unicode") + "\n"


def skeleton_from_label_config(path: Path) -> Skeleton:
    """The skeleton a labeling config file implies: keypoints in ``model_index`` order, its rectangle
    labels as classes, its occlusion choice; flip pairs and sigmas from the names, as convert infers."""
    config = parse_label_config(read_text(path, "label config"), path)
    occlusion = next((value for value in config.choice_values if "occlu" in value.lower()), None)
    return Skeleton(keypoint_names=list(config.keypoint_names),
                    class_names=list(config.class_names) or ["object"], occlusion_choice=occlusion)
