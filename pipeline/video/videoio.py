"""Reading videos frame by frame and writing drawn ones, with one clear error per unusable file.

OpenCV's FFmpeg backend reports a damaged file by printing to stderr and returning nothing; here a
video is probed (opened and its first frame decoded) before anything is written, and an unusable
one is an :class:`FdposeError` saying which case it is: not a video at all (corrupt), a container
OpenCV recognises but cannot decode (the codec is named when the container says it), or a video with
no frames. OpenCV's and FFmpeg's own log lines are silenced so that the error is the only line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import FdposeError, printable

VIDEO_SUFFIXES = {".avi", ".mp4", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv"}
DEFAULT_FPS = 30.0  # when the container states none


def _quiet() -> None:
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg opens a file
    cv2.setLogLevel(0)  # OpenCV's own log: silent


def _container(path: Path) -> tuple[str | None, str | None]:
    """The container a file's first bytes announce, and an AVI's video codec (FourCC)."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        at = head.find(b"strh")  # stream header: size, then fccType "vids" and the codec's FourCC
        codec = None
        if at >= 0 and head[at + 8 : at + 12] == b"vids":
            codec = printable(head[at + 12 : at + 16].decode("latin-1").strip("\x00 ")) or None
        return "AVI", codec
    if head[4:8] == b"ftyp":
        return "MP4/QuickTime", None
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM", None
    return None, None


@dataclass
class VideoInfo:
    path: Path
    fps: float
    frames: int  # as the container states it (may be 0 or wrong for some files)
    width: int
    height: int


def probe(path: str | Path) -> VideoInfo:
    """Open ``path`` and decode its first frame; an unusable video is one error naming the file."""
    _quiet()
    path = Path(path)
    if not path.is_file():
        raise FdposeError("video not found", path=path)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            container, codec = _container(path)
            if container is None:
                raise FdposeError("not a readable video (corrupt file or unknown container)", path=path)
            detail = f" (codec '{codec}')" if codec else ""
            raise FdposeError(
                f"cannot decode this {container} video{detail}: unsupported codec or damaged stream",
                path=path,
            )
        ok, image = capture.read()
        stated = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if not ok or image is None:
            reason = (
                "the video has no frames"
                if stated <= 0
                else (
                    f"the first of its {stated} frames cannot be decoded "
                    "(unsupported codec or damaged stream)"
                )
            )
            raise FdposeError(reason, path=path)
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return VideoInfo(path, fps if 0 < fps < 1000 else DEFAULT_FPS, stated, image.shape[1], image.shape[0])
    finally:
        capture.release()


def read_frames(info: VideoInfo) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR image) of every frame that decodes, from the first; stops at the first that does not."""
    _quiet()
    capture = cv2.VideoCapture(str(info.path))
    try:
        index = 0
        while True:
            ok, image = capture.read()
            if not ok or image is None:
                return
            yield index, image
            index += 1
    finally:
        capture.release()


def read_frame_at(path: str | Path, index: int) -> np.ndarray:
    """Frame ``index`` of a video, decoded sequentially (seeking is inexact in many codecs)."""
    for number, image in read_frames(probe(path)):
        if number == index:
            return image
    raise FdposeError(f"frame {index} cannot be read", path=path)


def list_videos(source: str | Path) -> list[Path]:
    """The video, or the videos in a folder (recursively, sorted); none is an error."""
    source = Path(source)
    if source.is_dir():
        videos = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise FdposeError(
                f"no videos in the folder (suffixes {', '.join(sorted(VIDEO_SUFFIXES))})", path=source
            )
        return videos
    if not source.exists():
        raise FdposeError("not found", path=source)
    if source.suffix.lower() not in VIDEO_SUFFIXES:
        raise FdposeError(f"not a video file (suffixes {', '.join(sorted(VIDEO_SUFFIXES))})", path=source)
    return [source]


class VideoWriter:
    """An MP4 (MPEG-4 Part 2, 'mp4v': OpenCV's FFmpeg always has it) written frame by frame."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        _quiet()
        self.path = path
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not self.writer.isOpened():
            raise FdposeError("OpenCV cannot write an mp4v video here", path=path)

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)

    def close(self) -> None:
        self.writer.release()
