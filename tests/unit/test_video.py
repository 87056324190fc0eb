"""Video: the generated clip, tracking and smoothing math, outlier ranking, frame picking, bad videos.

Tracking, smoothing and outlier figures here come from a ground-truth-driven detector (video_stub.py:
the clip's true keypoints with noise, corrupted frames made to look as a model would read them): they
test the math, not a model. The figures with a trained model are in tests/integration/test_video.py.
"""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from video_stub import stub_detections

from pipeline.cli import main
from pipeline.errors import FdposeError
from pipeline.video.clip import demo_video, read_truth
from pipeline.video.frames import frames
from pipeline.video.outliers import Row, pick, score_frames
from pipeline.video.quality import smoothing_figures, tracking_figures
from pipeline.video.smooth import SmoothParams, TrackSmoother
from pipeline.video.track import PoseTracker
from pipeline.video.videoio import probe


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "clip"
    demo_video(out, seed=0)
    return out


@pytest.fixture(scope="module")
def stub_tracks(clip):
    truth = read_truth(clip)
    tracker = PoseTracker("bytetrack", truth["fps"], 17, SmoothParams())
    return truth, [tracker.update(i, d) for i, d in enumerate(stub_detections(truth, noise_px=2.0))]


def test_clip_is_deterministic_and_has_what_the_figures_need(clip, tmp_path):
    again = tmp_path / "again"
    demo_video(again, seed=0)
    for name in ("clip.avi", "truth.json", "params.json"):
        assert (again / name).read_bytes() == (clip / name).read_bytes(), name
    truth = read_truth(clip)
    assert len(truth["frames"]) == 90 and probe(clip / "clip.avi").frames == 90
    assert [c["kind"] for c in truth["corrupted"]] == ["blur", "wrong", "blur", "wrong"]
    assert [c["ids"] for c in truth["crossings"]] == [[1, 2]] and truth["turns"][0]["id"] == 3
    present = [{f["id"] for f in record["figures"]} for record in truth["frames"]]
    assert 3 not in present[0] and 3 in present[45] and 3 not in present[-1]  # enters and leaves
    # Figure 2 walks in front of figure 1 when they cross: some of figure 1's keypoints are occluded.
    crossing = truth["crossings"][0]["frame"]
    behind = next(f for f in truth["frames"][crossing]["figures"] if f["id"] == 1)
    assert (np.array(behind["keypoints"]).reshape(-1, 3)[:, 2] == 1).sum() >= 3
    demo_video(tmp_path / "other", seed=1)
    assert (tmp_path / "other" / "clip.avi").read_bytes() != (clip / "clip.avi").read_bytes()


def test_tracking_keeps_identities_through_the_crossing(stub_tracks):
    truth, tracks = stub_tracks
    figures = tracking_figures(tracks, truth)
    assert sum(figures.switches.values()) <= figures.crossings
    assert figures.coverage >= 0.95


def test_smoothing_lowers_the_error_with_little_lag_at_the_turn(stub_tracks):
    truth, tracks = stub_tracks
    figures = smoothing_figures(tracks, truth, kpt_conf=0.5)
    assert figures.keypoints > 2000
    assert figures.smoothed_error <= 0.9 * figures.raw_error  # at least 10% lower on pure jitter
    assert figures.smoothed_lag <= 1.5


def test_corrupted_frames_rank_in_the_top_twice_their_number(stub_tracks):
    truth, tracks = stub_tracks
    rows = [Row("clip", p.frame, p.track_id, p.box, p.raw, p.smoothed) for frame in tracks for p in frame]
    scores = score_frames(rows, {"clip": (90, (truth["width"], truth["height"]))}, kpt_conf=0.5)
    corrupted = {c["frame"] for c in truth["corrupted"]}
    top = pick(scores, 2 * len(corrupted), min_gap=3)
    assert corrupted <= {s.frame for s in top}
    frames_picked = sorted(s.frame for s in top)
    assert all(b - a > 3 for a, b in zip(frames_picked, frames_picked[1:], strict=False))


