"""The keypoint layout of a dataset: names, ``kpt_shape``, flip permutation, OKS sigmas, edges.

One :class:`Skeleton` travels with every dataset through the hub. It is read from a skeleton file
(``cfg/skeletons/NAME.yaml``), from a YOLO ``data.yaml``, or inferred from keypoint names; what is not
given is derived (:mod:`pipeline.skeleton.names`): the flip permutation from left/right names, the OKS
sigmas from COCO for COCO keypoint names and a K-independent placeholder otherwise. Where each part
came from is kept (``flip_source``, ``sigma_sources``, ``edges_source``) for the reports; a layout whose
flip is unknown (``flip_source == "none"``) must never be mirrored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import FdposeError
from pipeline.io import read_yaml_mapping
from pipeline.skeleton.names import (
    COCO_PERSON_KEYPOINTS,
    SIGMA_SOURCES,
    default_sigmas,
    flip_pairs,
    infer_flip,
)
from pipeline.skeleton.shipped import skeleton_file

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
    # Where the parts came from (not part of a layout's identity: two skeletons with the same names,
    # flip, sigmas and edges are equal). flip: "file" (given), "names" (inferred and safe), "none"
    # (unknown: never mirror; flip_problem says why). sigmas: one of SIGMA_SOURCES per keypoint.
    flip_source: str = field(default="", compare=False)
    flip_problem: str = field(default="", compare=False)
    sigma_sources: list[str] | None = field(default=None, compare=False)
    edges_source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.keypoint_names = [str(n) for n in self.keypoint_names]
        if self.flip_permutation is None:
            inferred = infer_flip(self.keypoint_names)
            self.flip_permutation = inferred.permutation
            self.flip_source = "names" if inferred.safe else "none"
            self.flip_problem = inferred.problem
        elif not self.flip_source:
            self.flip_source = "file"
        if self.sigmas is None:
            self.sigmas, self.sigma_sources = default_sigmas(self.keypoint_names)
        elif self.sigma_sources is None:
            self.sigma_sources = ["file"] * len(self.sigmas)
        if not self.edges and [n.lower() for n in self.keypoint_names] == COCO_PERSON_KEYPOINTS:
            self.edges = list(COCO_PERSON_EDGES)
            self.edges_source = "COCO's person skeleton"
        self.edges = [(int(a), int(b)) for a, b in self.edges]
        self.edges_source = self.edges_source or ("given" if self.edges else "none")
        self.flip_permutation = [int(i) for i in self.flip_permutation]
        self.sigmas = [float(s) for s in self.sigmas]
        self.sigma_sources = [str(s) for s in self.sigma_sources]
        self.validate()

    @property
    def mirror(self) -> bool:
        """Whether a horizontal flip (with :attr:`flip_permutation`) keeps labels right."""
        return self.flip_source != "none"

    def flip_pairs(self) -> list[tuple[str, str]]:
        """The swapped keypoint pairs, by name."""
        return flip_pairs(self.keypoint_names, self.flip_permutation)

    def describe(self) -> list[str]:
        """Lines for a summary: the flip pairs (or why mirroring is off), the sigmas' sources, the edges."""
        if self.mirror:
            pairs = self.flip_pairs()
            origin = "the skeleton" if self.flip_source == "file" else "names"
            flip = (f"flip pairs ({len(pairs)}, from {origin}): "
                    + (", ".join(f"{a}/{b}" for a, b in pairs) or "none (no keypoint has a side)"))
        else:
            flip = f"flip pairs: unknown ({self.flip_problem}); horizontal flipping is off"
        counts = {source: self.sigma_sources.count(source) for source in SIGMA_SOURCES
                  if source in self.sigma_sources}
        sigmas = "sigmas: " + ", ".join(f"{count} {source}" for source, count in counts.items())
        placeholders = [n for n, s in zip(self.keypoint_names, self.sigma_sources, strict=True)
                        if s == "placeholder"]
        if placeholders:
            shown = ", ".join(placeholders[:6]) + (", ..." if len(placeholders) > 6 else "")
            sigmas += f" (placeholder: {shown})"
        edges = f"edges: {len(self.edges)} from {self.edges_source}" if self.edges else \
            f"edges: none ({self.edges_source})" if self.edges_source != "none" else "edges: none"
        return [flip, sigmas, edges]

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
        if len(self.sigma_sources) != k or not set(self.sigma_sources) <= set(SIGMA_SOURCES):
            raise FdposeError(f"sigma_sources must be {k} of {', '.join(SIGMA_SOURCES)}, "
                              f"got {self.sigma_sources}",
                              path=source)
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
        ``sigma_sources`` (per keypoint: coco, file, estimated, placeholder; ``file`` when left out),
        ``occlusion_choice`` (the Label Studio choice value that marks a keypoint occluded). Without
        ``flip_idx``/``flip_pairs`` the flip comes from the names, and is unknown (no mirroring) for a
        side-marked name without partner. A shipped skeleton may be named without its folder
        (:func:`skeleton_file`)."""
        path = skeleton_file(path)
        raw = read_yaml_mapping(path, "skeleton file", expected="a mapping with a 'keypoints' list")
        if not isinstance(raw.get("keypoints"), list):
            raise FdposeError("expected a mapping with a 'keypoints' list", path=path)
        names = [str(n) for n in raw["keypoints"]]
        with _fields_of(path):
            return _from_file(raw, names, path)

    def to_dict(self) -> dict[str, Any]:
        """The report form (indices, 0-based; ``flip_idx`` only when mirroring is safe), with where
        each part came from."""
        out: dict[str, Any] = {
            "keypoints": list(self.keypoint_names),
            "classes": list(self.class_names),
            "kpt_dims": self.kpt_dims,
            "sigmas": list(self.sigmas),
            "sigma_sources": list(self.sigma_sources),
            "edges": [list(e) for e in self.edges],
            "edges_source": self.edges_source,
            "flip_source": self.flip_source,
            "flip_pairs": [list(pair) for pair in self.flip_pairs()],
        }
        if self.mirror:
            out["flip_idx"] = list(self.flip_permutation)
        else:
            out["flip_problem"] = self.flip_problem
        if self.occlusion_choice:
            out["occlusion_choice"] = self.occlusion_choice
        return out

    def to_file(self) -> dict[str, Any]:
        """The skeleton file form (:meth:`load` reads it back to this skeleton): names, not indices.
        ``flip_pairs`` is left out when the flip is unknown, so the file stays unmirrored until edited."""
        out: dict[str, Any] = {"classes": list(self.class_names), "kpt_dims": self.kpt_dims,
                               "keypoints": list(self.keypoint_names)}
        if self.mirror:
            out["flip_pairs"] = [list(pair) for pair in self.flip_pairs()]
        out["sigmas"] = list(self.sigmas)
        out["sigma_sources"] = list(self.sigma_sources)
        out["edges"] = [[self.keypoint_names[a], self.keypoint_names[b]] for a, b in self.edges]
        if self.occlusion_choice:
            out["occlusion_choice"] = self.occlusion_choice
        return out

    def data_yaml_fields(self) -> dict[str, Any]:
        """The keys a YOLO-pose ``data.yaml`` carries: ultralytics' own (``kpt_names``, and
        ``kpt_oks_sigmas`` which its pose loss and validation read) plus ours (``skeleton``,
        ``kpt_oks_sigmas_source``). ``flip_idx`` is left out when the flip is unknown: ultralytics
        then turns ``fliplr`` and ``flipud`` off, and fdpose train and augment never mirror."""
        fields: dict[str, Any] = {
            "names": {i: name for i, name in enumerate(self.class_names)},
            "kpt_shape": self.kpt_shape,
        }
        if self.mirror:
            fields["flip_idx"] = list(self.flip_permutation)
        return {
            **fields,
            "kpt_names": {i: list(self.keypoint_names) for i in range(len(self.class_names))},
            "skeleton": [list(e) for e in self.edges],
            "kpt_oks_sigmas": list(self.sigmas),
            "kpt_oks_sigmas_source": list(self.sigma_sources),
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
            flip_source="" if data.get("flip_idx") else "none",
            flip_problem="" if data.get("flip_idx") else f"{source} has no flip_idx",
            sigmas=data.get("kpt_oks_sigmas"),
            sigma_sources=data.get("kpt_oks_sigmas_source") if data.get("kpt_oks_sigmas") else None,
            edges=[tuple(e) for e in data.get("skeleton", []) or []],
            edges_source=f"{source}" if data.get("skeleton") else "",
        )
        skeleton.validate(source)
        return skeleton


def _from_file(raw: dict[str, Any], names: list[str], path: Path) -> Skeleton:
    """A skeleton from a skeleton file's fields (names, or indices into ``names``)."""
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
    skeleton = Skeleton(
        keypoint_names=names,
        class_names=[str(c) for c in classes],
        kpt_dims=int(raw.get("kpt_dims", 3)),
        flip_permutation=flip,
        sigmas=raw.get("sigmas"),
        edges=edges,
        occlusion_choice=raw.get("occlusion_choice"),
        sigma_sources=raw.get("sigma_sources") if raw.get("sigmas") is not None else None,
        edges_source=f"skeleton file {path}" if edges else "",
    )
    skeleton.validate(path)
    return skeleton

