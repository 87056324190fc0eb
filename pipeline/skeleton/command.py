"""``fdpose skeleton``: write out the layout convert would infer, check a skeleton file, and write the
Label Studio labeling config of a skeleton."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from pipeline.errors import FdposeError
from pipeline.io import atomic_write_text
from pipeline.skeleton.layout import Skeleton
from pipeline.skeleton.names import SIGMA_SOURCES

HEADER = """\
# Keypoint layout for fdpose (README: "Skeleton files"). Inferred from {source}; edit and pass it with
#   fdpose convert --skeleton {out} ...
# keypoints: names, in the order of the label files; flip_pairs: keypoints that swap under a horizontal
# flip (absent: unknown, and the dataset is never mirrored); sigmas: OKS constants, sigma_sources says where
# each came from ({sources}); edges: lines drawn between keypoints.
"""


def infer_skeleton(source: str, input_path: Path, images: Path | None = None,
                   label_config: Path | None = None) -> Skeleton:
    """The skeleton ``fdpose convert --from SOURCE`` infers for this input (no skeleton file given)."""
    if source == "coco":
        from pipeline.formats.coco import read_coco

        return read_coco(input_path, images if images is not None else input_path.parent).skeleton
    if source == "yolo":
        from pipeline.formats.yolo import load_data_yaml

        data, _ = load_data_yaml(input_path)
        return Skeleton.from_data_yaml(data, source=input_path)
    from pipeline.labelstudio.labelconfig import skeleton_from_label_config

    if label_config is None:
        raise FdposeError("--from label-studio needs --label-config FILE.xml", item="fdpose skeleton infer")
    return skeleton_from_label_config(label_config)


def skeleton_text(skeleton: Skeleton, source: object, out: Path) -> str:
    """The skeleton file :meth:`Skeleton.load` reads back, with a header that explains its fields."""
    header = HEADER.format(source=source, out=out, sources=", ".join(SIGMA_SOURCES))
    return header + yaml.safe_dump(skeleton.to_file(), sort_keys=False, allow_unicode=True, width=110)


def check_text(skeleton: Skeleton) -> str:
    """What ``skeleton check`` prints: the layout's lines, then every keypoint's partner and sigma."""
    lines = [f"{skeleton.num_keypoints} keypoints, classes {', '.join(skeleton.class_names)}",
             *skeleton.describe()]
    if not skeleton.mirror:
        lines.append(f"warning: {skeleton.flip_problem}: datasets with this skeleton are never mirrored")
    lines.append(f"{'#':>3}  {'keypoint':<24} {'flips to':<24} {'sigma':>7}  source")
    names = skeleton.keypoint_names
    for index, name in enumerate(names):
        partner = names[skeleton.flip_permutation[index]] if skeleton.mirror else "?"
        lines.append(f"{index:>3}  {name:<24} {partner:<24} {skeleton.sigmas[index]:>7.3f}  "
                     f"{skeleton.sigma_sources[index]}")
    return "\n".join(lines)


@click.group("skeleton")
def skeleton_group() -> None:
    """Keypoint layouts: infer one to edit, check a file, write its Label Studio config."""


@skeleton_group.command("infer")
@click.option("--from", "source", type=click.Choice(["coco", "yolo", "label-studio"]), required=True)
@click.option("--input", "input_path", type=click.Path(path_type=Path), required=True,
              help="COCO JSON or YOLO data.yaml (Label Studio: the export, unused; see --label-config).")
@click.option("--images", type=click.Path(path_type=Path),
              help="COCO: the images folder [the file's folder].")
@click.option("--label-config", type=click.Path(path_type=Path), help="Label Studio labeling config XML.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Skeleton file to write (YAML).")
def infer_command(source: str, input_path: Path, images: Path | None, label_config: Path | None,
                  out: Path) -> None:
    """Write the skeleton convert would infer from the input, for you to edit."""
    skeleton = infer_skeleton(source, input_path, images, label_config)
    atomic_write_text(out, skeleton_text(skeleton, input_path, out))
    click.echo(check_text(skeleton))
    click.echo(f"wrote {out}")


@skeleton_group.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def check_command(file: Path) -> None:
    """Validate a skeleton file (flip an involution, edges in range, sigmas positive, names unique) and
    print its pairs and sigmas."""
    click.echo(check_text(Skeleton.load(file)))


@skeleton_group.command("label-config")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Label Studio labeling config to write (XML; paste it into the project's Settings -> "
                   "Labeling Interface -> Code, or pass it as --label-config).")
def label_config_command(file: Path, out: Path) -> None:
    """Write the Label Studio labeling config of a skeleton: a RectangleLabels per class, KeyPointLabels
    with model_index, the occlusion choice; convert and serve read it back unchanged."""
    from pipeline.labelstudio.labelconfig import label_config_xml

    skeleton = Skeleton.load(file)
    atomic_write_text(out, label_config_xml(skeleton))
    last = skeleton.num_keypoints - 1
    click.echo(f"wrote {out}: {skeleton.num_keypoints} keypoints (model_index 0..{last}), "
               f"classes {', '.join(skeleton.class_names)}")
