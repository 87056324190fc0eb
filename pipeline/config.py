"""The params contract: one typed section per stage of ``cfg/params.yaml``, loaded by one function.

Each section is a dataclass whose fields are the section's keys, with their defaults and a check.
:func:`load_section` merges the file's section over the defaults and validates it: an unknown key or a
value of the wrong kind is one :class:`FdposeError` naming the file, ``section.key`` and what is valid.
The stage commands start from what it returns (the section's dataclass); command-line options win
(:func:`overridden`). Stage functions take the dataclass and never read the params file themselves.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.dataset import SPLITS
from pipeline.errors import FdposeError
from pipeline.io import read_yaml_mapping

PARAMS_FILE = Path("cfg/params.yaml")  # relative to the folder a command runs in (the repository root)
CONVERT_SOURCES = ("label-studio", "coco", "yolo")
ANNOTATION_CHOICES = ("latest", "ground-truth", "all", "predictions")
MAX_COPIES = 1000  # augmented variants per training image; more is a typo, not a dataset

Check = Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _fraction(value: Any) -> bool:
    return _is_number(value) and 0 <= value <= 1


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _non_negative_int(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _one_of(choices: tuple[str, ...]) -> Check:
    return lambda value: value in choices


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _device(value: Any) -> bool:
    return (_is_int(value) and value >= 0) or _text(value)


def _split_ratios(value: Any) -> bool:
    """Three fractions (train, val, test), or the ``"0.8,0.2,0"`` text the command line takes."""
    if isinstance(value, str):
        return value != ""
    return isinstance(value, list) and len(value) in (2, 3) and all(_fraction(part) for part in value)


def _thresholds(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_fraction(t) and t > 0 for t in value)


def _batch(value: Any) -> bool:
    """ultralytics' batch: images per batch, -1 for auto, or a fraction of GPU memory."""
    return (_is_int(value) and (value > 0 or value == -1)) or (_is_number(value) and 0 < value < 1)


def _mapping(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) for key in value)


def _class_mapping(value: Any) -> bool:
    """``{input class: output class}`` or a list of classes to keep, names as text."""
    if isinstance(value, list):
        return bool(value) and all(_text(v) for v in value)
    return isinstance(value, dict) and bool(value) and all(_text(k) and _text(v) for k, v in value.items())


def setting(default: Any, check: Check, expected: str) -> Any:
    """A section field: its default, a check of a value, and what the check expects (in errors)."""
    metadata = {"check": check, "expected": expected}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


PATH_OR_NULL = (_optional(_text), "a path or null")
FRACTION = (_fraction, "a number in [0, 1]")


@dataclasses.dataclass
class ConvertParams:
    """``convert:``: the input (format, file or server, images, label config, skeleton) and the split."""

    from_: str | None = setting(None, _optional(_one_of(CONVERT_SOURCES)),
                                f"one of {', '.join(CONVERT_SOURCES)} or null")
    input: str | None = setting(None, *PATH_OR_NULL)
    images: str | None = setting(None, *PATH_OR_NULL)
    label_config: str | None = setting(None, *PATH_OR_NULL)
    url: str | None = setting(None, _optional(_text), "a URL or null")
    project: int | None = setting(None, _optional(_positive_int), "a project id or null")
    split: list[float] = setting([0.8, 0.2, 0.0], _split_ratios, "[train, val, test] fractions")
    seed: int = setting(0, _is_int, "an integer")
    fill_splits: bool = setting(False, _bool, "true or false")
    skeleton: str | None = setting(None, *PATH_OR_NULL)
    drop_unlabelled: bool = setting(False, _bool, "true or false")
    strict: bool = setting(False, _bool, "true or false")
    annotation: str = setting("latest", _one_of(ANNOTATION_CHOICES),
                              f"one of {', '.join(ANNOTATION_CHOICES)}")
    classes: dict[str, str] | list[str] | None = setting(None, _optional(_class_mapping),
                                                         "a mapping {input class: output class}, a list of "
                                                         "classes to keep, or null")
    merge_classes: str | None = setting(None, _optional(_text), "a class name or null")
    keep_unused_classes: bool = setting(False, _bool, "true or false")


@dataclasses.dataclass
class AugmentParams:
    """``augment:``: how many augmented variants per training image, their seed and the transforms."""

    copies: int = setting(1, lambda v: _non_negative_int(v) and v <= MAX_COPIES,
                          f"an integer from 0 to {MAX_COPIES}")
    seed: int = setting(0, _is_int, "an integer")
    config: str = setting("cfg/augment.yaml", _text, "a path")


