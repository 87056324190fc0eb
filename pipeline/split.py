"""Train/val/test assignment that stays put as a dataset grows.

Each image's split depends only on its own source name and the seed: ``SHA-256(seed, name)`` read
as a fraction in ``[0, 1)`` falls into the ratio intervals ``[0, train)``, ``[train, train + val)``
and the rest. Adding or removing other images therefore never moves an image between splits (a
shuffled-list split would).

A tiny dataset can leave a split with a non-zero fraction empty (4 images, 20% val: 0.8**4 = 41% of
the time). :func:`empty_splits` names those (convert warns); :func:`fill_empty_splits` (``fill_splits``)
moves, for each, the one image whose hash fraction lies nearest that split's interval, taken from a
split that keeps at least one image. It depends only on names and seed, and moves nothing once the hash
itself puts an image in every split, so a growing dataset falls back to the plain hash split.

A split file, a YAML/JSON mapping ``{train: [names], val: [...], test: [...]}``, fixes the assignment
by hand instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from pipeline.dataset import SPLITS, Dataset, ImageRecord
from pipeline.errors import FdposeError
from pipeline.io import read_yaml_mapping


def parse_ratios(value: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.8,0.2"`` or ``[0.8, 0.2, 0]`` as ``(train, val, test)`` fractions that sum to 1."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
    else:
        parts = list(value)
    try:
        ratios = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise FdposeError(f"split ratios must be numbers, got {value!r}", item="--split") from None
    if not 2 <= len(ratios) <= 3 or any(not 0 <= r <= 1 for r in ratios):
        raise FdposeError(f"expected 2 or 3 fractions in [0, 1] (train,val[,test]), got {value!r}",
                          item="--split")
    if abs(sum(ratios) - 1) > 1e-6:
        raise FdposeError(f"split fractions must sum to 1, got {value!r} (sum {sum(ratios):g})",
                          item="--split")
    if ratios[0] == 0:
        raise FdposeError(f"the train fraction must be above 0, got {value!r}", item="--split")
    ratios += [0.0] * (3 - len(ratios))
    return ratios[0], ratios[1], ratios[2]


def hash_fraction(name: str, seed: int) -> float:
    """A fraction in ``[0, 1)`` fixed by ``name`` and ``seed`` alone (64 bits of SHA-256)."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(name: str, ratios: tuple[float, float, float], seed: int) -> str:
    """The split an image of this name falls in."""
    fraction = hash_fraction(name, seed)
    if fraction < ratios[0]:
        return "train"
    if fraction < ratios[0] + ratios[1] or ratios[2] == 0:
        return "val"
    return "test"


def assign_splits(dataset: Dataset, ratios: tuple[float, float, float], seed: int) -> None:
    """Set every image's split from its source name (``file_name``) and the seed."""
    for image in dataset.images:
        image.split = split_of(image.file_name, ratios, seed)


def read_split_file(path: str | Path) -> dict[str, str]:
    """The ``name -> split`` mapping of a split file (YAML or JSON ``{split: [names]}``)."""
    expected = "a mapping {train: [names], val: [names], test: [names]}"
    raw = read_yaml_mapping(path, "split file", expected=expected)
    if not raw:
        raise FdposeError(f"expected {expected}", path=path)
    mapping: dict[str, str] = {}
    for split, names in raw.items():
        if split not in SPLITS:
            raise FdposeError(f"unknown split {split!r}; expected train, val or test", path=path)
        if not isinstance(names, list):
            raise FdposeError(f"'{split}' must be a list of image names", path=path)
        for name in names:
            name = str(name)
            if name in mapping and mapping[name] != split:
                raise FdposeError(f"image {name!r} is listed in both {mapping[name]} and {split}", path=path)
            mapping[name] = split
    return mapping


def apply_split_file(dataset: Dataset, path: str | Path) -> None:
    """Assign splits from a split file. Images it does not list are skipped and reported (an explicit
    split is never completed by guessing); names it lists that are not in the data are warned about."""
    mapping = read_split_file(path)
    kept = []
    for image in dataset.images:
        split = mapping.get(image.file_name)
        if split is None:
            dataset.report.skip_instances(path, image.file_name, "image not listed in the split file",
                                          len(image.instances))
            continue
        image.split = split
        kept.append(image)
    unknown = sorted(set(mapping) - {image.file_name for image in dataset.images})
    if unknown:
        dataset.report.warn(f"{len(unknown)} names in {path} are not images of the input "
                            f"(first: {', '.join(unknown[:3])})")
    if not kept:
        raise FdposeError("the split file lists none of the input's images", path=path)
    dataset.images = kept


def _intervals(ratios: tuple[float, float, float]) -> dict[str, tuple[float, float]]:
    """Each split's interval of hash fractions (the last non-zero one reaches 1, as in :func:`split_of`)."""
    train, val, _ = ratios
    end = 1.0 if ratios[2] == 0 else train + val
    return {"train": (0.0, train), "val": (train, end), "test": (train + val, 1.0)}


def empty_splits(dataset: Dataset, ratios: tuple[float, float, float]) -> list[str]:
    """The splits with a non-zero fraction that hold no image."""
    counts = {name: len(images) for name, images in dataset.splits().items()}
    return [name for name, ratio in zip(SPLITS, ratios, strict=True) if ratio > 0 and not counts.get(name)]


def fill_empty_splits(dataset: Dataset, ratios: tuple[float, float, float], seed: int) -> list[str]:
    """Give every split with a non-zero fraction at least one image (where there are enough images):
    for each empty split, the image whose hash fraction lies nearest its interval moves there, from a
    split keeping at least one image. Returns the names moved; each is reported as repaired."""
    moved = []
    intervals = _intervals(ratios)
    for split in empty_splits(dataset, ratios):
        sizes = {name: len(images) for name, images in dataset.splits().items()}
        low, high = intervals[split]
        donors = [image for image in dataset.images if sizes[image.split or "train"] > 1]
        if not donors:
            continue

        def distance(image: ImageRecord, low: float = low, high: float = high) -> tuple[float, str]:
            fraction = hash_fraction(image.file_name, seed)
            return max(low - fraction, fraction - high, 0.0), image.file_name

        chosen = min(donors, key=distance)
        dataset.report.repair("split", chosen.file_name,
                              f"moved from {chosen.split} to the empty split {split} (fill_splits)")
        chosen.split = split
        moved.append(chosen.file_name)
    return moved
