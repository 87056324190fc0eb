"""``convert.fill_splits``: a split the hash leaves empty gets one image, chosen by the hash alone."""

from __future__ import annotations

from pathlib import Path

from pipeline.dataset import Dataset, ImageRecord
from pipeline.skeleton import Skeleton
from pipeline.split import assign_splits, empty_splits, fill_empty_splits, hash_fraction

RATIOS = (0.8, 0.2, 0.0)


def dataset_of(names: list[str], ratios=RATIOS, seed: int = 0) -> Dataset:
    dataset = Dataset(Skeleton(["a", "b"]))
    dataset.images = [ImageRecord(Path(name), name, 10, 10) for name in names]
    assign_splits(dataset, ratios, seed)
    return dataset


def splits_of(dataset: Dataset) -> dict[str, str]:
    return {image.file_name: image.split for image in dataset.images}


def test_only_the_image_nearest_the_empty_split_moves():
    names = [f"person_0_{index}.png" for index in range(4)]  # all four hash into train at seed 0
    dataset = dataset_of(names)
    assert empty_splits(dataset, RATIOS) == ["val"]
    moved = fill_empty_splits(dataset, RATIOS, 0)
    # val is [0.8, 1): the nearest image is the one with the largest hash fraction.
    assert moved == [max(names, key=lambda name: hash_fraction(name, 0))]
    assert sorted(splits_of(dataset).values()) == ["train", "train", "train", "val"]
    assert empty_splits(dataset, RATIOS) == []
    assert [item.action for item in dataset.report.items] == ["repaired"]
    again = dataset_of(list(reversed(names)))
    fill_empty_splits(again, RATIOS, 0)
    assert splits_of(again) == splits_of(dataset)  # the input's order plays no part


def test_nothing_moves_once_the_hash_fills_every_split():
    for count in (5, 10, 40):
        dataset = dataset_of([f"image{index:03d}.jpg" for index in range(count)], (0.6, 0.2, 0.2), seed=1)
        if empty_splits(dataset, (0.6, 0.2, 0.2)):
            continue
        before = splits_of(dataset)
        assert fill_empty_splits(dataset, (0.6, 0.2, 0.2), 1) == []
        assert splits_of(dataset) == before


def test_a_single_image_stays_in_train_and_val_stays_empty():
    dataset = dataset_of(["only.png"])
    fill_empty_splits(dataset, RATIOS, 0)
    assert splits_of(dataset) == {"only.png": "train"} and empty_splits(dataset, RATIOS) == ["val"]


def test_three_splits_from_three_images():
    names = ["x.png", "y.png", "z.png"]
    ratios = (0.98, 0.01, 0.01)
    dataset = dataset_of(names, ratios)
    fill_empty_splits(dataset, ratios, 0)
    assert sorted(splits_of(dataset).values()) == ["test", "train", "val"]