@dataclasses.dataclass
class TrainParams:
    """``train:``: the model, the run's size and seed; ``hyp`` passes further ultralytics arguments."""

    model: str = setting("yolov8n-pose-C2f_FDConv.yaml", _text, "a model YAML or checkpoint")
    pretrained: str | None = setting(None, *PATH_OR_NULL)
    epochs: int = setting(20, _positive_int, "a positive integer")
    imgsz: int = setting(192, _positive_int, "a positive integer")
    batch: int = setting(16, _batch, "a positive integer, -1, or a fraction in (0, 1)")
    device: str = setting("auto", _device, "auto, cpu, a GPU index or a list like 0,1")
    seed: int = setting(0, _is_int, "an integer")
    workers: int = setting(4, _non_negative_int, "an integer >= 0")
    plots: bool = setting(True, _bool, "true or false")
    hyp: dict[str, Any] = setting({}, _mapping, "a mapping of ultralytics train arguments")


@dataclasses.dataclass
class EvalParams:
    """``eval:``: the split, the inference settings and what the report computes and draws."""

    split: str = setting("val", _one_of(SPLITS), f"one of {', '.join(SPLITS)}")
    conf: float = setting(0.001, *FRACTION)  # COCO practice: AP integrates over nearly every detection
    iou: float = setting(0.7, *FRACTION)  # NMS IoU, ultralytics' validation default
    # null: the size the model records (a checkpoint's training size, a package's export size)
    imgsz: int | None = setting(None, _optional(_positive_int), "a positive integer or null")
    max_det: int = setting(300, _positive_int, "a positive integer")
    device: str = setting("cpu", _device, "a device name")
    # Largest |fdpose OKS mAP - ultralytics val pose mAP| accepted (pipeline.evaluate.cross_check, which
    # states the measurements behind 0.1).
    crosscheck_tolerance: float = setting(0.1, *FRACTION)
    match_oks: float = setting(0.5, *FRACTION)
    pck_thresholds: list[float] = setting([0.05, 0.1], _thresholds, "a non-empty list of numbers in (0, 1]")
    grid_images: int = setting(4, _positive_int, "a positive integer")
    draw_conf: float = setting(0.25, *FRACTION)


@dataclasses.dataclass
class PredictParams:
    """``package.predict:``: the defaults of ``fdpose predict``."""

    conf: float = setting(0.25, *FRACTION)
    iou: float = setting(0.7, *FRACTION)
    max_det: int = setting(300, _positive_int, "a positive integer")
    kpt_conf: float = setting(0.5, *FRACTION)


@dataclasses.dataclass
class PackageParams:
    """``package:``: the ONNX export and its check; ``predict`` holds the defaults of ``fdpose predict``."""

    imgsz: int | None = setting(None, _optional(_positive_int), "a positive integer or null")
    opset: int = setting(17, _positive_int, "a positive integer")
    onnx_tolerance: float = setting(1.0e-4, lambda v: _is_number(v) and v > 0, "a positive number")
    comparison: str | None = setting(None, *PATH_OR_NULL)  # an fdpose compare report folder, for the card
    predict: PredictParams = dataclasses.field(default_factory=PredictParams,
                                               metadata={"check": _mapping, "expected": "a mapping"})


def _models(value: Any) -> bool:
    return isinstance(value, list) and 1 <= len(value) <= 2 and all(_text(v) for v in value)


def _seeds(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(v) for v in value) \
        and len(set(value)) == len(value)


@dataclasses.dataclass
class CompareParams:
    """``compare:``: two models (one FDConv model: its stock twin is the second), seeds, the shared
    training settings, the evaluation size, the statistics (t interval and sign-flip test over seeds,
    an effect to plan for, the image bootstrap of evaluation noise) and the latency measurement."""

    models: list[str] = setting(["yolov8n-pose-C2f_FDConv.yaml"], _models, "a list of one or two models")
    seeds: list[int] = setting([0, 1, 2], _seeds, "a list of distinct integers")
    epochs: int = setting(15, _positive_int, "a positive integer")
    imgsz: int = setting(192, _positive_int, "a positive integer")
    batch: int = setting(16, _batch, "a positive integer, -1, or a fraction in (0, 1)")
    device: str = setting("auto", _device, "auto, cpu, a GPU index or a list like 0,1")
    pretrained: str | None = setting(None, *PATH_OR_NULL)
    hyp: dict[str, Any] = setting({"nbs": 16}, _mapping, "a mapping of ultralytics train arguments")
    split: str = setting("val", _one_of(SPLITS), f"one of {', '.join(SPLITS)}")
    eval_imgsz: int | None = setting(None, _optional(_positive_int), "a positive integer or null")
    runs: str = setting("models/compare", _text, "a folder")
    confidence: float = setting(0.95, lambda v: _fraction(v) and 0 < v < 1, "a number in (0, 1)")
    permutations: int = setting(100000, _positive_int, "a positive integer")  # sign patterns enumerated
    effect: float | None = setting(None, _optional(lambda v: _is_number(v) and v > 0),
                                   "a positive number or null")
    resamples: int = setting(100, _non_negative_int, "an integer >= 0")  # image bootstrap; 0: none
    bootstrap_seed: int = setting(0, _is_int, "an integer")
    latency_repeats: int = setting(20, _positive_int, "a positive integer")
    latency_threads: int = setting(1, _positive_int, "a positive integer")
    ledger: str | None = setting(None, *PATH_OR_NULL)  # committed run records (pipeline.compare.ledger)
    jobs: int = setting(1, _positive_int, "a positive integer")  # runs trained at once


