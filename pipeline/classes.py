"""Classes as the user means them: unused ones dropped, several merged into one, a subset kept or renamed.

Applied to the hub after any reader (COCO, Label Studio, YOLO), so every input format maps the same way:
- a mapping ``{source class: output class}`` keeps the classes it names (several may share an output
  class: a merge; a different name: a rename); instances of the others are skipped, counted with
  their reason. ``merge`` maps every class to one.
- classes that no instance uses are dropped (unless ``keep_unused``) and listed.
Output classes keep the order of the mapping's targets, or the input's order without a mapping.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.dataset import Dataset
from pipeline.errors import FdposeError


def parse_classes(text: str | dict | list | None, source: object = "--classes") -> dict[str, str] | None:
    """A class mapping from the command line (``cat=animal,dog=animal,horse``: ``horse`` keeps its
    name) or the params (a mapping, or a list of names to keep)."""
    if text is None:
        return None
    if isinstance(text, dict):
        return {str(key): str(value) for key, value in text.items()}
    if isinstance(text, list):
        return {str(name): str(name) for name in text}
    mapping: dict[str, str] = {}
    for part in str(text).split(","):
        name, _, target = part.partition("=")
        name, target = name.strip(), (target.strip() if _ else name.strip())
        if not name or not target:
            raise FdposeError(f"expected NAME or NAME=CLASS, got {part.strip()!r}", item=source)
        mapping[name] = target
    if not mapping:
        raise FdposeError("no class named", item=source)
    return mapping


def map_classes(dataset: Dataset, source: object, *, mapping: dict[str, str] | None = None,
                merge: str | None = None, keep_unused: bool = False) -> dict[str, Any]:
    """Rewrite the dataset's classes in place; returns what was done, for report.json."""
    names = list(dataset.skeleton.class_names)
    if merge is not None and mapping is not None:
        raise FdposeError("give either a class mapping or a merge, not both", item="--merge-classes")
    given = mapping
    if merge is not None:
        mapping = dict.fromkeys(names, merge)
    unknown = [name for name in (mapping or {}) if name not in names]
    if unknown:
        raise FdposeError(f"the class mapping names {unknown}, which are not among the input's classes "
                          f"{names}", path=source, item="classes")
    counts = [0] * len(names)
    for image in dataset.images:
        for instance in image.instances:
            counts[instance.class_id] += 1
    used = {name: count for name, count in zip(names, counts, strict=True)}
    if mapping is None:
        mapping = {name: name for name in names if keep_unused or used[name]}
    targets = list(dict.fromkeys(t for name, t in mapping.items() if keep_unused or used[name]))
    if not any(counts):  # nothing was read: the caller's "no instances" error says why
        targets = names
    elif not targets:
        raise FdposeError("no class is left: none of the mapped classes has an instance", path=source,
                          item="classes")
    new_id = {names.index(name): targets.index(target) for name, target in mapping.items()
              if target in targets}
    left_out: dict[str, int] = {}
    units = 0 if dataset.report.tally.get("unit") == "tasks" else 1  # a task still converts without it
    for image in dataset.images:
        kept = []
        for instance in image.instances:
            if instance.class_id in new_id:
                instance.class_id = new_id[instance.class_id]
                kept.append(instance)
                continue
            name = names[instance.class_id]
            left_out[name] = left_out.get(name, 0) + 1
            dataset.report.skip(source, instance.source or image.file_name,
                                f"class {name!r} left out by the class mapping", units=units)
        image.instances = kept
    dataset.skeleton = replace(dataset.skeleton, class_names=targets)
    return {
        "input": names,
        "output": targets,
        "mapping": given,
        "merged_into": merge,
        "dropped_unused": [name for name in names if not used[name] and not keep_unused],
        "left_out": left_out,
    }
