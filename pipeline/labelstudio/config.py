"""A Label Studio labeling config (the project's XML) as what the reader, the region writer and the
ML backend need from it: image field, control names, keypoint and class labels in model order.

Keypoint order is ``model_index`` on the ``<Label>`` tags of ``<KeyPointLabels>`` when they carry it
(all of them, distinct integers), else the labels' document order (with a warning in
:attr:`LabelConfig.warnings`). Class names are the ``<RectangleLabels>`` labels, in the same way. A
per-region ``<Choices>`` (the first one) offers the values that can mark a keypoint (occlusion).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field

from pipeline.errors import FdposeError


@dataclass
class LabelConfig:
    """What the reader and the uploader need from a project's label config."""

    keypoint_names: list[str]  # in model order
    class_names: list[str]
    image_name: str | None = None  # the <Image name=...> regions point at
    image_key: str | None = None  # the task data field holding the image reference
    keypoint_control: str | None = None
    rectangle_control: str | None = None
    choices_control: str | None = None  # a per-region <Choices>
    choice_values: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # label alias -> label value
    keypoint_indices: dict[str, int] = field(default_factory=dict)  # keypoint label -> model_index, if given
    warnings: list[str] = field(default_factory=list)


def _ordered_labels(control: ElementTree.Element, source: object
                    ) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """Labels of a control in ``model_index`` order (else document order), their aliases, and each
    label's ``model_index`` (empty when the labels have none)."""
    labels = [child for child in control if child.tag.lower() == "label" and child.get("value") is not None]
    values = [label.get("value") for label in labels]
    aliases = {label.get("alias"): label.get("value") for label in labels if label.get("alias")}
    indices = [label.get("model_index") for label in labels]
    given = [i for i in indices if i is not None]
    if not given:
        return values, aliases, {}
    if len(given) != len(labels):
        missing = [v for v, i in zip(values, indices, strict=True) if i is None]
        raise FdposeError(f"model_index missing on labels {missing}", path=source,
                          item=f"<{control.tag} name={control.get('name')!r}>")
    try:
        numbers = [int(i) for i in given]
    except ValueError:
        raise FdposeError(f"model_index must be integers, got {given}", path=source,
                          item=f"<{control.tag} name={control.get('name')!r}>") from None
    if len(set(numbers)) != len(numbers):
        raise FdposeError(f"duplicate model_index in {dict(zip(values, numbers, strict=True))}", path=source,
                          item=f"<{control.tag} name={control.get('name')!r}>")
    order = sorted(range(len(values)), key=lambda i: numbers[i])
    return [values[i] for i in order], aliases, dict(zip(values, numbers, strict=True))


def parse_label_config(text: str, source: object = "label config") -> LabelConfig:
    """Parse a Label Studio label config (XML)."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise FdposeError(f"invalid label config XML ({error})", path=source) from None
    keypoint_names: list[str] = []
    class_names: list[str] = []
    config = LabelConfig(keypoint_names, class_names)
    keypoint_order_from_index = True
    for element in root.iter():
        tag = element.tag.lower()
        if tag == "image" and config.image_name is None:
            config.image_name = element.get("name")
            value = element.get("value", "")
            config.image_key = value[1:] if value.startswith("$") else None
        elif tag == "keypointlabels":
            names, aliases, indices = _ordered_labels(element, source)
            keypoint_order_from_index &= bool(indices)
            config.keypoint_indices.update(indices)
            keypoint_names.extend(n for n in names if n not in keypoint_names)
            config.aliases.update(aliases)
            config.keypoint_control = config.keypoint_control or element.get("name")
        elif tag == "rectanglelabels":
            names, aliases, _ = _ordered_labels(element, source)
            class_names.extend(n for n in names if n not in class_names)
            config.aliases.update(aliases)
            config.rectangle_control = config.rectangle_control or element.get("name")
        elif tag == "choices" and element.get("perRegion", element.get("perregion", "")).lower() == "true":
            if config.choices_control is None:
                config.choices_control = element.get("name")
                config.choice_values = [c.get("value") for c in element
                                        if c.tag.lower() == "choice" and c.get("value") is not None]
    if not keypoint_names:
        raise FdposeError("label config has no <KeyPointLabels> with <Label>s", path=source)
    if not keypoint_order_from_index:
        config.warnings.append(f"{source}: no model_index on the keypoint labels; keypoint order taken "
                               f"from the config's label order {keypoint_names}")
    return config