SECTIONS: dict[str, type] = {
    "convert": ConvertParams, "augment": AugmentParams, "train": TrainParams, "eval": EvalParams,
    "package": PackageParams, "compare": CompareParams,
}
NESTED: dict[tuple[str, str], type] = {("package", "predict"): PredictParams}
_SECTION_OF: dict[type, str] = {
    **{schema: name for name, schema in SECTIONS.items()},
    **{schema: ".".join(where) for where, schema in NESTED.items()},
}


def _key(field: dataclasses.Field) -> str:
    """The YAML key of a field: ``from_`` stands for ``from``, a Python keyword."""
    return field.name.rstrip("_")


def section_defaults(section: str) -> dict[str, Any]:
    """The built-in defaults of ``section``, by YAML key."""
    return as_dict(validate_section(section, {}, "built-in defaults"))


def read_params_file(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file as a mapping of sections; a missing file is an empty mapping."""
    path = Path(path)
    if not path.exists() or not path.read_bytes().lstrip(b"\xef\xbb\xbf").strip():
        return {}
    return read_yaml_mapping(path, "params file",
                             expected="a mapping of sections (convert:, augment:, train:, ...)")


def load_section(section: str, path: str | Path = PARAMS_FILE) -> Any:
    """The ``section`` of the params file merged over its defaults, checked key by key, as the section's
    dataclass (:data:`SECTIONS`).

    A missing file or section gives the defaults. Raises :class:`FdposeError` naming the file and
    ``section.key`` for an unknown key or a value of the wrong kind.
    """
    values = read_params_file(path).get(section)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise FdposeError(f"expected a mapping of settings, got {values!r}", path=path, item=section)
    return validate_section(section, values, path)


def validate_section(section: str, values: dict[str, Any], source: object) -> Any:
    """``values`` (some keys of ``section``, by YAML key) merged over its defaults and checked, as the
    section's dataclass; ``source`` (a file, or "--option" for command-line values) is what an error names."""
    return _build(values, _section_type(section), section, source)


def overridden(params: Any, source: object = "command line", **options: Any) -> Any:
    """A copy of the section dataclass ``params`` with each option that is not None in place (options
    are field names: ``from_`` for ``from``), checked as the file is; command-line options win."""
    given = {field.name: options[field.name] for field in dataclasses.fields(params)
             if options.get(field.name) is not None}
    unknown = set(options) - {field.name for field in dataclasses.fields(params)}
    if unknown:
        raise TypeError(f"{type(params).__name__} has no field {sorted(unknown)[0]!r}")
    values = {**as_dict(params), **{_key(field): given[field.name] for field in dataclasses.fields(params)
                                     if field.name in given}}
    return _build(values, type(params), _SECTION_OF[type(params)], source)


def as_dict(params: Any) -> dict[str, Any]:
    """A section dataclass as the params file spells it (YAML keys, nested sections as mappings)."""
    return {_key(field): as_dict(value) if dataclasses.is_dataclass(value := getattr(params, field.name))
            else copy.deepcopy(value) for field in dataclasses.fields(params)}


def _section_type(section: str) -> type:
    if section not in SECTIONS:
        raise FdposeError(f"unknown params section {section!r}; sections: {', '.join(SECTIONS)}")
    return SECTIONS[section]


def _build(values: dict[str, Any], schema: type, where: str, path: object) -> Any:
    fields = {_key(field): field for field in dataclasses.fields(schema)}
    unknown = [key for key in values if key not in fields]
    if unknown:
        raise FdposeError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(fields)}", path=path,
                          item=f"{where}.{unknown[0]}")
    defaults = schema()
    settings = {}
    for key, field in fields.items():
        value = values[key] if key in values else copy.deepcopy(getattr(defaults, field.name))
        nested = NESTED.get((where, key))
        if nested and dataclasses.is_dataclass(value):
            value = as_dict(value)
        if not field.metadata["check"](value):
            raise FdposeError(f"expected {field.metadata['expected']}, got {value!r}", path=path,
                              item=f"{where}.{key}")
        settings[field.name] = _build(value, nested, f"{where}.{key}", path) if nested else value
    return schema(**settings)