def test_a_track_that_disappears_mid_frame_is_a_break():
    box = np.array([50.0, 50, 100, 150])
    pose = np.column_stack([np.full(17, 70.0), np.full(17, 90.0), np.full(17, 0.9)])
    rows = [Row("v", f, 1, box, pose, pose) for f in range(10) if f != 5]
    scores = {s.frame: s for s in score_frames(rows, {"v": (10, (200, 200))}, 0.5)}
    assert scores[5].reasons.get("breaks") == 1 and scores[5].score == max(s.score for s in scores.values())


def test_one_euro_keeps_confidence_and_leaves_unsure_keypoints_alone():
    smoother = TrackSmoother(2, 30.0, SmoothParams(kpt_conf=0.5))
    first = smoother(np.array([[10.0, 10, 0.9], [5, 5, 0.2]]), 0.0)
    np.testing.assert_allclose(first, [[10, 10, 0.9], [5, 5, 0.2]])  # a filter starts at its first value
    second = smoother(np.array([[14.0, 10, 0.8], [50, 50, 0.1]]), 1 / 30)
    assert 10 < second[0, 0] < 14 and second[0, 2] == 0.8  # pulled towards the past, confidence kept
    np.testing.assert_allclose(second[1], [50, 50, 0.1])  # below kpt_conf: passed through


def test_frames_picks_diverse_frames_spread_over_the_video(clip, tmp_path):
    result = frames([clip / "clip.avi"], tmp_path / "picked", count=6, seed=0)
    chosen = result.picked["clip.avi"]
    assert len(chosen) == 6 and min(chosen) < 20 and max(chosen) > 70
    names = sorted(p.name for p in (tmp_path / "picked" / "images").iterdir())
    assert names == [f"clip_f{i:06d}.png" for i in chosen]
    tasks = json.loads((tmp_path / "picked" / "tasks.json").read_text())
    assert [t["meta"]["frame"] for t in tasks] == chosen
    assert tasks[0]["data"]["image"] == f"/data/local-files/?d=images/clip_f{chosen[0]:06d}.png"
    again = frames([clip / "clip.avi"], tmp_path / "again", count=6, seed=0)
    assert again.picked == result.picked


def _bad_videos(tmp_path, clip):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4000))
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 15, (64, 48))
    writer.release()
    codec = tmp_path / "codec.avi"  # a valid AVI whose codec FourCC no decoder knows
    codec.write_bytes((clip / "clip.avi").read_bytes().replace(b"MJPG", b"QQQQ"))
    return {corrupt: "not a readable video", empty: "has no frames", codec: "codec 'QQQQ'"}


@pytest.mark.parametrize("command", ["frames", "predict"])
def test_bad_videos_are_one_line_errors_and_nothing_is_written(clip, tmp_path, command):
    for video, reason in _bad_videos(tmp_path, clip).items():
        out = tmp_path / f"out-{video.stem}"
        args = ["frames", str(video), "--count", "3", "--out", str(out)]
        if command == "predict":  # the videos are checked before the model is loaded: none is needed
            args = ["predict", "--model", str(tmp_path / "none.pt"), str(video), "--track", "--out", str(out)]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0] and video.name in lines[0], result.output
        assert not out.exists()


def test_probe_reads_the_stated_frame_rate_and_size(clip):
    info = probe(clip / "clip.avi")
    assert (info.fps, info.width, info.height) == (15.0, 256, 192)
    with pytest.raises(FdposeError, match="video not found"):
        probe(clip / "missing.avi")


@pytest.mark.parametrize("name", ["botsort", "ocsort"])
def test_the_other_ultralytics_trackers_take_our_detections(clip, name):
    truth = read_truth(clip)
    tracker = PoseTracker(name, truth["fps"], 17, None)
    tracks = [tracker.update(i, d) for i, d in enumerate(stub_detections(truth, noise_px=2.0))]
    figures = tracking_figures(tracks, truth)
    assert sum(figures.switches.values()) <= figures.crossings and figures.coverage >= 0.95


def test_an_unknown_tracker_is_one_error():
    with pytest.raises(FdposeError, match="unknown tracker"):
        PoseTracker("kalman-magic", 30.0, 17, None)
