"""``fdpose sigmas``: OKS sigmas estimated from repeated annotations, COCO's way.

COCO defines the per-keypoint constant by ``sigma_i^2 = E[d_i^2 / s^2]``: ``d_i`` the distance between
an annotation of keypoint ``i`` and its true position, ``s^2`` the object's area (COCO measured it on
5000 redundantly annotated images; cocodataset.org/#keypoints-eval, and Ronchi & Perona, ICCV 2017).
The true position is unknown; two annotators' independent errors add, so for a pair of annotations of
the same instance ``E[|a - b|^2] = 2 E[d^2]``, and

    sigma_i = sqrt( mean over pairs of |a_i - b_i|^2 / (2 s^2) )

over the pairs in which both annotators labelled keypoint ``i``. ``s^2`` is the area rule the
evaluation uses (0.53 x box area, the mean of the pair's two boxes), so estimated sigmas mean in
``fdpose eval`` what COCO's mean in COCO's. The interval is a percentile bootstrap over the pairs.

Pairs: two annotations of one image by different annotators whose boxes overlap (IoU >= ``min_iou``),
matched one-to-one, best overlap first (Label Studio: annotations of one task; COCO: annotations of
one image, every annotation counting as its own annotator).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml

from pipeline.dataset import Instance
from pipeline.errors import FdposeError
from pipeline.io import atomic_write_text, read_yaml_mapping
from pipeline.skeleton import SKELETONS_DIR, Skeleton, skeleton_file

AREA_FACTOR = 0.53  # the OKS area rule of pipeline.metrics (ultralytics'): 0.53 x box area
MIN_IOU = 0.5
MIN_PAIRS = 10  # fewer pairs than this give no estimate (the interval would be meaningless)
RESAMPLES = 2000
CONFIDENCE = 0.95
METHOD = ("sigma_i = sqrt(mean(|a_i - b_i|^2 / (2 * 0.53 * box area))) over pairs of annotations of one "
          "instance by different annotators (COCO's sigma_i^2 = E[d_i^2 / s^2]); 95% percentile bootstrap "
          "over pairs")


@dataclass
class KeypointSigma:
    """One keypoint's estimate: the sigma, its bootstrap interval, and the pairs it rests on."""

    name: str
    sigma: float | None
    low: float | None
    high: float | None
    pairs: int

    def to_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "low": self.low, "high": self.high, "pairs": self.pairs}


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``x0, y0, x1, y1`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match_pairs(groups: list[list[Instance]], min_iou: float = MIN_IOU) -> list[tuple[Instance, Instance]]:
    """Pairs of instances of one image from different annotators (``groups``, one list per annotator):
    for every two annotators, a one-to-one matching by box IoU (best first, at least ``min_iou``)."""
    pairs = []
    for first, second in itertools.combinations(groups, 2):
        scored = sorted(((box_iou(a.bbox, b.bbox), i, j)
                         for i, a in enumerate(first) for j, b in enumerate(second)),
                        key=lambda t: (-t[0], t[1], t[2]))
        used_a, used_b = set(), set()
        for iou, i, j in scored:
            if iou < min_iou:
                break
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                pairs.append((first[i], second[j]))
    return pairs


def estimate(pairs: list[tuple[Instance, Instance]], names: list[str], *, min_pairs: int = MIN_PAIRS,
             resamples: int = RESAMPLES, seed: int = 0) -> list[KeypointSigma]:
    """Each keypoint's sigma from annotation ``pairs`` (:func:`match_pairs`), with its interval."""
    rng = np.random.default_rng(seed)
    out = []
    for index, name in enumerate(names):
        ratios = []
        for a, b in pairs:
            if a.keypoints[index, 2] > 0 and b.keypoints[index, 2] > 0:
                area = AREA_FACTOR * (_area(a.bbox) + _area(b.bbox)) / 2
                d2 = float(((a.keypoints[index, :2] - b.keypoints[index, :2]) ** 2).sum())
                if area > 0:
                    ratios.append(d2 / (2 * area))
        if len(ratios) < min_pairs:
            out.append(KeypointSigma(name, None, None, None, len(ratios)))
            continue
        values = np.asarray(ratios)
        sigma = float(np.sqrt(values.mean()))
        draws = np.sqrt(values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1))
        tail = (1 - CONFIDENCE) / 2 * 100
        low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
        out.append(KeypointSigma(name, round(sigma, 5), round(low, 5), round(high, 5), len(ratios)))
    return out


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def write_estimates(path: Path, skeleton: Skeleton, estimates: list[KeypointSigma], source: str) -> Path:
    """Put the estimates into the skeleton file at ``path`` (created from ``skeleton`` when absent):
    ``sigmas`` and ``sigma_sources`` (``estimated`` where there were enough pairs; other keypoints
    keep theirs) and ``sigma_estimate`` (interval and pairs per keypoint, the method, the data)."""
    raw = read_yaml_mapping(path, "skeleton file") if path.is_file() else skeleton.to_file()
    sigmas, sources = list(skeleton.sigmas), list(skeleton.sigma_sources)
    for index, found in enumerate(estimates):
        if found.sigma is not None and found.sigma > 0:
            sigmas[index], sources[index] = found.sigma, "estimated"
    raw["sigmas"], raw["sigma_sources"] = sigmas, sources
    raw["sigma_estimate"] = {"method": METHOD, "data": source,
                             "keypoints": {e.name: e.to_dict() for e in estimates}}
    text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=110)
    atomic_write_text(path, text)
    Skeleton.load(path)  # what was written reads back as a valid skeleton
    return path


def summary(estimates: list[KeypointSigma], skeleton: Skeleton) -> str:
    """The printed table: keypoint, estimate, interval, pairs, and the sigma it replaces."""
    lines = [f"{'keypoint':<24} {'sigma':>8} {'95% interval':>19} {'pairs':>6}  was"]
    for found, old, source in zip(estimates, skeleton.sigmas, skeleton.sigma_sources, strict=True):
        if found.sigma is None:
            lines.append(f"{found.name:<24} {'-':>8} {'(too few pairs)':>19} {found.pairs:>6}  "
                         f"{old:g} ({source})")
        else:
            lines.append(f"{found.name:<24} {found.sigma:>8.4f} {f'[{found.low:.4f}, {found.high:.4f}]':>19} "
                         f"{found.pairs:>6}  {old:g} ({source})")
    return "\n".join(lines)


def coco_groups(json_path: Path, images: Path, skeleton: Skeleton | None, skeleton_source: object
                ) -> tuple[Skeleton, list[list[list[Instance]]]]:
    """A COCO file's instances per image, every annotation its own annotator."""
    from pipeline.formats.coco import read_coco

    dataset = read_coco(json_path, images, skeleton=skeleton, skeleton_source=skeleton_source)
    return dataset.skeleton, [[[instance] for instance in image.instances] for image in dataset.images]


def sigmas(*, source: str, out: Path | None, input_path: Path | None = None, images: Path | None = None,
           skeleton: Path | None = None, url: str | None = None, project: int | None = None,
           label_config: Path | None = None, min_iou: float = MIN_IOU, min_pairs: int = MIN_PAIRS,
           seed: int = 0) -> tuple[list[KeypointSigma], Skeleton, Path]:
    """Estimate the sigmas of the repeated annotations in the input and write them into ``out`` (the
    ``skeleton`` file when not given). Returns the estimates, the skeleton before, and the file."""
    skeleton_path = skeleton_file(skeleton) if skeleton else None
    target = Path(out) if out is not None else skeleton_path
    if target is None:
        raise FdposeError("give --out FILE.yaml (or --skeleton FILE.yaml to update)", item="fdpose sigmas")
    if out is None and skeleton_path is not None and skeleton_path.parent == SKELETONS_DIR:
        raise FdposeError("a shipped skeleton is not edited in place: give --out FILE.yaml",
                          path=skeleton_path)
    layout = Skeleton.load(skeleton_path) if skeleton_path else None
    if source == "coco":
        if input_path is None or images is None:
            raise FdposeError("--from coco needs --input FILE.json and --images DIR", item="fdpose sigmas")
        layout, per_image = coco_groups(input_path, images, layout, skeleton_path)
        described = str(input_path)
    else:
        from pipeline.labelstudio.sigmas import labelstudio_groups

        layout, per_image, described = labelstudio_groups(
            input_path=input_path, images=images, url=url, project=project, label_config=label_config,
            skeleton=layout)
    pairs = [pair for groups in per_image for pair in match_pairs(groups, min_iou)]
    if not pairs:
        raise FdposeError(f"no repeated annotations: no two annotators' boxes overlap by IoU >= {min_iou}",
                          path=input_path or url)
    estimates = estimate(pairs, layout.keypoint_names, min_pairs=min_pairs, seed=seed)
    write_estimates(target, layout, estimates, f"{described} ({len(pairs)} pairs)")
    return estimates, layout, target


@click.command("sigmas")
@click.option("--from", "source", type=click.Choice(["coco", "label-studio"]), required=True,
              help="Input format: a COCO file with several annotations per instance, or Label Studio tasks "
                   "annotated by several annotators.")
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="COCO JSON or Label Studio export.")
@click.option("--images", type=click.Path(path_type=Path), help="Folder the input's image names resolve in.")
@click.option("--url", help="Label Studio server URL (live; API key from LABEL_STUDIO_API_KEY).")
@click.option("--project", type=int, help="Label Studio project id (with --url).")
@click.option("--label-config", type=click.Path(path_type=Path), help="Label Studio labeling config XML.")
@click.option("--skeleton", type=click.Path(path_type=Path), help="Skeleton file: the layout, and the file "
              "updated unless --out is given.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Skeleton file to write (created from the layout when absent).")
@click.option("--min-iou", type=float, default=MIN_IOU, show_default=True,
              help="Box IoU two annotations need to count as the same instance.")
@click.option("--min-pairs", type=int, default=MIN_PAIRS, show_default=True,
              help="Fewer pairs of a keypoint than this leave its sigma as it was.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
def sigmas_command(**options: Any) -> None:
    """Estimate OKS sigmas from repeated annotations (COCO's definition) into a skeleton file."""
    estimates, layout, target = sigmas(**options)
    click.echo(summary(estimates, layout))
    click.echo(f"wrote {target}")
