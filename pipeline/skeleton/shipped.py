"""The skeleton files fdpose ships (``pipeline/cfg/skeletons``, linked as ``cfg/skeletons``), and which
of them a layout's keypoint names match."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

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


def shipped_matching(names: list[str]) -> Path | None:
    """The shipped skeleton whose keypoints are ``names`` (in any order), if one is."""
    wanted = sorted(str(n).strip() for n in names)
    for path in sorted(SKELETONS_DIR.glob("*.yaml")):
        keypoints = read_yaml_mapping(path, "skeleton file").get("keypoints")
        if isinstance(keypoints, list) and sorted(str(n) for n in keypoints) == wanted:
            return path
    return None


def shipped_name(path: Path) -> str:
    """How a user names a shipped skeleton: ``cfg/skeletons/NAME.yaml``."""
    return f"cfg/skeletons/{path.name}"
