"""The keypoint layout of a dataset: names, ``kpt_shape``, flip permutation, OKS sigmas, edges.

One :class:`Skeleton` travels with every dataset through the hub. It is read from a skeleton file
(``cfg/skeletons/NAME.yaml``), from a YOLO ``data.yaml``, or inferred from keypoint names; what is not
given is derived: the flip permutation from left/right names, the OKS sigmas from COCO for the
17-keypoint person layout and ``1/K`` otherwise (ultralytics' default).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.errors import FdposeError
from pipeline.io import read_yaml_mapping

SKELETONS_DIR = Path(str(resources.files("pipeline") / "cfg" / "skeletons"))  # shipped skeleton files


def skeleton_file(path: str | Path) -> Path:
    """``path``, or the shipped skeleton it names when it is not a file here: a bare name
    (``coco_person.yaml``) or ``cfg/skeletons/NAME`` works from any folder and from an installed wheel."""
    path = Path(path)
    shipped = SKELETONS_DIR / path.name
    if not path.is_file() and path.parent in (Path("."), Path("cfg/skeletons")) and shipped.is_file():
        return shipped
    return path

COCO_PERSON_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
]
# COCO's per-keypoint OKS constants (Ronchi & Perona; cocoeval.py), for the 17-keypoint person layout.
COCO_PERSON_SIGMAS = [
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
    0.087, 0.087, 0.089, 0.089,
]
# COCO's person skeleton, 0-based.
COCO_PERSON_EDGES = [
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
]

@contextlib.contextmanager
def _fields_of(source: object) -> Iterator[None]:
    """Errors while building a skeleton from a file's fields name that file: a failed check, or a
    malformed field (text where a number belongs, a number where a list does)."""
    try:
        yield
    except FdposeError as error:
        if error.path != "skeleton":
            raise
        raise FdposeError(str(error).removeprefix("skeleton: "), path=source) from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise FdposeError(f"malformed skeleton fields ({reason})", path=source) from None


_SIDE_SWAP = {"left": "right", "right": "left", "l": "r", "r": "l", "lft": "rgt", "rgt": "lft"}


def _tokens(name: str) -> tuple[str, ...]:
    """Split a keypoint name into lower-case tokens: ``LeftEye`` -> (left, eye), ``l_knee`` -> (l, knee)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return tuple(token.lower() for token in re.split(r"[\s_\-.:/]+", spaced) if token)


def infer_flip_permutation(names: list[str]) -> list[int]:
    """The index each keypoint takes under a horizontal flip, from left/right names.

    A name pairs with the name whose tokens equal its own with left<->right swapped (``left_*``/``right_*``,
    ``l_*``/``r_*``, ``*_left``, ``LeftEye``...). Unpaired names map to themselves.
    """
    by_tokens = {}
    for index, name in enumerate(names):
        by_tokens.setdefault(_tokens(name), index)
    permutation = []
    for index, name in enumerate(names):
        tokens = _tokens(name)
        mirrored = tuple(_SIDE_SWAP.get(token, token) for token in tokens)
        partner = by_tokens.get(mirrored, index) if mirrored != tokens else index
        permutation.append(partner)
    # Only keep symmetric pairs (a <-> b); anything else maps to itself.
    return [p if permutation[p] == i else i for i, p in enumerate(permutation)]


def default_sigmas(names: list[str]) -> list[float]:
    """COCO's sigmas for the COCO person layout, else ultralytics' default ``1/K`` for every keypoint."""
    if [n.lower() for n in names] == COCO_PERSON_KEYPOINTS:
        return list(COCO_PERSON_SIGMAS)
    k = len(names)
    return [1.0 / k] * k


