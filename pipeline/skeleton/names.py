"""What keypoint names say: the side of the body a point is on, its mirror partner, its COCO sigma.

A name is split into lower-case words at separators (``_ - . : /`` and spaces), at case changes
(``LWrist`` -> l, wrist; ``forelegL1`` -> foreleg, l, 1) and between letters and digits. A side marker
is a whole word: ``left``/``right``, ``l``/``r``, ``lft``/``rgt``, ``lt``/``rt``, or ``near``/``off``
(a horse's left and right). Two names are mirror partners when their words are equal with every side
marker swapped, wherever the marker stands (prefix, suffix, before or after an index). A long marker
glued to the front of a word (``Nearknee``, ``Offknee``) pairs too, but only with a partner of the
same form, and does not count as a side on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SWAP = {"left": "right", "right": "left", "l": "r", "r": "l", "lft": "rgt", "rgt": "lft",
         "lt": "rt", "rt": "lt", "near": "off", "off": "near"}
_GLUED = ("left", "right", "near", "off")  # markers recognised at the start of a longer word
# Side markers that mean the body's left or right (for COCO names); near/off are horse terms.
_CANONICAL_SIDE = {"left": "left", "l": "left", "lft": "left", "lt": "left",
                   "right": "right", "r": "right", "rgt": "right", "rt": "right"}

# COCO's 17 person keypoints and their OKS sigmas. COCO defines sigma_i by sigma_i^2 = E[d_i^2 / s^2]:
# d_i the distance between an annotation of keypoint i and its true position, s^2 the object's area,
# measured on 5000 redundantly annotated images (cocodataset.org/#keypoints-eval; Ronchi & Perona,
# "Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation", ICCV 2017). Values: cocoeval.py.
COCO_PERSON_KEYPOINTS = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
]
COCO_PERSON_SIGMAS = [
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
    0.087, 0.087, 0.089, 0.089,
]
# The sigma of a keypoint no sigma is known for: the mean of COCO's 17 person sigmas (0.0669), rounded.
# It does not depend on the number of keypoints (ultralytics' 1/K does, which makes OKS lax for 5 points
# and strict for 98); it is a placeholder, marked as such in report.json and the eval report.
PLACEHOLDER_SIGMA = 0.067

SIGMA_SOURCES = ("coco", "file", "estimated", "placeholder")


# Word boundaries inside a name: lower or digit to upper, an upper run before a capitalised word
# (LWrist), letters to digits and back.
_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[A-Za-z])(?=[0-9])"
                       r"|(?<=[0-9])(?=[A-Za-z])")


def words(name: str) -> tuple[str, ...]:
    """The lower-case words of a keypoint name: ``LeftEye`` -> (left, eye), ``forelegL1`` ->
    (foreleg, l, 1), ``Ankle_Left `` -> (ankle, left)."""
    spaced = _BOUNDARY.sub(" ", name.strip())
    return tuple(word.lower() for word in re.split(r"[^A-Za-z0-9]+", spaced) if word)


def _unglued(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """``(nearknee,)`` -> ``(near, knee)``: a long side marker at the start of a longer word split off."""
    out: list[str] = []
    for token in tokens:
        marker = next((m for m in _GLUED if token.startswith(m) and len(token) > len(m)), None)
        out.extend((marker, token[len(marker):]) if marker else (token,))
    return tuple(out)


def _mirrored(tokens: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_SWAP.get(token, token) for token in tokens)


def is_unnamed(names: list[str]) -> bool:
    """True when names say nothing about the points: ``kp0, kp1, ...`` (what fdpose makes up for a
    layout without names) or bare numbers (``1, 2, ...``, deepfashion2's)."""
    return all(re.fullmatch(r"(kp)?[0-9]+", name.strip().lower()) for name in names)


@dataclass
class FlipInference:
    """The flip permutation names imply, and why mirroring is unsafe when it is (``problem``)."""

    permutation: list[int]
    problem: str = ""  # empty: every side-marked name has its partner (or names mark no side)

    @property
    def safe(self) -> bool:
        return not self.problem


def _partners(keys: list[tuple[str, ...]]) -> list[int]:
    """For each key, the index of the key equal to it with sides swapped (itself when none), kept only
    where the pairing is mutual and the swap changes the key."""
    first: dict[tuple[str, ...], int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    found = []
    for index, key in enumerate(keys):
        mirrored = _mirrored(key)
        found.append(first.get(mirrored, index) if mirrored != key else index)
    return [p if found[p] == i else i for i, p in enumerate(found)]


def infer_flip(names: list[str]) -> FlipInference:
    """The index each keypoint takes under a horizontal flip, from its name, and whether that is safe:
    unsafe when there are no real names, or when a name marks a side but has no partner."""
    k = len(names)
    if is_unnamed(names):
        return FlipInference(list(range(k)), "keypoints have no names, so the left/right pairs are unknown")
    tokens = [words(name) for name in names]
    permutation = _partners(tokens)
    glued = _partners([_unglued(t) for t in tokens])  # Nearknee/Offknee: only for names still unpaired
    for index in range(k):
        partner = glued[index]
        if permutation[index] == index and partner != index and permutation[partner] == partner:
            permutation[index], permutation[partner] = partner, index
    lonely = [names[i] for i in range(k)
              if permutation[i] == i and any(token in _SWAP for token in tokens[i])]
    problem = ""
    if lonely:
        shown = ", ".join(lonely[:6]) + (", ..." if len(lonely) > 6 else "")
        problem = f"{len(lonely)} keypoints name a side but have no partner ({shown})"
    return FlipInference(permutation, problem)


def flip_pairs(names: list[str], permutation: list[int]) -> list[tuple[str, str]]:
    """The swapped pairs of a flip permutation, by name, each once (lower index first)."""
    return [(names[i], names[p]) for i, p in enumerate(permutation) if p > i]


def side_of(name: str) -> str | None:
    """``left``, ``right`` or None: the body side a keypoint name marks (l/left/lft/lt, r/right/...)."""
    sides = {_CANONICAL_SIDE[t] for t in words(name) if t in _CANONICAL_SIDE}
    return sides.pop() if len(sides) == 1 else None


def coco_key(name: str) -> tuple[str, ...]:
    """A name's words with its side first and spelled ``left``/``right``: ``Shoulder_Left``,
    ``LShoulder`` and ``left shoulder`` all give (left, shoulder), as ``left_shoulder`` does."""
    tokens = words(name)
    sides = [_CANONICAL_SIDE[t] for t in tokens if t in _CANONICAL_SIDE]
    rest = tuple(t for t in tokens if t not in _CANONICAL_SIDE)
    return tuple(sides[:1]) + rest if len(sides) <= 1 else tokens


_COCO_SIGMA = {coco_key(name): sigma for name, sigma in zip(COCO_PERSON_KEYPOINTS, COCO_PERSON_SIGMAS,
                                                              strict=True)}


def default_sigmas(names: list[str]) -> tuple[list[float], list[str]]:
    """Each keypoint's OKS sigma and where it came from: COCO's for a COCO keypoint name (in any
    spelling :func:`coco_key` accepts), else :data:`PLACEHOLDER_SIGMA`, marked ``placeholder``."""
    sigmas, sources = [], []
    for name in names:
        sigma = _COCO_SIGMA.get(coco_key(name))
        sigmas.append(PLACEHOLDER_SIGMA if sigma is None else sigma)
        sources.append("placeholder" if sigma is None else "coco")
    return sigmas, sources
