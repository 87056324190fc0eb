"""Keypoint layouts: :class:`Skeleton` (names, flip, OKS sigmas, edges, classes), what names imply
(:mod:`.names`) and the shipped skeleton files (:mod:`.shipped`)."""

from pipeline.skeleton.layout import COCO_PERSON_EDGES, Skeleton
from pipeline.skeleton.names import (
    COCO_PERSON_KEYPOINTS,
    COCO_PERSON_SIGMAS,
    PLACEHOLDER_SIGMA,
    default_sigmas,
    infer_flip,
)
from pipeline.skeleton.shipped import SKELETONS_DIR, shipped_matching, skeleton_file

__all__ = [
    "COCO_PERSON_EDGES", "COCO_PERSON_KEYPOINTS", "COCO_PERSON_SIGMAS", "PLACEHOLDER_SIGMA", "SKELETONS_DIR",
    "Skeleton", "default_sigmas", "infer_flip", "shipped_matching", "skeleton_file",
]