@dataclass
class Skeleton:
    """Keypoint layout and classes of a dataset. Edges and flip permutation are 0-based."""

    keypoint_names: list[str]
    class_names: list[str] = field(default_factory=lambda: ["object"])
    kpt_dims: int = 3
    flip_permutation: list[int] | None = None
    sigmas: list[float] | None = None
    edges: list[tuple[int, int]] = field(default_factory=list)
    occlusion_choice: str | None = None

    def __post_init__(self) -> None:
        self.keypoint_names = [str(n) for n in self.keypoint_names]
        if self.flip_permutation is None:
            self.flip_permutation = infer_flip_permutation(self.keypoint_names)
        if self.sigmas is None:
            self.sigmas = default_sigmas(self.keypoint_names)
        if not self.edges and [n.lower() for n in self.keypoint_names] == COCO_PERSON_KEYPOINTS:
            self.edges = list(COCO_PERSON_EDGES)
        self.edges = [(int(a), int(b)) for a, b in self.edges]
        self.flip_permutation = [int(i) for i in self.flip_permutation]
        self.sigmas = [float(s) for s in self.sigmas]
        self.validate()

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def kpt_shape(self) -> list[int]:
        return [self.num_keypoints, self.kpt_dims]

    def validate(self, source: object = "skeleton") -> None:
        k = self.num_keypoints
        if k == 0:
            raise FdposeError("no keypoint names", path=source)
        if len(set(self.keypoint_names)) != k:
            raise FdposeError(f"duplicate keypoint names {self.keypoint_names}", path=source)
        if self.kpt_dims not in (2, 3):
            raise FdposeError(f"kpt_shape dims must be 2 or 3, got {self.kpt_dims}", path=source)
        if sorted(self.flip_permutation) != list(range(k)):
            raise FdposeError(f"flip permutation {self.flip_permutation} is not a permutation of 0..{k - 1}",
                              path=source)
        if any(self.flip_permutation[self.flip_permutation[i]] != i for i in range(k)):
            raise FdposeError(f"flip permutation {self.flip_permutation} is not an involution", path=source)
        if len(self.sigmas) != k or any(not s > 0 for s in self.sigmas):
            raise FdposeError(f"needs {k} positive OKS sigmas, got {self.sigmas}", path=source)
        for a, b in self.edges:
            if not (0 <= a < k and 0 <= b < k):
                raise FdposeError(f"edge ({a}, {b}) names a keypoint outside 0..{k - 1}", path=source)
        if not self.class_names:
            raise FdposeError("no class names", path=source)

    # --- files -------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Skeleton:
        """Read a skeleton file: ``keypoints`` (names), optional ``classes``, ``kpt_dims``, ``flip_pairs``
        (pairs of names or indices) or ``flip_idx``, ``sigmas``, ``edges`` (pairs of names or indices),
        ``occlusion_choice`` (the Label Studio choice value that marks a keypoint occluded). A shipped
        skeleton may be named without its folder (:func:`skeleton_file`)."""
        path = skeleton_file(path)
        raw = read_yaml_mapping(path, "skeleton file", expected="a mapping with a 'keypoints' list")
        if not isinstance(raw.get("keypoints"), list):
            raise FdposeError("expected a mapping with a 'keypoints' list", path=path)
        names = [str(n) for n in raw["keypoints"]]
        with _fields_of(path):
            return cls._from_file(raw, names, path)

    @classmethod
    def _from_file(cls, raw: dict[str, Any], names: list[str], path: Path) -> Skeleton:
        def index_of(value: Any) -> int:
            if isinstance(value, int) and 0 <= value < len(names):
                return value
            if value in names:
                return names.index(value)
            raise FdposeError(f"unknown keypoint {value!r}", path=path)

        flip = raw.get("flip_idx")
        if flip is None and raw.get("flip_pairs") is not None:
            flip = list(range(len(names)))
            for a, b in raw["flip_pairs"]:
                ia, ib = index_of(a), index_of(b)
                flip[ia], flip[ib] = ib, ia
        edges = [(index_of(a), index_of(b)) for a, b in raw.get("edges", []) or []]
        classes = raw.get("classes") or ["object"]
        skeleton = cls(
            keypoint_names=names,
            class_names=[str(c) for c in classes],
            kpt_dims=int(raw.get("kpt_dims", 3)),
            flip_permutation=flip,
            sigmas=raw.get("sigmas"),
            edges=edges,
            occlusion_choice=raw.get("occlusion_choice"),
        )
        skeleton.validate(path)
        return skeleton

    def to_dict(self) -> dict[str, Any]:
        """The skeleton file form (indices, 0-based)."""
        out: dict[str, Any] = {
            "keypoints": list(self.keypoint_names),
            "classes": list(self.class_names),
            "kpt_dims": self.kpt_dims,
            "flip_idx": list(self.flip_permutation),
            "sigmas": list(self.sigmas),
            "edges": [list(e) for e in self.edges],
        }
        if self.occlusion_choice:
            out["occlusion_choice"] = self.occlusion_choice
        return out

    def data_yaml_fields(self) -> dict[str, Any]:
        """The keys a YOLO-pose ``data.yaml`` carries: ultralytics' own (``kpt_names``, and
        ``kpt_oks_sigmas`` which its pose loss and validation read) plus ours (``skeleton``)."""
        return {
            "names": {i: name for i, name in enumerate(self.class_names)},
            "kpt_shape": self.kpt_shape,
            "flip_idx": list(self.flip_permutation),
            "kpt_names": {i: list(self.keypoint_names) for i in range(len(self.class_names))},
            "skeleton": [list(e) for e in self.edges],
            "kpt_oks_sigmas": list(self.sigmas),
        }

    @classmethod
    def from_data_yaml(cls, data: dict[str, Any], source: object = "data.yaml") -> Skeleton:
        """Rebuild the skeleton from a ``data.yaml`` mapping (ours, or a plain ultralytics one)."""
        with _fields_of(source):
            return cls._from_data_yaml(data, source)

    @classmethod
    def _from_data_yaml(cls, data: dict[str, Any], source: object) -> Skeleton:
        shape = data.get("kpt_shape")
        if not (isinstance(shape, (list, tuple)) and len(shape) == 2):
            raise FdposeError(f"missing or malformed kpt_shape {shape!r}", path=source)
        k, dims = int(shape[0]), int(shape[1])
        names_field = data.get("names")
        if isinstance(names_field, dict):
            class_names = [str(names_field[key]) for key in sorted(names_field, key=int)]
        elif isinstance(names_field, list):
            class_names = [str(n) for n in names_field]
        else:
            raise FdposeError("missing 'names'", path=source)
        kpt_names = data.get("kpt_names")
        if isinstance(kpt_names, dict) and kpt_names:
            kpt_names = kpt_names[sorted(kpt_names, key=int)[0]]
        if not kpt_names:
            kpt_names = [f"kp{i}" for i in range(k)]
        if not isinstance(kpt_names, list):
            raise FdposeError(f"kpt_names must be a list of names, got {kpt_names!r}", path=source)
        if len(kpt_names) != k:
            raise FdposeError(f"kpt_names has {len(kpt_names)} names but kpt_shape says {k}", path=source)
        skeleton = cls(
            keypoint_names=list(kpt_names),
            class_names=class_names,
            kpt_dims=dims,
            flip_permutation=data.get("flip_idx") or list(range(k)),
            sigmas=data.get("kpt_oks_sigmas"),
            edges=[tuple(e) for e in data.get("skeleton", []) or []],
        )
        skeleton.validate(source)
        return skeleton
